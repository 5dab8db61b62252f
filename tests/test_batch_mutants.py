"""Money paths of the batch that no other test watched: each test here fails if one small change
to ``vidu_async/batch`` (found by manual mutation testing) is made, and passes without it.

Every wait is virtual (``ManualClock``); the simulator plays Vidu on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from vidu_async.batch import BatchOptions, BatchSubmitter, account_label
from vidu_async.batch.identity import cost_class, fingerprint, job_key
from vidu_async.client import ViduClient
from vidu_async.jobs import Job
from vidu_async.journal import Journal
from vidu_async.outcome import Outcome
from vidu_async.requests import ReferenceToVideoRequest
from vidu_async.retry import RetryPolicy, no_wait
from vidu_async.tasks import split_payload
from vidu_async.testing import (
    Account,
    EndpointFaults,
    FakeVidu,
    Faults,
    ManualClock,
    Quirks,
    Timeline,
)

IMAGE = "https://example.com/otter.png"
SLOW = Timeline(created=600, processing=600)
"""Every task stays ``created`` for the whole test: it can still be cancelled."""


def request(prompt: str, duration: int = 5) -> ReferenceToVideoRequest:
    return ReferenceToVideoRequest("viduq2", prompt, images=(IMAGE,), duration=duration)


def client(sim: FakeVidu, clock: ManualClock | None = None) -> ViduClient:
    policy = (RetryPolicy(sleep=no_wait) if clock is None
              else RetryPolicy(sleep=clock.sleep, clock=clock, visibility_lag=30.0))
    return ViduClient(sim.api_key, base_url=sim.url, retry=policy)


async def journal_intent(journal: Path, job: Job, account: str, server_at: float) -> str:
    """Journal, as an earlier run of batch "otters" would, that ``job``'s create was sent at
    ``server_at`` (its answer never recorded); its correlation key."""
    print_ = fingerprint(job.request)
    key = job_key("otters", job.custom_id, print_)
    async with await Journal.open(journal, batch_id="otters") as earlier:
        await earlier.intent(job.custom_id, key=key, account=account, fingerprint=print_,
                             cost_class=cost_class(job.request), server_at=server_at)
    return key


# --- the budget ---------------------------------------------------------------------------------


async def test_a_task_over_the_budget_is_cancelled_unpaid_and_nothing_more_is_sent() -> None:
    """The first task's price is unknown, so it goes alone; it costs more than the cap: it is
    cancelled (free), its credits are no longer counted as spent (the summary says 0), and the
    batch stops: a job of another price arriving afterwards is not tried, which would make
    (and have to cancel) one more task over the budget."""
    clock = ManualClock()
    async with FakeVidu(timeline=SLOW) as sim, client(sim) as vidu:
        start = sim.balance()
        first_settled = asyncio.Event()

        async def jobs() -> AsyncIterator[Job]:
            yield Job("dear", request("an otter juggling"), 1)
            await first_settled.wait()  # read once the first job's outcome is out
            yield Job("other-price", request("an otter sleeping", duration=8), 2)

        batch = BatchSubmitter(vidu, BatchOptions(max_credits=30, clock=clock,
                                                  sleep=clock.sleep))
        outcomes: dict[str | None, Outcome] = {}
        async for outcome in batch.run(jobs()):
            outcomes[outcome.custom_id] = outcome
            first_settled.set()
        assert sim.stats.tasks_created == 1
        assert sim.balance() == start
    dear, other = outcomes["dear"], outcomes["other-price"]
    assert (dear.status, dear.state, dear.credits) == ("not_submitted", "cancelled", 0)
    assert dear.error is not None and "cancelled before it started" in dear.error.message
    assert other.status == "not_submitted" and other.task_id is None
    assert other.error == dear.error  # the batch stopped for the first job's reason
    assert batch.credits_spent == batch.credits_total == 0
    assert batch.stop_reason == dear.error


async def test_a_task_over_the_budget_that_started_before_its_cancel_is_reported_paid() -> None:
    """The one way a run's own creates go past the cap: the lone task of an unknown price costs
    more than is left and has started by the time it is cancelled (a task that has started
    cannot be). It is reported ``submitted`` with its task, its credits counted as spent,
    reason ``BudgetExceeded``; the batch stops."""
    clock = ManualClock()
    started = Timeline(created=0, processing=600)
    async with FakeVidu(timeline=started) as sim, client(sim) as vidu:
        start = sim.balance()
        batch = BatchSubmitter(vidu, BatchOptions(max_credits=30, clock=clock,
                                                  sleep=clock.sleep))
        jobs = [Job("dear", request("an otter juggling"), 1),
                Job("next", request("an otter sleeping"), 2)]
        outcomes = {o.custom_id: o async for o in batch.run(jobs)}
        assert sim.stats.tasks_created == 1
        paid = start - sim.balance()
    dear, other = outcomes["dear"], outcomes["next"]
    assert paid > 30
    assert (dear.status, dear.credits) == ("submitted", paid) and dear.task_id is not None
    assert dear.error is not None and dear.error.reason == "BudgetExceeded"
    assert "cancelling it failed" in dear.error.message
    assert other.status == "not_submitted" and other.task_id is None
    assert other.error is not None and other.error.reason in ("BudgetReached", "BudgetExceeded")
    assert batch.credits_spent == paid and batch.stop_reason is not None


# --- finding what an earlier run made -----------------------------------------------------------


async def test_a_candidate_task_that_cannot_be_read_leaves_the_job_ambiguous_and_unsent() -> None:
    """The list shows no payloads, so a rerun of a named batch without its journal reads each
    task of the job's model and prompt one by one; a read that fails (500 after every retry)
    may hide the job's own task: the job is ambiguous, never created again."""
    clock = ManualClock(now=1000.0)
    unreadable = Faults(query=EndpointFaults(server_error=1.0))
    async with FakeVidu(clock=clock, quirks=Quirks(list_without_payload=True),
                        faults=unreadable) as sim, client(sim, clock) as vidu:
        runs = []
        for _ in range(2):
            batch = BatchSubmitter(vidu, BatchOptions(batch_id="otters", clock=clock,
                                                      sleep=clock.sleep))
            runs.append([o async for o in batch.run([Job("otter", request("an otter"), 1)])])
        assert sim.stats.tasks_created == len(sim.tasks) == 1
    (first,), (again,) = runs
    assert first.status == "submitted"
    assert again.status == "ambiguous" and again.task_id is None
    assert again.error is not None and again.error.reason == "AmbiguousCreate"
    assert f"task {first.task_id} may be this job's" in again.error.message



