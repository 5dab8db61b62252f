"""Shared pacing for a batch: one request rate for every worker, slowed together on a 429.

A ``TooManyRequests`` / ``SystemThrottling`` answer means the whole account is going too fast, so
the answer is one shared pause (the server's ``Retry-After`` exactly, else a jittered backoff)
and a lower rate for everybody; every worker retrying on its own timer would instead hammer the
API with N independent retry storms.

How much lower is measured, not guessed. The first 429 of a pause compares the successes of the
last ``window`` seconds with the pace kept: when about that much got through, the limit is just
under the pace, so the new rate is the pace less a ``margin``; when far less got through, it is
what got through, less the margin. That rate becomes the *ceiling*, held ``hold`` seconds before
probing above it by ``recovery`` requests per second per second. Plain AIMD (halve, climb back)
would spend most of a run below the limit or draw a 429, and a whole-second pause, on every
climb. With nothing measured yet (an unpaced start, or a 429 right after a pause) the rate
starts from what got through (at least ``restart_rate``; or from half the pace) and grows
``1 + growth`` times a second until the next 429 measures the limit, as TCP's slow start does.

This is sans-IO: ``next_send()`` says how long the caller must wait, from an injected
clock; the submitter does the sleeping. That keeps the rules testable without timing.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

import attrs

__all__ = ["Throttle"]


@attrs.define
class Throttle:
    """The shared rate and pause of one submitter.

    ``max_rate`` is the configured ceiling in requests per second (None: no ceiling until the
    server complains); the rate never drops below ``min_rate``.
    """

    max_rate: float | None
    clock: Callable[[], float]
    min_rate: float = 0.2
    window: float = 1.0
    margin: float = 0.05
    hold: float = 30.0
    recovery: float = 0.5
    growth: float = 2.0
    restart_rate: float = 1.0
    base_pause: float = 1.0
    max_pause: float = 60.0
    rng: random.Random = attrs.field(factory=random.Random)
    _rate: float | None = attrs.field(init=False)
    _next_slot: float = attrs.field(init=False, default=0.0)
    _paused_until: float = attrs.field(init=False, default=0.0)
    _last_update: float = attrs.field(init=False, default=0.0)
    _streak: int = attrs.field(init=False, default=0)
    _ceiling: float | None = attrs.field(init=False, default=None)
    _ceiling_until: float = attrs.field(init=False, default=0.0)
    _successes: deque[float] = attrs.field(init=False, factory=deque)

    def __attrs_post_init__(self) -> None:
        self._rate = self.max_rate
        self._last_update = self.clock()
        self._paused_until = self._last_update

    @property
    def rate(self) -> float | None:
        """The rate in force now, in requests per second (None: unlimited)."""
        self._recover(self.clock())
        return self._rate

    @property
    def paused_until(self) -> float:
        return self._paused_until

    def next_send(self) -> float:
        """0.0 if a request may go now (its slot is then booked), else the seconds to wait
        before asking again: ``while (wait := t.next_send()) > 0: await sleep(wait)``.

        Nothing is booked while waiting, so waiting workers follow every rate change and pause
        that happens while they sleep.
        """
        now = self.clock()
        self._recover(now)
        start = max(now, self._paused_until)
        if self._rate is not None:
            start = max(start, self._next_slot)
        if start > now:
            return start - now
        if self._rate is not None:
            self._next_slot = now + 1.0 / self._rate
        return 0.0

    def succeeded(self) -> None:
        """A request went through: count it towards the measured rate; the streak is over."""
        now = self.clock()
        self._successes.append(now)
        while self._successes and self._successes[0] <= now - self.window:
            self._successes.popleft()
        if now >= self._paused_until:
            self._streak = 0

    def throttled(self, retry_after: float | None = None) -> float:
        """The server said slow down: pause everyone and lower the rate; returns the pause.

        429s from requests already sent before the pause began do not compound: within one
        pause window the rate is cut once, and the pause only grows to what the newest answer
        asks for.
        """
        now = self.clock()
        if now >= self._paused_until:
            self._streak += 1
            self._cut(now)
        if retry_after is not None:
            pause = retry_after
        else:
            ceiling = min(self.max_pause, self.base_pause * 2 ** (self._streak - 1))
            pause = ceiling * self.rng.uniform(0.5, 1.0)
        self._paused_until = max(self._paused_until, now + pause)
        self._last_update = self._paused_until
        self._ceiling_until = self._paused_until + self.hold
        return self._paused_until - now

    def _cut(self, now: float) -> None:
        sending = min(self.window, now - self._paused_until)  # since the last pause ended
        passed = sum(1 for t in self._successes if t > now - sending)
        current = self._rate
        measured = passed / sending if passed >= 2 and sending > 0 else None
        if current is None:  # unpaced until now: all we know is what got through
            self._ceiling = None
            recent = sum(1 for t in self._successes if t > now - self.window)
            self._rate = max(self.min_rate, self.restart_rate, recent / self.window)
        elif measured is None and self._ceiling is not None:  # too soon after a pause to tell
            self._ceiling = self._rate = max(self.min_rate, current * (1 - self.margin))
        elif measured is not None and (measured >= current / 2 or sending >= self.window):
            # the limit is just under the pace we kept, or well under it: what got through
            base = current if measured >= current / 2 else measured
            self._ceiling = self._rate = max(self.min_rate, base * (1 - self.margin))
        else:  # no measurement: halve, then grow back fast until one comes
            self._ceiling = None
            self._rate = max(self.min_rate, current / 2)
        self._next_slot = now

    def _recover(self, now: float) -> None:
        if self._rate is None or now <= self._last_update:
            return
        elapsed = now - self._last_update
        self._last_update = now
        if self._ceiling is None:
            grown = self._rate * (1 + self.growth) ** min(elapsed, 60.0)  # no float overflow
        else:  # held at the ceiling until ceiling_until, then probing above it
            grown = self._ceiling + self.recovery * max(0.0, now - self._ceiling_until)
        if self.max_rate is not None:
            grown = min(self.max_rate, grown)
        self._rate = grown
