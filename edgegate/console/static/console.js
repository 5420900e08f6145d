"use strict";
// The guard's console: the live view from /api/live, actions to /api/actions.
(async function () {
  const i18n = window.edgegateI18n;
  const t = i18n.t;
  let me = null;          // {account, role, csrf_token}
  let view = null;        // the latest GateView
  let clockOffsetMs = 0;  // gate's wall clock minus ours, so waits tick in the gate's time
  let dialogAction = null;

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(function ([k, v]) {
      if (v === null || v === undefined || v === false) return;
      if (k === "text") node.textContent = v;
      else if (k === "className") node.className = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    });
    (children || []).forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  }

  function row(labelKey, value, field) {
    return el("div", { className: "row" }, [
      el("span", { className: "label", text: t(labelKey) }),
      el("span", { className: "value", "data-field": field, text: value }),
    ]);
  }

  function gateNow() { return Date.now() + clockOffsetMs; }

  function duration(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    const m = Math.floor(s / 60);
    return m > 0 ? m + " " + t("ui.minutes") + " " + (s % 60) + " " + t("ui.seconds")
                 : s + " " + t("ui.seconds");
  }

  function reasons(list) {
    return el("ul", { className: "reasons", "data-field": "reasons" }, list.map(function (r) {
      return el("li", { "data-reason": r, text: t("reason." + r, r) });
    }));
  }

  function button(action, lane, extra) {
    return el("button", Object.assign({
      type: "button", "data-action": action, "data-lane": lane, text: t("action." + action),
    }, extra || {}));
  }

  function loop(name, on) {
    return el("span", { className: "loop" + (on ? " on" : ""), "data-loop": name,
                        "data-occupied": on ? "true" : "false", text: t("loop." + name) });
  }

  function pendingBlock(lane, p) {
    const d = p.decision;
    const items = [
      el("h3", { text: t("ui.pending") }),
      el("div", { className: "plate", "data-field": "plate", text: d.plate || "—" }),
      row("ui.confidence", d.confidence === null ? "—" : Math.round(d.confidence * 100) + "%", "confidence"),
      row("ui.colour", d.colour ? t("colour." + d.colour, d.colour) : "—", "colour"),
    ];
    if (d.matched_plate) items.push(row("ui.matched", d.matched_plate, "matched-plate"));
    if (d.credential) items.push(row("ui.credential", d.credential, "credential"));
    items.push(el("div", { className: "label", text: t("ui.reasons") }), reasons(d.reasons));
    items.push(el("div", { className: "row" }, [
      el("span", { className: "label", text: t("ui.waited") }),
      el("span", { className: "value tick", "data-field": "waited", "data-since-ms": Math.floor(p.waiting_since_ns / 1e6) }),
    ]));
    items.push(el("div", { className: "row" }, [
      el("span", { className: "label", text: t("ui.gives_up") }),
      el("span", { className: "value tick", "data-field": "gives-up", "data-until-ms": Math.floor(p.give_up_at_ns / 1e6) }),
    ]));
    items.push(el("div", { className: "buttons" }, [
      button("confirm", lane.lane, { className: "ok", "data-decision-seq": d.seq }),
      button("refuse", lane.lane, { className: "danger", "data-decision-seq": d.seq }),
      button("correct", lane.lane, { className: "secondary", "data-decision-seq": d.seq }),
    ]));
    return el("section", { className: "pending", "data-pending": d.seq }, items);
  }

  function decisionItem(d) {
    const time = new Date(d.at_ns / 1e6).toLocaleTimeString(i18n.lang() === "en" ? "en-GB" : "zh-CN");
    return el("li", { className: "decision verdict-" + d.verdict, "data-decision": d.seq }, [
      el("span", { className: "time", text: time }),
      el("span", { className: "plate-small", text: d.plate || "—" }),
      el("span", { className: "verdict", text: t("verdict." + d.verdict, d.verdict) }),
      el("span", { className: "why", text: d.reasons.map(function (r) { return t("reason." + r, r); }).join("；") }),
      d.corrected_by ? el("span", { className: "by", text: t("ui.corrected_by") + ": " + d.corrected_by }) : null,
    ]);
  }

  function laneCard(lane) {
    const card = el("article", {
      className: "lane state-" + lane.state + (lane.pending ? " has-pending" : ""),
      "data-lane": lane.lane, "data-state": lane.state,
    }, [
      el("h2", {}, [
        el("span", { text: lane.lane }),
        el("span", { className: "direction", text: t("direction." + lane.direction, lane.direction) }),
        lane.evacuation ? el("span", { className: "tag", text: t("ui.evacuation") }) : null,
      ]),
      el("div", { className: "state", "data-field": "state", text: t("state." + lane.state, lane.state) }),
      el("div", { className: "loops", "data-field": "loops" }, [
        loop("arming", lane.arming), loop("safety", lane.safety),
        lane.has_exit_loop ? loop("exit", lane.exit) : null,
      ]),
      row("ui.arm", t("arm." + lane.arm, lane.arm), "arm"),
      lane.held ? el("div", { className: "tag held", "data-field": "held", text: t("ui.held") }) : null,
      lane.faults.length ? el("ul", { className: "faults", "data-field": "faults" },
        lane.faults.map(function (f) { return el("li", { text: f }); })) : null,
      lane.pending ? pendingBlock(lane, lane.pending) : el("p", { className: "quiet", text: t("ui.no_pending") }),
      el("div", { className: "buttons" }, [
        lane.held ? button("release", lane.lane, { className: "secondary" })
                  : button("open-hold", lane.lane, { className: "secondary" }),
      ]),
      el("h3", { text: t("ui.recent") }),
      el("ol", { className: "recent", "data-field": "recent" }, lane.recent.map(decisionItem)),
    ]);
    return card;
  }

  function render() {
    if (!view) return;
    document.getElementById("gate-name").textContent = view.gate + " · " + t("kind." + view.kind, view.kind);
    const mode = document.getElementById("gate-mode");
    mode.textContent = t("ui.mode") + ": " + t("mode." + view.mode, view.mode);
    mode.setAttribute("data-mode", view.mode);
    document.getElementById("incident-banner").hidden = view.mode !== "incident";
    const supervisor = me && me.role === "supervisor";
    document.getElementById("incident-on").hidden = !supervisor || view.mode === "incident";
    document.getElementById("incident-off").hidden = !supervisor || view.mode !== "incident";
    const lanes = document.getElementById("lanes");
    lanes.replaceChildren.apply(lanes, view.lanes.map(laneCard));
    lanes.setAttribute("data-version", view.version);
    tick();
  }

  function tick() {
    const now = gateNow();
    document.querySelectorAll("[data-since-ms]").forEach(function (node) {
      node.textContent = duration(now - Number(node.getAttribute("data-since-ms")));
    });
    document.querySelectorAll("[data-until-ms]").forEach(function (node) {
      node.textContent = duration(Number(node.getAttribute("data-until-ms")) - now);
    });
  }

  function showOutcome(ok, text) {
    const box = document.getElementById("outcome");
    box.textContent = text;
    box.className = "banner " + (ok ? "ok" : "danger");
    box.hidden = false;
    clearTimeout(showOutcome.timer);
    showOutcome.timer = setTimeout(function () { box.hidden = true; }, 6000);
  }

  // ---- actions ----
  const NEEDS_REASON = ["refuse", "open-hold", "release", "incident-on", "incident-off"];

  function openDialog(action, lane, seq) {
    dialogAction = { action: action, lane: lane, seq: seq };
    document.getElementById("dialog-title").textContent = t("action." + action);
    document.getElementById("dialog-lane").textContent = lane || "";
    const correcting = action === "correct";
    document.getElementById("dialog-plate").hidden = !correcting;
    document.getElementById("dialog-plate-label").hidden = !correcting;
    document.getElementById("dialog-plate").value = "";
    document.getElementById("dialog-reason").value = "";
    document.getElementById("dialog-reason-label").textContent =
      t(NEEDS_REASON.includes(action) ? "ui.reason" : "ui.reason.optional");
    document.getElementById("dialog-error").hidden = true;
    document.getElementById("action-dialog").hidden = false;
    document.getElementById(correcting ? "dialog-plate" : "dialog-reason").focus();
  }

  function closeDialog() {
    dialogAction = null;
    document.getElementById("action-dialog").hidden = true;
  }

  function dialogError(key) {
    const box = document.getElementById("dialog-error");
    box.textContent = t(key);
    box.hidden = false;
  }

  async function submitDialog(event) {
    event.preventDefault();
    if (!dialogAction) return;
    const a = dialogAction;
    const reason = document.getElementById("dialog-reason").value.trim();
    const plate = document.getElementById("dialog-plate").value.trim().toUpperCase();
    if (NEEDS_REASON.includes(a.action) && !reason) return dialogError("ui.reason.required");
    if (a.action === "correct" && !plate) return dialogError("ui.plate.required");
    const body = { action: a.action, reason: reason };
    if (a.lane) body.lane = a.lane;
    if (a.seq) body.decision_seq = a.seq;
    if (a.action === "correct") body.plate = plate;
    closeDialog();
    let answer = { ok: false, code: "error", message: "" };
    try {
      const response = await fetch("/api/actions", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": me.csrf_token },
        body: JSON.stringify(body),
      });
      if (response.status === 401) { location.href = "/login"; return; }
      answer = await response.json();
    } catch (err) {
      answer.message = String(err);
    }
    // A correction is decided again by the policy: its outcome is the new decision the lane
    // shows, which may well be a refusal, so "done" would mislead.
    const said = answer.ok && a.action === "correct" ? t("ui.correct.sent")
      : t("code." + answer.code, answer.code);
    const text = t("action." + a.action) + ": " + said +
      (answer.ok || !answer.message ? "" : " (" + answer.message + ")");
    showOutcome(answer.ok, text);
  }

  document.addEventListener("click", function (event) {
    const target = event.target.closest("button[data-action]");
    if (!target) return;
    const seq = target.getAttribute("data-decision-seq");
    openDialog(target.getAttribute("data-action"), target.getAttribute("data-lane"),
               seq ? Number(seq) : null);
  });
  document.getElementById("action-form").addEventListener("submit", submitDialog);
  document.getElementById("dialog-cancel").addEventListener("click", closeDialog);

  document.getElementById("logout").addEventListener("click", async function () {
    try {
      await fetch("/logout", { method: "POST", credentials: "same-origin",
                               headers: { "X-CSRF-Token": me.csrf_token } });
    } finally {
      location.href = "/login";
    }
  });

  // ---- live updates: one WebSocket, reconnecting with backoff ----
  let delay = 500;
  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(scheme + location.host + "/api/live");
    ws.addEventListener("open", function () { delay = 500; });
    ws.addEventListener("message", function (event) {
      const msg = JSON.parse(event.data);
      if (msg.type !== "view") return;
      clockOffsetMs = msg.now_ns / 1e6 - Date.now();
      view = msg.view;
      document.getElementById("connection-lost").hidden = true;
      render();
    });
    ws.addEventListener("close", function (event) {
      if (event.code === 4401) { location.href = "/login"; return; }
      document.getElementById("connection-lost").hidden = false;
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10000);
    });
  }

  await i18n.load();
  i18n.onChange(render);
  const response = await fetch("/api/me", { credentials: "same-origin" });
  if (response.status === 401) { location.href = "/login"; return; }
  me = await response.json();
  document.getElementById("who").textContent = me.account + " · " + t("role." + me.role);
  i18n.onChange(function () {
    document.getElementById("who").textContent = me.account + " · " + t("role." + me.role);
  });
  setInterval(tick, 1000);
  connect();
})();
