"""BatchSubmitter finishing tasks from Vidu's callbacks, the simulator calling a real receiver.

Time is virtual: the simulator runs on a ``ManualClock`` and the batch's every wait is a
``VirtualTime.sleep`` that ends only when the test moves that clock past it, so each test
decides what happens between two polls. Tasks last five minutes, as on the real service.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from pathlib import Path

import attrs
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from vidu_async.batch import BatchOptions, BatchSubmitter
from vidu_async.client import ViduClient
from vidu_async.jobs import Job
from vidu_async.outcome import Outcome
from vidu_async.receiver import CallbackEvent, CallbackReceiver, ReceiverOptions
from vidu_async.requests import ReferenceToVideoRequest
from vidu_async.retry import RetryPolicy, no_wait
from vidu_async.tasks import split_payload
from vidu_async.testing import FakeVidu, ManualClock, Timeline

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]

TIMELINE = Timeline(created=1.0, processing=300.0)
"""A task created at 0 processes from 1 s and succeeds at 301 s (simulator time)."""
ENDS = 301.0
POLL = 5.0
SAFETY = 120.0
GATHER = 0.5
GUARD = 10.0
"""Seconds any wait of a test may take: a guard against a hang, not a wait for anything."""
LOST = "lost"
"""The user payload of jobs whose callbacks never reach the receiver (see ``lose_some``)."""


def make_jobs(n: int, *, prefix: str = "job", lost_every: int = 0, **fields: str) -> list[Job]:
    def request(i: int) -> ReferenceToVideoRequest:
        lost = lost_every and i % lost_every == 0
        return ReferenceToVideoRequest(
            "viduq2", f"a cat surfing, take {i}", images=("https://example.com/cat.png",),
            payload=LOST if lost else None, **fields,
        )

    return [Job(f"{prefix}-{i}", request(i), i) for i in range(1, n + 1)]


class VirtualTime:
    """The batch's ``sleep`` on the simulator's clock: a sleep ends once ``advance`` has moved
    the clock to its end. ``asked`` lists the length of every sleep the batch asked for."""

    def __init__(self, sim: FakeVidu, clock: ManualClock) -> None:
        self.sim = sim
        self.clock = clock
        self.asked: list[float] = []
        self._sleeping: list[tuple[float, asyncio.Future[None]]] = []
        self._changed = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.asked.append(seconds)
        self._changed.set()
        entry = (self.clock.now + seconds, asyncio.get_running_loop().create_future())
        self._sleeping.append(entry)
        try:
            if seconds:
                await entry[1]
            else:
                await asyncio.sleep(0)
        finally:
            self._sleeping.remove(entry)

    async def until_asked(self, seconds: float, times: int) -> None:
        """Until the batch has asked for ``times`` sleeps of ``seconds`` in all."""
        async with asyncio.timeout(GUARD):
            while self.asked.count(seconds) < times:
                self._changed.clear()
                await self._changed.wait()

    async def advance(self, seconds: float) -> None:
        """Move the clock on, apply the simulator's transitions, end the sleeps due, and wait
        until the callbacks the transitions sent are delivered (or given up)."""
        self.clock.advance(seconds)
        self.sim.tick()
        for end, future in self._sleeping:
            if end <= self.clock.now and not future.done():
                future.set_result(None)
        await self.sim.callbacks_settled()


class Seen:
    """A ``BatchObserver``: waits on how many tasks were created and seen ``success``."""

    def __init__(self) -> None:
        self.created = 0
        self.states: Counter[str] = Counter()
        self._changed = asyncio.Event()

    def job_created(self, task_id: str, credits: int | None) -> None:
        self.created += 1
        self._changed.set()

    def task_state(self, task_id: str, state: str) -> None:
        self.states[state] += 1
        self._changed.set()

    async def until(self, check: Callable[[], bool]) -> None:
        async with asyncio.timeout(GUARD):
            while not check():
                self._changed.clear()
                await self._changed.wait()


class Outcomes:
    """Reads a run's outcomes in a task of its own; ``until(n)`` waits for the n-th."""

    def __init__(self, run: AsyncIterator[Outcome]) -> None:
        self.got: list[Outcome] = []
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._read(run))

    async def _read(self, run: AsyncIterator[Outcome]) -> list[Outcome]:
        async for outcome in run:
            self.got.append(outcome)
            self._changed.set()
        return self.got

    async def until(self, n: int) -> None:
        async with asyncio.timeout(GUARD):
            while len(self.got) < n:
                self._changed.clear()
                await self._changed.wait()

    async def all(self) -> list[Outcome]:
        async with asyncio.timeout(GUARD):
            return await self.task


class HandedOn(CallbackReceiver):
    """A receiver that tells when its consumer (the batch) has finished taking an event."""

    def __init__(self, client: ViduClient, options: ReceiverOptions) -> None:
        super().__init__(client, options)
        self.handed = 0
        self._changed = asyncio.Event()

    async def events(self) -> AsyncGenerator[CallbackEvent, None]:
        async with contextlib.aclosing(super().events()) as events:
            async for event in events:
                yield event
                self.handed += 1
                self._changed.set()

    async def until_handed(self, n: int) -> None:
        async with asyncio.timeout(GUARD):
            while self.handed < n:
                self._changed.clear()
                await self._changed.wait()


