"""The one backoff rule: bounds, jitter, cap and reset."""

from __future__ import annotations

import random

import pytest

from edgegate.backoff import Backoff, backoff_delay


def test_delay_stays_within_half_the_ceiling_and_the_ceiling() -> None:
    rng = random.Random(7)
    for attempt in range(12):
        ceiling = min(30.0, 0.1 * 2**attempt)
        delays = [backoff_delay(attempt, 0.1, 30.0, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (attempt, delays)
        assert len(set(delays)) > 1  # jittered


def test_delay_is_capped_even_for_absurd_attempts() -> None:
    rng = random.Random(1)
    assert 15.0 <= backoff_delay(10**9, 0.1, 30.0, rng) <= 30.0
    assert backoff_delay(-3, 0.1, 30.0, rng) <= 0.1  # a negative count is the first attempt


def test_the_injected_rng_decides_the_jitter() -> None:
    a = [backoff_delay(i, 0.2, 5.0, random.Random(42)) for i in range(8)]
    b = [backoff_delay(i, 0.2, 5.0, random.Random(42)) for i in range(8)]
    assert a == b


def test_backoff_grows_to_its_cap_and_reset_starts_again() -> None:
    backoff = Backoff(0.1, 1.0, random.Random(3))
    delays = [backoff.next() for _ in range(10)]
    assert 0.05 <= delays[0] <= 0.1
    assert all(0.5 <= d <= 1.0 for d in delays[4:])  # 0.1 * 2**4 > 1.0: capped
    assert backoff.attempts == 10
    backoff.reset()
    assert backoff.attempts == 0
    assert 0.05 <= backoff.next() <= 0.1


def test_a_zero_initial_delay_retries_at_once() -> None:
    backoff = Backoff(0.0, 1.0, random.Random(0))
    assert [backoff.next() for _ in range(3)] == [0.0, 0.0, 0.0]


def test_negative_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="initial >= 0"):
        Backoff(-1.0, 1.0)
