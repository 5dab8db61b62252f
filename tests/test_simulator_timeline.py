"""The simulator's task timeline, driven by a manual clock: the concurrency limit, queue order,
failure rate; checked over raw HTTP and on the state machine itself."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from vidu_async.capabilities import TABLES
from vidu_async.testing import (
    CREDITS_PER_SECOND,
    Account,
    FakeVidu,
    ManualClock,
    SimStats,
    Timeline,
)
from vidu_async.testing.pricing import ROUTE_FEES
from vidu_async.testing.state import Simulation
from vidu_async.testing.validation import ROUTES, parse_create_body

BODY = {"model": "viduq2", "prompt": "a cat", "images": ["https://example.com/a.png"]}
CREATE = parse_create_body(json.dumps(BODY).encode())


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def create(http: aiohttp.ClientSession, sim: FakeVidu, key: str, **extra: Any) -> str:
    async with http.post(
        f"{sim.url}/ent/v2/reference2video",
        json={**BODY, **extra},
        headers={"Authorization": f"Token {key}"},
    ) as resp:
        assert resp.status == 200
        task_id: str = (await resp.json())["task_id"]
        return task_id


async def states(http: aiohttp.ClientSession, sim: FakeVidu, key: str) -> dict[str, str]:
    async with http.get(
        f"{sim.url}/ent/v2/tasks",
        params={"pager.pagesz": "100"},
        headers={"Authorization": f"Token {key}"},
    ) as resp:
        assert resp.status == 200
        return {task["id"]: task["state"] for task in (await resp.json())["tasks"]}


async def test_at_most_the_limit_process_and_the_rest_start_in_submission_order(
    http: aiohttp.ClientSession,
) -> None:
    clock = ManualClock()
    timeline = Timeline(created=0.1, processing=1.0)
    async with FakeVidu("k", clock=clock, timeline=timeline) as sim:
        ids = [await create(http, sim, "k") for _ in range(12)]
        started: list[str] = []
        most = 0
        for _ in range(80):  # 4 s of simulated time, in 50 ms steps
            clock.advance(0.05)
            seen = await states(http, sim, "k")
            processing = [i for i in ids if seen[i] == "processing"]
            most = max(most, len(processing))
            assert len(processing) <= 5
            queued = [i for i in ids if seen[i] == "queueing"]
            # Nothing queued may have been submitted before something already started.
            assert not queued or all(
                ids.index(q) > ids.index(p) for q in queued for p in processing
            )
            started += [i for i in processing if i not in started]

        assert most == 5
        assert started == ids
        assert set((await states(http, sim, "k")).values()) == {"success"}
        assert sim.stats.max_processing == 5


async def test_the_limit_is_per_account(http: aiohttp.ClientSession) -> None:
    clock = ManualClock()
    accounts = {"a": Account(concurrency_limit=2), "b": Account(concurrency_limit=3)}
    async with FakeVidu(accounts=accounts, clock=clock) as sim:
        for key in ("a", "b"):
            for _ in range(4):
                await create(http, sim, key)
        clock.advance(0.2)
        a, b = await states(http, sim, "a"), await states(http, sim, "b")

    assert Counter(a.values()) == {"processing": 2, "queueing": 2}
    assert Counter(b.values()) == {"processing": 3, "queueing": 1}


async def test_tasks_fail_at_the_configured_rate_with_an_err_code(
    http: aiohttp.ClientSession,
) -> None:
    clock = ManualClock()
    timeline = Timeline(failure_rate=0.25, failure_codes=("CreationPolicyViolation",))
    accounts = {"k": Account(credits=10**6, concurrency_limit=400)}
    async with FakeVidu(accounts=accounts, clock=clock, timeline=timeline, seed=3) as sim:
        ids = [await create(http, sim, "k") for _ in range(400)]
        clock.advance(5.0)
        sim.tick()
        failed = [sim.tasks[i] for i in ids if sim.tasks[i].state == "failed"]

    n, p = 400, 0.25
    assert abs(len(failed) - n * p) < 4 * math.sqrt(n * p * (1 - p))
    assert {t.err_code for t in failed} == {"CreationPolicyViolation"}
    assert all(sim.tasks[i].state in ("success", "failed") for i in ids)


def simulation(clock: ManualClock, **account: Any) -> Simulation:
    return Simulation(
        {"k": Account(**account)},
        timeline=Timeline(created=0.1, processing=1.0),
        clock=clock,
        seed=0,
        stats=SimStats(),
    )


def test_a_clock_jump_gives_the_same_history_as_small_steps() -> None:
    slow, fast = ManualClock(), ManualClock()
    histories = []
    for clock, steps in ((slow, [0.01] * 500), (fast, [5.0])):
        sim = simulation(clock, concurrency_limit=2)
        tasks = [sim.create("k", CREATE) for _ in range(7)]
        for step in steps:
            clock.advance(step)
            sim.tick()
        histories.append([(t.queued_at, t.started_at, t.finished_at, t.state) for t in tasks])

    assert histories[0] == histories[1]  # event times come from the timeline, not the ticks
    starts = [h[1] for h in histories[1]]
    assert starts == pytest.approx([0.1, 0.1, 1.1, 1.1, 2.1, 2.1, 3.1])


def test_every_change_is_reported_in_order() -> None:
    clock = ManualClock()
    changes: list[tuple[str, str]] = []
    sim = Simulation(
        {"k": Account()},
        timeline=Timeline(),
        clock=clock,
        seed=0,
        stats=SimStats(),
        on_change=lambda task: changes.append((task.task_id, task.state)),
    )
    task = sim.create("k", CREATE)
    clock.advance(10.0)
    sim.tick()

    assert changes == [(task.task_id, s) for s in ("queueing", "processing", "success")]


def test_the_same_seed_gives_the_same_ids_seeds_and_outcomes() -> None:
    def run() -> list[tuple[str, int, str]]:
        clock = ManualClock()
        sim = Simulation(
            {"k": Account()},
            timeline=Timeline(failure_rate=0.5),
            clock=clock,
            seed=11,
            stats=SimStats(),
        )
        tasks = [sim.create("k", CREATE) for _ in range(10)]
        clock.advance(10.0)
        sim.tick()
        return [(t.task_id, t.seed, t.state) for t in tasks]

    assert run() == run()


def test_the_price_tables_cover_every_model_and_call() -> None:
    assert set(CREDITS_PER_SECOND) == {name for t in TABLES.values() for name in t.models}
    assert set(ROUTE_FEES) == {*ROUTES, "subjects"}