async def test_of_two_earlier_tasks_under_a_key_a_rerun_keeps_the_oldest_as_a_lookup_does(
) -> None:
    """An earlier run (journal lost) left two tasks under one job's key: the rerun adopts the
    oldest, the one a lookup of that key finds (``reconcile.judge``), and creates nothing."""
    clock = ManualClock(now=1000.0)
    job = Job("otter", request("an otter, twice"), 1)
    async with FakeVidu(clock=clock) as sim, client(sim, clock) as vidu, \
            aiohttp.ClientSession() as http:
        key = job_key("otters", job.custom_id, fingerprint(job.request))
        oldest = await vidu.create(job.request, correlation_key=key)
        clock.advance(5)
        headers = {"Authorization": f"Token {sim.api_key}"}
        async with http.post(f"{sim.url}/ent/v2/reference2video", headers=headers,
                             json=sim.tasks[oldest.task_id].request) as answer:
            assert answer.status == 200
        clock.advance(60)  # both listed by now
        batch = BatchSubmitter(vidu, BatchOptions(batch_id="otters", clock=clock,
                                                  sleep=clock.sleep))
        [outcome] = [o async for o in batch.run([job])]
        assert sim.stats.tasks_created == 2
    assert (outcome.status, outcome.task_id) == ("submitted", oldest.task_id)

async def test_a_client_without_a_total_timeout_still_looks_up_an_earlier_runs_lost_create(
    tmp_path: Path,
) -> None:
    """Without a total timeout a create call may keep sending for ever (``create_horizon`` is
    infinite): the earlier run's create is then bounded by this run's start alone. It used to
    raise ``OverflowError`` out of the batch instead."""
    journal = tmp_path / "journal.jsonl"
    job = Job("otter", request("an otter diving"), 1)
    forever = aiohttp.ClientTimeout(total=None, sock_connect=15, sock_read=60)
    async with FakeVidu(timeline=SLOW) as sim, ViduClient(
        sim.api_key, base_url=sim.url, retry=RetryPolicy(sleep=no_wait), timeout=forever
    ) as vidu:
        assert vidu.create_horizon == math.inf
        key = await journal_intent(journal, job, account_label(vidu), time.time() - 3600)
        batch = BatchSubmitter(vidu, BatchOptions(journal=journal))
        [outcome] = [o async for o in batch.run([job])]
        [task] = sim.tasks.values()
    assert (outcome.status, outcome.task_id) == ("submitted", task.task_id)
    assert split_payload(task.payload)[0] == key


