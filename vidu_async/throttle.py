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
- otherwise what got through since the first of those 429s.

It is held ``hold`` seconds, then probed by ``recovery`` of it a second per second; a 429 while
probing an untold limit drops back just under where it came, and doubles the next hold (up to
``max_hold``), so a steady limit costs ever fewer probes. A 429 to a request sent before the
last change (``sent_at``) was drawn by the old pace and is not counted again.

Without a configured ``max_rate`` the batch starts unpaced; given a ``start_rate`` it starts
there instead (sparing a strict limit the first burst of every worker at once, at the cost of
a slower start when there is no limit) and grows ``1 + growth`` times per success (the pace
doubles in a few answers at any rate, as TCP's slow start does per round trip), going unpaced
above ``unpaced_above``, until a limit is found, one growth step under the pace at the first
of its 429s. The whole batch pauses only when a limit is signalled and almost nothing gets
through (a window exhausted, an outage): then for the server's ``Retry-After``, else a jittered
backoff that doubles per pause in a row; an unpaced batch then knows nothing of the limit yet,
so it slow-starts from ``start_rate`` (else ``restart_rate``).

This is sans-IO: ``next_send()`` and ``throttled()`` say how long to wait, from an injected
clock; the submitter does the sleeping. That keeps the rules testable without timing.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable

import attrs

__all__ = ["Throttle"]


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
    rng: random.Random = attrs.field(factory=random.Random)
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
        self._rate = self.start_rate if self.max_rate is None else self._cap
        self._answers = deque(maxlen=self.recent)
        self._round_trips = deque(maxlen=self.recent)
        self._probe_hold = self.hold
        self._last_update = self.clock()
        self._paused_until = self._last_update

    @property
    def rate(self) -> float | None:
        """The rate in force now, in requests per second (None: unpaced)."""
        self._recover(self.clock())
        return self._rate

    @property
    def paused_until(self) -> float:
        """When the shared pause ends (in the past when there is none)."""
        return self._paused_until

    def next_send(self, *, book: bool = True) -> float:
        """0.0 if a request may go now (its slot is then booked), else the seconds to wait
        before asking again: ``while (wait := t.next_send()) > 0: await sleep(wait)``.

        Nothing is booked while waiting, so waiting workers follow every rate change and pause
        that happens while they sleep; ``book=False`` only asks, booking nothing either way.
        """
        now = self.clock()
        self._recover(now)
        start = max(now, self._paused_until)
        if self._rate is not None:
            start = max(start, self._next_slot, self._after_answer)
        if start > now:
            return start - now
        if book and self._rate is not None:
            self._next_slot = now + 1.0 / self._rate
        return 0.0

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
            if self._rate is not None:
                self._after_answer = now - min(self._round_trips) + 1.0 / self._rate
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

    def throttled(self, retry_after: float | None = None, sent_at: float | None = None) -> float:
        """A 429 (not ``QuotaExceeded``): the seconds the caller waits before asking
        ``next_send`` again; a limit it signals slows (or pauses) everybody.

        The wait is at least ``retry_after``; shared pauses never stack, each only grows to
        what the newest answer asks for. ``sent_at`` (when its slot was granted) tells a 429
        drawn by the pace before the last change, which then changes nothing.
        """
        now = self.clock()
        self._recover(now)
        if sent_at is not None and sent_at < self._changed_at:
            pass  # sent at the pace before the last change: nothing to learn about this one
        elif len(refused := self._refusal(now)) >= self.limit_429s:
            self._limit(now, refused, retry_after)
        elif (self.max_rate is None and self._rate is not None and self._ceiling is not None
              and self._rate > self._ceiling):
            # Probing found the limit: just under where it was found, and probe later next
            # time, so that a steady limit costs ever fewer 429s.
            self._probe_hold = min(self.max_hold, 2 * self._probe_hold)
            self._found(now, max(self._ceiling, self._rate * (1 - self.margin)))

        own = self.retry_base * self.rng.uniform(0.5, 1.5)
        return max(own, retry_after or 0.0, self._paused_until - now)

    def _refusal(self, now: float) -> list[tuple[float, float | None]]:
        """Count a 429 among the recent answers; when and at which rate each of them came."""
        self._answers.append((now, False, self._rate))
        return [(t, rate) for t, ok, rate in self._answers if not ok]

    def _found(self, now: float, rate: float) -> None:
        """Hold ``rate`` as the ceiling (from the end of any pause), then probe above it."""
        self._changed_at = now
        self._ceiling = self._rate = rate
        self._ceiling_until = max(now, self._paused_until) + self._probe_hold

    def _limit(
        self, now: float, refused: list[tuple[float, float | None]], retry_after: float | None
    ) -> None:
        """429s crowd the recent answers (``refused``: when, and at which pace): pace at what
        got through since the first of them (or over ``window``, whichever is longer), or pause
        everybody if nearly nothing did.

        While speeding up, the pace overshoots before six 429s are in: the limit is then one
        growth step under the pace at the first of them that the pace did not outgrow by more
        than six steps (an older one was a stray: requests kept passing well above it).
        """
        passed = sum(ok for _, ok, _ in self._answers)
        answered = len(self._answers)
        self._answers.clear()
        since = min(refused[0][0], now - self.window / 4)
        measured = sum(1 for t in self._successes if t > since) / (now - since)
        if passed <= 1:  # nearly everything refused: everybody waits
            self._streak += 1
            if retry_after is None:
                ceiling = min(self.max_pause, self.base_pause * 2 ** (self._streak - 1))
                retry_after = ceiling * self.rng.uniform(0.5, 1.0)
            self._paused_until = max(self._paused_until, now + retry_after)
            if self._rate is None:  # unpaced, so nothing is known: speed up again from slow
                self._rate = self.start_rate or self.restart_rate
                self._slow_start = True
                self._ceiling = None
                self._changed_at = now
                return
            measured = self._rate / 2  # then at half pace
        elif self._slow_start and self._rate is not None:
            stray = self._rate / (1 + self.growth) ** self.limit_429s
            paces = [pace for _, pace in refused if pace is not None and pace >= stray]
            measured = max([measured] + [pace / (1 + self.growth) for pace in paces[:1]])
        elif self._rate is not None and self.max_rate is not None:
            measured = self._rate  # told the limit: trust it, only a margin under
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
    def _cap(self) -> float:
        """A configured rate is paced a little under: a server's limit has no room for jitter."""
        assert self.max_rate is not None
        return self.max_rate * (1 - self.slack)
