"""Waiting in a test for something the code under test offers no event for."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


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