def status_requests(sim: FakeVidu) -> int:
    return sim.stats.requests_to("list_tasks") + sim.stats.requests_to("query")


@attrs.define
class World:
    sim: FakeVidu
    clock: ManualClock
    client: ViduClient
    time: VirtualTime

    def options(self, callback_url: str | None = None, **more: object) -> BatchOptions:
        return BatchOptions(
            wait=True, concurrency=10, poll_interval=POLL, callback_url=callback_url,
            callback_poll_interval=SAFETY, callback_gather=GATHER, sleep=self.time.sleep,
            clock=self.clock, start_rate=None, **more,  # unpaced: the only waits are polls  # type: ignore[arg-type]
        )


@pytest.fixture
async def world() -> AsyncIterator[World]:
    clock = ManualClock()
    async with (
        FakeVidu(clock=clock, timeline=TIMELINE, concurrency_limit=100, callback_retry_delay=0.0,
                 seed=11) as sim,
        ViduClient(sim.api_key, base_url=sim.url, retry=RetryPolicy(sleep=no_wait)) as client,
    ):
        yield World(sim, clock, client, VirtualTime(sim, clock))


async def run_to_the_end_by_polling(world: World, jobs: list[Job]) -> list[Outcome]:
    """The batch without callbacks: once every task exists, each poll moves the clock ``POLL``
    seconds on, until every task has ended."""
    seen = Seen()

    async def sleep(seconds: float) -> None:
        if seconds == POLL:
            await seen.until(lambda: seen.created == len(jobs))
            world.clock.advance(seconds)
        await asyncio.sleep(0)

    options = attrs.evolve(world.options(), sleep=sleep)
    return [o async for o in BatchSubmitter(world.client, options, observer=seen).run(jobs)]


async def to_the_end(world: World, start: float) -> None:
    """Through the safety net's rounds at 120 s and 240 s after ``start``, on to 301 s, when
    every task ends (and is called back)."""
    for rounds in (1, 2):
        await world.time.until_asked(SAFETY, rounds)
        await world.time.advance(SAFETY)
    await world.time.until_asked(SAFETY, 3)
    await world.time.advance(start + ENDS - world.clock.now)


# --- the budget and the safety net ----------------------------------------------------------------


async def test_100_jobs_finish_from_callbacks_with_a_tenth_of_the_status_requests(
    world: World,
) -> None:
    polled = await run_to_the_end_by_polling(world, make_jobs(100))
    by_polling = status_requests(world.sim)
    assert [o.status for o in polled] == ["succeeded"] * 100
    # One list request (100 ids) a round, to 305 s, and the duplicate check's scan at the end.
    assert by_polling == ENDS // POLL + 1 + 1

    start = world.clock.now
    receiver = CallbackReceiver(world.client, ReceiverOptions(confirm=False))
    seen = Seen()
    async with receiver.serve() as url:
        batch = BatchSubmitter(
            world.client, world.options(url), observer=seen, callbacks=receiver
        )
        outcomes = Outcomes(batch.run(make_jobs(100)))
        await seen.until(lambda: seen.created == 100)
        await to_the_end(world, start)
        await seen.until(lambda: seen.states["success"] == 100)  # each claimed by a callback
        await world.time.until_asked(GATHER, 1)
        await world.time.advance(GATHER)  # then all 100 are read back in one request
        got = await outcomes.all()

    assert [o.status for o in got] == ["succeeded"] * 100
    by_callbacks = status_requests(world.sim) - by_polling
    assert by_callbacks == 2 + 1 + 1  # safety rounds, the read-back, the duplicate check
    assert by_callbacks <= by_polling / 10
    assert world.sim.stats.callbacks_delivered == 200  # processing and success, each task
    assert Counter(t.request.get("callback_url") for t in world.sim.tasks.values()) == {
        None: 100, url: 100
    }


