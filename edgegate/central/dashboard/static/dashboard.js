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

  // The live stream. A browser reconnects an EventSource by itself only after a lost
  // connection, never after a refusal (503 when the server has too many streams): then this
  // reconnects, waiting 1 s, 2 s, 4 s... up to 30 s. A stream the server ended because a newer
  // page of the same login took its place ("displaced") reconnects when this page is looked
  // at again, or after 30 s.
  let source = null;
  let timer = null;
  let delay = 1000;

  function lost(isLost) {
    const note = document.getElementById("live-lost");
    if (note) note.hidden = !isLost;
    body.dataset.liveState = isLost ? "lost" : "open";
  }

  function reconnect(after) {
    if (source) { source.close(); source = null; }
    if (timer === null) timer = setTimeout(live, after);
  }

  function live() {
    timer = null;
    if (source) return;
    source = new EventSource("/live");
    source.addEventListener("change", (event) => {
      const doc = JSON.parse(event.data);
      body.dataset.positions = JSON.stringify(doc.positions);
      refresh();
    });
    source.addEventListener("open", () => { delay = 1000; lost(false); });
    source.addEventListener("displaced", () => { lost(true); reconnect(30000); });
    source.addEventListener("error", () => {
      lost(true);
      if (source && source.readyState === EventSource.CLOSED) {
        reconnect(delay);
        delay = Math.min(delay * 2, 30000);
      }
    });
  }

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && body.dataset.live === "1" && !source) {
      if (timer !== null) { clearTimeout(timer); timer = null; }
      live();
      refresh();
    }
  });

  bind();
  if (body.dataset.live === "1") {
    live();
    setInterval(refresh, 30000); // times inside and overdue move on without any event
  }
})();
