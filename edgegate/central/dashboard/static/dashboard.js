// The control room's dashboard: live refresh of the page's #content on every change the
// server pushes (/live, Server-Sent Events), and the roll call's print button.
"use strict";

(function () {
  const body = document.body;
  let busy = false;
  let again = false;

  function typing() {
    // An operator writing a reason keeps the form: the refresh waits until it is sent or empty.
    const content = document.getElementById("content");
    if (!content) return false;
    for (const input of content.querySelectorAll("input, textarea")) {
      if (input.type !== "hidden" && (input.value || document.activeElement === input)) return true;
    }
    return false;
  }

  async function refresh() {
    if (busy) { again = true; return; }
    if (typing()) { again = true; return; }
    busy = true;
    try {
      const resp = await fetch(location.pathname + location.search, {
        headers: { "X-Fragment": "1" }, credentials: "same-origin", cache: "no-store",
      });
      if (resp.redirected || resp.status === 401) { location.assign("/login"); return; }
      if (resp.ok) {
        document.getElementById("content").innerHTML = await resp.text();
        body.dataset.refreshes = String(Number(body.dataset.refreshes || "0") + 1);
        bind();
      }
    } catch (e) {
      again = true;
    } finally {
      busy = false;
      if (again) { again = false; setTimeout(refresh, 500); }
    }
  }

  function bind() {
    const print = document.getElementById("print");
    if (print && !print.dataset.bound) {
      print.dataset.bound = "1";
      print.addEventListener("click", () => window.print());
    }
  }

  function live() {
    const lost = document.getElementById("live-lost");
    const source = new EventSource("/live");
    source.addEventListener("change", (event) => {
      const doc = JSON.parse(event.data);
      body.dataset.positions = JSON.stringify(doc.positions);
      refresh();
    });
    source.addEventListener("open", () => { if (lost) lost.hidden = true; });
    source.addEventListener("error", () => { if (lost) lost.hidden = false; });
  }

  bind();
  if (body.dataset.live === "1") {
    live();
    setInterval(refresh, 30000); // times inside and overdue move on without any event
  }
})();
