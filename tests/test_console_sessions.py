"""Sessions, CSRF tokens and the login lock-out on an injected clock; the page's
translations cover every code the gate can show."""

from __future__ import annotations

import json

from edgegate.console.app import load_assets
from edgegate.console.desk import DeskAction, Role
from edgegate.console.sessions import TRUSTED_PER_NAME, LoginThrottle, SessionStore
from edgegate.core.clock import ManualClock
from edgegate.core.domain import GateKind, PlateColour
from edgegate.core.events import GateMode, Loop
from edgegate.core.lane import LaneState
from edgegate.core.policy import Reason, Verdict

S = 1_000_000_000


def test_sessions_end_when_idle_and_are_recorded(clock: ManualClock) -> None:
    store = SessionStore(clock.mono_ns, idle_ns=60 * S)
    a = store.create("wang", Role.GUARD, "10.0.0.5")
    assert len(a.id) == 43 and a.csrf != a.id
    clock.advance(59)
    assert store.get(a.id) is a  # and touched
    clock.advance(59)
    assert store.get(a.id) is a
    ended: list[str] = []
    a.on_end.append(lambda: ended.append("closed"))
    clock.advance(60)
    assert store.get(a.id) is None
    assert [(e.session.account, e.reason) for e in store.take_ended()] == [("wang", "idle")]
    assert ended == ["closed"] and store.take_ended() == []


def test_the_least_recently_used_session_makes_room(clock: ManualClock) -> None:
    store = SessionStore(clock.mono_ns, idle_ns=3600 * S, max_sessions=2)
    a = store.create("a", Role.GUARD, "x")
    b = store.create("b", Role.GUARD, "x")
    store.get(a.id)
    store.create("c", Role.GUARD, "x")
    assert store.get(b.id) is None and store.get(a.id) is a
    assert [(e.session.account, e.reason) for e in store.take_ended()] == [("b", "displaced")]


def test_an_account_makes_room_from_its_own_sessions(clock: ManualClock) -> None:
    store = SessionStore(clock.mono_ns, idle_ns=3600 * S, max_sessions=4, max_per_account=2)
    operator = store.create("li", Role.GUARD, "x")
    viewer = [store.create("zhao", Role.GUARD, "y") for _ in range(10)]
    assert store.get(operator.id) is operator
    assert [s.id for s in store.sessions() if s.account == "zhao"] == [v.id for v in viewer[-2:]]
    assert [e.reason for e in store.take_ended()] == ["displaced"] * 8


def test_csrf_compare(clock: ManualClock) -> None:
    session = SessionStore(clock.mono_ns, idle_ns=S).create("wang", Role.GUARD, "x")
    assert session.csrf_ok(session.csrf)
    assert not session.csrf_ok(None) and not session.csrf_ok("") and not session.csrf_ok("é")


def test_lock_out_per_name_and_per_address(clock: ManualClock) -> None:
    throttle = LoginThrottle(clock.mono_ns, max_failures=3, window_ns=900 * S, lockout_ns=600 * S)
    for _ in range(3):
        assert not throttle.locked("wang", "10.0.0.5")
        throttle.failed("wang", "10.0.0.5")
    assert throttle.locked("wang", "10.0.0.6")  # the name, from anywhere
    assert throttle.locked("li", "10.0.0.5")  # the address, for any name
    assert not throttle.locked("li", "10.0.0.6")
    clock.advance(600)
    assert not throttle.locked("wang", "10.0.0.5")


def test_a_success_forgets_the_names_failures(clock: ManualClock) -> None:
    throttle = LoginThrottle(clock.mono_ns, max_failures=3, window_ns=900 * S, lockout_ns=600 * S)
    throttle.failed("wang", "a")
    throttle.failed("wang", "b")
    throttle.succeeded("wang", "a")
    throttle.failed("wang", "c")
    assert not throttle.locked("wang", "d")


def test_failures_from_elsewhere_do_not_lock_out_an_address_that_logged_in_before(
    clock: ManualClock,
) -> None:
    """The lock-out is no way to shut the control room out of its account: an attacker's
    failures lock the name for every other address (and lock the attacker's own), not for
    the PC that logged in to it before."""
    throttle = LoginThrottle(clock.mono_ns, max_failures=3, window_ns=900 * S, lockout_ns=600 * S)
    throttle.succeeded("wang", "10.0.0.5")  # the control room's PC
    for i in range(6):
        throttle.failed("wang", f"10.9.9.{i // 3}")
    assert throttle.trusted("wang", "10.0.0.5") and not throttle.trusted("wang", "10.0.0.6")
    assert throttle.locked("wang", "10.0.0.6")
    assert throttle.locked("wang", "10.9.9.0") and throttle.locked("li", "10.9.9.0")
    assert not throttle.locked("wang", "10.0.0.5")
    # Failures for other names from the trusted PC lock that address for them, not for wang.
    for name in ("zhao", "qian", "sun"):
        throttle.failed(name, "10.0.0.5")
    assert throttle.locked("li", "10.0.0.5")
    assert not throttle.locked("wang", "10.0.0.5")


