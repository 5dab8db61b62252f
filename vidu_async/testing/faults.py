"""Deciding which fault a request meets: seeded draws over ``Faults``, and a token bucket.

Every request to a fault-capable endpoint consumes exactly two draws from the seeded generator
(one for latency, one for the fault), so a run with the same seed and the same sequence of
requests meets the same faults.
"""

from __future__ import annotations

import math
import random

import attrs

from vidu_async.testing.config import FAULT_KINDS, Faults, RateLimit
from vidu_async.testing.state import Clock

__all__ = ["FaultDraw", "FaultInjector", "TokenBucket"]


@attrs.frozen
class FaultDraw:
    """What one request meets: a fault kind (``None``: none) and the latency to add first."""

    kind: str | None
    latency: float


@attrs.define
class TokenBucket:
    """``rate`` tokens a second up to ``burst``; a request takes one or waits."""

    limit: RateLimit
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """Take a token: 0.0 if granted, else the seconds until one is available."""
        self.tokens = min(
            float(self.limit.burst), self.tokens + (now - self.updated) * self.limit.rate
        )
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.limit.rate


class FaultInjector:
    """Draws faults per endpoint from a generator seeded with ``seed``; keeps one bucket per key."""

    def __init__(self, faults: Faults, *, seed: int, clock: Clock) -> None:
        self.faults = faults
        self._rng = random.Random(f"{seed}:faults")
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def draw(self, endpoint: str) -> FaultDraw:
        config = self.faults.for_endpoint(endpoint)
        latency_roll, fault_roll = self._rng.random(), self._rng.random()
        latency = config.latency if latency_roll < config.latency_rate else 0.0
        for kind in FAULT_KINDS:
            fault_roll -= config.rate(kind)
            if fault_roll < 0.0:
                return FaultDraw(kind, latency)
        return FaultDraw(None, latency)

    def throttle(self, api_key: str) -> int | None:
        """None if the key may send now, else the whole seconds it should wait (``Retry-After``)."""
        limit = self.faults.rate_limit
        if limit is None:
            return None
        now = self._clock()
        bucket = self._buckets.setdefault(api_key, TokenBucket(limit, float(limit.burst), now))
        wait = bucket.take(now)
        return math.ceil(wait) if wait > 0 else None
