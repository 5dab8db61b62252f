"""A correlation key names one task: one create at a time per key, and the task each key made.

The README's recovery pattern (a timeout around ``create``, then the same call again with the
same key) is safe only if the calls sharing a key never overlap: two workers retrying one key
at once would both find it absent and both send. So a create holds its key's lock from before
it looks until it settles, and a key whose create succeeded returns that task again (the last
``REMEMBERED`` keys of the client; a key is not meant to be reused, so this covers a retry
racing its own success, not an archive).
"""

from __future__ import annotations

import asyncio
import collections

from vidu_async.tasks import Task

__all__ = ["KeyGuard"]

REMEMBERED = 1024
"""How many keys' tasks a client remembers (a few MB at most)."""


class KeyGuard:
    """Which keys have a create in progress (an event for those that others wait on), and
    the tasks keys made. A key no one else asks for costs two dict operations."""

    def __init__(self) -> None:
        self._busy: dict[str, asyncio.Event | None] = {}
        self._made: collections.OrderedDict[str, tuple[Task, int]] = collections.OrderedDict()

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

    def made(self, key: str, body: bytes) -> Task | None:
        """The task this key made, if remembered. ``ValueError`` when it was made for another
        body: the key names that task, not this request."""
        entry = self._made.get(key)
        if entry is None:
            return None
        task, body_hash = entry
        if body_hash != hash(body):
            raise ValueError(
                f"correlation key {key} already made task {task.task_id} for another request: "
                "a key names one task; use new_correlation_key() for a new one"
            )
        return task

    def remember(self, key: str, body: bytes, task: Task) -> None:
        self._made[key] = (task, hash(body))
        if len(self._made) > REMEMBERED:
            self._made.popitem(last=False)
