"""``edgegate replay report``: one self-contained HTML file for a safety officer.

The file makes no network request (inline CSS, JS and SVG; a Content-Security-Policy that
forbids any other source) and holds: a zoomable lane timeline (swim lanes per lane: loops,
arm, reads, decisions, commands, vehicle outcomes, faults), the vehicle cycles
(``replay.cycles``), the findings (``replay.incidents``) linked to the timeline, the chain's
verification, the log's head, the gate, zone, window, and when and by which version it was made.

The timeline's data is one compact JSON document (times in ms from the window's start, short
keys, one array per row) drawn by the page's script, so a busy day of ~50,000 events stays a
few MB. Everything from the log is data, never markup: the tables are ``html.escape``d and
the JSON is escaped so that no ``<`` can close its script element; the script only ever sets
``textContent``.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from edgegate import __version__
from edgegate.core import events as ev
from edgegate.core.codec import datetime_to_ns, ns_to_datetime
from edgegate.log import StoredEvent
from edgegate.log.chain import ChainVerifier
from edgegate.replay.cycles import Cycle, Step, group
from edgegate.replay.incidents import Incidents, find_incidents
from edgegate.replay.source import EventFilter, LogSource, Progress, Source

_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"


@dataclass(frozen=True, slots=True)
class Verification:
    """The chain's state as the report states it."""

    ok: bool
    events: int
    text: str
    bad_seq: int | None


def _last_seq_before(source: Source, end_ns: int) -> int | None:
    """The last seq of a log file with a wall time before ``end_ns`` (one scan in SQLite,
    no Python per row); None for central's copy, read to its end."""
    if not isinstance(source, LogSource):
        return None
    return source.reader.last_seq_before(end_ns)


def read_and_verify(
    source: Source, flt: EventFilter, end_ns: int, *, progress: Progress | None = None
) -> tuple[list[StoredEvent], Verification]:
    """The events ``flt`` admits, and the chain verified from seq 1 (or the anchor the last
    archive ``[log.retention]`` removed left) through the window's last
    event, in one pass over the log: every event shown is proven linked to the start of the
    log (for a log file, with its append-only triggers). The events after the window are
    left to ``replay verify``: on a week's log, reading and hashing all of it would take
    longer than the report itself."""
    upto = _last_seq_before(source, end_ns)
    verifier = ChainVerifier(source.gate_id, *source.anchor())
    keep = flt.row_filter()
    fault = None
    out: list[StoredEvent] = []
    read = 0
    for rows in source.batches():
        if upto is not None and rows[0][0] > upto:
            break
        if upto is not None and rows[-1][0] > upto:
            rows = [r for r in rows if r[0] <= upto]
        if fault is None:
            fault = verifier.feed(rows)
        for row in rows:
            if keep(row):
                stored = StoredEvent(*row)
                if flt.admits(stored):
                    out.append(stored)
        read += len(rows)
        if progress is not None:
            progress(read)
    missing = source.reader.missing_triggers() if isinstance(source, LogSource) else ()
    whose = "" if isinstance(source, LogSource) else "central's copy: "
    if fault is not None:
        text = f"FAILED: {whose}first bad seq {fault.seq}: {fault.problem}"
    elif missing:
        text = f"FAILED: append-only triggers missing: {', '.join(missing)}"
    else:
        first = verifier.last_seq - verifier.count + 1
        text = f"{whose}chain verified: {verifier.count} events, seq {first}..{verifier.last_seq}"
        head = source.head()[0]
        if head > verifier.last_seq:
            text += (
                f" (through the window; the {head - verifier.last_seq} later events:"
                " edgegate replay verify)"
            )
    ok = fault is None and not missing
    return out, Verification(ok, verifier.count, text, None if fault is None else fault.seq)


# --- the timeline's data ----------------------------------------------------------------------


