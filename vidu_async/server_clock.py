"""The server's clock, learned from the ``Date`` header of its answers.

Task lists filter on the server's ``created_at``, so lookup windows and "enough time has passed"
decisions must be made on the server's clock, which can be minutes away from this machine's (a
laptop, a VM after suspend). Every API answer carries ``Date`` (1 s resolution), so the estimate
is the latest answer's ``Date`` against the local time it arrived, trusted to ``uncertainty``.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

import attrs

__all__ = ["DATE_UNCERTAINTY", "ServerClock", "offset_from_date"]

DATE_UNCERTAINTY = 2.0
"""Seconds either way an estimate may be off: ``Date`` is truncated to the second, plus transit."""


def offset_from_date(date_header: str, received_at: dt.datetime) -> float | None:
    """Seconds the server's clock is ahead of ours, from an answer's ``Date`` header and the aware
    local time the answer arrived; None when the header is unreadable.

    ``Date`` truncates to the whole second, so the server's time was half a second later on
    average: the estimate adds 0.5 s.
    """
    try:
        when = parsedate_to_datetime(date_header)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return (when - received_at).total_seconds() + 0.5


@attrs.define
class ServerClock:
    """This machine's view of one API server's clock: ``now()`` is local time plus ``offset``.

    Local time runs on ``monotonic`` (``RetryPolicy.clock``) from a wall-clock anchor taken at
    construction, so a ``ManualClock`` moves it in tests and a wall-clock jump does not. Before
    any answer ``offset`` is 0 and ``learned`` is False.
    """

    monotonic: Callable[[], float] = attrs.field(default=time.monotonic, eq=False)
    uncertainty: float = DATE_UNCERTAINTY
    offset: float = 0.0
    learned: bool = False
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

    def observe(self, date_header: str) -> None:
        """Learn from an answer's ``Date`` header, just received (unreadable ones are ignored)."""
        offset = offset_from_date(date_header, self.local_now())
        if offset is not None:
            self.offset, self.learned = offset, True
