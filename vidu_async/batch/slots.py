"""``Slots``: the batch's create slots, where a holder that lent its slot gets it back first;
``InFlight``: a count of creates on their way that a lookup gives back while it waits.

A create's holder lends its slot while its intent is made durable (``lent``), so that other
creates use it meanwhile; it takes it back before any newcomer, and newcomers take a lent slot
only while fewer than ``n`` are lent. So at most ``2n - 1`` jobs hold or have lent a slot at
once: that many intents at most wait for their create (a crash leaves no more to look up), and a
booked pacing slot is not queued behind every later job's intent.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Literal

__all__ = ["InFlight", "Slots"]


class Slots(asyncio.Semaphore):
    """``n`` slots: ``acquire`` / ``release`` as a semaphore's (a newcomer's turn, in order),
    plus ``lent`` (give back, take back first). A ``Semaphore`` so that code giving back any
    semaphore (``reconcile.slots_given_back``) gives these back too; none of its state is used.
    """

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self._n = n
        self._free = n
        self._lent = 0
        self._returning: collections.deque[asyncio.Future[None]] = collections.deque()
        self._newcomers: collections.deque[asyncio.Future[None]] = collections.deque()

    def locked(self) -> bool:
        """No newcomer would get a slot now."""
        return not self._newcomer_may_take()

    async def acquire(self) -> Literal[True]:
        """Take a slot as a newcomer: after every holder taking its lent slot back."""
        if not self._newcomers and self._newcomer_may_take():
            self._free -= 1
            return True
        await self._wait(self._newcomers)
        return True

    def release(self) -> None:
        """Give a slot up."""
        self._free += 1
        self._hand_over()

    @contextlib.asynccontextmanager
    async def lent(self) -> AsyncIterator[None]:
        """The caller's slot is another's while the block runs; taken back before any
        newcomer's. Cancelled while waiting for it, the caller still counts as holding it, so
        that its own ``release`` (the next thing it does) gives up exactly one slot."""
        self._lent += 1
        self.release()
        try:
            yield
        finally:
            try:
                if self._free > 0 and not self._returning:  # taken at once
                    self._free -= 1
                else:
                    await self._reclaim(self._returning)  # first among the returning
            finally:
                self._lent -= 1
                self._hand_over()  # fewer lent: a newcomer may fit again

    @contextlib.asynccontextmanager
    async def given_back(self) -> AsyncIterator[None]:
        """The caller's slot is given up while the block runs and taken again after, as a
        newcomer's (the caller waits for something else: it keeps no place in the queue).
        Cancelled while waiting for it, the caller still counts as holding it, as in
        ``lent``."""
        self.release()
        try:
            yield
        finally:
            if not self.locked() and not self._newcomers:
                self._free -= 1
            else:
                await self._reclaim(self._newcomers)

    async def _reclaim(self, queue: collections.deque[asyncio.Future[None]]) -> None:
        """Queue in ``queue`` for the slot the caller gave up. Cancelled before it came, the
        caller is counted as holding one anyway (``_free`` may dip below zero until its
        ``release``): no task is spent shielding the wait, and a second cancel cannot leave
        a wait running that takes a slot after the caller's release (a slot doubled)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(waiter)
        self._hand_over()
        try:
            await waiter
        except asyncio.CancelledError:
            if not waiter.done() or waiter.cancelled():  # not granted: taken on credit
                with contextlib.suppress(ValueError):  # passed over already
                    queue.remove(waiter)
                self._free -= 1
            raise

    def _newcomer_may_take(self) -> bool:
        return self._free > 0 and not self._returning and self._lent < self._n

    async def _wait(self, queue: collections.deque[asyncio.Future[None]]) -> None:
        """Queue for a slot (granted at once if one is free for it); it is counted taken when
        the future is resolved."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(waiter)
        self._hand_over()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # granted as it was cancelled
                self.release()
            else:
                with contextlib.suppress(ValueError):  # passed over already
                    queue.remove(waiter)
                self._hand_over()  # one returning holder fewer: a newcomer may fit
            raise

    def _hand_over(self) -> None:
        """Grant free slots: to holders taking theirs back, then to newcomers if they may."""
        while self._free > 0:
            if self._returning:
                waiter = self._returning.popleft()
            elif self._newcomers and self._newcomer_may_take():
                waiter = self._newcomers.popleft()
            else:
                return
            if not waiter.done():  # not cancelled
                self._free -= 1
                waiter.set_result(None)


class InFlight(asyncio.Semaphore):
    """How many creates are on their way (``count``): ``add`` one, ``release`` it when it is
    answered; ``changed()`` is called whenever the count falls. It never blocks (``acquire``
    only counts), and it is a ``Semaphore`` so that a lost create's lookup gives it back like
    the batch's slots (``reconcile.slots_given_back``): a create waiting to prove its task
    absent (seconds, the visibility lag) is not on its way, and must not hold an untold
    batch's start window shut (``Throttle.max_in_flight``)."""

    def __init__(self, changed: Callable[[], None]) -> None:
        super().__init__(0)
        self.count = 0
        self._changed = changed

    def add(self) -> None:
        """One more create on its way (synchronous: no await between a gate's go and it)."""
        self.count += 1

    async def acquire(self) -> Literal[True]:
        """Counted again (a lookup taking its place back); never waits."""
        self.add()
        return True

    def release(self) -> None:
        self.count -= 1
        self._changed()

    def locked(self) -> bool:
        return False
