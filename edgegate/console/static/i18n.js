"use strict";
// Translations (i18n.json) and the language switch, remembered in localStorage.
window.edgegateI18n = (function () {
  const KEY = "edgegate.lang";
  let strings = { zh: {}, en: {} };
  let lang = localStorage.getItem(KEY) === "en" ? "en" : "zh";
  const listeners = [];

  function t(key, fallback) {
    const table = strings[lang] || {};
    if (Object.prototype.hasOwnProperty.call(table, key)) return table[key];
    return fallback !== undefined ? fallback : key;
  }

  function apply(root) {
    document.documentElement.lang = lang === "en" ? "en" : "zh-CN";
    (root || document).querySelectorAll("[data-i18n]").forEach(function (el) {
      el.textContent = t(el.getAttribute("data-i18n"));
    });
    const sw = document.getElementById("lang-switch");
    if (sw) sw.textContent = t("ui.lang.switch");
    document.title = t(document.body.classList.contains("login") ? "ui.login.title" : "ui.title");
  }

  function setLang(next) {
    lang = next;
    localStorage.setItem(KEY, lang);
    apply();
    listeners.forEach(function (fn) { fn(lang); });
  }

  async function load() {
    const response = await fetch("/static/i18n.json", { credentials: "same-origin" });
    strings = await response.json();
    apply();
    const sw = document.getElementById("lang-switch");
    if (sw) sw.addEventListener("click", function () { setLang(lang === "zh" ? "en" : "zh"); });
  }

  return {
    t: t, apply: apply, load: load,
    lang: function () { return lang; },
    onChange: function (fn) { listeners.push(fn); },
  };
})();