def test_an_address_that_logged_in_before_still_gets_only_so_many_guesses(
    clock: ManualClock,
) -> None:
    throttle = LoginThrottle(clock.mono_ns, max_failures=3, window_ns=900 * S, lockout_ns=600 * S)
    throttle.succeeded("wang", "10.0.0.5")
    for _ in range(2):
        throttle.failed("wang", "10.0.0.5")
    assert not throttle.locked("wang", "10.0.0.5")
    with throttle.attempt("wang", "10.0.0.5"):  # a check under way counts
        assert throttle.locked("wang", "10.0.0.5")
    throttle.failed("wang", "10.0.0.5")
    assert throttle.locked("wang", "10.0.0.5")
    clock.advance(600)
    assert not throttle.locked("wang", "10.0.0.5")


def test_the_throttle_trusts_a_bounded_number_of_addresses_per_name(clock: ManualClock) -> None:
    """One account logging in from many addresses (an insider with a viewer's password)
    cannot push the control room's PC out of the operator's trusted addresses."""
    throttle = LoginThrottle(clock.mono_ns, max_failures=3, window_ns=60 * S, lockout_ns=60 * S)
    throttle.succeeded("li", "10.0.0.5")
    for i in range(TRUSTED_PER_NAME + 100):
        throttle.succeeded("zhao", f"addr{i}")
    last = TRUSTED_PER_NAME + 99
    assert throttle.trusted("zhao", f"addr{last}") and not throttle.trusted("zhao", "addr99")
    assert len(throttle._trusted["zhao"]) == TRUSTED_PER_NAME
    assert throttle.trusted("li", "10.0.0.5")


def test_a_trusted_login_does_not_lift_a_lock_out_others_set(clock: ManualClock) -> None:
    """Else every login of the control room would hand an attacker a fresh set of guesses."""
    throttle = LoginThrottle(clock.mono_ns, max_failures=3, window_ns=900 * S, lockout_ns=600 * S)
    throttle.succeeded("wang", "10.0.0.5")
    for _ in range(3):
        throttle.failed("wang", "10.9.9.9")
    throttle.succeeded("wang", "10.0.0.5")
    assert throttle.locked("wang", "10.0.0.6")
    assert not throttle.locked("wang", "10.0.0.5")


def test_the_throttle_remembers_a_bounded_number_of_keys(clock: ManualClock) -> None:
    throttle = LoginThrottle(
        clock.mono_ns, max_failures=3, window_ns=60 * S, lockout_ns=60 * S, max_keys=10
    )
    for i in range(100):
        throttle.failed(f"name{i}", f"addr{i}")
        clock.advance(1)
    assert len(throttle._keys) <= 10


def test_every_code_the_page_shows_is_translated_in_both_languages() -> None:
    strings = json.loads(load_assets()["i18n.json"][0])
    assert set(strings) == {"zh", "en"} and set(strings["zh"]) == set(strings["en"])
    needed = (
        [f"reason.{r.value}" for r in Reason]
        + [f"state.{s.value}" for s in LaneState]
        + [f"loop.{loop.value}" for loop in Loop]
        + [f"arm.{a}" for a in ("up", "down", "moving", "unknown")]
        + [f"verdict.{v.value}" for v in Verdict]
        + [f"colour.{c.value}" for c in PlateColour]
        + [f"mode.{m.value}" for m in GateMode]
        + [f"kind.{k.value}" for k in GateKind]
        + [f"action.{a.value}" for a in DeskAction]
        + [f"role.{r.value}" for r in Role]
        + [f"code.{c}" for c in ("ok", "forbidden", "unknown-lane", "not-pending", "stale")]
        + ["code.not-held"]
        + [f"code.{c}" for c in ("invalid", "log-failed", "bad-csrf-token", "bad-origin")]
    )
    for lang in ("zh", "en"):
        missing = [key for key in needed if not strings[lang].get(key)]
        assert not missing, f"{lang}: {missing}"
    assert strings["zh"]["state.awaiting-guard"] != strings["en"]["state.awaiting-guard"]
