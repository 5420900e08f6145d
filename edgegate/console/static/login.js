"use strict";
(async function () {
  const i18n = window.edgegateI18n;
  await i18n.load();
  const error = new URLSearchParams(location.search).get("error");
  const box = document.getElementById("login-error");
  function show() {
    if (error === "refused" || error === "locked" || error === "unavailable") {
      box.textContent = i18n.t("ui.login.error." + error);
      box.hidden = false;
    }
  }
  show();
  i18n.onChange(show);
  document.getElementById("account").focus();
})();
