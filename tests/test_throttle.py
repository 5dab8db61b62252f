"""Shared pacing, driven by a fake clock: no sleeping, every wait is computed."""

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


def send_times(throttle: Throttle, clock: Clock, count: int) -> list[float]:
    """When ``count`` requests go, each asking ``next_send`` and waiting as told (one worker)."""
    times = []
    for _ in range(count):
        while (wait := throttle.next_send()) > 0:
            clock.now += wait
        times.append(clock.now)
    return times


def pace(throttle: Throttle, clock: Clock, seconds: float, rate: float, passing: float) -> None:
    """Send at ``rate`` for ``seconds``; a ``passing`` share of the requests succeed."""
    due = 0.0
    for _ in range(round(seconds * rate)):
        clock.now += 1 / rate
        throttle.next_send()
        due += passing
        if due >= 1:
            due -= 1
            throttle.succeeded()


def test_a_configured_rate_spaces_requests_evenly() -> None:
    clock = Clock()
    throttle = make(4.0, clock)
    start = clock.now
    assert send_times(throttle, clock, 5) == pytest.approx(
        [start, start + 0.25, start + 0.5, start + 0.75, start + 1.0]
    )


def test_next_send_books_a_slot_only_when_it_is_due() -> None:
    clock = Clock()
    throttle = make(4.0, clock)
    assert throttle.next_send() == 0.0
    assert [throttle.next_send() for _ in range(3)] == pytest.approx([0.25] * 3)  # not booked
    clock.now += 0.25
    assert throttle.next_send() == 0.0
    assert throttle.next_send() == pytest.approx(0.25)


def test_waiting_workers_follow_a_pause_that_starts_while_they_sleep() -> None:
    clock = Clock()
    throttle = make(10.0, clock)
    assert throttle.next_send() == 0.0
    assert throttle.next_send() == pytest.approx(0.1)
    throttle.throttled(retry_after=2.0)
    clock.now += 0.1
    assert throttle.next_send() == pytest.approx(1.9)


def test_unlimited_never_waits_until_throttled() -> None:
    clock = Clock()
    throttle = make(None, clock)
    assert {throttle.next_send() for _ in range(100)} == {0.0}
    assert throttle.rate is None


def test_when_the_pace_got_through_the_limit_is_just_under_it() -> None:
    clock = Clock()
    throttle = make(10.0, clock, margin=0.05)
    pace(throttle, clock, seconds=2, rate=10, passing=1.0)
    assert throttle.throttled(retry_after=3.0) == 3.0
    assert throttle.rate == pytest.approx(9.5)
    # Answers to requests sent before the pause do not cut the rate again.
    clock.now += 1
    throttle.throttled(retry_after=1.0)
    assert throttle.paused_until == pytest.approx(clock.now + 2.0)
    assert throttle.rate == pytest.approx(9.5)
    # Every worker waits out the same pause, then the lower rate spaces them.
    end = throttle.paused_until
    assert send_times(throttle, clock, 3) == pytest.approx([end, end + 1 / 9.5, end + 2 / 9.5])


def test_when_far_less_got_through_the_rate_is_what_got_through() -> None:
    clock = Clock()
    throttle = make(10.0, clock, margin=0.1, window=1.0)
    pace(throttle, clock, seconds=2, rate=10, passing=0.3)
    throttle.throttled(retry_after=1.0)
    assert throttle.rate == pytest.approx(3 * 0.9)


def test_the_measured_rate_is_held_then_probed_additively_up_to_the_ceiling() -> None:
    clock = Clock()
    throttle = make(10.0, clock, margin=0.5, hold=30.0, recovery=1.0)
    pace(throttle, clock, seconds=2, rate=10, passing=1.0)
    throttle.throttled(retry_after=0.0)
    assert throttle.rate == pytest.approx(5.0)
    clock.now += 29
    assert throttle.rate == pytest.approx(5.0)
    clock.now += 3
    assert throttle.rate == pytest.approx(7.0)
    clock.now += 100
    assert throttle.rate == 10.0


def test_an_unpaced_start_restarts_from_what_got_through_and_grows_fast() -> None:
    clock = Clock()
    throttle = make(None, clock, window=1.0, growth=2.0)
    for _ in range(16):
        assert throttle.next_send() == 0.0
    throttle.succeeded()  # one of sixteen got through
    assert throttle.throttled(retry_after=1.0) == 1.0
    assert throttle.rate == pytest.approx(1.0)
    clock.now += 1.0  # the pause
    assert throttle.rate == pytest.approx(1.0)
    clock.now += 2.0
    assert throttle.rate == pytest.approx(9.0)  # three times a second, no ceiling yet
    clock.now += 100_000  # a long wait (max_pending, quota) must not overflow the growth
    assert throttle.rate is not None
    assert throttle.next_send() < 1e-9


def test_a_429_right_after_a_pause_only_trims_a_known_ceiling() -> None:
    clock = Clock()
    throttle = make(None, clock, margin=0.1)
    pace(throttle, clock, seconds=2, rate=10, passing=1.0)
    throttle.throttled(retry_after=0.0)  # unpaced: restarts from what got through
    pace(throttle, clock, seconds=2, rate=10, passing=1.0)
    throttle.throttled(retry_after=1.0)
    assert throttle.rate == pytest.approx(9.0)
    clock.now += 1.05  # 50 ms after the pause, nothing measured yet
    throttle.throttled(retry_after=1.0)
    assert throttle.rate == pytest.approx(8.1)


def test_with_nothing_measured_and_no_ceiling_the_rate_halves() -> None:
    clock = Clock()
    throttle = make(10.0, clock)
    clock.now += 0.1
    throttle.throttled(retry_after=1.0)
    assert throttle.rate == pytest.approx(5.0)


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
