"""The server clock: the bounds one answer's ``Date`` allows (by table), and the estimate from
many answers, which must always hold the true offset and narrow once a ``Date`` ticks over."""

from __future__ import annotations

import datetime as dt
import math
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vidu_async.server_clock import MIN_UNCERTAINTY, ServerClock, offset_bounds
from vidu_async.testing import ManualClock

T0 = dt.datetime(2026, 1, 20, 6, 0, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def date(seconds: float) -> str:
    """The ``Date`` header a server sends at ``at(seconds)``: truncated to the second."""
    return format_datetime(at(math.floor(seconds)), usegmt=True)


@pytest.mark.parametrize(
    ("header", "sent", "received", "expected"),
    [
        ("Tue, 20 Jan 2026 06:00:00 GMT", -0.25, 0, (0.0, 1.25)),
        ("Tue, 20 Jan 2026 06:10:00 GMT", 0, 0.25, (599.75, 601.0)),
        ("Tue, 20 Jan 2026 05:50:00 GMT", 0, 0, (-600.0, -599.0)),
        ("Tue, 20 Jan 2026 06:00:00 -0000", 1, 1, (-1.0, 0.0)),
        ("yesterday", 0, 0, None),
        ("", 0, 0, None),
    ],
)
def test_offset_bounds(
    header: str, sent: float, received: float, expected: tuple[float, float] | None
) -> None:
    assert offset_bounds(header, at(sent), at(received)) == expected


def clock_at_t0(time: ManualClock) -> ServerClock:
    clock = ServerClock(time)
    clock._wall = T0  # local time reads T0 at time.now == 0
    return clock


def test_the_clock_runs_on_the_policy_clock_and_narrows_when_the_date_ticks_over() -> None:
    time = ManualClock()
    clock = clock_at_t0(time)
    assert not clock.learned and clock.offset == 0.0
    time.advance(30)
    assert clock.local_now() == at(30)
    # The server is 600.3 s ahead; answers take no time.
    clock.observe(date(630.3), at(30))
    assert clock.learned and (clock.offset, clock.uncertainty) == (600.5, 0.5)
    time.advance(0.6)  # the server reads 630.9: same Date
    clock.observe(date(630.9), at(30.6))
    assert clock.offset == pytest.approx(600.2) and clock.uncertainty == pytest.approx(0.2)
    time.advance(0.15)  # 631.05: the Date ticks over
    clock.observe(date(631.05), at(30.75))
    assert clock.offset == pytest.approx(600.325)
    assert clock.uncertainty == MIN_UNCERTAINTY  # 0.075 measured, never claimed below the floor
    clock.observe("not a date", at(30.75))  # ignored
    assert clock.offset == pytest.approx(600.325)


def test_a_date_contradicting_the_bounds_starts_them_again() -> None:
    time = ManualClock()
    clock = clock_at_t0(time)
    clock.observe(date(10.5), at(0))
    clock.observe(date(10.99), at(0.49))
    assert abs(clock.offset - 10.5) <= clock.uncertainty <= 0.5
    time.advance(1)
    clock.observe(date(1 - 5.0), at(1))  # the server's clock was set to 5 s behind ours
    assert (clock.offset, clock.uncertainty) == (-4.5, 0.5)


def test_an_observer_times_answers_from_when_it_was_made() -> None:
    time = ManualClock()
    clock = clock_at_t0(time)
    observe = clock.observer()  # the request is sent at 0...
    time.advance(3)  # ...and answered 3 s later with Date 100: stamped between 0 and 3
    observe(date(100.5))
    assert (clock.offset, clock.uncertainty) == (99.0, 2.0)  # 97 to 101


@given(
    offset=st.floats(-3600, 3600),
    answers=st.lists(
        st.tuples(st.floats(0, 5), st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=40
    ),
)
def test_the_estimate_always_holds_the_true_offset(
    offset: float, answers: list[tuple[float, float, float]]
) -> None:
    """Whatever the skew and however the transits jitter, the true offset is within
    ``uncertainty`` of the estimate: each answer is (pause before sending, transit there, back)."""
    time = ManualClock()
    clock = clock_at_t0(time)
    for pause, there, back in answers:
        time.advance(pause)
        observe = clock.observer()
        time.advance(there)
        header = date(time.now + offset)
        time.advance(back)
        observe(header)
        assert abs(clock.offset - offset) <= clock.uncertainty + 1e-6


def test_only_readings_taken_since_the_bounds_started_are_trusted() -> None:
    time = ManualClock()
    clock = clock_at_t0(time)
    assert not clock.trusts(at(0))  # nothing learned yet
    clock.observe(date(0.5), at(0))
    time.advance(1)
    before_suspend = clock.now()
    assert clock.trusts(before_suspend)
    # Our monotonic clock stood still for 100 s (a suspended machine) while the server's ran:
    # the next answer contradicts the bounds, which start again.
    clock.observe(date(101.5), at(1))
    assert clock.offset > 99 and not clock.trusts(before_suspend + dt.timedelta(seconds=100))
    time.advance(0.5)
    assert clock.trusts(clock.now())
