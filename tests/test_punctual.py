"""``punctual_sleep`` never ends before its deadline, and lets the loop run while it waits.

How close after the deadline it ends is a matter of speed, measured in
``benchmarks/goodput.py`` (the pacing's lateness), not asserted here."""

from __future__ import annotations

import asyncio

import pytest

from vidu_async.batch.punctual import punctual_sleep


@pytest.mark.parametrize("seconds", [0.0, -1.0, 0.0004, 0.001, 0.0035])
async def test_it_never_ends_before_the_deadline(seconds: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    await punctual_sleep(seconds)
    assert loop.time() >= deadline


async def test_other_tasks_run_while_it_waits_out_its_last_millisecond() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    other = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)
    started = ticks
    await punctual_sleep(0.0008)  # all of it spent yielding, none sleeping
    other.cancel()
    assert ticks > started + 1
