"""``punctual_sleep``: an ``asyncio.sleep`` that ends on time, for paced sends.

asyncio's selector waits in whole milliseconds, rounded up (``epoll_wait`` takes an integer
timeout), so every sleep ends 0 to 1 ms late, 0.5 ms on average. A paced batch books its next
slot from the moment it wakes, so that lateness adds to every interval: at a strict limit of
30 requests a second, 1.5% of the throughput (measured in ``benchmarks/goodput.py``). This
sleeps to one millisecond short of the deadline, then yields to the loop (other tasks run)
until the deadline has passed: at most a millisecond of spinning per wait. The batch's waits
are all punctual (``BatchOptions.sleep``); the many are the pacing's, and there one worker at a
time waits for the clock while the others wait their turn.
"""

from __future__ import annotations

import asyncio

__all__ = ["punctual_sleep"]

SPIN = 0.001
"""The last part of a wait spent yielding instead of sleeping: the selector's resolution."""


async def punctual_sleep(seconds: float) -> None:
    """Sleep ``seconds``, ending within a loop iteration of the deadline (not up to 1 ms
    after it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    if seconds > SPIN:
        await asyncio.sleep(seconds - SPIN)
    while loop.time() < deadline:  # noqa: ASYNC110 - the clock, not an event
        await asyncio.sleep(0)
