"""``Slots``: a holder that lent its slot takes it back before newcomers; newcomers take lent
slots only while fewer than ``n`` are lent; cancellation never loses or doubles a slot."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import attrs
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

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


# --- random interleavings -----------------------------------------------------------------------


@attrs.define
class Worker:
    """One job's life with a slot, as the batch's ``_create`` lives it: take a slot, lend it
    while its intent is made durable (``lend``), take it back, give up the gate's wait with
    ``given_back`` (``regate``), release it. Each step waits for its own event."""

    lend: asyncio.Event = attrs.field(factory=asyncio.Event)
    back: asyncio.Event = attrs.field(factory=asyncio.Event)
    regate: asyncio.Event = attrs.field(factory=asyncio.Event)
    release: asyncio.Event = attrs.field(factory=asyncio.Event)
    phase: str = "queued"
    """queued (a newcomer), held, lent, returning (taking its lent slot back), regating
    (``given_back``), done."""
    victim: asyncio.Task[None] | None = None
    """A worker this one cancels as it releases its slot, in the same turn (as a task group
    cancels the other jobs when one fails): a slot it just handed to the victim may not have
    reached it yet."""


async def live(slots: Slots, worker: Worker, regate: bool) -> None:
    await slots.acquire()
    worker.phase = "held"
    try:
        await worker.lend.wait()
        async with slots.lent():
            worker.phase = "lent"
            await worker.back.wait()
            worker.phase = "returning"
        worker.phase = "held"
        if regate:
            async with slots.given_back():
                worker.phase = "regating"
                await worker.regate.wait()
                worker.phase = "queued"  # a newcomer again
            worker.phase = "held"
        await worker.release.wait()
    finally:
        worker.phase = "done"
        slots.release()
        if worker.victim is not None:
            worker.victim.cancel()


TURNS = st.sampled_from([0, 1, 2, 20])
"""How many turns of the loop the workers get after a rule acts."""


class SlotsMachine(RuleBasedStateMachine):
    """Workers start, lend, take back, regate, release and are cancelled in any order. After
    every step: at most ``n`` hold a slot, at most ``2n - 1`` hold or have lent one; at the
    end, with every worker ended, exactly ``n`` slots are free (none lost, none doubled)."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.n = 1
        self.slots: Slots | None = None
        self.workers: list[tuple[Worker, asyncio.Task[None]]] = []

    @initialize(n=st.integers(1, 4))
    def start(self, n: int) -> None:
        self.n = n
        self.slots = Slots(n)

    def _run(self, turns: int) -> None:
        """Let the workers run ``turns`` turns of the loop: few, and the next rule acts while
        a wake-up is still on its way (a slot granted to a waiter not yet running)."""
        for _ in range(turns):
            self.loop.run_until_complete(asyncio.sleep(0))

    @rule(regate=st.booleans(), turns=TURNS)
    def newcomer(self, regate: bool, turns: int) -> None:
        assert self.slots is not None
        worker = Worker()
        task = self.loop.create_task(live(self.slots, worker, regate))
        self.workers.append((worker, task))
        self._run(turns)

    def _in(self, phase: str, which: int) -> tuple[Worker, asyncio.Task[None]] | None:
        """The ``which``-th worker in ``phase`` (counted round), if any."""
        found = [(worker, task) for worker, task in self.workers if worker.phase == phase]
        return found[which % len(found)] if found else None

    @rule(which=st.integers(0, 9), turns=TURNS, step=st.sampled_from([
        ("held", "lend"), ("lent", "back"), ("regating", "regate"), ("held", "release"),
    ]))
    def go(self, which: int, turns: int, step: tuple[str, str]) -> None:
        """Let a worker in ``step[0]`` take its next step ``step[1]`` (a held worker that has
        lent already goes on to regate or release)."""
        phase, event = step
        if (found := self._in(phase, which)) is not None:
            getattr(found[0], event).set()
        self._run(turns)

    @rule(which=st.integers(0, 9), turns=TURNS,
          phase=st.sampled_from(["queued", "held", "lent", "returning", "regating"]))
    def cancel(self, which: int, turns: int, phase: str) -> None:
        if (found := self._in(phase, which)) is not None:
            found[1].cancel()
        self._run(turns)

    @rule(which=st.integers(0, 9), turns=TURNS,
          phase=st.sampled_from(["queued", "returning", "regating"]))
    def release_and_cancel(self, which: int, turns: int, phase: str) -> None:
        """A held worker releases its slot and, in the same turn, cancels one in ``phase``."""
        held, victim = self._in("held", which), self._in(phase, which)
        if held is not None and victim is not None:
            held[0].victim = victim[1]
            held[0].release.set()
        self._run(turns)

    @invariant()
    def at_most_n_hold_and_2n_minus_1_hold_or_lent(self) -> None:
        phases = Counter(worker.phase for worker, _ in self.workers)
        assert phases["held"] <= self.n
        assert phases["held"] + phases["lent"] + phases["returning"] <= 2 * self.n - 1

    def teardown(self) -> None:
        try:
            if self.slots is not None:
                for worker, _ in self.workers:
                    for event in (worker.lend, worker.back, worker.regate, worker.release):
                        event.set()
                # Each in its turn, a few turns each: a worker still waiting after that many
                # waits for a slot nobody will release (one lost).
                for _ in range(20 * len(self.workers)):
                    if all(task.done() for _, task in self.workers):
                        break
                    self._run(1)
                for worker, task in self.workers:
                    assert task.done() and worker.phase in ("done", "queued"), worker.phase
                for _ in range(self.n):  # every slot free again: n newcomers at once
                    assert not self.slots.locked()
                    self.loop.run_until_complete(self.slots.acquire())
                assert self.slots.locked()
        finally:
            for _, task in self.workers:
                task.cancel()
            self.loop.run_until_complete(settle())
            self.loop.close()


SlotsMachine.TestCase.settings = settings(max_examples=1000, stateful_step_count=40,
                                          deadline=None)
TestSlots = SlotsMachine.TestCase
