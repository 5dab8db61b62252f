"""``PerLoop``: an asyncio lock or semaphore made again in each event loop.

asyncio's locks and semaphores bind to the loop that first waits on them, and then refuse any
other ("is bound to a different event loop"). A client outlives its loop when a program calls
``asyncio.run`` twice, or a test suite runs a loop per test; its session pool moves to the new
loop (``SessionPool``), and so must the primitives that order its calls. Nothing waits across
loops: a new loop's calls start with a fresh one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["PerLoop"]

T = TypeVar("T")


class PerLoop(Generic[T]):
    """``get()`` is ``make()``'s value for the running loop, made again when the loop changes."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._loop: asyncio.AbstractEventLoop | None = None
        self._value: T | None = None

    def get(self) -> T:
        loop = asyncio.get_running_loop()
        if loop is not self._loop or self._value is None:
            self._loop, self._value = loop, self._make()
        return self._value
