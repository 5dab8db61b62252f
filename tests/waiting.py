"""Waiting in a test for something the code under test offers no event for, and failing a
test whose code loops without ever waiting (on a virtual clock it would hang instead)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import attrs

from vidu_async.testing import ManualClock


async def until(check: Callable[[], bool], what: str = "the condition", *,
                within: float = 10.0) -> None:
    """Return once ``check()`` holds, polling the event loop (and so any thread or process the
    check reads); ``AssertionError`` naming ``what`` after ``within`` seconds."""
    try:
        async with asyncio.timeout(within):
            while not check():  # noqa: ASYNC110 - no event to wait on
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"never came within {within:g}s: {what}") from None


@attrs.define
class SpinGuard:
    """A ``ManualClock`` as the batch's clock that fails the test when asked the time 100,000
    times in one instant: code polling the clock in a loop that never waits (virtual time
    then never moves, and the loop would spin for ever instead of failing)."""

    clock: ManualClock
    asked: int = 0
    instant: float = -1.0

    def __call__(self) -> float:
        now = self.clock()
        if now != self.instant:
            self.instant, self.asked = now, 0
        self.asked += 1
        if self.asked > 100_000:
            raise AssertionError(f"the clock was asked the time 100,000 times at {now}")
        return now
