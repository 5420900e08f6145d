"""The dashboard's pages as HTML, rendered on the server from the store's answers.

Every value from the store or the request is escaped here (``esc``); pages load only
``/static/dashboard.css`` and ``/static/dashboard.js`` (no inline script or style: the
Content-Security-Policy forbids them). A page's changing part is ``<div id="content">``:
the script replaces it with the fragment the server renders when the store changes.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from edgegate.central.dashboard.i18n import text
from edgegate.central.store import (
    AdmissionReview,
    DeadLetter,
    DeadLetterDrops,
    GateState,
    ParkOverstay,
    VehicleInside,
)
from edgegate.central.store.blacklist import OPEN, Proposal
from edgegate.core.domain import VehicleCategory

NAV = ("park", "gates", "roll-call", "events", "proposals", "reviews", "dead-letters")
PATHS = {
    "park": "/",
    "gates": "/gates",
    "roll-call": "/roll-call",
    "events": "/events",
    "proposals": "/proposals",
    "reviews": "/reviews",
    "dead-letters": "/dead-letters",
}


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


@dataclass(frozen=True, slots=True)
class View:
    """Who is looking, in which language and zone, at what time."""

    lang: str
    zone: ZoneInfo
    now_ns: int
    account: str = ""
    role: str = ""
    csrf: str = ""

    def t(self, key: str, **values: object) -> str:
        return esc(text(self.lang, key, **values))

    def time(self, ns: int | None) -> str:
        if ns is None:
            return "-"
        return f"{datetime.fromtimestamp(ns / 1e9, self.zone):%Y-%m-%d %H:%M:%S}"


def duration(ns: int) -> str:
    """``ns`` as ``1h05m`` or ``4m09s``."""
    seconds = max(0, ns) // 10**9
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def category(v: View, value: VehicleCategory | None) -> str:
    name = "unknown" if value is None else value.value
    danger = " danger" if value is not None and value.dangerous else ""
    return f'<span class="cat cat-{esc(name)}{danger}">{v.t("cat." + name)}</span>'


def _table(head: Sequence[str], rows: Iterable[str], cls: str = "") -> str:
    cells = "".join(f"<th>{h}</th>" for h in head)
    body = "".join(rows)
    return f'<table class="{cls}"><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>'


def _cells(*values: str) -> str:
    return "".join(f"<td>{value}</td>" for value in values)


# --- the frame ------------------------------------------------------------------------------


def page(
    v: View, name: str, content: str, *, live: bool, query: Mapping[str, str] | None = None
) -> str:
    """A whole page: the frame (navigation, language switch, logout) around ``content``;
    the switch keeps the page's ``query`` (an event search)."""
    nav = "".join(
        f'<a href="{PATHS[n]}"{" class=current" if n == name else ""} id="nav-{n}">'
        f"{v.t('nav.' + n)}</a>"
        for n in NAV
    )
    other = "en" if v.lang != "en" else "zh"
    kept = {k: val for k, val in (query or {}).items() if k != "lang"}
    switch = esc("?" + urlencode({**kept, "lang": other}))
    return f"""<!doctype html>
<html lang="{"en" if v.lang == "en" else "zh-CN"}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{v.t("nav." + name)} · {v.t("title")}</title>
<link rel="stylesheet" href="/static/dashboard.css">
<script src="/static/dashboard.js" defer></script>
</head>
<body data-page="{esc(name)}" data-live="{"1" if live else "0"}">
<header class="topbar">
  <h1>{v.t("title")}</h1>
  <nav>{nav}</nav>
  <span class="who" id="who">{esc(v.account)} ({esc(v.role)})</span>
  <a class="button small" id="lang-switch" href="{switch}">{v.t("switch")}</a>
  <form method="post" action="/logout" class="inline">
    <input type="hidden" name="csrf" value="{esc(v.csrf)}">
    <button type="submit" class="small secondary" id="logout">{v.t("logout")}</button>
  </form>
</header>
<p id="live-lost" class="banner warn" hidden>{v.t("live.lost")}</p>
<div id="content">
{content}
</div>
</body>
</html>
"""


def _zoned(data: Any, zone: ZoneInfo) -> Any:
    """``data`` with its times (ISO 8601 strings with an offset, e.g. ``permit_until``) in
    the page's zone, as every other time on the page."""
    if isinstance(data, dict):
        return {k: _zoned(val, zone) for k, val in data.items()}
    if isinstance(data, list):
        return [_zoned(val, zone) for val in data]
    if isinstance(data, str) and 19 <= len(data) <= 40 and data[10:11] == "T":
        try:
            when = datetime.fromisoformat(data)
        except ValueError:
            return data
        if when.tzinfo is not None:
            return when.astimezone(zone).isoformat()
    return data


