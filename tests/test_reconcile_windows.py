"""Lookup windows from just before their creates to the server's now, the slot a lookup gives
back while it waits, and the rescan when the server's clock is set during a lookup.

A lost create's lookup lists from just before it (``created_at.from``) to the server's now: no
``created_at.to``, since the server may commit a create after the client gave up on it. So a
scan reads a page or two whatever the batch's size, however late the create committed. Time is
virtual (``ManualClock``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from email.utils import format_datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpServer

from vidu_async import ViduClient
from vidu_async.reconcile import Absent, Found, slots_given_back
from vidu_async.requests import ReferenceToVideoRequest
from vidu_async.retry import RetryPolicy
from vidu_async.server_clock import ServerClock
from vidu_async.tasks import Task, TaskResult, new_correlation_key, wrap_payload
from vidu_async.testing import EndpointFaults, FakeVidu, Faults, ManualClock, Quirks

DROPPED = Faults(create=EndpointFaults(commit_then_drop=1.0))
"""Every create is committed and billed, then its connection dropped without an answer."""


def request(i: int) -> ReferenceToVideoRequest:
    return ReferenceToVideoRequest("viduq2", f"a cat surfing, take {i}",
                                   images=("https://example.com/cat.png",))


async def world(
    time: ManualClock, faults: Faults, quirks: Quirks, **policy: Any
) -> AsyncIterator[tuple[FakeVidu, ViduClient]]:
    retry = RetryPolicy(**{"sleep": time.sleep, "clock": time, "random": lambda: 1.0,
                           "max_attempts": 10, **policy})
    async with (
        FakeVidu(clock=time, faults=faults, quirks=quirks, seed=3) as sim,
        ViduClient(sim.api_key, base_url=sim.url, retry=retry) as client,
    ):
        yield sim, client


async def test_a_lookup_lists_only_the_seconds_around_its_create(time: ManualClock) -> None:
    async for sim, client in world(time, DROPPED, Quirks()):
        first = await asyncio.gather(*(client.create_reference2video(request(i))
                                       for i in range(250)))
        assert len({t.task_id for t in first}) == 250
        time.advance(60)
        before = sim.stats.requests_to("list_tasks")
        scans = client.reconciler.scans
        late = [await client.create_reference2video(request(i)) for i in range(250, 253)]
        assert all(isinstance(t, Task) for t in late) and sim.stats.tasks_created == 253
        # One page per scan: the 250 tasks of a minute before are outside every window.
        assert sim.stats.requests_to("list_tasks") - before == client.reconciler.scans - scans
        assert client.reconciler.scans - scans == 3


async def test_a_lookup_waiting_for_the_list_gives_its_places_back(time: ManualClock) -> None:
    alive, slot = asyncio.Semaphore(1), asyncio.Semaphore(1)
    free_while_waiting: list[tuple[bool, bool]] = []

    async def sleep(seconds: float) -> None:
        free_while_waiting.append((not alive.locked(), not slot.locked()))
        await time.sleep(seconds)

    async for sim, client in world(time, DROPPED, Quirks(list_lag=10.0), sleep=sleep):
        async with alive, slot:
            with slots_given_back(alive, slot):
                task = await client.create_reference2video(request(0))
            await asyncio.sleep(0)
            assert alive.locked() and slot.locked()  # taken again as soon as they were free
        assert sim.tasks[task.task_id].payload == wrap_payload(task.correlation_key or "", "")
        assert free_while_waiting == [(True, True)]  # the wait for the lagging list


def task_list(
    tasks: list[dict[str, Any]], queries: list[dict[str, str]], clocks: list[ServerClock],
    offset: list[float],
) -> web.Application:
    """A task list that keeps to ``created_at.from`` and ``.to`` (recording ``queries``), on a
    server clock ``offset[0]`` seconds from the client's local time (``clocks[0]``): the test
    sets it, as an operator setting the server's clock would."""

    async def list_tasks(request: web.Request) -> web.Response:
        queries.append(dict(request.query))
        await asyncio.sleep(0.01)  # let other lookups queue behind this scan

        def bound(name: str) -> dt.datetime | None:
            value = request.query.get(name)
            return None if value is None else dt.datetime.fromisoformat(value)

        start, end = bound("created_at.from"), bound("created_at.to")
        listed = [t for t in tasks
                  if (start is None or dt.datetime.fromisoformat(t["created_at"]) >= start)
                  and (end is None or dt.datetime.fromisoformat(t["created_at"]) <= end)]
        now = clocks[0].local_now() + dt.timedelta(seconds=offset[0])
        return web.json_response({"tasks": listed, "next_page_token": ""},
                                 headers={"Date": format_datetime(now.replace(microsecond=0),
                                                                  usegmt=True)})

    app = web.Application()
    app.router.add_get("/ent/v2/tasks", list_tasks)
    return app


