"""A correlation key names one task: one create at a time per key, and the task each key made.

The README's recovery pattern (a timeout around ``create``, then the same call again with the
same key) is safe only if the calls sharing a key never overlap: two workers retrying one key
at once would both find it absent and both send. So a create holds its key's lock from before
it looks until it settles, and a key whose create succeeded returns that task again (the last
``REMEMBERED`` keys of the client; a key is not meant to be reused, so this covers a retry
racing its own success, not an archive). What a client keeps per key or task is a ``Recent``:
bounded however long the client runs.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import TypeVar

from vidu_async.tasks import Task

__all__ = ["REMEMBERED", "KeyGuard", "Recent"]

REMEMBERED = 1024
"""How many keys (or tasks) each of a client's memories keeps (a few MB at most)."""

K = TypeVar("K")
V = TypeVar("V")


class Recent(collections.OrderedDict[K, V]):
    """A dict of the last ``size`` keys set: setting one more drops the one set longest ago
    (handed to ``dropped``, when given: what must not be forgotten whole)."""

    def __init__(self, size: int = REMEMBERED,
                 dropped: Callable[[K], None] | None = None) -> None:
        super().__init__()
        self.size = size
        self.dropped = dropped

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        if len(self) > self.size:
            oldest, _ = self.popitem(last=False)
            if self.dropped is not None:
                self.dropped(oldest)


class KeyGuard:
    """Which keys have a create in progress (an event for those that others wait on), and
    the tasks keys made. A key no one else asks for costs two dict operations."""

    def __init__(self) -> None:
        self._busy: dict[str, asyncio.Event | None] = {}
        self._made: Recent[str, tuple[Task, int]] = Recent()

    async def take(self, key: str) -> None:
        """Until no other call holds ``key``, then hold it; ``give_back(key)`` in a
        ``finally``. Waiters are all woken when it is given back: the first to run takes it
        (a cancelled waiter just leaves, passing nothing on)."""
        while key in self._busy:
            event = self._busy[key]
            if event is None:
                event = self._busy[key] = asyncio.Event()
            await event.wait()
        self._busy[key] = None

    def give_back(self, key: str) -> None:
        event = self._busy.pop(key)
        if event is not None:
            event.set()

    def made(self, key: str, fingerprint: int) -> Task | None:
        """The task this key made, if remembered. ``ValueError`` when it was made for a body of
        another ``fingerprint`` (its ``hash``): the key names that task, not this request."""
        entry = self._made.get(key)
        if entry is None:
            return None
        task, made_for = entry
        if made_for != fingerprint:
            raise ValueError(
                f"correlation key {key} already made task {task.task_id} for another request: "
                "a key names one task; use new_correlation_key() for a new one"
            )
        return task

    def remember(self, key: str, fingerprint: int, task: Task) -> None:
        """``task`` is what ``key`` made, for the body of ``fingerprint``."""
        self._made[key] = (task, fingerprint)
