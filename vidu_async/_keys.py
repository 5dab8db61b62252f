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
    """Per-key locks, dropped when nobody holds or waits for them, and the tasks keys made."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._made: collections.OrderedDict[str, tuple[Task, int]] = collections.OrderedDict()

    def lock(self, key: str) -> asyncio.Lock:
        """The key's lock (``async with`` it); ``release(key)`` once done with it, in a
        ``finally``, whether or not it was acquired."""
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        return lock

    def release(self, key: str) -> None:
        lock, users = self._locks[key]
        if users == 1:
            del self._locks[key]
        else:
            self._locks[key] = (lock, users - 1)

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