async def test_lookups_sharing_a_scan_list_once_from_the_earliest_start_to_now(
    aiohttp_server: AiohttpServer, time: ManualClock
) -> None:
    keys = [new_correlation_key() for _ in range(3)]
    policy = RetryPolicy(sleep=time.sleep, clock=time, visibility_lag=2.0)
    queries: list[dict[str, str]] = []
    listed: list[dict[str, Any]] = []
    clocks: list[ServerClock] = []
    server = await aiohttp_server(task_list(listed, queries, clocks, [0.0]))
    async with ViduClient("k" * 32, base_url=str(server.make_url("/")), retry=policy) as client:
        clock = client.server_clock
        clocks.append(clock)
        clock.observe(format_datetime(clock.local_now().replace(microsecond=0), usegmt=True),
                      clock.local_now())  # an answer: the clock is learned from here on
        time.advance(10)
        sent = [clock.now() + dt.timedelta(seconds=5 * i) for i in range(3)]
        # Each committed long after it was sent (and settled): found all the same.
        listed += [
            {"id": str(i), "model": "viduq2", "prompt": "p", "payload": wrap_payload(key, ""),
             "created_at": (sent[i] + dt.timedelta(seconds=30)).isoformat()}
            for i, key in enumerate(keys[:2])
        ]
        time.advance(60)

        async def lookup(i: int, key: str) -> Found | Absent | object:
            return await client.reconciler.lookup(key, model="viduq2", prompt="p",
                                                  sent_at=sent[i], settled_at=sent[i])

        # The first scan runs alone; the two lookups arriving meanwhile share the second,
        # which lists once, from the earlier of their windows.
        first, *shared = await asyncio.gather(
            lookup(2, keys[2]), lookup(0, keys[0]), lookup(1, keys[1])
        )
        uncertainty = clock.uncertainty
    assert first == Absent()
    assert shared == [Found(TaskResult.from_dict(listed[0])),
                      Found(TaskResult.from_dict(listed[1]))]
    assert client.reconciler.scans == 2 and len(queries) == 2
    starts = [dt.datetime.fromisoformat(query["created_at.from"]) for query in queries]
    assert [sent[2] - starts[0], sent[0] - starts[1]] == [dt.timedelta(seconds=uncertainty)] * 2
    assert not any("created_at.to" in query for query in queries)


@pytest.mark.parametrize("jump", [3600.0, -3600.0])
async def test_a_lookup_whose_scan_finds_the_server_clock_set_scans_again_wider(
    aiohttp_server: AiohttpServer, time: ManualClock, jump: float
) -> None:
    # The client knows the server's clock; then the server's clock is set (an hour either
    # way) and a create is made there, stamped on the new clock. Set forward, the create is
    # inside the first window (it runs to the server's now). Set back, the first window,
    # built from the old offset, misses it; that scan's own answer shows the clock was set,
    # so its miss proves nothing: the lookup scans again, from the create's readings moved
    # to the new offset and widened (taken before the new bounds started).
    key = new_correlation_key()
    policy = RetryPolicy(sleep=time.sleep, clock=time, visibility_lag=2.0)
    listed: list[dict[str, Any]] = []
    clocks: list[ServerClock] = []
    offset = [0.0]
    server = await aiohttp_server(task_list(listed, [], clocks, offset))
    async with ViduClient("k" * 32, base_url=str(server.make_url("/")), retry=policy) as client:
        clock = client.server_clock
        clocks.append(clock)
        clock.observe(format_datetime(clock.local_now().replace(microsecond=0), usegmt=True),
                      clock.local_now())  # the bounds of the server's clock before it is set
        time.advance(10)
        offset[0] = jump
        sent = clock.local_now()
        created = sent + dt.timedelta(seconds=jump)
        listed.append({"id": "t1", "model": "viduq2", "prompt": "p",
                       "payload": wrap_payload(key, ""), "created_at": created.isoformat()})
        time.advance(60)
        result = await client.reconciler.lookup(key, model="viduq2", prompt="p",
                                                sent_at=clock.to_server(sent),
                                                settled_at=clock.to_server(sent))
        assert clock.offset == pytest.approx(jump, abs=1.0)  # learned from the first scan
    assert result == Found(TaskResult.from_dict(listed[0]))
    assert client.reconciler.scans == (1 if jump > 0 else 2)