@pytest.mark.parametrize(("age", "longest_wait"), [(1, (30, 60)), (3600, (0, 0))])
async def test_a_rerun_proves_a_lost_create_absent_the_lists_lag_after_it_could_last_be_sent(
    tmp_path: Path, age: float, longest_wait: tuple[float, float]
) -> None:
    """An intent journalled ``age`` seconds ago, its create never answered. The run that sent
    it is over: absence is proven the list's lag (30 s) after this run started, not after the
    longest a create call could keep sending (ten minutes by default); an hour-old one is
    proven at once."""
    journal = tmp_path / "journal.jsonl"
    job = Job("otter", request("an otter at dawn"), 1)
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    policy = RetryPolicy(sleep=record, visibility_lag=30.0)
    async with FakeVidu(timeline=SLOW) as sim, ViduClient(
        sim.api_key, base_url=sim.url, retry=policy
    ) as vidu:
        assert vidu.create_horizon >= 600
        key = await journal_intent(journal, job, account_label(vidu), time.time() - age)
        batch = BatchSubmitter(vidu, BatchOptions(journal=journal))
        [outcome] = [o async for o in batch.run([job])]
        [task] = sim.tasks.values()
    assert (outcome.status, outcome.task_id) == ("submitted", task.task_id)
    assert split_payload(task.payload)[0] == key
    low, high = longest_wait
    assert low <= max(waits, default=0) <= high


# --- following, downloading and the safety net --------------------------------------------------


async def test_a_video_that_failed_to_download_is_downloaded_by_the_rerun_not_replayed(
    tmp_path: Path,
) -> None:
    """A paid video the first run could not save (here a folder stands where the file goes)
    is not an end: nothing is journalled final, and the rerun follows the task again and
    saves it, without a new create."""
    journal, videos = tmp_path / "journal.jsonl", tmp_path / "videos"
    (videos / "otter.mp4").mkdir(parents=True)
    clock = ManualClock()
    options = BatchOptions(journal=journal, wait=True, download=videos, clock=clock,
                           sleep=clock.sleep, poll_interval=1.0)
    job = Job("otter", request("an otter floating"), 1)
    async with FakeVidu(timeline=Timeline(created=0, processing=0)) as sim, \
            client(sim) as vidu:
        [failed] = [o async for o in BatchSubmitter(vidu, options).run([job])]
        (videos / "otter.mp4").rmdir()
        [saved] = [o async for o in BatchSubmitter(vidu, options).run([job])]
        assert sim.stats.tasks_created == 1
    assert failed.status == "failed" and failed.files == ()
    assert failed.error is not None and failed.error.reason == "DownloadFailed"
    assert (saved.status, saved.task_id) == ("succeeded", failed.task_id)
    assert saved.files == (str(videos / "otter.mp4"),)
    assert (videos / "otter.mp4").stat().st_size > 0



async def test_a_finished_task_gives_its_account_place_back() -> None:
    """Jobs one after another, each followed to its end before the next is read: each finds
    both accounts (limit 2 each) as free as at the start, so each goes to the first; a place
    never given back would send the second job to the other account and, over a long batch,
    every job to one account."""
    accounts = {"k1": Account(concurrency_limit=2), "k2": Account(concurrency_limit=2)}
    clock = ManualClock()
    async with FakeVidu(accounts=accounts, timeline=Timeline(created=0, processing=0)) as sim, \
            ViduClient("k1", base_url=sim.url, retry=RetryPolicy(sleep=no_wait)) as one, \
            ViduClient("k2", base_url=sim.url, retry=RetryPolicy(sleep=no_wait)) as two:
        settled = asyncio.Event()

        async def jobs() -> AsyncIterator[Job]:
            for i in range(1, 4):
                settled.clear()
                yield Job(f"otter-{i}", request(f"an otter, take {i}"), i)
                await settled.wait()

        batch = BatchSubmitter([one, two], BatchOptions(wait=True, poll_interval=1.0,
                                                        clock=clock, sleep=clock.sleep))
        async for outcome in batch.run(jobs()):
            assert outcome.status == "succeeded"
            settled.set()
        assert [task.api_key for task in sim.tasks.values()] == ["k1"] * 3

async def test_a_duplicate_check_that_cannot_tell_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The list shows no payloads: the closing check cannot tell the batch's tasks apart and
    warns that it did not check, rather than report no duplicate."""
    clock = ManualClock()
    async with FakeVidu(quirks=Quirks(list_without_payload=True), timeline=SLOW) as sim, \
            client(sim) as vidu:
        batch = BatchSubmitter(vidu, BatchOptions(clock=clock, sleep=clock.sleep))
        outcomes = [o async for o in batch.run([Job("otter", request("an otter"), 1)])]
    assert [o.status for o in outcomes] == ["submitted"]
    assert "duplicate tasks: its task list does not show payloads" in caplog.text
