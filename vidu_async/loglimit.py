"""At most one log line per kind of problem per interval: floods (slow clients, a dead network
under many concurrent calls) cannot fill a log, and the lines held back are counted."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

import attrs

__all__ = ["LOG_INTERVAL", "LogLimiter"]

LOG_INTERVAL = 10.0
"""Seconds between two lines about the same kind of problem."""


@attrs.define
class LogLimiter:
    """At most one log line per kind of problem per ``interval`` seconds, so that a flood (a
    thousand slow clients, forged callbacks) cannot fill the log; the repeats are counted."""

    interval: float = LOG_INTERVAL
    clock: Callable[[], float] = attrs.field(default=time.monotonic, repr=False)
    _last: dict[str, float] = attrs.field(factory=dict, init=False, repr=False)
    _held: collections.Counter[str] = attrs.field(factory=collections.Counter, init=False)

    def allow(self, kind: str) -> int | None:
        """None: hold this line back; else log it, saying how many were held back before it."""
        now = self.clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._held[kind] += 1
            return None
        self._last[kind] = now
        return self._held.pop(kind, 0)
