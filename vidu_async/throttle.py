"""Shared pacing for a batch: one request rate for every worker, slowed only by a real limit.

Vidu documents no request-rate limit; its ``TooManyRequests`` / ``SystemThrottling`` answers are
mostly transient. So a 429 first costs only the request that drew it: ``throttled()`` returns a
short jittered wait (at least the server's ``Retry-After``) for that caller alone, and the other
workers carry on. The whole batch slows only when 429s correlate with the sending rate: when
``limit_429s`` of the last ``recent`` answers were 429s (5% random 429s almost never do that, a
rate limit being overrun always does). The new rate, less a ``margin``, is:

- with a configured ``max_rate``, the pace itself (the limit was told: only a margin under);
- when about every other answer passed, halfway between what got through and the pace: a
  strict limit (bursts of one) passes every other request of any pace under twice it, so what
  got through can be half the limit;
- otherwise what got through since the first of those 429s (unpaced, a stall left out:
  every worker waiting out a burst's ``Retry-After`` got nothing through meanwhile).

It is held ``hold`` seconds, then probed by ``recovery`` of it a second per second; a 429 while
probing an untold limit drops back just under where it came, and doubles the next hold (up to
``max_hold``), so a steady limit costs ever fewer probes. A 429 to a request sent before the
last change (``sent_at``) was drawn by the old pace and is not counted again.

Without a configured ``max_rate`` (nor ``start_rate``) the batch starts with a window of
``start_window`` requests in flight (``max_in_flight``: the caller counts), one more per
success, so it doubles per round trip as TCP's slow start does: the workers never meet an
unknown limit all at once, and a limitless run loses a few round trips; from ``window_cap`` on
it is unpaced (a window the caller finds full for long without an answer, a request held by
the server, lets one more go: ``stalled``). A strict limit under a request per round trip
shows at once: refusals with at most ``strict_passes`` passes before them (two of the last
three answers with a ``Retry-After``, else three of four; random 429s rarely crowd so). Its
interval is then bracketed, one request at a time, each sent a chosen spacing after the last
pass reached the server: a refusal raises the spacing known too short, a pass lowers the one
known long enough, until they are within ``precision`` (or ``search_for`` seconds have gone).
The pace is the shortest spacing that passed, less ``found_margin``, held ``found_hold``
seconds before its first probe: a measured limit needs few. Crowded 429s cut it by ``margin``
only, as a told one (jitter can measure it a few percent short), and a lone 429 with a
``Retry-After`` by ``notch`` (measured a hair over, a pace is refused one request in several,
never crowded). Many passes before the first 429s (a burst, or a limit above one request per
round trip, which one probe at a time cannot measure) start a paced slow start instead, from
the rate that got through.

Given a ``start_rate`` the batch starts paced there instead. Slow start grows ``1 + growth``
times per success, going unpaced above ``unpaced_above``, until a limit is found, one growth
step under the pace at the first of its 429s, and no faster than the closest spacing of two
passes (a strict limit passes none closer than its interval; at a long round trip the pace
grows several steps before the first 429 comes back). The slow start after a start window
ends at the first crowded 429s between passes, as the window does, not at ``limit_429s``.

The whole batch pauses only when a limit is signalled and almost nothing gets through (a
window exhausted, an outage): then for the server's ``Retry-After``, else a jittered backoff
that doubles per pause in a row; an unpaced batch then knows nothing of the limit yet, so it
slow-starts from ``start_rate`` (else ``restart_rate``).

This is sans-IO: ``next_send()`` and ``throttled()`` say how long to wait, from an injected
clock; the submitter does the sleeping. That keeps the rules testable without timing.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import deque
from collections.abc import Callable

import attrs

__all__ = ["Throttle"]


@attrs.define
class _Search:
    """The bracket around a strict limit's interval, in seconds between passes: ``low`` a
    spacing refused, ``high`` one that passed, each measured from ``ref``, when the last pass
    reached the server (a refused request's send while no pass is known: ``ref_is_pass``)."""

    started: float
    low: float
    ref: float
    ref_is_pass: bool
    high: float = math.inf
    probe: float | None = None
    """When the one request in flight was sent (None: none is)."""
    due: float = 0.0
    """When the next probe is due (``late`` earlier is asked for)."""
    late: float = 0.0
    """How late sends come after the time asked (the loop's wake-ups), averaged: a probe is
    asked for that much before it is due, so that the bracket can narrow below it."""
    ready: float = 0.0
    """When the last probe's answer came: a probe asked for before then is not late."""


@attrs.define
class Throttle:
    """The shared rate and pause of one submitter.

    ``max_rate`` is the configured ceiling in requests per second (None: none known, so start
    slowly and grow until the server complains); the rate never drops below ``min_rate``.
    """

    max_rate: float | None
    clock: Callable[[], float]
    min_rate: float = 0.2
    start_rate: float | None = None
    restart_rate: float = 10.0
    growth: float = 0.2
    unpaced_above: float = 2000.0
    recent: int = 20
    limit_429s: int = 6
    window: float = 1.0
    margin: float = 0.05
    hold: float = 2.0
    max_hold: float = 30.0
    recovery: float = 0.05
    slack: float = 0.01
    retry_base: float = 0.1
    base_pause: float = 1.0
    max_pause: float = 60.0
    start_window: int | None = 1
    window_cap: int = 32
    probe_expiry: float = 2.0
    precision: float = 0.02
    search_step: float = 4.0
    search_bias: float = 0.6
    search_floor: float = 0.001
    search_for: float = 3.0
    found_margin: float = 0.005
    found_hold: float = 16.0
    notch: float = 0.005
    strict_passes: int = 2
    rng: random.Random = attrs.field(factory=random.Random)
    _window: int | None = attrs.field(init=False)
    _stalls: int = attrs.field(init=False, default=0)
    _search: _Search | None = attrs.field(init=False, default=None)
    _measured: bool = attrs.field(init=False, default=False)
    _last_pass: float | None = attrs.field(init=False, default=None)
    _born: float = attrs.field(init=False)
    _pass_sent: float | None = attrs.field(init=False, default=None)
    _shortest_pass: float = attrs.field(init=False, default=math.inf)
    _rate: float | None = attrs.field(init=False)
    _slow_start: bool = attrs.field(init=False)
    _next_slot: float = attrs.field(init=False, default=0.0)
    _after_answer: float = attrs.field(init=False, default=0.0)
    _paused_until: float = attrs.field(init=False, default=0.0)
    _last_update: float = attrs.field(init=False, default=0.0)
    _streak: int = attrs.field(init=False, default=0)
    _ceiling: float | None = attrs.field(init=False, default=None)
    _ceiling_until: float = attrs.field(init=False, default=0.0)
    _probe_hold: float = attrs.field(init=False, default=0.0)
    _changed_at: float = attrs.field(init=False, default=-math.inf)
    _answers: deque[tuple[float, bool, float | None]] = attrs.field(init=False)
    _successes: deque[float] = attrs.field(init=False, factory=deque)
    _round_trips: deque[float] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._slow_start = self.max_rate is None and self.start_rate is not None
        untold = self.max_rate is None and self.start_rate is None
        self._window = self.start_window if untold else None
        self._rate = self.start_rate if self.max_rate is None else self._cap
        self._answers = deque(maxlen=self.recent)
        self._round_trips = deque(maxlen=self.recent)
        self._probe_hold = self.hold
        self._last_update = self._born = self.clock()
        self._paused_until = self._last_update

    @property
    def rate(self) -> float | None:
        """The rate in force now, in requests per second (None: unpaced)."""
        self._recover(self.clock())
        return self._rate

    @property
    def max_in_flight(self) -> int | None:
        """How many requests may be in flight at once now (None: no such limit): the start
        window of an untold limit. The caller keeps count (it knows every answer, even those
        it reports neither as a success nor as a 429) and waits for one to go over it, or
        for long (then ``stalled``)."""
        return None if self._window is None else self._window + self._stalls

    def stalled(self) -> None:
        """The start window stayed full for long without an answer (a create the server holds
        unanswered, up to the client's read timeout): one more request may be in
        flight, so a held request does not stop the batch. Not a pass: what the window has
        learned of a limit (the passes before its first 429s) stays as it was."""
        if self._window is not None:
            self._stalls += 1

    @property
    def paused_until(self) -> float:
        """When the shared pause ends (in the past when there is none)."""
        return self._paused_until

    def next_send(self, *, book: bool = True, reports: bool = True) -> float:
        """0.0 if a request may go now (its slot is then booked), else the seconds to wait
        before asking again: ``while (wait := t.next_send()) > 0: await sleep(wait)``.

        Nothing is booked while waiting, so waiting workers follow every rate change and pause
        that happens while they sleep; ``book=False`` only asks, booking nothing either way.
        ``reports=False``: the caller will not report its success (``succeeded``), so the
        request waits out a search for the limit, whose probes it would confuse; ``answered``
        may say when it was answered.
        """
        now = self.clock()
        self._recover(now)
        search = self._search
        if search is not None and now >= search.started + self.search_for:
            self._end_search(now)
            search = None
        start = max(now, self._paused_until)
        if search is not None:
            start = max(start, self._probe_slot(search, now, reports))
        elif self._rate is not None:
            start = max(start, self._next_slot, self._after_answer)
        if start > now:
            return start - now
        if not book:
            pass
        elif search is not None:
            search.probe = now
            if (asked := search.due - search.late) >= search.ready:
                search.late = (search.late + now - asked) / 2
        elif self._rate is not None:
            self._next_slot = now + 1.0 / self._rate
        return 0.0

    def _probe_slot(self, search: _Search, now: float, reports: bool) -> float:
        """When the search's next probe may go: one at a time, its spacing after the last pass
        halfway (rather nearer the long end: a refusal costs more) across the bracket, or a
        ``search_step`` above a spacing refused while no pass is known."""
        if not reports:
            return min(now + 0.05, search.started + self.search_for)
        if search.probe is not None:
            if now < search.probe + self.probe_expiry:
                return max(search.probe + self._min_round_trip, now + 0.001)
            search.probe = None  # its answer was never reported
        if search.high == math.inf:
            spacing = search.low * self.search_step
        else:
            spacing = search.low ** (1 - self.search_bias) * search.high ** self.search_bias
        search.due = search.ref + spacing
        return max(search.due - search.late, search.ref + search.low * (1 + self.precision / 2))

    def succeeded(self, sent_at: float | None = None) -> None:
        """A request went through: it counts towards the measured rate and slow start.

        With ``sent_at`` (when its slot was granted), the next request waits until one
        interval after the latest moment this one can have reached the server: the answer
        less the shortest recent round trip. A request held up on its way (a busy machine, a
        stalled server) then no longer meets the next one at a strict limit, and the others
        are untouched.
        """
        now = self.clock()
        if sent_at is not None:
            self._round_trips.append(now - sent_at)
        self._last_pass = arrived = now - self._min_round_trip
        if sent_at is not None:
            if self._rate is not None:
                self._after_answer = arrived + 1.0 / self._rate
            if self._pass_sent is not None and sent_at > self._pass_sent:
                # A strict limit (bursts of one) passes no two requests closer than its
                # interval: the shortest spacing that passed bounds it.
                self._shortest_pass = min(self._shortest_pass, sent_at - self._pass_sent)
            self._pass_sent = max(sent_at, self._pass_sent or sent_at)
        if self._search is not None:
            self._probed(self._search, now, sent_at, arrived)
        elif self._window is not None:
            self._window += 1
            if self._window >= self.window_cap:
                self._window = None
        self._successes.append(now)
        while self._successes[0] <= now - self.window:
            self._successes.popleft()
        self._answers.append((now, True, self._rate))
        if now >= self._paused_until:
            self._streak = 0
        if self._slow_start and self._rate is not None:
            self._rate *= 1 + self.growth
            if self._rate > self.unpaced_above:
                self._rate = None

    def answered(self, sent_at: float) -> None:
        """A request whose success is not reported (``next_send(reports=False)``, its slot
        granted at ``sent_at``) was answered by now: as after a success, the next request
        waits one interval after the latest moment it can have reached the server."""
        now = self.clock()
        if self._rate is not None and now - sent_at < self.window:
            latest = now - self._min_round_trip + 1.0 / self._rate
            self._after_answer = max(self._after_answer, latest)

    def throttled(self, retry_after: float | None = None, sent_at: float | None = None) -> float:
        """A 429 (not ``QuotaExceeded``): the seconds the caller waits before asking
        ``next_send`` again; a limit it signals slows (or pauses) everybody.

        The wait is at least ``retry_after``; shared pauses never stack, each only grows to
        what the newest answer asks for. ``sent_at`` (when its slot was granted) tells a 429
        drawn by the pace before the last change, which then changes nothing.
        """
        now = self.clock()
        self._recover(now)
        if self._search is not None:
            self._probed(self._search, now, sent_at, None)
        elif sent_at is None or sent_at >= self._changed_at:  # else drawn by an older pace
            self._learn(now, retry_after, sent_at)
        own = self.retry_base * self.rng.uniform(0.5, 1.5)
        return max(own, retry_after or 0.0, self._paused_until - now)

    def _learn(self, now: float, retry_after: float | None, sent_at: float | None) -> None:
        """What a 429 drawn by the pace in force says: a strict limit met in the start window,
        crowded 429s, or a probe above the limit refused."""
        self._answers.append((now, False, self._rate))
        if self._window is not None and self._crowded(retry_after is not None):
            if self._window - (self.start_window or 0) <= self.strict_passes:
                self._start_search(now, sent_at)
            else:
                self._window_limited(now)
        elif (len(refused := self._refused()) >= self.limit_429s
              or self._overshot(retry_after is not None)):
            self._limit(now, refused, retry_after)
        elif (self.max_rate is None and self._rate is not None and self._ceiling is not None
              and self._rate > self._ceiling):
            # Probing found the limit: just under where it was found, and probe later next
            # time, so that a steady limit costs ever fewer 429s.
            self._probe_hold = min(self.max_hold, 2 * self._probe_hold)
            self._found(now, max(self._ceiling, self._rate * (1 - self.margin)))
        elif self._measured and self._rate is not None and retry_after is not None:
            # A measured limit meets only the 429s of a round trip's jitter, rarely: one that
            # says how long to wait may be the measure a little over the limit (one request
            # in a few refused, never crowded): a notch down.
            self._found(now, self._rate * (1 - self.notch))

    def _crowded(self, told_to_wait: bool) -> bool:
        """A 429 during the start window: whether a limit shows: two of the last three answers
        refused with a ``Retry-After``, else three of four (random 429s rarely crowd so)."""
        last = [ok for _, ok, _ in self._answers][-4:]
        return last[-3:].count(False) >= 2 if told_to_wait else last.count(False) >= 3

    def _overshot(self, told_to_wait: bool) -> bool:
        """Whether the slow start that followed the start window grew past a limit: 429s
        crowd in between passes (it grows per success, so several times per round trip, and
        waiting for ``limit_429s`` of them would overshoot far)."""
        return (self._slow_start and self.start_rate is None and self._rate is not None
                and self._crowded(told_to_wait)
                and any(ok for _, ok, _ in list(self._answers)[-4:]))

    def _window_limited(self, now: float) -> None:
        """A limit met after many passes in the start window (above one request per round
        trip, or a burst): pace at the rate that got through, and slow-start from there."""
        elapsed = min(self.window, max(now - self._born, self.window / 10))
        self._rate = max(self.min_rate, len(self._successes) / elapsed)
        self._slow_start = True
        self._window = None
        self._next_slot = now
        self._changed_at = now
        self._answers.clear()
        self._shortest_pass = math.inf

    def _start_search(self, now: float, sent_at: float | None) -> None:
        """Stop the window and bracket the limit's interval, from the spacing just refused."""
        sent = now if sent_at is None else sent_at
        if self._last_pass is None:
            self._search = _Search(now, self.search_floor, sent, ref_is_pass=False)
        else:
            low = max(self.search_floor, sent - self._last_pass)
            self._search = _Search(now, low, self._last_pass, ref_is_pass=True)
        self._window = None
        self._changed_at = now

    def _probed(
        self, search: _Search, now: float, sent_at: float | None, arrived: float | None
    ) -> None:
        """An answer during the search (``arrived``: when it reached the server, if it
        passed): the probe's narrows the bracket; any pass moves the reference."""
        probe = search.probe
        if probe is not None and (sent_at is None or sent_at >= probe):
            search.probe, search.ready = None, now
            if arrived is not None and search.ref_is_pass:
                # A pass of another request, reported after the probe went, can have moved the
                # reference close to the probe's send, or past it: a spacing no longer than one
                # refused (``low``) then measures nothing (zero would end the search at an
                # infinite rate), and the search goes on.
                if (spacing := probe - search.ref) > search.low:
                    search.high = min(search.high, spacing)
            elif arrived is None:
                search.low = max(search.low, probe - search.ref)
                if search.low >= search.high:  # noise, or the limit moved: look above again
                    search.high = math.inf
        if arrived is not None and (not search.ref_is_pass or arrived > search.ref):
            search.ref, search.ref_is_pass = arrived, True
        if search.high <= search.low * (1 + self.precision):
            self._end_search(now)

    def _end_search(self, now: float) -> None:
        """Pace at the shortest spacing that passed (or a step above the longest refused),
        held longer than a limit only estimated: it was measured."""
        search, self._search = self._search, None
        assert search is not None
        spacing = search.high if search.high < math.inf else search.low * self.search_step
        self._answers.clear()
        self._next_slot = now
        self._last_update = now
        self._probe_hold = self.found_hold
        rate = max(self.min_rate, (1 - self.found_margin) / spacing)
        self._found(now, rate)
        self._measured = search.high < math.inf
        if search.ref_is_pass:  # the next request one interval after the last pass
            self._after_answer = search.ref + 1 / rate

    def _refused(self) -> list[tuple[float, float | None]]:
        """The 429s among the recent answers: when and at which rate each of them came."""
        return [(t, rate) for t, ok, rate in self._answers if not ok]

    def _found(self, now: float, rate: float) -> None:
        """Hold ``rate`` as the ceiling (from the end of any pause), then probe above it."""
        self._changed_at = now
        self._window = None
        self._ceiling = self._rate = rate
        self._ceiling_until = max(now, self._paused_until) + self._probe_hold

    def _limit(
        self, now: float, refused: list[tuple[float, float | None]], retry_after: float | None
    ) -> None:
        """429s crowd the recent answers (``refused``: when, and at which pace): pace at what
        got through since the first of them (or over ``window``, whichever is longer), or pause
        everybody if nearly nothing did. Unpaced, a stall in between is left out
        (``_rate_while_sending``): every worker told to wait a whole second by a burst's 429s
        got nothing through for a second, which would put the limit at a tenth of itself.

        While speeding up, the pace overshoots before six 429s are in: the limit is then one
        growth step under the pace at the first of them that the pace did not outgrow by more
        than six steps (an older one was a stray: requests kept passing well above it).
        """
        passed = sum(ok for _, ok, _ in self._answers)
        answered = len(self._answers)
        self._answers.clear()
        since = min(refused[0][0], now - self.window / 4)
        passes = [t for t in self._successes if t > since]
        if self._rate is None:  # unpaced: its workers may all have stalled meanwhile
            measured = _rate_while_sending(passes, since, now, self.window / 10)
        else:
            measured = len(passes) / (now - since)
        if passed <= 1:  # nearly everything refused: everybody waits
            self._streak += 1
            if retry_after is None:
                ceiling = min(self.max_pause, self.base_pause * 2 ** (self._streak - 1))
                retry_after = ceiling * self.rng.uniform(0.5, 1.0)
            self._paused_until = max(self._paused_until, now + retry_after)
            if self._rate is None:  # unpaced, so nothing is known: speed up again from slow
                self._rate = self.start_rate or self.restart_rate
                self._window = None
                self._slow_start = True
                self._ceiling = None
                self._changed_at = now
                return
            measured = self._rate / 2  # then at half pace
        elif self._slow_start and self._rate is not None:
            stray = self._rate / (1 + self.growth) ** self.limit_429s
            paces = [pace for _, pace in refused if pace is not None and pace >= stray]
            # A pace that grew past the limit within a round trip: no faster than the
            # closest spacing that passed, if any did.
            passed_at = 1 / s if 0 < (s := self._shortest_pass) < math.inf else math.inf
            step_under = [min(pace / (1 + self.growth), passed_at) for pace in paces[:1]]
            measured = max([measured, *step_under])
        elif self._rate is not None and (self.max_rate is not None or self._measured):
            # Told the limit, or measured it: trust it, only a margin under (a measure a
            # round trip's jitter put a little over the limit is not a tenth of it).
            measured = self._rate
        elif self._rate is not None and 1 / 3 <= passed / answered <= 0.6:
            # About every other request passed: a strict limit (bursts of one) does that to
            # any pace under twice it, so the limit lies between what got through and the
            # pace: halfway.
            measured = (measured + self._rate) / 2
        elif self._rate is not None:
            # Workers waiting out Retry-After send less than the pace: what got through can
            # be far under the limit, so never more than halve a pace.
            measured = max(measured, self._rate / 2)
        self._slow_start = False
        self._probe_hold = self.hold
        self._next_slot = now
        self._last_update = max(now, self._paused_until)
        self._found(now, max(self.min_rate, measured * (1 - self.margin)))

    def _recover(self, now: float) -> None:
        """After the hold, probe above the ceiling, up to ``max_rate``."""
        if self._rate is None or self._ceiling is None or now <= self._last_update:
            return
        self._last_update = now
        probed = self._ceiling * (1 + self.recovery * max(0.0, now - self._ceiling_until))
        self._rate = probed if self.max_rate is None else min(self._cap, probed)

    @property
    def _min_round_trip(self) -> float:
        """The shortest recent round trip (0 before any is known)."""
        return min(self._round_trips, default=0.0)

    @property
    def _cap(self) -> float:
        """A configured rate is paced a little under: a server's limit has no room for jitter."""
        assert self.max_rate is not None
        return self.max_rate * (1 - self.slack)


def _rate_while_sending(
    passes: list[float], since: float, now: float, shortest_stall: float
) -> float:
    """Passes a second from ``since`` to ``now``, stalls left out: a gap between passes (or at
    either end) counts as four times their median gap at most, or ``shortest_stall`` if that
    is longer. A second in which nothing got through because every worker was waiting out a
    ``Retry-After`` says nothing of the limit."""
    edges = [since, *passes, now]
    gaps = [later - earlier for earlier, later in itertools.pairwise(edges)]
    inner = sorted(gaps[1:-1])
    longest = max(shortest_stall, 4 * inner[len(inner) // 2]) if inner else shortest_stall
    active = sum(min(gap, longest) for gap in gaps)
    return len(passes) / active if active > 0 else 0.0