class _Lanes:
    """Rows of the timeline, per lane (``""`` is the gate-wide row): spans and points with
    times in ms from ``t0``. Keys: L loops [t0, t1, loop, seq-on, seq-off], A arm [t0, t1,
    state, seq], R reads [t, seq, plate, confidence, reader], D decisions [t, seq, verdict,
    plate, reasons], C commands [t, seq, what, why], V vehicle outcomes [t, seq, kind, text],
    F faults [t0, t1, seq-fault, seq-recovered, text], G other events [t, seq, type, text].

    Times are elapsed time: from one event to the next of the same boot on the monotonic
    clock, so a wall-clock step neither tears nor folds the timeline; a new boot's first
    event is placed by its wall time (never before the previous event)."""

    def __init__(self, t0_ns: int) -> None:
        self.t0 = t0_ns
        self.end = 0  # the last event's time
        self._last: tuple[str, int, int] | None = None  # boot id, mono_ns and time of the last
        self.rows: dict[str, dict[str, list[list[Any]]]] = {}
        self.loops: dict[tuple[str, str], list[Any]] = {}
        self.arm: dict[str, list[Any]] = {}
        self.faults: dict[str, list[Any]] = {}

    def _row(self, lane: str | None) -> dict[str, list[list[Any]]]:
        key = lane or ""
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = {k: [] for k in "LARDCVFG"}
        return row

    def add(self, s: Step) -> None:
        t = self.end = self._time(s)
        e = s.event
        row = self._row(s.lane)
        lane = s.lane or ""
        match e:
            case ev.LoopChanged():
                key = (lane, str(e.loop))
                span = self.loops.get(key)
                if e.occupied and span is None:
                    span = self.loops[key] = [t, None, str(e.loop)[0], s.seq, None]
                    row["L"].append(span)
                elif not e.occupied:
                    if span is None:  # a clear state (at start), or occupied before the window
                        row["L"].append([t, t, str(e.loop)[0], None, s.seq])
                    else:
                        span[1], span[4] = t, s.seq
                        del self.loops[key]
            case ev.BarrierStateChanged():
                last = self.arm.get(lane)
                if last is not None:
                    last[1] = t
                span = self.arm[lane] = [t, None, str(e.state), s.seq]
                row["A"].append(span)
            case ev.PlateRead():
                row["R"].append([t, s.seq, e.plate, round(e.confidence, 2), e.reader])
            case ev.AccessDecided():
                row["D"].append([t, s.seq, e.verdict, e.plate, ", ".join(e.reasons)])
            case ev.BarrierCommanded():
                row["C"].append([t, s.seq, str(e.command), e.reason])
            case ev.ManualAction():
                row["C"].append([t, s.seq, f"manual {e.action}", f"{e.operator}: {e.reason}"])
            case ev.DeviceFault():
                span = [t, None, s.seq, None, f"{e.device} {e.code}: {e.message}"]
                self.faults.setdefault(e.device, span)
                row["F"].append(span)
            case ev.DeviceRecovered():
                span = self.faults.pop(e.device, None)
                if span is None:
                    row["F"].append([t, t, None, s.seq, f"{e.device} recovered"])
                else:
                    span[1], span[3] = t, s.seq
            case (
                ev.VehiclePassed()
                | ev.VehicleBackedOut()
                | ev.TailgateSuspected()
                | ev.PlateNotRead()
                | ev.GuardWaitExpired()
                | ev.AdmissionNotOpened()
            ):
                row["V"].append([t, s.seq, s.type.split(".")[-1], s.summary()])
            case _:
                row["G"].append([t, s.seq, s.type, s.summary()])

    def _time(self, s: Step) -> int:
        last = self._last
        if last is not None and last[0] == s.boot_id:
            t = last[2] + (s.mono_ns - last[1]) // 1_000_000
        else:
            t = (s.wall_ns - self.t0) // 1_000_000
            if last is not None:
                t = max(t, last[2])
        self._last = (s.boot_id, s.mono_ns, t)
        return t

    def data(self) -> list[dict[str, Any]]:
        """The rows, lanes sorted (gate-wide first); spans still open end with the last event
        (what came after it is not known)."""
        for row in self.rows.values():
            for key in "LAF":
                for span in row[key]:
                    if span[1] is None:
                        span[1] = self.end
        return [{"id": k, **self.rows[k]} for k in sorted(self.rows)]


# --- the page ---------------------------------------------------------------------------------


def _ms(v: float | None) -> str:
    return "" if v is None else f"{v / 1000:.1f}"


def _seqs(seqs: Iterable[int]) -> str:
    return " ".join(str(s) for s in seqs)


