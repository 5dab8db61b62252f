"""Shared pacing, driven by a fake clock: no sleeping, every wait is computed."""

from __future__ import annotations

import asyncio
import math
import random

import pytest

from tests.waiting import until
from vidu_async import Outcome, ReferenceToVideoRequest
from vidu_async.batch import BatchOptions, BatchSubmitter
from vidu_async.client import ViduClient
from vidu_async.jobs import Job
from vidu_async.retry import RetryPolicy
from vidu_async.testing import EndpointFaults, FakeVidu, Faults, ManualClock, Quirks, RateLimit
from vidu_async.throttle import Throttle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(max_rate: float | None, clock: Clock, **kw: float | None) -> Throttle:
    return Throttle(max_rate=max_rate, clock=clock, rng=random.Random(7), **kw)  # type: ignore[arg-type]


def send_times(throttle: Throttle, clock: Clock, count: int) -> list[float]:
    """When ``count`` requests go, each asking ``next_send`` and waiting as told (one worker)."""
    times = []
    for _ in range(count):
        while (wait := throttle.next_send()) > 0:
            clock.now += wait
        times.append(clock.now)
    return times


class Bucket:
    """A strict token bucket: ``rate`` a second, bursts of one; None if a request passes, else
    the whole seconds of its ``Retry-After``."""

    def __init__(self, rate: float, now: float) -> None:
        self.rate, self.tokens, self.updated = rate, 1.0, now

    def __call__(self, now: float) -> int | None:
        self.tokens = min(1.0, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return None
        return math.ceil((1 - self.tokens) / self.rate)


def test_a_configured_rate_spaces_requests_evenly() -> None:
    clock = Clock()
    throttle = make(4.0, clock, slack=0.0)
    start = clock.now
    assert send_times(throttle, clock, 5) == pytest.approx(
        [start, start + 0.25, start + 0.5, start + 0.75, start + 1.0]
    )


def test_a_configured_rate_is_paced_slightly_under() -> None:
    clock = Clock()
    assert make(30.0, clock, slack=0.01).rate == pytest.approx(29.7)


def test_next_send_books_a_slot_only_when_it_is_due() -> None:
    clock = Clock()
    throttle = make(4.0, clock, slack=0.0)
    assert throttle.next_send() == 0.0
    assert [throttle.next_send() for _ in range(3)] == pytest.approx([0.25] * 3)  # not booked
    clock.now += 0.25
    assert throttle.next_send() == 0.0
    assert throttle.next_send() == pytest.approx(0.25)


def test_next_send_without_booking_only_says_when_a_slot_is_due() -> None:
    clock = Clock()
    throttle = make(4.0, clock, slack=0.0)
    assert throttle.next_send(book=False) == 0.0
    assert throttle.next_send(book=False) == 0.0  # asked twice: still nothing booked
    assert throttle.next_send() == 0.0
    clock.now += 0.1
    assert throttle.next_send(book=False) == pytest.approx(0.15)
    clock.now += 0.15
    assert throttle.next_send(book=False) == 0.0
    assert throttle.next_send() == 0.0  # the asker's slot was still free
    assert throttle.next_send() == pytest.approx(0.25)


def test_without_a_start_window_an_unknown_limit_starts_unpaced() -> None:
    throttle = make(None, Clock(), start_window=None)
    assert throttle.rate is None
    assert {throttle.next_send() for _ in range(100)} == {0.0}


def test_an_unknown_limit_starts_with_a_window_one_wider_per_success_until_unpaced() -> None:
    """One request in flight, then one more per success (doubling per round trip), and no
    window at all from ``window_cap`` on: no burst of every worker at once. The window does
    not pace: the caller keeps the count."""
    clock = Clock()
    throttle = make(None, clock, start_window=1, window_cap=8)
    windows = []
    while (window := throttle.max_in_flight) is not None:
        windows.append(window)
        assert throttle.next_send() == 0.0
        clock.now += 0.003
        throttle.succeeded(clock.now - 0.003)
    assert windows == [1, 2, 3, 4, 5, 6, 7]
    assert throttle.rate is None
    assert {throttle.next_send() for _ in range(100)} == {0.0}


def test_a_window_held_full_lets_one_more_go_without_counting_a_pass() -> None:
    clock = Clock()
    throttle = make(None, clock)
    assert throttle.max_in_flight == 1
    throttle.stalled()
    throttle.stalled()
    assert throttle.max_in_flight == 3
    throttle.succeeded(clock.now)  # the window grows by its passes as before, stalls on top
    assert throttle.max_in_flight == 4
    told = make(30.0, clock)
    told.stalled()
    assert told.max_in_flight is None


def test_a_told_rate_or_a_start_rate_has_no_window() -> None:
    assert make(30.0, Clock()).max_in_flight is None
    assert make(None, Clock(), start_rate=10.0).max_in_flight is None
    assert make(None, Clock(), start_window=None).max_in_flight is None


def test_an_unreported_request_answered_holds_the_next_one_interval_after_it() -> None:
    """At 10/s, a request whose success is not reported (a list page) answered 52 ms after
    its turn: the next waits until then less the shortest round trip plus an interval, as
    after a create's success; one answered more than a second after its turn holds nobody."""
    clock = Clock()
    throttle = make(10.0, clock, slack=0.0)
    sent = clock.now
    assert throttle.next_send() == 0.0
    clock.now += 0.002
    throttle.succeeded(sent)  # the shortest round trip: 2 ms
    clock.now = sent + 0.1
    page = clock.now
    assert throttle.next_send(reports=False) == 0.0
    clock.now += 0.052
    throttle.answered(page)
    assert throttle.next_send() == pytest.approx(0.1 - 0.002)
    clock.now += 2.0
    page = clock.now
    assert throttle.next_send(reports=False) == 0.0
    clock.now += 1.5
    throttle.answered(page)
    assert throttle.next_send() == 0.0


def test_an_unknown_limit_starts_slowly_and_grows_per_success_until_unpaced() -> None:
    clock = Clock()
    throttle = make(None, clock, start_rate=10.0, growth=1.0, unpaced_above=100.0)
    assert throttle.rate == 10.0
    for expected in (20.0, 40.0, 80.0, None):
        throttle.succeeded()
        assert throttle.rate == expected
    assert {throttle.next_send() for _ in range(50)} == {0.0}


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("max_rate", [None, 200.0])
def test_random_429s_at_5_percent_never_lower_the_rate_nor_pause_anyone(
    seed: int, max_rate: float | None
) -> None:
    """2,000 answers from 16 workers, 5% of them 429 at random: each costs its own request a
    short retry, never a shared pause, and the rate only ever grows."""
    clock = Clock()
    throttle = make(max_rate, clock)
    noise = random.Random(seed)
    rates: list[float] = []
    for _ in range(2000):
        while (wait := throttle.next_send()) > 0:
            clock.now += wait
        clock.now += 0.05 / 16  # answers come back interleaved from 16 workers
        if noise.random() < 0.05:
            assert 0.05 <= throttle.throttled() <= 0.15
            assert throttle.paused_until <= clock.now
        else:
            throttle.succeeded()
        rates.append(math.inf if throttle.rate is None else throttle.rate)
    assert rates == sorted(rates)


def test_a_token_buckets_429s_are_found_and_the_rate_held_near_the_limit() -> None:
    """16 workers against a strict bucket of 30/s for 20 s: once found, the rate is never far
    under the limit and, after a few seconds of probing, stays within 10% of it; few 429s."""
    clock = Clock()
    throttle = make(None, clock, start_rate=10.0)
    passed, refused, rates = bucket_run(throttle, clock, 20.0, round_trip=0.0)
    found = [rate for at, rate in rates if at > 1]
    late = [rate for at, rate in rates if at > 8]
    assert min(found) >= 0.7 * 30 and max(found) <= 1.1 * 30
    assert min(late) >= 0.9 * 30
    assert passed >= 0.85 * 30 * 20
    assert refused / (passed + refused) < 0.03


def test_a_429_while_probing_above_the_limit_drops_back_under_where_it_was_found() -> None:
    clock = Clock()
    throttle = make(None, clock, hold=2.0, recovery=0.1, margin=0.05, start_window=None)
    for _ in range(20):
        throttle.throttled()  # everything refused: a limit, paced at half, then held
    held = throttle.rate
    assert held is not None
    clock.now += 100  # long after the hold: probing well above
    probing = throttle.rate
    assert probing is not None and probing > held
    throttle.throttled()
    assert throttle.rate == pytest.approx(probing * 0.95)


def test_when_nothing_gets_through_everybody_waits_retry_after_once() -> None:
    """A limit with (nearly) no successes: one shared pause, the Retry-After asked, not stacked."""
    clock = Clock()
    throttle = make(10.0, clock, recent=20, limit_429s=6, slack=0.0)
    waits = [throttle.throttled(retry_after=3.0) for _ in range(5)]
    assert waits == [3.0] * 5
    assert throttle.paused_until <= clock.now  # five 429s: maybe noise, nobody else waits
    assert throttle.next_send() == 0.0
    throttle.throttled(retry_after=3.0)  # the sixth: a limit
    assert throttle.paused_until == pytest.approx(clock.now + 3.0)
    clock.now += 1.0
    for _ in range(40):  # answers to requests sent before the pause do not stack pauses
        assert throttle.throttled(retry_after=3.0) <= 3.0
    assert throttle.paused_until <= clock.now + 3.0
    assert throttle.next_send() == pytest.approx(throttle.paused_until - clock.now)


def test_without_retry_after_the_shared_pause_grows_with_the_streak_and_is_capped() -> None:
    clock = Clock()
    throttle = make(10.0, clock, base_pause=1.0, max_pause=8.0, recent=2, limit_429s=2)
    pauses = []
    for _ in range(6):
        throttle.throttled()
        pauses.append(throttle.throttled())
        clock.now = throttle.paused_until  # the next 429s come after the pause
    ceilings = [1, 2, 4, 8, 8, 8]
    assert all(c / 2 <= p <= c for p, c in zip(pauses, ceilings, strict=True)), pauses
    throttle.succeeded()
    throttle.throttled()
    assert throttle.throttled() <= 1.0


def test_the_rate_never_drops_below_the_floor() -> None:
    clock = Clock()
    throttle = make(1.0, clock, min_rate=0.25)
    for _ in range(200):
        throttle.throttled(retry_after=0.0)
        clock.now += 0.001
    assert throttle.rate is not None
    assert throttle.rate >= 0.25


def bucket_run(throttle: Throttle, clock: Clock, seconds: float, workers: int = 16,
               round_trip: float = 0.003, limit: float = 30.0
               ) -> tuple[int, int, list[tuple[float, float]]]:
    """``workers`` against a strict bucket of ``limit`` a second for ``seconds``, each sending
    as the throttle says and answered ``round_trip`` later (each answer reported with its send
    time, a ``Retry-After`` honoured): (passed, refused, (time, rate) after each answer)."""
    start = clock.now
    bucket = Bucket(limit, clock.now)
    retry_at = [start] * workers
    passed = refused = 0
    rates: list[tuple[float, float]] = []
    while clock.now < start + seconds:
        worker = min(range(workers), key=retry_at.__getitem__)
        clock.now = max(clock.now, retry_at[worker])
        if (wait := throttle.next_send()) > 0:
            retry_at[worker] = clock.now + wait
            continue
        sent = clock.now
        retry_after = bucket(sent)
        clock.now += round_trip  # the answer
        if retry_after is None:
            passed += 1
            throttle.succeeded(sent)
            retry_at[worker] = clock.now
        else:
            refused += 1
            own = throttle.throttled(retry_after, sent)
            assert own >= retry_after  # Retry-After is honoured for that request
            retry_at[worker] = clock.now + own
        rates.append((clock.now - start, throttle.rate or math.inf))
    return passed, refused, rates


def test_an_unpaced_start_meeting_a_strict_limit_finds_it_instead_of_crawling() -> None:
    """Sixteen workers at once against a bucket of 30/s: one passes, the rest are refused.
    Everybody waits the Retry-After once, then the pace grows from ``restart_rate`` to the
    limit and stays near it (it used to fall to ``min_rate`` and crawl back at 5% a second)."""
    clock = Clock()
    throttle = make(None, clock, start_window=None)
    passed, refused, rates = bucket_run(throttle, clock, 20.0)
    assert all(rate >= 0.7 * 30 for t, rate in rates if t > 3)
    assert all(rate <= 1.2 * 30 for t, rate in rates if t > 5)
    assert passed >= 0.85 * 30 * 20
    assert refused <= 40  # the first burst's 15, then a few while finding and probing


@pytest.mark.parametrize("limit", [5.0, 30.0, 100.0, 250.0])
def test_a_strict_limit_met_in_the_start_window_is_measured_and_held(limit: float) -> None:
    """The first refusals come right after a pass: the limit's interval is bracketed by one
    probe at a time, within a second or two, then held at 0.97 to 1.0 of it; a few 429s."""
    clock = Clock()
    throttle = make(None, clock)
    seconds = 30.0
    passed, refused, rates = bucket_run(throttle, clock, seconds, limit=limit)
    held = [rate for t, rate in rates if t > 2 + 20 / limit]
    assert 0.97 * limit <= min(held) and max(held) <= 1.01 * limit
    assert passed >= 0.95 * limit * seconds
    assert refused <= 10


def test_a_probe_passing_no_later_than_the_last_pass_measures_nothing() -> None:
    """During a search, a request sent before the probe passes and is reported after it went:
    the reference (the last pass's latest arrival) moves to the probe's send. The probe's own
    pass then measures no spacing: the search goes on, where it once ended at a spacing of
    zero (``ZeroDivisionError``, the batch crashed; found by the pay-once state machine on a
    virtual clock, where equal times are common; a coarse clock makes them so too)."""
    clock = Clock()
    throttle = make(None, clock)
    assert throttle.next_send() == 0.0
    clock.now += 0.05
    throttle.succeeded(clock.now - 0.05)  # a 50 ms round trip
    earlier = clock.now
    assert throttle.next_send() == 0.0  # answered last, below
    while throttle.rate is None and throttle.next_send() == 0.0:  # 429s: a strict limit
        throttle.throttled(1.0, clock.now)
        clock.now += 0.001
    while (wait := throttle.next_send()) > 0:  # the search's probe
        clock.now += wait
    probe = clock.now
    clock.now += 0.05
    throttle.succeeded(earlier)  # arrived (at the latest) just as the probe was sent
    throttle.succeeded(probe)
    assert throttle.rate is None  # still searching
    assert 0 < throttle.next_send() < 1  # for the next probe


def window_then_429s(throttle: Throttle, clock: Clock, passes: int) -> None:
    """``passes`` successes 50 ms after their send, then a pass and a 429 in turn until the
    429s crowd: a limit met in the start window."""
    for _ in range(passes):
        assert throttle.next_send() == 0.0
        clock.now += 0.05
        throttle.succeeded(clock.now - 0.05)
    while throttle.rate is None:
        throttle.throttled(1.0, clock.now - 0.05)
        clock.now += 0.001


def test_a_limit_met_after_many_passes_in_the_window_slow_starts_from_what_got_through(
) -> None:
    """Ten passes in half a second, then crowded 429s: a burst or a limit above one request
    per round trip, which one probe at a time cannot measure: the pace starts at the 20/s
    that got through and grows from there, per success."""
    clock = Clock()
    throttle = make(None, clock, start_window=1, growth=0.2)
    window_then_429s(throttle, clock, 10)
    assert throttle.rate == pytest.approx(10 / 0.5, rel=0.01)
    throttle.succeeded()
    assert throttle.rate == pytest.approx(10 / 0.5 * 1.2, rel=0.01)


def test_that_slow_start_ends_at_crowded_429s_no_faster_than_what_passed() -> None:
    """Growing per success, the pace outruns the answers of a 50 ms round trip; its first
    crowded 429s (between passes, not six of them) end it, not at a growth step under the
    pace at the first of them (far above the limit) but at the closest spacing that passed
    (40 ms) or what got through (seven answers in the last quarter second), a margin under."""
    clock = Clock()
    throttle = make(None, clock, start_window=1, growth=0.2, margin=0.05)
    window_then_429s(throttle, clock, 10)
    for _ in range(8):
        clock.now += 0.04
        throttle.succeeded(clock.now - 0.05)
    pace = throttle.rate
    assert pace is not None and pace > 50
    throttle.throttled(1.0, clock.now - 0.01)
    clock.now += 0.036
    throttle.succeeded(clock.now - 0.05)
    throttle.throttled(1.0, clock.now - 0.01)
    ended = throttle.rate
    assert ended is not None and 0.95 / 0.04 <= ended <= 0.95 * 7 / 0.25


def crowd(throttle: Throttle, clock: Clock, gap: float) -> None:
    """Six 429s, each after a success, ``gap`` seconds apart: what a strict bucket answers a
    pace a little above its rate (every other request refused)."""
    for _ in range(6):
        throttle.succeeded()
        clock.now += gap / 2
        throttle.throttled(1.0, clock.now - 0.001)
        clock.now += gap / 2


def test_a_told_rate_meeting_crowded_429s_steps_down_by_the_margin_only() -> None:
    """Told 30/s: a cut of ``margin``, not down to what got through."""
    clock = Clock()
    throttle = make(30.0, clock, slack=0.0, margin=0.05)
    crowd(throttle, clock, 1 / 30)
    assert throttle.rate == pytest.approx(30 * 0.95)


def test_a_measured_limit_meeting_crowded_429s_steps_down_by_the_margin_only() -> None:
    """A round trip's jitter can put a measured interval a few percent short: the 429s that
    follow cut the pace as a told one's (by ``margin``), not to half of what got through."""
    clock = Clock()
    throttle = make(None, clock, margin=0.05, notch=0.0)
    bucket_run(throttle, clock, 2.0)
    measured = throttle.rate
    assert measured is not None and 29 <= measured <= 30
    crowd(throttle, clock, 1 / measured)
    assert throttle.rate == pytest.approx(measured * 0.95)


def test_a_429_that_says_how_long_to_wait_takes_a_measured_limit_a_notch_down() -> None:
    """Measured a hair over the limit, a pace is refused one request in several, never
    crowded: each such 429 (with a ``Retry-After``) lowers it by ``notch``; one without a
    ``Retry-After`` (random, most likely) and one sent before the change do not."""
    clock = Clock()
    throttle = make(None, clock, notch=0.005)
    bucket_run(throttle, clock, 2.0)
    measured = throttle.rate
    assert measured is not None
    throttle.throttled(None, clock.now)
    assert throttle.rate == measured
    sent = clock.now
    clock.now += 0.01
    throttle.throttled(1.0, sent)
    assert throttle.rate == pytest.approx(measured * 0.995)
    throttle.throttled(1.0, sent)  # sent at the old pace
    assert throttle.rate == pytest.approx(measured * 0.995)


def test_an_untold_pace_just_above_a_strict_limit_steps_down_halfway_not_to_half() -> None:
    """Paced at 38/s after slow start, every other request refused (a bucket of 30/s at
    38/s): the limit lies between what got through (about 19/s) and the pace: halfway."""
    clock = Clock()
    throttle = make(None, clock, start_rate=40.0, growth=0.0, margin=0.05)
    crowd(throttle, clock, 1 / 40)
    assert throttle.rate == pytest.approx(38.0)  # slow start ends a margin under its pace
    clock.now += 1.5  # still held at 38; the successes before have left the window
    crowd(throttle, clock, 1 / 38)
    got_through = 6 / 0.25  # six successes, over at least a quarter of the window
    assert throttle.rate == pytest.approx((got_through + 38.0) / 2 * 0.95)


def test_429s_to_requests_sent_before_a_change_do_not_count_again() -> None:
    """The answers still on their way when the pace was cut say nothing about the new one."""
    clock = Clock()
    throttle = make(30.0, clock, slack=0.0, margin=0.05)
    crowd(throttle, clock, 1 / 30)  # cut to 28.5
    sent = clock.now - 0.5
    for _ in range(20):
        throttle.throttled(1.0, sent)  # sent before the cut: no further cut
    assert throttle.rate == pytest.approx(28.5)
    throttle.throttled(1.0, clock.now)
    assert throttle.rate == pytest.approx(28.5)  # one new 429 is not crowded 429s


def test_each_failed_probe_holds_longer_before_probing_again() -> None:
    clock = Clock()
    throttle = make(None, clock, hold=2.0, max_hold=6.0, recovery=0.1, margin=0.05,
                    start_window=None)
    for _ in range(20):
        throttle.throttled()  # a limit: paced at half, held
    holds = []
    for _ in range(4):
        held = throttle.rate
        start = clock.now
        while throttle.rate == held:
            clock.now += 0.01
        holds.append(round(clock.now - start))
        clock.now += 1.0  # probing above the ceiling, then a 429
        throttle.throttled(sent_at=clock.now)
    assert holds[1:] == [4, 6, 6]


def test_a_late_answer_holds_the_next_send_one_interval_after_it() -> None:
    """At 10/s: answers 2 ms after their send leave the slots alone; one 52 ms late (held up
    on its way, so perhaps handled late) holds the next send until its answer less the
    shortest round trip plus an interval, so the two cannot reach a strict limit too close."""
    clock = Clock()
    throttle = make(10.0, clock, slack=0.0)
    for _ in range(3):
        sent = clock.now
        assert throttle.next_send() == 0.0
        clock.now += 0.002
        throttle.succeeded(sent)
        clock.now = sent + 0.1
    sent = clock.now
    assert throttle.next_send() == 0.0
    clock.now += 0.052
    throttle.succeeded(sent)
    held_until = clock.now - 0.002 + 0.1  # not sent + 0.1, the slot
    assert throttle.next_send() == pytest.approx(held_until - clock.now)
    assert held_until > sent + 0.1


def test_answers_of_pipelined_requests_do_not_hold_the_pace() -> None:
    """At 100/s with a 50 ms round trip, five requests are always in flight: each answer
    comes long after the next ones were sent, and the pace stays 100/s."""
    clock = Clock()
    throttle = make(100.0, clock, slack=0.0)
    in_flight: list[float] = []
    sends = []
    while len(sends) < 200:
        while in_flight and in_flight[0] + 0.05 <= clock.now:
            throttle.succeeded(in_flight.pop(0))
        if (wait := throttle.next_send()) > 0:
            clock.now += min(wait, 0.001)
            continue
        in_flight.append(clock.now)
        sends.append(clock.now)
    assert sends[-1] - sends[0] == pytest.approx(199 / 100, rel=0.01)


def test_an_unpaced_batch_leaves_a_stall_out_of_the_limit_it_measures() -> None:
    """Unpaced, a lone 429 tells its worker to wait a second; then the others stall as long
    (their own 429s), resume, pass nine in 40 ms and meet five 429s: the limit is measured
    over the time requests went, not over the stalled second (it was 8.6/s, 9 passes over
    the 1.05 s since the first 429)."""
    clock = Clock()
    throttle = make(None, clock, start_window=None)
    assert throttle.rate is None  # untold, no start window: unpaced from the first request
    start = clock.now
    for i in range(5):
        clock.now = start + 0.008 * i
        throttle.succeeded(clock.now - 0.003)
    clock.now = start + 0.05
    throttle.throttled(1.0, clock.now - 0.003)  # lone: nothing changes
    assert throttle.rate is None
    for i in range(9):  # a second later, the stall over
        clock.now = start + 1.05 + 0.005 * i
        throttle.succeeded(clock.now - 0.003)
    clock.now = start + 1.10
    for _ in range(5):
        throttle.throttled(1.0, clock.now - 0.003)
    # 9 passes over a stall counted 0.1 s, 40 ms of passes and 10 ms to the 429s: 60/s.
    assert throttle.rate == pytest.approx(9 / 0.15 * (1 - throttle.margin))


def test_slow_start_ignores_a_stray_429_the_pace_grew_far_past() -> None:
    """One 429 at 10/s (another request took the token), then the pace grows past 40/s
    before six more: the limit is a step under the first of those, not under 10/s."""
    clock = Clock()
    throttle = make(None, clock, start_rate=10.0, growth=0.2, margin=0.05)
    throttle.throttled(1.0, clock.now)  # the stray, at 10/s
    while (throttle.rate or 0) < 40:
        clock.now += 0.02
        throttle.succeeded()
    paced = throttle.rate
    assert paced is not None
    for _ in range(5):
        clock.now += 0.02
        throttle.throttled(1.0, clock.now - 0.01)
    assert throttle.rate == pytest.approx(paced / 1.2 * 0.95)


async def test_an_untold_batch_meets_a_strict_limit_without_a_burst_of_every_worker() -> None:
    """Sixteen workers, no rate told, against a strict limit of 10/s (its 429s with a
    ``Retry-After``): the first creates go one at a time, then the limit is measured: a few
    429s (7 or 8 on a quiet machine, up to 13 seen with two test suites sharing its 2 cores: a
    busy machine's jitter costs the measure a few probes more), never one for every worker but
    the first, as sixteen creates sent at once draw (the batch counts its creates in flight)."""
    jobs = [Job(f"job-{i}", ReferenceToVideoRequest(
        "viduq2", f"a cat surfing, take {i}", images=("https://example.com/cat.png",)), i)
        for i in range(1, 21)]
    faults = Faults(rate_limit=RateLimit(rate=10.0, burst=1))
    async with FakeVidu(faults=faults) as sim, \
            ViduClient(sim.api_key, base_url=sim.url) as client:
        batch = BatchSubmitter(client, BatchOptions(concurrency=16))
        outcomes = [outcome async for outcome in batch.run(jobs)]
    assert {o.status for o in outcomes} == {"submitted"}
    assert sim.stats.faults["rate_limited"] < 15  # sixteen at once: 15 at least


async def test_a_create_whose_answer_was_lost_does_not_hold_the_start_window_shut() -> None:
    """An untold batch starts with one create in flight. Every create's answer is lost here
    (the task made, the connection dropped) and the list lags: each lookup waits to prove
    absence (held here until the test lets it go). A create being looked up is not on its way,
    so the next creates go meanwhile: all four are sent before the first lookup ends (one at
    a time, the lag each, when the window counted them)."""
    jobs = [Job(f"job-{i}", ReferenceToVideoRequest(
        "viduq2", f"a cat surfing, take {i}", images=("https://example.com/cat.png",)), i)
        for i in range(1, 5)]
    released = asyncio.Event()

    async def held(_: float) -> None:
        await released.wait()

    lost = Faults(create=EndpointFaults(commit_then_drop=1.0))
    clock = ManualClock()
    async with FakeVidu(faults=lost, quirks=Quirks(list_lag=60.0), clock=clock) as sim, \
            ViduClient(sim.api_key, base_url=sim.url, retry=RetryPolicy(sleep=held)) as client:
        batch = BatchSubmitter(client, BatchOptions(concurrency=4))
        run = asyncio.create_task(_outcomes(batch, jobs))
        try:
            await until(lambda: sim.stats.tasks_created == 4, "four creates sent")
        finally:
            clock.advance(61.0)  # listed now: every lookup finds its task
            released.set()
        outcomes = await run
    assert sorted((o.custom_id, o.status) for o in outcomes) == [
        (f"job-{i}", "submitted") for i in range(1, 5)]
    assert sim.stats.tasks_created == 4
    assert sim.stats.duplicate_payloads() == {}


async def _outcomes(batch: BatchSubmitter, jobs: list[Job]) -> list[Outcome]:
    return [outcome async for outcome in batch.run(jobs)]


async def test_a_job_at_the_full_start_window_stops_when_cancelled_as_the_window_changes() -> None:
    """A cancel that arrives as the window's signal fires (a stopping batch's creates fire it as
    they end) stops the job waiting there: ``asyncio.wait_for`` on Python 3.11 returned instead,
    and the job went on to create while its batch waited for it to stop (a hung Ctrl-C)."""
    async with ViduClient("key", base_url="http://127.0.0.1:9") as client:
        batch = BatchSubmitter(client)
        waiting = asyncio.create_task(batch._changed_within(60.0))
        await asyncio.sleep(0)  # waiting for the signal now
        batch._changed.fire()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