def incident_banner(v: View, gates: Sequence[GateState]) -> str:
    """The banner every page shows while any gate is in incident mode."""
    names = [g.gate for g in gates if g.mode == "incident"]
    if not names:
        return ""
    return (
        f'<p class="banner danger" id="incident-banner">{v.t("incident.banner")}'
        f"{esc(', '.join(names))}"
        f'<span class="no-print"> · <a href="/roll-call">{v.t("incident.see")}</a></span></p>'
    )


def stamp(v: View) -> str:
    return f'<p class="quiet" id="generated">{v.t("generated")} {v.time(v.now_ns)}</p>'


def login(lang: str, error: str | None) -> str:
    v = View(lang, ZoneInfo("UTC"), 0)
    other = "en" if lang != "en" else "zh"
    problem = ""
    if error in ("refused", "locked"):
        problem = f'<p id="login-error" class="error" role="alert">{v.t("login." + error)}</p>'
    return f"""<!doctype html>
<html lang="{"en" if lang == "en" else "zh-CN"}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{v.t("login.title")}</title>
<link rel="stylesheet" href="/static/dashboard.css">
</head>
<body class="login">
<header class="topbar">
  <h1>{v.t("login.title")}</h1>
  <a class="button small" id="lang-switch" href="/login?lang={other}">{v.t("switch")}</a>
</header>
<main>
  <form id="login-form" method="post" action="/login" autocomplete="off">
    {problem}
    <label for="account">{v.t("login.account")}</label>
    <input id="account" name="account" required autocapitalize="off" spellcheck="false"
      maxlength="64">
    <label for="password">{v.t("login.password")}</label>
    <input id="password" name="password" type="password" required maxlength="1024">
    <button type="submit" id="login-submit">{v.t("login.submit")}</button>
  </form>
</main>
</body>
</html>
"""


def error(lang: str, status: int, message: str, detail: str | None = None) -> str:
    """An error page saying ``message`` (in ``lang``), with ``detail`` (the English original
    of a translated message) beside it."""
    v = View(lang, ZoneInfo("UTC"), 0)
    beside = (
        ""
        if detail is None
        else f'\n<p class="detail" id="error-detail" lang="en">{esc(detail)}</p>'
    )

    return f"""<!doctype html>
<html lang="{"en" if lang == "en" else "zh-CN"}">
<head>
<meta charset="utf-8">
<title>{status} · {v.t("title")}</title>
<link rel="stylesheet" href="/static/dashboard.css">
</head>
<body class="error-page">
<main>
<h1>{status} {v.t("error.title")}</h1>
<p class="error" id="error-message">{esc(message)}</p>{beside}
<p><a href="/">{v.t("error.back")}</a></p>
</main>
</body>
</html>
"""


# --- the park now ---------------------------------------------------------------------------


def _vehicle_rows(
    v: View, inside: Sequence[VehicleInside], overdue: Mapping[str, ParkOverstay], numbered: bool
) -> list[str]:
    rows = []
    for i, car in enumerate(inside, 1):
        over = overdue.get(car.plate)
        late = ""
        if over is not None:
            late = f"{v.t('limit.' + over.limit)} {duration(over.exceeded_ns)}"
        if car.unauthorised:
            late = f"{late} {v.t('unauthorised')}".strip()
        cells = _cells(
            f'<span class="plate">{esc(car.plate)}</span>',
            category(v, car.category),
            esc(car.entry_gate),
            esc(car.lane or "-"),
            v.time(car.entered_at_ns),
            duration(v.now_ns - car.entered_at_ns),
            v.time(car.permit_until_ns),
            f'<span class="late">{late}</span>',
        )
        number = f"<td>{i}</td>" if numbered else ""
        danger = ' class="danger"' if car.dangerous else ""
        rows.append(f'<tr data-plate="{esc(car.plate)}"{danger}>{number}{cells}</tr>')
    return rows


def _vehicle_head(v: View, numbered: bool) -> list[str]:
    keys = ("plate", "category", "entry-gate", "lane", "entered", "inside-for")
    head = [v.t(k) for k in (*keys, "permit-until", "overdue")]
    return ["#", *head] if numbered else head


