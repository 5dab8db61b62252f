"""``Slots``: a holder that lent its slot takes it back before newcomers; newcomers take lent
slots only while fewer than ``n`` are lent; cancellation never loses or doubles a slot."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from vidu_async.batch.slots import Slots


async def settle() -> None:
    """Let every runnable task run until it waits again."""
    for _ in range(10):
        await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def lending(slots: Slots, done: asyncio.Event, order: list[str], name: str
                  ) -> AsyncIterator[asyncio.Task[None]]:
    """A holder (its slot taken now) lending it until ``done``; ``order`` gets its name when
    it has its slot back."""
    await slots.acquire()

    async def lend() -> None:
        try:
            async with slots.lent():
                await done.wait()
            order.append(name)
        finally:
            slots.release()  # its create answered (or the job cancelled)

    task = asyncio.create_task(lend())
    await settle()
    try:
        yield task
    finally:
        await _cancel(task)


async def newcomer(slots: Slots, order: list[str], name: str) -> None:
    await slots.acquire()
    order.append(name)


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    await asyncio.wait([task])


async def test_a_lender_takes_its_slot_back_before_newcomers_that_queued_first() -> None:
    slots, fsynced = Slots(2), asyncio.Event()
    order: list[str] = []
    await slots.acquire()  # another create in flight all along
    async with lending(slots, fsynced, order, "lender"):
        taker = asyncio.create_task(newcomer(slots, order, "first newcomer"))  # the lent slot
        await settle()
        queued = [asyncio.create_task(newcomer(slots, order, f"n{i}")) for i in range(3)]
        await settle()
        fsynced.set()
        await settle()
        assert order == ["first newcomer"]  # the lender waits for the slot in use
        slots.release()  # the first newcomer's create is answered
        await settle()
        assert order == ["first newcomer", "lender", "n0"]  # the lender's create answered
        for task in (taker, *queued):
            await _cancel(task)


async def test_at_most_2n_minus_1_jobs_hold_or_lent_a_slot() -> None:
    """n - 1 lent and n held: the next newcomer waits, even once the n holders lend too (no
    newcomer takes a lent slot while n are lent): at most ``2n - 1`` intents wait."""
    n = 3
    slots, never = Slots(n), asyncio.Event()
    order: list[str] = []
    stacks = [await _enter(lending(slots, never, order, f"l{i}")) for i in range(n - 1)]
    held = [asyncio.create_task(newcomer(slots, order, f"h{i}")) for i in range(n)]
    late = asyncio.create_task(newcomer(slots, order, "late"))
    await settle()
    assert order == [f"h{i}" for i in range(n)]
    assert slots.locked()
    stacks += [await _enter(_lend_held(slots, never)) for _ in range(n)]
    await settle()
    assert order == [f"h{i}" for i in range(n)]  # 2n - 1 lent, all slots free: late waits
    assert slots.locked()
    for stack in stacks:
        await stack.aclose()  # cancelled lenders take their slots back and give them up
    await settle()
    assert order[-1] == "late"
    for task in (*held, late):
        await _cancel(task)


async def test_a_cancelled_newcomer_takes_no_slot_and_a_cancelled_lender_keeps_the_count() -> None:
    slots = Slots(2)
    await slots.acquire()  # another create in flight all along
    await slots.acquire()
    queued = asyncio.create_task(slots.acquire())
    await settle()
    await _cancel(queued)
    slots.release()
    assert not slots.locked()  # the cancelled newcomer holds nothing
    await slots.acquire()
    inner = asyncio.Event()

    async def lend_then_hold() -> None:
        try:
            async with slots.lent():
                await inner.wait()
        finally:
            slots.release()  # the caller's own release, as the batch's ``_create`` does

    lender = asyncio.create_task(lend_then_hold())
    await settle()
    await slots.acquire()  # the lent slot, taken: the lender must wait for it
    inner.set()
    await settle()
    await _cancel(lender)  # cancelled while taking it back
    slots.release()
    await settle()
    assert not slots.locked()  # the slot came back to the lender and was released once
    await slots.acquire()
    assert slots.locked()


async def test_a_slot_given_back_is_taken_again_behind_returning_lenders() -> None:
    """A job that gave its slot up to wait for the gate is a newcomer again: a lender whose
    intent is durable gets the next slot, though it started after."""
    slots, fsynced = Slots(2), asyncio.Event()
    order: list[str] = []
    await slots.acquire()  # another create in flight, answered later
    await slots.acquire()  # the gate waiter's slot
    gate_changed = asyncio.Event()

    async def gate_waiter() -> None:
        async with slots.given_back():
            await gate_changed.wait()
        order.append("gate waiter")

    waiter = asyncio.create_task(gate_waiter())
    await settle()
    async with lending(slots, fsynced, order, "lender"):  # the slot the waiter gave up
        taker = asyncio.create_task(newcomer(slots, order, "taker"))  # the lent one
        await settle()
        fsynced.set()
        await settle()
        gate_changed.set()
        await settle()
        assert order == ["taker"]
        slots.release()  # the other create answered: the lender's, then the waiter's turn
        await settle()
        assert order == ["taker", "lender", "gate waiter"]
    await _cancel(waiter)
    await _cancel(taker)


@contextlib.asynccontextmanager
async def _lend_held(slots: Slots, until: asyncio.Event) -> AsyncIterator[None]:
    """Lend a slot already taken, until ``until`` (or the context closes)."""

    async def lend() -> None:
        try:
            async with slots.lent():
                await until.wait()
        finally:
            slots.release()

    task = asyncio.create_task(lend())
    await settle()
    try:
        yield
    finally:
        await _cancel(task)


async def _enter(manager: contextlib.AbstractAsyncContextManager[object]
                 ) -> contextlib.AsyncExitStack:
    stack = contextlib.AsyncExitStack()
    await stack.enter_async_context(manager)
    return stack