@web.middleware
async def lose_some(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Answer 500 to the callbacks of ``LOST`` jobs, so that every delivery of theirs fails."""
    body = await request.json()
    if split_payload(body.get("payload", ""))[1] == LOST:
        return web.Response(status=500, text="lost")
    return await handler(request)


async def test_tasks_whose_callbacks_are_lost_still_finish_at_the_safety_poll(
    world: World, aiohttp_server: ServerFactory
) -> None:
    receiver = CallbackReceiver(world.client, ReceiverOptions(confirm=False))
    app = web.Application(middlewares=[lose_some])
    app.router.add_post("/vidu/callback", receiver.handler)
    server = await aiohttp_server(app)
    url = str(server.make_url("/vidu/callback"))
    jobs = make_jobs(100, lost_every=10)
    seen = Seen()
    async with receiver.running():
        batch = BatchSubmitter(
            world.client, world.options(url), observer=seen, callbacks=receiver
        )
        outcomes = Outcomes(batch.run(jobs))
        await seen.until(lambda: seen.created == 100)
        await to_the_end(world, 0.0)  # 10 of the tasks are never heard of
        await seen.until(lambda: seen.states["success"] == 90)
        await world.time.until_asked(GATHER, 1)
        await world.time.advance(GATHER)
        await outcomes.until(90)
        assert {o.custom_id for o in outcomes.got}.isdisjoint(
            j.custom_id for j in jobs if j.request.payload == LOST
        )
        await world.time.advance(SAFETY)  # the safety net's round finds the other 10
        got = await outcomes.all()

    assert Counter(o.status for o in got) == {"succeeded": 100}
    assert {o.custom_id for o in got[90:]} == {j.custom_id for j in jobs[9::10]}
    stats = world.sim.stats
    assert stats.callback_attempts_failed == 10 * (1 + 4)  # processing once, success 1 + 3 retries
    # Safety, safety, the 90 at once, safety, and the duplicate check's scan.
    assert status_requests(world.sim) == 2 + 1 + 1 + 1


# --- how claims are read -------------------------------------------------------------------------


async def test_a_confirming_receiver_s_ends_are_settled_without_reading_again(
    world: World,
) -> None:
    receiver = CallbackReceiver(world.client)  # reads each claimed end back itself
    seen = Seen()
    async with receiver.serve() as url:
        batch = BatchSubmitter(
            world.client, world.options(url), observer=seen, callbacks=receiver
        )
        outcomes = Outcomes(batch.run(make_jobs(3)))
        await seen.until(lambda: seen.created == 3)
        await to_the_end(world, 0.0)
        await seen.until(lambda: seen.states["success"] == 3)
        got = await outcomes.all()  # confirmed ends settle at once: no gathering, no read
    assert [o.status for o in got] == ["succeeded"] * 3
    assert world.sim.stats.requests_to("query") == 3  # the receiver's confirmations
    # The safety net's rounds, and the duplicate check's scan: no read-back.
    assert world.sim.stats.requests_to("list_tasks") == 2 + 1


async def test_a_job_s_own_callback_url_is_kept_and_its_task_polled(world: World) -> None:
    receiver = CallbackReceiver(world.client, ReceiverOptions(confirm=False))
    elsewhere = "http://127.0.0.1:9/their/hook"  # nothing listens there
    jobs = [*make_jobs(1), *make_jobs(1, prefix="own-url", callback_url=elsewhere)]
    seen = Seen()
    async with receiver.serve() as url:
        batch = BatchSubmitter(
            world.client, world.options(url), observer=seen, callbacks=receiver
        )
        outcomes = Outcomes(batch.run(jobs))
        await seen.until(lambda: seen.created == 2)
        await world.time.until_asked(POLL, 1)
        await world.time.advance(POLL)
        await world.time.until_asked(POLL, 2)  # polled every POLL, not every SAFETY seconds
        await world.time.advance(ENDS - POLL)
        got = await outcomes.all()
    assert {t.request["callback_url"] for t in world.sim.tasks.values()} == {elsewhere, url}
    assert [o.status for o in got] == ["succeeded"] * 2
    # A poll at 5 s; the one at 301 s ends both; the duplicate check's scan.
    assert status_requests(world.sim) == 2 + 1


async def test_a_callback_before_its_task_is_followed_is_kept_for_it(
    world: World, tmp_path: Path
) -> None:
    """Tasks of an earlier run resume as the input reaches their line: their callbacks can come
    first. (Resumed tasks are polled; here a poll never comes, so only the callback ends it.)"""
    journal = tmp_path / "journal.jsonl"
    receiver = HandedOn(world.client, ReceiverOptions(confirm=False))
    async with receiver.serve() as url:
        first = BatchSubmitter(
            world.client, attrs.evolve(world.options(url), wait=False, journal=journal)
        )
        assert [o.status async for o in first.run(make_jobs(1))] == ["submitted"]
        lists_before = world.sim.stats.requests_to("list_tasks")  # its duplicate check
        await world.time.advance(ENDS)  # processing, then success: called back, nobody reads

        async def jobs_once_both_callbacks_are_taken() -> AsyncIterator[Job]:
            await receiver.until_handed(2)  # processing, and the claimed success
            for job in make_jobs(1):
                yield job

        second = BatchSubmitter(
            world.client, world.options(url, journal=journal), callbacks=receiver
        )
        outcomes = Outcomes(second.run(jobs_once_both_callbacks_are_taken()))
        await world.time.until_asked(GATHER, 1)
        await world.time.advance(GATHER)
        got = await outcomes.all()
    assert [o.status for o in got] == ["succeeded"]
    assert world.sim.stats.requests_to("list_tasks") - lists_before == 1


def test_callbacks_need_wait_and_a_callback_url() -> None:
    client = ViduClient("k", base_url="http://127.0.0.1:9")
    receiver = CallbackReceiver(client)
    for options in (BatchOptions(wait=True), BatchOptions(callback_url="http://x.example/")):
        with pytest.raises(ValueError, match="need wait=True and a callback_url"):
            BatchSubmitter(client, options, callbacks=receiver)
    with pytest.raises(ValueError, match="callback_url must be an http"):
        BatchOptions(callback_url="ftp://x.example/hook")