def park(
    v: View,
    gates: Sequence[GateState],
    inside: Sequence[VehicleInside],
    by_cat: Mapping[VehicleCategory | None, int],
    overdue: Mapping[str, ParkOverstay],
) -> str:
    """The park now: ``by_cat`` counts every vehicle inside; ``inside`` lists the first of
    them (hazmat first)."""
    counts = {"unknown" if c is None else c.value: n for c, n in by_cat.items() if n}
    total = sum(counts.values())
    dangerous_count = sum(n for c, n in by_cat.items() if c is not None and c.dangerous)
    order = [c.value for c in VehicleCategory] + ["unknown"]
    by_category = _table(
        [v.t("category"), v.t("count")],
        (
            f'<tr data-category="{esc(c)}"><td>{v.t("cat." + c)}</td><td>{counts[c]}</td></tr>'
            for c in order
            if c in counts
        ),
        "counts",
    )
    dangerous = [car for car in inside if car.dangerous]
    more = total - len(inside)
    listed = _table(_vehicle_head(v, False), _vehicle_rows(v, inside, overdue, False), "vehicles")
    return f"""{incident_banner(v, gates)}
<main>
<section class="summary">
  <p class="big">{v.t("inside.total")}: <strong id="inside-count">{total}</strong></p>
  {by_category}
</section>
<section>
  <h2>{v.t("inside.dangerous")} (<span id="dangerous-count">{dangerous_count}</span>)</h2>
  {
        _table(_vehicle_head(v, False), _vehicle_rows(v, dangerous, overdue, False), "vehicles")
        if dangerous
        else ""
    }
</section>
<section id="inside">
  <h2>{v.t("inside")}</h2>
  {listed if inside else f'<p class="quiet" id="nobody">{v.t("inside.none")}</p>'}
  {f'<p class="quiet">{v.t("inside.more", n=more)}</p>' if more > 0 else ""}
</section>
{stamp(v)}
</main>"""


# --- gates ----------------------------------------------------------------------------------


def gate_order(g: GateState, now_ns: int, stale_ns: int) -> tuple[int, str]:
    """Offline (or never seen) first, then stale ones, then the others; by id within each."""
    return (0 if not g.online else 1 if is_stale(g, now_ns, stale_ns) else 2, g.gate)


def is_stale(g: GateState, now_ns: int, stale_ns: int) -> bool:
    """Online but behind: its reported head is not stored, or nothing heard for a while."""
    seen = max((t for t in (g.status_at_ns, g.last_event_at_ns) if t is not None), default=None)
    return bool(g.lag) or seen is None or now_ns - seen > stale_ns


def gates(v: View, states: Sequence[GateState], stale_ns: int) -> str:
    rows = []
    for g in sorted(states, key=lambda g: gate_order(g, v.now_ns, stale_ns)):
        if not g.online:
            seen_at = (g.status_at_ns, g.last_event_at_ns)
            never = "never-seen" if all(t is None for t in seen_at) else "no-status"
            state, cls = v.t("offline" if g.state else never), "offline"
        elif is_stale(g, v.now_ns, stale_ns):
            state, cls = f"{v.t('online')} · {v.t('stale')}", "stale"
        else:
            state, cls = v.t("online"), "ok"
        version = (
            g.allowlist_version if g.allowlist_version is not None else g.status_allowlist_version
        )
        seen = max((t for t in (g.status_at_ns, g.last_event_at_ns) if t is not None), default=None)
        mode = "-" if g.mode is None else v.t("mode." + g.mode)
        faults = ", ".join(f"{f.device} ({f.code})" for f in g.faults)
        age = "-" if g.allowlist_at_ns is None else duration(v.now_ns - g.allowlist_at_ns)
        rows.append(
            f'<tr data-gate="{esc(g.gate)}" class="{cls}">'
            + _cells(
                esc(g.gate),
                f'<span class="state-{cls}">{state}</span>',
                v.time(seen),
                str(g.stored_seq),
                "-" if g.lag is None else str(g.lag),
                "-" if version is None else f"v{version}",
                age,
                f'<span class="mode-{esc(g.mode or "none")}">{mode}</span>',
                f'<span class="faults">{esc(faults)}</span>',
            )
            + "</tr>"
        )
    head = ["gate", "state", "last-seen", "synced-seq", "lag", "allowlist", "allowlist-age"]
    table = _table([v.t(k) for k in (*head, "mode", "faults")], rows, "gates")
    return f"""{incident_banner(v, states)}
<main>
<h2>{v.t("gates.title")}</h2>
{table if states else f'<p class="quiet">{v.t("gates.none")}</p>'}
{stamp(v)}
</main>"""


