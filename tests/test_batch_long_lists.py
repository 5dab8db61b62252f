"""A batch on an account whose task list is longer than one scan may read (``ScanLimits``):
its start-up search for an earlier run's tasks and its closing duplicate check (the safety net)
read every page of their own batch's tasks. The check reports a second task under one of the
batch's keys, made behind its back, and cancels it before it starts (its credits come back)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp
import pytest

from vidu_async.batch import BatchOptions, BatchSubmitter
from vidu_async.client import ViduClient
from vidu_async.jobs import Job
from vidu_async.reconcile import ScanLimits
from vidu_async.requests import ReferenceToVideoRequest
from vidu_async.retry import RetryPolicy, no_wait
from vidu_async.testing import Account, FakeVidu, ManualClock, Timeline

SLOW = Timeline(created=600, processing=600)
"""Every task stays ``created`` for the whole test: the extra one can still be cancelled."""


def make_jobs(n: int) -> list[Job]:
    return [
        Job(f"job-{i}", ReferenceToVideoRequest("viduq2", f"a heron fishing, take {i}",
                                                images=("https://example.com/heron.png",)), i)
        for i in range(1, n + 1)
    ]


def client(sim: FakeVidu, max_pages: int, key: str | None = None) -> ViduClient:
    """A client of the simulator (of its account ``key``, by default its first) whose scans
    read at most ``max_pages`` list pages."""
    return ViduClient(key or sim.api_key, base_url=sim.url, retry=RetryPolicy(sleep=no_wait),
                      scan_limits=ScanLimits(max_pages=max_pages))


class FirstCreated:
    """A ``BatchObserver`` whose ``created`` is set once the batch made its first task."""

    def __init__(self) -> None:
        self.created = asyncio.Event()

    def job_created(self, task_id: str, credits: int | None) -> None:
        self.created.set()

    def task_state(self, task_id: str, state: str) -> None:
        pass


async def with_a_second_task(
    sim: FakeVidu, jobs: list[Job], http: aiohttp.ClientSession, first_made: asyncio.Event,
    elsewhere: Sequence[str] = (),
) -> AsyncIterator[Job]:
    """The jobs, and once the first one's task exists, a second create of the very body the
    batch sent for it (its correlation key included), as another copy of the batch would: on
    the first account of ``elsewhere`` that the task is not on, by default on the same one."""
    yield jobs[0]
    await asyncio.wait_for(first_made.wait(), 30)
    (first,) = sim.tasks.values()
    key = next((k for k in elsewhere if k != first.api_key), first.api_key)
    headers = {"Authorization": f"Token {key}"}
    async with http.post(f"{sim.url}/ent/v2/reference2video", json=first.request,
                         headers=headers) as answer:
        assert answer.status == 200
    for job in jobs[1:]:
        yield job


@pytest.mark.parametrize(("jobs", "max_pages"), [(5, 100), (250, 2)])
async def test_a_second_task_under_a_batch_key_is_reported_and_cancelled(
    jobs: int, max_pages: int
) -> None:
    """(250, 2): the run's 251 tasks are three list pages, more than the client's scans may
    read; the check reads its own batch's pages whatever their number."""
    clock = ManualClock()
    async with FakeVidu("k", timeline=SLOW) as sim, client(sim, max_pages) as vidu, \
            aiohttp.ClientSession() as http:
        observer = FirstCreated()
        batch = BatchSubmitter(vidu, BatchOptions(concurrency=4, clock=clock, sleep=clock.sleep),
                               observer=observer)
        planted = with_a_second_task(sim, make_jobs(jobs), http, observer.created)
        outcomes = [o async for o in batch.run(planted)]
    extras = [o for o in outcomes if o.status == "duplicate"]
    kept = {o.custom_id: o.task_id for o in outcomes if o.status == "submitted"}
    assert len(kept) == jobs and len(extras) == 1
    extra = extras[0]
    assert extra.custom_id == "job-1" and extra.task_id not in kept.values()
    assert extra.error is not None and extra.error.reason == "DuplicateTask"
    assert f"kept: {kept['job-1']}" in extra.error.message
    assert extra.state == "cancelled"
    assert sim.tasks[extra.task_id].err_code == "TaskCanceled"  # and its credits refunded
    assert sim.tasks[extra.task_id].credits == 0
    assert len(sim.tasks) == jobs + 1


async def test_a_second_task_on_another_account_than_the_kept_one_is_reported_too() -> None:
    """Each account's sweep looks for every key the run kept, whichever account kept it: a
    copy of a job's create sent with the batch's other key is caught as well."""
    clock = ManualClock()
    accounts = {"k1": Account(), "k2": Account()}
    async with FakeVidu(accounts=accounts, timeline=SLOW) as sim, \
            client(sim, 100, "k1") as one, client(sim, 100, "k2") as two, \
            aiohttp.ClientSession() as http:
        observer = FirstCreated()
        batch = BatchSubmitter([one, two], BatchOptions(concurrency=4, clock=clock,
                                                        sleep=clock.sleep), observer=observer)
        planted = with_a_second_task(sim, make_jobs(6), http, observer.created, ("k1", "k2"))
        outcomes = [o async for o in batch.run(planted)]
    (extra,) = [o for o in outcomes if o.status == "duplicate"]
    kept = {o.custom_id: o.task_id for o in outcomes if o.status == "submitted"}
    assert len(kept) == 6 and extra.custom_id == "job-1"
    assert extra.task_id not in kept.values() and extra.state == "cancelled"
    assert sim.tasks[extra.task_id].api_key != sim.tasks[kept["job-1"]].api_key


async def test_a_batch_longer_than_a_scan_resumes(tmp_path: Path) -> None:
    """Its 250 tasks are three list pages, more than the client's scans may read (2): the
    rerun's start-up search reads them all anyway (the journal's keys give it room) instead of
    refusing to start, and follows every task without creating one."""
    async with FakeVidu("k", timeline=SLOW) as sim, client(sim, 2) as vidu:
        runs = []
        for _ in range(2):
            clock = ManualClock()
            batch = BatchSubmitter(vidu, BatchOptions(
                concurrency=4, clock=clock, sleep=clock.sleep, batch_id="herons.txt",
                journal=tmp_path / "herons.journal.jsonl",
            ))
            runs.append([o async for o in batch.run(make_jobs(250))])
    assert [Counter(o.status for o in run) for run in runs] == [{"submitted": 250}] * 2
    first, second = ({o.custom_id: o.task_id for o in run} for run in runs)
    assert second == first
    assert len(sim.tasks) == 250
