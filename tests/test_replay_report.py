"""``replay report`` in Debian's Chromium: the file renders without errors and without any
network request, its timeline shows the recorded incident's events (clicking the finding
selects them), plates and reasons are text, never markup; and the command's bad input."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from playwright.async_api import Page

from edgegate.cli.main import main
from edgegate.core import events as ev
from edgegate.core.domain import Direction, PlateColour, VehicleCategory
from edgegate.log import EventLog
from tests.browser import browser, page, screenshot

__all__ = ["browser", "page"]  # fixtures

REPLAY = Path(__file__).resolve().parent.parent / "replay"
INCIDENT = REPLAY / "arm-left-up-after-back-out"
HOSTILE_PLATE = "<script>window.pwned=1</script>苏E12345"
HOSTILE_REASON = "<img src=x onerror=window.pwned=2>"


def _report(db: Path, out: Path, *extra: str) -> None:
    argv = ["replay", "report", str(db), "--from", "2026-11-28", "--to", "2026-11-28"]
    assert main([*argv, "--html", str(out), *extra]) == 0


async def _open(page: Page, path: Path) -> tuple[list[str], list[str]]:
    """Load the file; the requests it made (other than itself) and its console errors."""
    requests: list[str] = []
    errors: list[str] = []
    page.on(
        "request",
        lambda r: (
            None if r.url.startswith(("file:", "data:", "about:")) else requests.append(r.url)
        ),
    )
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(path.as_uri())
    await page.wait_for_selector("#timeline rect.ev")
    return requests, errors


async def test_the_recorded_incident_on_the_timeline(page: Page, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    _report(INCIDENT / "gate.db", out)
    requests, errors = await _open(page, out)

    assert "chain verified: 127 events" in await page.inner_text("#verify")
    assert "seq 127" in await page.inner_text("#head")
    expected = json.loads((INCIDENT / "expected.json").read_text())
    seqs = next(f["seqs"] for f in expected["findings"] if f["kind"] == "arm-left-up")
    finding = page.locator("#findings .finding", has_text="arm-left-up")
    assert await finding.get_attribute("data-seqs") == " ".join(map(str, seqs))

    await finding.click()
    for seq in seqs:
        selected = page.locator(f'#timeline [data-seqs~="{seq}"].sel')
        await selected.first.wait_for()
    # The selection is what the finding names: nothing else is marked.
    marked = await page.eval_on_selector_all(
        "#timeline .sel", "els => els.map(e => e.dataset.seqs.split(' ').map(Number))"
    )
    assert all(any(s in seqs for s in m) for m in marked)
    assert "the arm stood up" in await page.inner_text("#detail")
    await screenshot(page, "replay-report-arm-left-up")

    # Zoom and pan change the visible range; "whole window" shows the whole day.
    before = await page.inner_text("#range")
    await page.click("#zout")
    await page.wait_for_function(
        "t => document.getElementById('range').textContent !== t", arg=before
    )
    await page.click("#fit")
    await page.wait_for_function(
        "() => document.getElementById('range').textContent"
        ".startsWith('2026-11-28 00:00:00 – 2026-11-29 00:00:00')"
    )
    assert requests == []
    assert errors == []


async def _hostile_log(path: Path) -> None:
    async with await EventLog.open(path, gate_id="gate-<b>x</b>") as log:
        await log.append(
            ev.LoopChanged(lane="in-1", loop=ev.Loop.ARMING, occupied=True, source="p")
        )
        read = await log.append(
            ev.PlateRead(
                lane="in-1",
                plate=HOSTILE_PLATE,
                colour=PlateColour.BLUE,
                confidence=0.9,
                reader="cam-in-1",
            )
        )
        await log.append(
            ev.AccessDecided(
                lane="in-1",
                direction=Direction.ENTRY,
                plate_read=HOSTILE_PLATE,
                plate=HOSTILE_PLATE,
                matched_plate=None,
                match=ev.MatchKind.NONE,
                verdict="deny",
                reasons=(HOSTILE_REASON,),
                category=VehicleCategory.ORDINARY,
                allowlist_version=1,
                read_seq=read,
            )
        )


async def test_plates_and_reasons_are_text_not_markup(page: Page, tmp_path: Path) -> None:
    db, out = tmp_path / "gate.db", tmp_path / "report.html"
    await _hostile_log(db)
    # Today: the log was written now, so the window is now's day in the default zone.
    assert (
        main(
            [
                "replay",
                "report",
                str(db),
                "--from",
                "2000-01-01",
                "--to",
                "2100-01-01",
                "--html",
                str(out),
            ]
        )
        == 0
    )
    raw = out.read_text(encoding="utf-8")
    assert "<script>window.pwned" not in raw
    assert "<img src=x" not in raw
    requests, errors = await _open(page, out)

    assert await page.evaluate("typeof window.pwned") == "undefined"
    assert HOSTILE_PLATE in await page.inner_text("#cycles")
    assert "gate-<b>x</b>" in await page.inner_text("#gate")
    titles = await page.eval_on_selector_all(
        "#timeline title", "els => els.map(e => e.textContent)"
    )
    assert any(HOSTILE_PLATE in t and HOSTILE_REASON in t for t in titles)
    assert requests == []  # an injected <img src=x> would have asked for x
    assert errors == []


def _files(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in d.iterdir()}


def test_the_log_is_only_read(tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    shutil.copyfile(INCIDENT / "gate.db", media / "gate.db")
    before = _files(media)
    _report(media / "gate.db", tmp_path / "report.html")
    assert _files(media) == before  # no -wal/-shm, not a byte changed
    assert (tmp_path / "report.html").stat().st_size > 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--from", "2026-11-29", "--to", "2026-11-28"], "is not after"),
        (["--from", "yesterday", "--to", "2026-11-28"], "is not ISO 8601"),
        (["--from", "2026-11-28", "--to", "2026-11-29", "--tz", "Mars/Olympus"], "unknown time"),
    ],
)
def test_bad_window_exits_2_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    out = tmp_path / "report.html"
    db = INCIDENT / "gate.db"
    assert main(["replay", "report", str(db), *args, "--html", str(out)]) == 2
    err = capsys.readouterr().err
    assert says in err
    assert err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("content", [None, b"not a database at all" * 100])
def test_bad_file_exits_2_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None
) -> None:
    db = tmp_path / "gate.db"
    if content is not None:
        db.write_bytes(content)
    argv = ["replay", "report", str(db), "--from", "2026-11-28", "--to", "2026-11-29"]
    assert main([*argv, "--html", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_the_log_is_not_the_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "gate.db"
    shutil.copyfile(INCIDENT / "gate.db", db)
    before = db.read_bytes()
    argv = ["replay", "report", str(db), "--from", "2026-11-28", "--to", "2026-11-29"]
    assert main([*argv, "--html", str(db)]) == 2
    assert "is the log being read" in capsys.readouterr().err
    assert db.read_bytes() == before


def test_a_write_error_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["replay", "report", str(INCIDENT / "gate.db"), "--from", "2026-11-28"]
    assert main([*argv, "--to", "2026-11-29", "--html", str(tmp_path / "no" / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgegate replay: cannot write") and err.count("\n") == 1
