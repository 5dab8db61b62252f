"""The server's clock, learned from the ``Date`` header of its answers.

Task lists filter on the server's ``created_at``, so lookup windows and "enough time has passed"
decisions must be made on the server's clock, which can be minutes away from this machine's (a
laptop, a VM after suspend). Every API answer carries ``Date``, truncated to the second and
stamped between the request's sending and the answer's arrival, so each answer bounds the offset
(``offset_bounds``); the clock intersects the bounds of every answer. Once some answer's ``Date``
has ticked over, the offset is known to about the requests' transit time, well under a second.
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

import attrs

__all__ = ["DATE_UNCERTAINTY", "MIN_UNCERTAINTY", "ServerClock", "offset_bounds"]

DATE_UNCERTAINTY = 2.0
"""Seconds either way the estimate may be off before any answer has been read."""
MIN_UNCERTAINTY = 0.1
"""The least uncertainty ever claimed: the server's machine stamping ``Date`` and the one
stamping ``created_at`` may differ by what NTP leaves (tens of milliseconds)."""


def offset_bounds(
    date_header: str, sent_at: dt.datetime, received_at: dt.datetime
) -> tuple[float, float] | None:
    """The least and greatest offset (seconds the server's clock is ahead of ours) an answer
    allows: its ``Date`` (truncated to the second) was stamped after ``sent_at`` and before
    ``received_at`` (aware local times). None when the header is unreadable."""
    when = _date(date_header)
    if when is None:
        return None
    return (when - received_at).total_seconds(), (when - sent_at).total_seconds() + 1.0


@functools.lru_cache(maxsize=8)
def _date(header: str) -> dt.datetime | None:
    """A ``Date`` header as an aware time, None if unreadable (the answers of one second share
    one parse)."""
    try:
        when = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


@attrs.define
class ServerClock:
    """This machine's view of one API server's clock: ``now()`` is local time plus ``offset``,
    good to ``uncertainty`` seconds either way.

    Local time runs on ``monotonic`` (``RetryPolicy.clock``) from a wall-clock anchor taken at
    construction, so a ``ManualClock`` moves it in tests and a wall-clock jump does not. Before
    any answer ``offset`` is 0 and ``learned`` is False. The offset is the middle of the bounds
    every answer allows; answers that contradict the bounds so far (the server's clock was set)
    start them again.
    """

    monotonic: Callable[[], float] = attrs.field(default=time.monotonic, eq=False)
    uncertainty: float = DATE_UNCERTAINTY
    offset: float = 0.0
    learned: bool = False
    epoch_started: dt.datetime | None = attrs.field(init=False, default=None)
    """When (``local_now()``) the bounds last started: the first answer, or one contradicting
    them. A local reading from before it may belong to a timeline the offset no longer fits (a
    machine suspended, its monotonic clock stopped): see ``trusts``."""
    _low: float = attrs.field(init=False, default=-float("inf"))
    _high: float = attrs.field(init=False, default=float("inf"))
    _wall: dt.datetime = attrs.field(init=False, factory=lambda: dt.datetime.now(dt.UTC))
    _mono: float = attrs.field(init=False, default=0.0)

    def __attrs_post_init__(self) -> None:
        self._mono = self.monotonic()

    def local_now(self) -> dt.datetime:
        """This machine's time (aware UTC), moving with ``monotonic``."""
        return self._wall + dt.timedelta(seconds=self.monotonic() - self._mono)

    def now(self) -> dt.datetime:
        """The server's time as estimated now (aware UTC), good to ``uncertainty`` seconds."""
        return self.to_server(self.local_now())

    def to_server(self, local: dt.datetime) -> dt.datetime:
        """A ``local_now()`` reading as the server's time, with the latest estimate."""
        return local + dt.timedelta(seconds=self.offset)

    def trusts(self, server_time: dt.datetime) -> bool:
        """Whether a local reading, converted to ``server_time`` now, is one of the readings
        the current bounds were learned with (taken after they started) and so good to
        ``uncertainty``."""
        return self.epoch_started is not None and server_time > self.to_server(self.epoch_started)

    def observer(self) -> Callable[[str], None]:
        """A callback for the ``Date`` headers of a request about to be sent: ``observe`` with
        this moment as the sending time (a retry sent later only loosens the bounds)."""
        sent_at = self.local_now()
        return lambda date_header: self.observe(date_header, sent_at)

    def observe(self, date_header: str, sent_at: dt.datetime) -> None:
        """Learn from an answer's ``Date`` header, just received, to a request sent at
        ``sent_at`` (``local_now()``); unreadable headers are ignored."""
        received_at = self.local_now()
        bounds = offset_bounds(date_header, sent_at, received_at)
        if bounds is None:
            return
        low, high = max(self._low, bounds[0]), min(self._high, bounds[1])
        if low > high or not self.learned:  # a first answer, or one contradicting the bounds
            low, high = bounds  # (the server's clock was set, or ours stood still)
            self.epoch_started = received_at
        self._low, self._high = low, high
        self.offset = (low + high) / 2
        self.uncertainty = max((high - low) / 2, MIN_UNCERTAINTY)
        self.learned = True