# --- roll call ------------------------------------------------------------------------------


def roll_call(
    v: View,
    states: Sequence[GateState],
    inside: Sequence[VehicleInside],
    overdue: Mapping[str, ParkOverstay],
) -> str:
    hazmat = sum(c.category is VehicleCategory.HAZMAT for c in inside)
    hazwaste = sum(c.category is VehicleCategory.HAZWASTE for c in inside)
    incident = any(g.mode == "incident" for g in states)
    note = "" if incident else f'<p class="quiet" id="no-incident">{v.t("roll.no-incident")}</p>'
    summary = v.t("roll.summary", inside=len(inside), hazmat=hazmat, hazwaste=hazwaste)
    table = _table(_vehicle_head(v, True), _vehicle_rows(v, inside, overdue, True), "vehicles roll")
    return f"""{incident_banner(v, states)}
<main>
<div class="title-row">
  <h2>{v.t("roll.title")}</h2>
  <button type="button" id="print" class="no-print">{v.t("roll.print")}</button>
</div>
{note}
<p class="big" id="roll-summary">{summary}</p>
{table if inside else f'<p class="quiet" id="nobody">{v.t("inside.none")}</p>'}
{stamp(v)}
</main>"""


# --- events ---------------------------------------------------------------------------------


def events(
    v: View,
    states: Sequence[GateState],
    form: Mapping[str, str],
    found: Sequence[Mapping[str, Any]] | None,
    next_cursor: str | None,
    scanned: int,
) -> str:
    def field(name: str, label: str, kind: str = "text") -> str:
        return (
            f'<label>{label}<input name="{name}" id="f-{name}" type="{kind}"'
            f' value="{esc(form.get(name, ""))}"></label>'
        )

    search = f"""<form method="get" action="/events" class="search no-print" id="search">
{field("plate", v.t("plate"))}{field("gate", v.t("gate"))}{field("type", v.t("events.type"))}
{field("from", v.t("events.from"), "datetime-local")}
{field("to", v.t("events.to"), "datetime-local")}
<button type="submit" id="search-submit">{v.t("events.search")}</button>
</form>
<p class="quiet">{v.t("events.hint", zone=v.zone.key)}</p>"""
    result = ""
    if found is not None:
        rows = []
        for e in found:
            match = "" if e["match"] is None else v.t("match." + e["match"])
            data = json.dumps(
                _zoned(e["data"], v.zone), ensure_ascii=False, indent=1, sort_keys=True
            )
            rows.append(
                f'<tr data-gate="{esc(e["gate"])}" data-seq="{esc(e["seq"])}">'
                + _cells(
                    esc(e["gate"]),
                    esc(e["seq"]),
                    v.time(e["wall_ns"]),
                    esc(e["type"]),
                    esc(e["lane"] or "-"),
                    match,
                    f"<pre>{esc(data)}</pre>",
                )
                + "</tr>"
            )
        head = [v.t(k) for k in ("gate", "seq", "time", "type", "lane", "match", "data")]
        more = ""
        if next_cursor is not None:
            query = urlencode({**{k: val for k, val in form.items() if val}, "cursor": next_cursor})
            more = f'<p><a id="next-page" href="/events?{esc(query)}">{v.t("events.next")}</a></p>'
        result = (
            (_table(head, rows, "events") if rows else f'<p class="quiet">{v.t("events.none")}</p>')
            + more
            + f'<p class="quiet">{v.t("events.scanned", n=scanned)}</p>'
        )
    return f"""{incident_banner(v, states)}
<main>
<h2>{v.t("events.title")}</h2>
{search}
{result}
</main>"""


# --- overstays and proposals ----------------------------------------------------------------


