"""Shared AIMD pacing, driven by a fake clock: no sleeping, every wait is computed."""

from __future__ import annotations

import random

import pytest

from vidu_async.throttle import Throttle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(max_rate: float | None, clock: Clock, **kw: float) -> Throttle:
    return Throttle(max_rate=max_rate, clock=clock, rng=random.Random(7), **kw)  # type: ignore[arg-type]


def test_a_configured_rate_spaces_requests_evenly() -> None:
    clock = Clock()
    throttle = make(4.0, clock)
    assert [throttle.reserve() for _ in range(5)] == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])


def test_unlimited_never_waits_until_throttled() -> None:
    clock = Clock()
    throttle = make(None, clock)
    assert {throttle.reserve() for _ in range(100)} == {0.0}
    assert throttle.rate is None


def test_a_throttle_pauses_everyone_once_and_halves_the_rate() -> None:
    clock = Clock()
    throttle = make(10.0, clock)
    pause = throttle.throttled(retry_after=3.0)
    assert pause == 3.0
    assert throttle.rate == 5.0
    # Answers to requests sent before the pause do not cut the rate again.
    clock.now += 1
    throttle.throttled(retry_after=1.0)
    assert throttle.paused_until == 1003.0
    assert throttle.rate == 5.0
    # Every worker waits out the same pause, then the lower rate spaces them.
    clock.now = 1001.0
    waits = [throttle.reserve() for _ in range(3)]
    assert waits == pytest.approx([2.0, 2.2, 2.4])


def test_the_rate_recovers_additively_up_to_the_ceiling() -> None:
    clock = Clock()
    throttle = make(10.0, clock, recovery=1.0)
    throttle.throttled(retry_after=0.0)
    assert throttle.rate == 5.0
    clock.now += 2
    assert throttle.rate == pytest.approx(7.0)
    clock.now += 100
    assert throttle.rate == 10.0


def test_without_a_ceiling_the_rate_starts_from_the_observed_pace_and_frees_up() -> None:
    clock = Clock()
    throttle = make(None, clock, recovery=1.0)
    for _ in range(11):
        throttle.reserve()
        clock.now += 0.1  # ten requests a second
    throttle.throttled(retry_after=0.0)
    assert throttle.rate == pytest.approx(5.0, rel=0.05)
    clock.now += 30
    assert throttle.rate is None


def test_without_retry_after_the_pause_grows_with_the_streak_and_is_capped() -> None:
    clock = Clock()
    throttle = make(10.0, clock, base_pause=1.0, max_pause=8.0)
    pauses = []
    for _ in range(6):
        pauses.append(throttle.throttled())
        clock.now = throttle.paused_until  # the next 429 comes after the pause
    ceilings = [1, 2, 4, 8, 8, 8]
    assert all(c / 2 <= p <= c for p, c in zip(pauses, ceilings, strict=True)), pauses
    throttle.succeeded()
    assert throttle.throttled() <= 1.0


def test_the_rate_never_drops_below_the_floor() -> None:
    clock = Clock()
    throttle = make(1.0, clock, min_rate=0.25)
    for _ in range(10):
        throttle.throttled(retry_after=0.0)
        clock.now += 0.001
    assert throttle.rate is not None
    assert throttle.rate >= 0.25
