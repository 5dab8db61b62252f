"""Shared pacing for a batch: one request rate for every worker, slowed together on a 429.

A ``TooManyRequests`` / ``SystemThrottling`` answer means the whole account is going too fast, so
the answer is one shared pause and a lower rate for everybody (multiplicative decrease), which
then recovers a little every second without trouble (additive increase): AIMD, as TCP does. Every
worker retrying on its own timer would instead hammer the API with N independent retry storms.

This is sans-IO: ``reserve()`` says how long the caller must wait, from an injected clock; the
submitter does the sleeping. That keeps the rules testable without timing anything.
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
    server complains). After a throttle the rate halves (not below ``min_rate``) and grows back
    by ``recovery`` requests per second for every second without one.
    """

    max_rate: float | None
    clock: Callable[[], float]
    min_rate: float = 0.2
    recovery: float = 0.5
    base_pause: float = 1.0
    max_pause: float = 60.0
    rng: random.Random = attrs.field(factory=random.Random)
    _rate: float | None = attrs.field(init=False)
    _next_slot: float = attrs.field(init=False, default=0.0)
    _paused_until: float = attrs.field(init=False, default=0.0)
    _last_update: float = attrs.field(init=False, default=0.0)
    _streak: int = attrs.field(init=False, default=0)
    _recent: deque[float] = attrs.field(init=False, factory=lambda: deque(maxlen=32))

    def __attrs_post_init__(self) -> None:
        self._rate = self.max_rate
        self._last_update = self.clock()

    @property
    def rate(self) -> float | None:
        """The rate in force now, in requests per second (None: unlimited)."""
        self._recover(self.clock())
        return self._rate

    @property
    def paused_until(self) -> float:
        return self._paused_until

    def reserve(self) -> float:
        """Book the next request slot; returns how many seconds to wait before sending."""
        now = self.clock()
        self._recover(now)
        start = max(now, self._paused_until)
        if self._rate is not None:
            start = max(start, self._next_slot)
            self._next_slot = start + 1.0 / self._rate
        self._recent.append(start)
        return start - now

    def throttled(self, retry_after: float | None = None) -> float:
        """The server said slow down: pause everyone and halve the rate; returns the pause.

        429s from requests already sent before the pause began do not compound: within one
        pause window the rate is cut once, and the pause only grows to what the newest answer
        asks for.
        """
        now = self.clock()
        if now >= self._paused_until:
            self._streak += 1
            self._rate = max(self.min_rate, self._current_or_observed(now) / 2)
            self._next_slot = now
        if retry_after is not None:
            pause = retry_after
        else:
            ceiling = min(self.max_pause, self.base_pause * 2 ** (self._streak - 1))
            pause = ceiling * self.rng.uniform(0.5, 1.0)
        self._paused_until = max(self._paused_until, now + pause)
        self._last_update = self._paused_until
        return self._paused_until - now

    def succeeded(self) -> None:
        """A request went through: the throttle streak is over."""
        if self.clock() >= self._paused_until:
            self._streak = 0

    def _recover(self, now: float) -> None:
        if self._rate is None or now <= self._last_update:
            return
        grown = self._rate + self.recovery * (now - self._last_update)
        self._last_update = now
        if self.max_rate is not None:
            self._rate = min(self.max_rate, grown)
        elif self._recent and grown >= 2 * self._observed(now):
            self._rate = None  # back to the pace we had before the server complained
        else:
            self._rate = grown

    def _current_or_observed(self, now: float) -> float:
        return self._rate if self._rate is not None else self._observed(now)

    def _observed(self, now: float) -> float:
        """Requests per second over the recent slots (how fast we went while unlimited)."""
        span = now - self._recent[0] if self._recent else 0.0
        if span <= 0:
            return max(self.min_rate, float(len(self._recent)))
        return max(self.min_rate, len(self._recent) / span)