def _cycle_row(c: Cycle, tz: ZoneInfo) -> str:
    e = html.escape
    plate = c.plate or "?"
    flags = " ".join(c.flags)
    seqs = [s.seq for s in c.steps]
    return (
        f'<tr data-seqs="{_seqs(seqs)}"><td>{c.start.time(tz):%H:%M:%S}</td>'
        f"<td>{e(c.lane)}</td><td>{e(plate)}</td><td>{e(' '.join(c.verdicts()))}</td>"
        f"<td>{e(c.outcome)}{f' <b>{e(flags)}</b>' if flags else ''}</td>"
        f"<td>{_ms(c.timings.get('decision_ms'))}</td><td>{_ms(c.timings.get('arm_rise_ms'))}"
        f"</td><td>{_ms(c.timings.get('under_arm_ms'))}</td>"
        f"<td>{c.start.seq}–{c.end.seq}</td></tr>"
    )


def render(
    *,
    gate: str,
    tz: ZoneInfo,
    start_ns: int,
    end_ns: int,
    lanes: list[dict[str, Any]],
    cycles: list[Cycle],
    incidents: Incidents,
    verification: Verification,
    head: tuple[int, bytes],
    made: datetime,
    events: int,
) -> str:
    """The HTML document."""
    e = html.escape

    def when(ns: int) -> str:
        return f"{ns_to_datetime(ns).astimezone(tz):%Y-%m-%d %H:%M:%S}"

    findings = "\n".join(
        f'<li class="finding {e(f.severity)}" data-seqs="{_seqs(f.seqs)}" '
        f'data-t="{(f.wall_ns - start_ns) // 1_000_000}" tabindex="0">'
        f"<span class=sev>{e(f.severity)}</span> {when(f.wall_ns)} {e(f.lane or '')} "
        f"<b>{e(f.kind)}</b> <span class=seqs>seqs {e(_seqs(f.seqs))}</span>"
        f"<br>{e(f.summary)}</li>"
        for f in incidents.findings
    )
    meta = {
        "tz": tz.key,
        "t0": start_ns // 1_000_000,
        "span": (end_ns - start_ns) // 1_000_000,
        "lanes": lanes,
    }
    data = (
        json.dumps(meta, ensure_ascii=False, separators=(",", ":"))
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
    )
    status = "ok" if verification.ok else "bad"
    rows = "\n".join(_cycle_row(c, tz) for c in cycles)
    return f"""<!DOCTYPE html>
<html lang="en"><head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Gate {e(gate)} — replay report {when(start_ns)} to {when(end_ns)}</title>
<style>{_CSS}</style>
</head><body>
<header>
<h1>Gate <span id="gate">{e(gate)}</span>: replay report</h1>
<table class="facts">
<tr><th>Window</th><td id="window">{when(start_ns)} to {when(end_ns)} ({e(tz.key)})</td></tr>
<tr><th>Events in window</th><td>{events}</td></tr>
<tr><th>Verification</th><td id="verify" class="{status}">{e(verification.text)}</td></tr>
<tr><th>Log head</th><td id="head">seq {head[0]}, hash <code>{head[1].hex()}</code></td></tr>
<tr><th>Made</th><td id="made">{made:%Y-%m-%d %H:%M:%S %Z} by edgegate {e(__version__)}</td></tr>
</table>
</header>
<section id="tl-section">
<h2>Timeline</h2>
<div class="tools"><button id="zin" type="button">+ zoom in</button>
<button id="zout" type="button">− zoom out</button><button id="left" type="button">◀</button>
<button id="right" type="button">▶</button><button id="fit" type="button">whole window</button>
<span id="range"></span></div>
<p class="hint">Mouse wheel: zoom at the pointer; drag: pan. Click an element for its event.</p>
<div id="tlwrap"><svg id="timeline" xmlns="http://www.w3.org/2000/svg"></svg></div>
<div id="detail" aria-live="polite"></div>
</section>
<section>
<h2>Findings ({len(incidents.findings)})</h2>
<p class="hint">Click a finding to show its events on the timeline.</p>
<ul id="findings">{findings}</ul>
</section>
<section>
<h2>Vehicle cycles ({len(cycles)})</h2>
<table id="cycles"><thead><tr><th>time</th><th>lane</th><th>plate</th><th>decision</th>
<th>outcome</th><th>decide s</th><th>arm rise s</th><th>under arm s</th><th>seqs</th></tr>
</thead><tbody>
{rows}
</tbody></table>
</section>
<script type="application/json" id="data">{data}</script>
<script>{_JS}</script>
</body></html>
"""