def proposals(
    v: View,
    states: Sequence[GateState],
    overstays: Sequence[ParkOverstay],
    found: Sequence[Proposal],
    operator: bool,
    done: str | None,
) -> str:
    over_rows = [
        f'<tr data-plate="{esc(o.vehicle.plate)}">'
        + _cells(
            f'<span class="plate">{esc(o.vehicle.plate)}</span>',
            category(v, o.vehicle.category),
            esc(o.vehicle.entry_gate),
            v.time(o.vehicle.entered_at_ns),
            f"{v.t('limit.' + o.limit)} {v.time(o.deadline_ns)}",
            duration(o.exceeded_ns),
        )
        + "</tr>"
        for o in overstays
    ]
    over_head = [v.t(k) for k in ("plate", "category", "entry-gate", "entered", "deadline")]
    over_table = _table([*over_head, v.t("exceeded")], over_rows, "overstays")
    rows = []
    for p in sorted(found, key=lambda p: (p.state != OPEN, -p.id)):
        if p.state == OPEN and operator:
            decision = f"""<form method="post" action="/proposals/{p.id}" class="decide">
<input type="hidden" name="csrf" value="{esc(v.csrf)}">
<input name="reason" required maxlength="500" placeholder="{v.t("reason")}" id="reason-{p.id}">
<button type="submit" name="decision" value="approve" class="danger"
  id="approve-{p.id}">{v.t("approve")}</button>
<button type="submit" name="decision" value="dismiss" class="secondary"
  id="dismiss-{p.id}">{v.t("dismiss")}</button>
</form>"""
        elif p.state == OPEN:
            decision = ""
        else:
            decision = esc(f"{p.operator} {v.time(p.decided_at_ns)}: {p.reason}")
            if p.pending:
                decision += f' <span class="error">{v.t("not-published", n=len(p.pending))}</span>'
        left = "-" if p.left_at_ns is None else f"{v.time(p.left_at_ns)} {esc(p.left_gate or '')}"
        rows.append(
            f'<tr data-proposal="{p.id}" data-state="{esc(p.state)}">'
            + _cells(
                f"#{p.id}",
                v.t("prop." + p.state),
                f'<span class="plate">{esc(p.plate)}</span>',
                category(v, p.category),
                f"{esc(p.gate)} #{p.seq}",
                v.time(p.entered_at_ns),
                duration(p.dwell_ns),
                f"{v.t('limit.' + p.limit)} {v.time(p.deadline_ns)}",
                left,
                decision,
            )
            + "</tr>"
        )
    head = ["proposal", "state", "plate", "category", "entry-gate", "entered", "dwell"]
    table = _table([v.t(k) for k in (*head, "deadline", "left", "decision")], rows, "proposals")
    note = "" if operator else f'<p class="quiet" id="viewer-note">{v.t("viewer-note")}</p>'
    flash = f'<p class="banner ok" id="flash">{esc(done)}</p>' if done else ""
    return f"""{incident_banner(v, states)}
<main>
{flash}
<h2>{v.t("overstays.title")}</h2>
{over_table if overstays else f'<p class="quiet">{v.t("overstays.none")}</p>'}
<h2>{v.t("proposals.title")}</h2>
{note}
{table if found else f'<p class="quiet">{v.t("proposals.none")}</p>'}
{stamp(v)}
</main>"""


# --- admission reviews, dead letters --------------------------------------------------------


def reviews(v: View, states: Sequence[GateState], found: Sequence[AdmissionReview]) -> str:
    rows = [
        f'<tr data-gate="{esc(r.gate)}" data-seq="{r.seq}">'
        + _cells(
            esc(r.gate),
            str(r.seq),
            f'<span class="plate">{esc(r.plate)}</span>',
            esc(f"{r.credential_kind} {r.credential_id}"),
            v.time(r.revoked_at_ns),
            v.time(r.decided_at_ns),
        )
        + "</tr>"
        for r in found
    ]
    head = [v.t(k) for k in ("gate", "seq", "plate", "credential", "revoked-at", "decided-at")]
    return f"""{incident_banner(v, states)}
<main>
<h2>{v.t("reviews.title")}</h2>
{_table(head, rows, "reviews") if found else f'<p class="quiet">{v.t("reviews.none")}</p>'}
{stamp(v)}
</main>"""


def dead_letters(
    v: View,
    states: Sequence[GateState],
    found: Sequence[DeadLetter],
    drops: Sequence[DeadLetterDrops],
) -> str:
    rows = [
        f'<tr data-dead="{d.id}">'
        + _cells(
            str(d.id),
            v.time(d.received_at_ns),
            esc(d.gate or "-"),
            esc(d.source),
            esc(d.reason),
            f"{d.payload_size} B · sha256 {d.payload_sha256.hex()[:16]}…",
        )
        + "</tr>"
        for d in found
    ]
    head = [v.t(k) for k in ("proposal", "received", "gate", "source", "reason", "size")]
    dropped = sum(d.letters for d in drops)
    note = f'<p class="quiet">{v.t("dead.dropped", n=dropped)}</p>' if dropped else ""
    return f"""{incident_banner(v, states)}
<main>
<h2>{v.t("dead.title")}</h2>
{_table(head, rows, "dead") if found else f'<p class="quiet">{v.t("dead.none")}</p>'}
{note}
{stamp(v)}
</main>"""