def build_report(
    source: Source,
    tz: ZoneInfo,
    start: datetime,
    end: datetime,
    *,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> str:
    """The report of ``source``'s events in ``[start, end)`` as one HTML document."""
    start_ns, end_ns = datetime_to_ns(start), datetime_to_ns(end)
    stored, verification = read_and_verify(
        source, EventFilter(start, end), end_ns, progress=progress
    )
    lanes = _Lanes(start_ns)
    cycles: list[Cycle] = []
    steps: list[Step] = []
    for item in group(stored):
        if isinstance(item, Cycle):
            cycles.append(item)
            steps.extend(item.steps)
        else:
            steps.append(item.step)
    # group hands out cycles in order of their first event; the rows need log order.
    steps.sort(key=lambda s: s.seq)
    for s in steps:
        lanes.add(s)
    return render(
        gate=source.gate_id,
        tz=tz,
        start_ns=start_ns,
        end_ns=end_ns,
        lanes=lanes.data(),
        cycles=cycles,
        incidents=find_incidents(stored, tz=tz),
        verification=verification,
        head=source.head(),
        made=(now or datetime.now(tz)).astimezone(tz),
        events=len(stored),
    )


def write_report(
    source: Source,
    out: Path,
    tz: ZoneInfo,
    start: datetime,
    end: datetime,
    *,
    progress: Progress | None = None,
) -> int:
    """Write the report to ``out``; its size in bytes."""
    data = build_report(source, tz, start, end, progress=progress).encode("utf-8")
    out.write_bytes(data)
    return len(data)


_CSS = """
body{font:14px/1.4 system-ui,"Noto Sans CJK SC","Microsoft YaHei",sans-serif;margin:1em 2em;
color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.5em}
table{border-collapse:collapse}td,th{padding:2px 8px;text-align:left;vertical-align:top}
.facts th{color:#555;font-weight:normal}
#verify.ok{color:#176b2c;font-weight:bold}#verify.bad{color:#b00020;font-weight:bold}
code{font-size:12px;word-break:break-all}
.tools button{font:inherit;margin-right:4px}#range{margin-left:1em;color:#555}
.hint{color:#777;font-size:12px;margin:4px 0}
#tlwrap{border:1px solid #ccc;overflow:hidden;cursor:grab;user-select:none}
#timeline{display:block;width:100%}
#timeline text{font-size:11px;fill:#333}
#timeline .grid{stroke:#eee}#timeline .lanesep{stroke:#999}
#timeline .ev{cursor:pointer}
#timeline .sel{stroke:#000;stroke-width:2px}
#detail{min-height:2.8em;padding:4px;background:#f6f6f6;margin-top:4px;white-space:pre-wrap}
#findings{list-style:none;padding:0}
.finding{padding:4px 6px;margin:2px 0;border-left:4px solid #999;cursor:pointer}
.finding:hover,.finding.active{background:#fff6d5}
.finding.critical{border-color:#b00020}.finding.warning{border-color:#e69500}
.finding.notice{border-color:#1f6fb2}.sev{display:inline-block;width:5.5em;color:#555}
.seqs{color:#777;font-size:12px}
#cycles td,#cycles th{border-bottom:1px solid #eee;font-size:13px}
#cycles tbody tr{cursor:pointer}#cycles tbody tr:hover{background:#f3f7ff}
"""

_JS = r"""
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("data").textContent);
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.getElementById("timeline");
  const detail = document.getElementById("detail");
  const LEFT = 120, ROW = 18, PAD = 6;
  // One swim lane per lane: rows of spans (loops, arm, faults) and points.
  const ROWS = [
    ["L", "arming loop", "a"], ["L", "safety loop", "s"], ["L", "exit loop", "e"], ["A", "arm"],
    ["R", "reads"], ["D", "decisions"], ["C", "commands"], ["V", "vehicle"], ["F", "faults"],
    ["G", "other"]];
  const COLOURS = {
    a: "#7aa6d8", s: "#e0a030", e: "#8fc98f",
    up: "#2e8b57", down: "#bbbbbb", moving: "#f0c040", fault: "#d03030", unknown: "#999",
    allow: "#2e8b57", deny: "#c0392b", confirm: "#e69500"};
  // Times in the gate's zone (not the reader's), as 2026-11-28 08:30:12.
  const opts = {hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
    year: "numeric", month: "2-digit", day: "2-digit"};
  let fmt;
  try { fmt = new Intl.DateTimeFormat("en-CA", {...opts, timeZone: D.tz}); }
  catch (e) { fmt = new Intl.DateTimeFormat("en-CA", opts); }
  const when = (t) => {
    const p = {};
    for (const x of fmt.formatToParts(new Date(D.t0 + t))) p[x.type] = x.value;
    return p.year + "-" + p.month + "-" + p.day + " " + p.hour + ":" + p.minute + ":" + p.second;
  };
  // seq -> [time, row elements] for findings and selection.
  const seqTime = new Map();
  let view = [0, Math.max(D.span, 1)], selected = new Set(), first = Infinity, last = -Infinity;
  const layout = [];  // per lane: its rows that hold anything
  for (const lane of D.lanes) {
    // A row's items: the loops' row split by loop.
    const rows = ROWS.map(([k, title, loop]) =>
      [k, title, loop ? lane[k].filter((it) => it[2] === loop) : lane[k]])
      .filter((r) => r[2].length);
    layout.push([lane, rows]);
    for (const [k, , items] of rows) for (const it of items) {
      const spans = (k === "L" || k === "A" || k === "F");
      const seqs = k === "L" ? [it[3], it[4]] : k === "F" ? [it[2], it[3]] :
        k === "A" ? [it[3]] : [it[1]];
      for (const s of seqs) if (s !== null && !seqTime.has(s)) seqTime.set(s, it[0]);
      it.seqs = seqs.filter((s) => s !== null);
      it.t0 = it[0]; it.t1 = spans ? it[1] : it[0];
      first = Math.min(first, it.t0); last = Math.max(last, it.t1);
    }
  }
  const el = (name, attrs, parent) => {
    const n = document.createElementNS(NS, name);
    for (const k in attrs) n.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(n);
    return n;
  };
  const label = (k, it) => {
    switch (k) {
      case "L": return ({a: "arming", s: "safety", e: "exit"})[it[2]] + " loop occupied";
      case "A": return "arm " + it[2];
      case "R": return "read " + it[2] + " (" + it[3] + ") by " + it[4];
      case "D": return it[2] + " " + it[3] + ": " + it[4];
      case "C": return it[2] + " (" + it[3] + ")";
      case "F": return it[4];
      default: return it[3];
    }
  };
  const colour = (k, it) => k === "L" ? COLOURS[it[2]] : k === "A" ? COLOURS[it[2]] || "#999" :
    k === "D" ? COLOURS[it[2]] || "#555" : k === "F" ? "#d03030" : k === "V" ?
    (it[2] === "passed" ? "#2e8b57" : "#c0392b") : k === "R" ? "#1f6fb2" :
    k === "C" ? "#6a3d9a" : "#777";
  function draw() {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const width = svg.clientWidth || 1000, plot = width - LEFT - PAD;
    const scale = plot / (view[1] - view[0]);
    const x = (t) => LEFT + (t - view[0]) * scale;
    let y = 20;
    // Time axis: about eight ticks at a round step.
    const steps = [1e3, 2e3, 5e3, 1e4, 3e4, 6e4, 12e4, 3e5, 6e5, 18e5, 36e5, 72e5, 144e5];
    const step = steps.find((s) => (view[1] - view[0]) / s <= 8) || 288e5;
    const grid = el("g", {}, svg);
    for (let t = Math.ceil(view[0] / step) * step; t <= view[1]; t += step) {
      el("line", {x1: x(t), x2: x(t), y1: 14, y2: 10000, class: "grid"}, grid);
      const tx = el("text", {x: x(t) + 2, y: 11}, grid);
      tx.textContent = when(t).slice(11, step < 6e4 ? 19 : 16);
    }
    for (const [lane, rows] of layout) {
      el("line", {x1: 0, x2: width, y1: y, y2: y, class: "lanesep"}, svg);
      const name = el("text", {x: 4, y: y + 13, "font-weight": "bold"}, svg);
      name.textContent = lane.id || "gate";
      y += 16;
      for (const [k, title, items] of rows) {
        const t = el("text", {x: 14, y: y + 12}, svg);
        t.textContent = title;
        const g = el("g", {"data-row": k, "data-lane": lane.id}, svg);
        let lastPx = -1;
        for (const it of items) {
          if (it.t1 < view[0] || it.t0 > view[1]) continue;
          const x0 = Math.max(x(it.t0), LEFT), x1 = Math.min(x(it.t1), width);
          const sel = it.seqs.some((s) => selected.has(s));
          // Many events in one pixel: draw the first (a selected one always).
          if (!sel && x1 - x0 < 1 && Math.floor(x0) === lastPx) continue;
          lastPx = Math.floor(x0);
          const point = it.t0 === it.t1;
          const n = point
            ? el("rect", {x: x0 - 2, y: y + 2, width: 4, height: ROW - 6})
            : el("rect", {x: x0, y: y + 3, width: Math.max(x1 - x0, 1), height: ROW - 8});
          n.setAttribute("fill", colour(k, it));
          n.setAttribute("class", "ev" + (sel ? " sel" : ""));
          n.setAttribute("data-seqs", it.seqs.join(" "));
          const text = when(it.t0) + "  seq " + it.seqs.join(", ") + "  " + label(k, it);
          el("title", {}, n).textContent = text;
          n.addEventListener("click", () => { detail.textContent = text; });
          g.appendChild(n);
        }
        y += ROW;
      }
    }
    svg.setAttribute("height", y + 4);
    svg.setAttribute("viewBox", "0 0 " + width + " " + (y + 4));
    document.getElementById("range").textContent = when(view[0]) + " – " + when(view[1]);
  }
  function setView(a, b) {
    const min = 200, span = Math.max(D.span, 1);
    if (b - a < min) { const m = (a + b) / 2; a = m - min / 2; b = m + min / 2; }
    if (b - a > span) { a = 0; b = span; }
    if (a < 0) { b -= a; a = 0; }
    if (b > span) { a -= b - span; b = span; }
    view = [a, b];
    draw();
  }
  const zoom = (f, at) => {
    const c = at === undefined ? (view[0] + view[1]) / 2 : at;
    setView(c - (c - view[0]) * f, c + (view[1] - c) * f);
  };
  const pan = (f) => { const d = (view[1] - view[0]) * f; setView(view[0] + d, view[1] + d); };
  document.getElementById("zin").onclick = () => zoom(0.5);
  document.getElementById("zout").onclick = () => zoom(2);
  document.getElementById("left").onclick = () => pan(-0.5);
  document.getElementById("right").onclick = () => pan(0.5);
  document.getElementById("fit").onclick = () => setView(0, D.span);
  const tAt = (clientX) => {
    const r = svg.getBoundingClientRect(), plot = r.width - LEFT - PAD;
    return view[0] + (clientX - r.left - LEFT) / plot * (view[1] - view[0]);
  };
  svg.addEventListener("wheel", (e) => {
    e.preventDefault();
    zoom(e.deltaY < 0 ? 0.8 : 1.25, tAt(e.clientX));
  }, {passive: false});
  let dragging = null;
  svg.addEventListener("mousedown", (e) => { dragging = [e.clientX, view[0], view[1]]; });
  window.addEventListener("mouseup", () => { dragging = null; });
  window.addEventListener("mousemove", (e) => {
    if (!dragging) return;
    const r = svg.getBoundingClientRect();
    const dt = (e.clientX - dragging[0]) / (r.width - LEFT - PAD) * (dragging[2] - dragging[1]);
    if (Math.abs(dt) > 0) setView(dragging[1] - dt, dragging[2] - dt);
  });
  window.addEventListener("resize", draw);
  // Show seqs: select them and zoom the timeline to them (with a margin).
  function show(seqs, fallback) {
    selected = new Set(seqs);
    const ts = seqs.filter((s) => seqTime.has(s)).map((s) => seqTime.get(s));
    if (!ts.length && fallback !== undefined) ts.push(fallback);
    if (ts.length) {
      const a = Math.min(...ts), b = Math.max(...ts), m = Math.max((b - a) * 0.3, 5000);
      setView(a - m, b + m);
    } else draw();
    document.getElementById("tl-section").scrollIntoView({behavior: "instant", block: "start"});
  }
  const seqsOf = (n) => (n.dataset.seqs || "").split(" ").filter(Boolean).map(Number);
  for (const li of document.querySelectorAll("#findings .finding")) {
    const go = () => {
      for (const o of document.querySelectorAll(".finding.active")) o.classList.remove("active");
      li.classList.add("active");
      show(seqsOf(li), Number(li.dataset.t));
      detail.textContent = li.innerText;
    };
    li.addEventListener("click", go);
    li.addEventListener("keydown", (e) => { if (e.key === "Enter") go(); });
  }
  document.querySelector("#cycles tbody").addEventListener("click", (e) => {
    const tr = e.target.closest("tr");
    if (tr) show(seqsOf(tr));
  });
  // Open on the events (a window is often wider than what it holds).
  if (first <= last) {
    const m = Math.max((last - first) * 0.02, 1000);
    setView(first - m, last + m);
  } else draw();
})();
"""
