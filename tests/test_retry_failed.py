"""``submit --retry-failed``: a job whose task failed on Vidu is sent again as one new task, on
purpose, under the next attempt's key, recorded in the journal before it is sent; every other job
is kept, and no rerun (with or without the flag, with or without the journal) pays for it twice."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest

from vidu_async.batch.identity import job_key
from vidu_async.batch.plan import (
    Create,
    Follow,
    JobFacts,
    Reconcile,
    Refuse,
    Replay,
    RetryFailed,
    plan,
)
from vidu_async.cli import main
from vidu_async.client import ViduClient
from vidu_async.journal import JobRecord, Journal
from vidu_async.requests import ReferenceToVideoRequest
from vidu_async.testing import FakeVidu, Timeline

URL = "https://example.com/ref.png"
FLAKY = Timeline(created=0.01, processing=0.05, failure_rate=0.5,
                 failure_codes=("InternalServiceFailure",))
JOBS = 8

# --- the decision -------------------------------------------------------------------------------

FACTS = JobFacts("cat", "fp-1", "k" * 32)
ACCOUNTS = frozenset({"acct-a"})


def ended(result: Mapping[str, Any], *, fingerprint: str = "fp-1", attempts: int = 0
          ) -> JobRecord:
    return JobRecord("cat", correlation_key="q" * 32, fingerprint=fingerprint,
                     account="acct-a", task_id=str(result.get("task_id")), credits=40,
                     final=result, attempts=attempts)


FAILED = {"custom_id": "cat", "status": "failed", "task_id": "t1", "state": "failed",
          "err_code": "InternalServiceFailure"}
CANCELLED = FAILED | {"err_code": "UserCancelled"}
SIM_CANCELLED = FAILED | {"err_code": "TaskCanceled"}
NOT_SAVED = FAILED | {"state": "success", "err_code": None}
SUCCEEDED = FAILED | {"status": "succeeded", "state": "success", "err_code": None}

RETRY_SENT = JobRecord("cat", correlation_key="r" * 32, fingerprint="fp-1", account="acct-a",
                       server_at=5.0, attempts=1, retried=("t1",))
"""An earlier run retried the failed task ``t1`` and sent the retry's create, with or without
its flag now: never a third attempt before the second is known."""

RETRY_CASES = [
    ("a failed task is retried as the next attempt", ended(FAILED), RetryFailed("t1", 1)),
    ("a second retry takes the number after", ended(FAILED, attempts=2), RetryFailed("t1", 3)),
    ("a cancelled task is not retried", ended(CANCELLED), Replay(CANCELLED)),
    ("nor one the simulator cancelled", ended(SIM_CANCELLED), Replay(SIM_CANCELLED)),
    ("a made video whose download failed is not", ended(NOT_SAVED), Replay(NOT_SAVED)),
    ("a success is replayed", ended(SUCCEEDED), Replay(SUCCEEDED)),
    ("a job never sent is created as usual", JobRecord("cat", attempts=1), Create("k" * 32)),
    ("an earlier run's retry whose answer was lost is looked up under the retry's key",
     RETRY_SENT, Reconcile("r" * 32, "acct-a", 5.0)),
    ("an earlier run's retry whose task is known is followed",
     attrs.evolve(RETRY_SENT, task_id="t2", credits=40), Follow("t2", "acct-a", 40)),
]


@pytest.mark.parametrize(("name", "record", "expected"), RETRY_CASES,
                         ids=[c[0] for c in RETRY_CASES])
def test_plan_with_retry_failed(name: str, record: JobRecord, expected: object) -> None:
    assert plan(FACTS, record, ACCOUNTS, retry_failed=True) == expected
    if record.final is None:
        assert plan(FACTS, record, ACCOUNTS) == expected


def test_without_the_flag_a_failed_task_is_replayed_and_a_changed_line_still_refused() -> None:
    assert plan(FACTS, ended(FAILED), ACCOUNTS) == Replay(FAILED)
    refused = plan(FACTS, ended(FAILED, fingerprint="fp-OLD"), ACCOUNTS, retry_failed=True)
    assert isinstance(refused, Refuse) and refused.error.reason == "RequestChanged"


def test_each_attempt_has_its_own_key_in_the_same_batch() -> None:
    keys = {job_key("b", "cat", "fp-1", attempt) for attempt in range(3)}
    assert len(keys) == 3
    assert len({key[:8] for key in keys}) == 1  # one batch tag: the start-up search finds all


async def test_a_retry_record_starts_the_job_afresh_and_keeps_what_was_spent(
    tmp_path: Path
) -> None:
    path = tmp_path / "j.jsonl"
    async with await Journal.open(path, batch_id="b") as journal:
        await journal.intent("job", key="k" * 32, account="a", fingerprint="f",
                             cost_class="c", server_at=0.0)
        await journal.created("job", task_id="t1", credits=45)
        await journal.final("job", FAILED)
        await journal.retry("job", task_id="t1")
    assert json.loads(path.read_text().splitlines()[-1]) == {
        "v": 2, "kind": "retry", "job": "job", "task_id": "t1"}
    async with await Journal.open(path, batch_id="b") as journal:
        assert journal.spent == 45  # the failed task was billed
        record = journal.take("job")
    assert record == JobRecord("job", attempts=1, retried=("t1",))


# --- through the command line -------------------------------------------------------------------


@pytest.fixture
async def flaky(cli_env: Callable[[FakeVidu], None]) -> AsyncIterator[FakeVidu]:
    async with FakeVidu(timeline=FLAKY, concurrency_limit=20, seed=5) as fake:
        cli_env(fake)
        yield fake


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    path = tmp_path / "jobs.jsonl"
    path.write_text("".join(f'{{"custom_id": "job-{i}", "prompt": "prompt {i}"}}\n'
                            for i in range(JOBS)))
    return path


async def submit(jobs: Path, *extra: str) -> dict[str, dict[str, Any]]:
    out = jobs.with_name("results.jsonl")
    argv = ["submit", str(jobs), "--model", "viduq2", "--image", URL, "--quiet", "--wait",
            "--poll-interval", "0.02", "--visibility-lag", "0.5", "--results", str(out), *extra]
    await asyncio.to_thread(main, argv)
    records = (json.loads(line) for line in out.read_text().splitlines())
    return {r["custom_id"]: r for r in records}


def tasks_by_prompt(fake: FakeVidu) -> Counter[str]:
    return Counter(str(task.request["prompt"]) for task in fake.tasks.values())


def ends(results: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[str, str]]:
    """Each job's status and task (links are signed anew on each read)."""
    return {k: (r["status"], r["task_id"]) for k, r in results.items()}


def failed(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return sorted(k for k, r in results.items() if r["status"] == "failed")


async def test_retry_failed_makes_one_new_task_per_failed_job_and_keeps_the_rest(
    flaky: FakeVidu, jobs: Path
) -> None:
    first = await submit(jobs)
    to_retry = failed(first)
    assert to_retry, "the simulator's seed fails some tasks"
    assert ends(await submit(jobs)) == ends(first)  # without the flag: replayed, nothing sent
    assert flaky.stats.tasks_created == JOBS

    second = await submit(jobs, "--retry-failed")
    assert flaky.stats.tasks_created == JOBS + len(to_retry)
    assert tasks_by_prompt(flaky) == Counter(
        {f"prompt {i}": 1 + (f"job-{i}" in to_retry) for i in range(JOBS)})
    for custom_id, result in second.items():
        kept = custom_id not in to_retry
        assert (result["task_id"] == first[custom_id]["task_id"]) is kept

    again = await submit(jobs)  # the retry's task is in the journal: followed or replayed
    assert flaky.stats.tasks_created == JOBS + len(to_retry)
    assert ends(again) == ends(second)


async def test_a_crash_after_the_retry_record_sends_the_retry_once(
    flaky: FakeVidu, jobs: Path
) -> None:
    first = await submit(jobs)
    victim = failed(first)[0]
    journal = jobs.with_name(jobs.name + ".journal.jsonl")
    async with await Journal.open(journal, batch_id="unused") as open_journal:
        await open_journal.retry(victim, task_id=str(first[victim]["task_id"]))
    # The run died here, before its create: the rerun (even without the flag) sends it once.
    second = await submit(jobs)
    assert flaky.stats.tasks_created == JOBS + 1
    assert second[victim]["task_id"] != first[victim]["task_id"]
    await submit(jobs)
    assert flaky.stats.tasks_created == JOBS + 1


async def test_a_retry_whose_answer_was_lost_is_found_by_the_next_run_not_sent_again(
    flaky: FakeVidu, jobs: Path
) -> None:
    first = await submit(jobs)
    victim = failed(first)[0]
    path = jobs.with_name(jobs.name + ".journal.jsonl")
    async with await Journal.open(path, batch_id="unused") as journal:
        record = journal.peek(victim)
        assert record is not None and record.account and record.fingerprint
        assert record.cost_class
        key = job_key(journal.batch_id, victim, record.fingerprint, 1)
        await journal.retry(victim, task_id=str(first[victim]["task_id"]))
        await journal.intent(victim, key=key, account=record.account,
                             fingerprint=record.fingerprint, cost_class=record.cost_class,
                             server_at=time.time())
    # The retry's create was sent and made its task; the run died before the answer came.
    request = ReferenceToVideoRequest("viduq2", f"prompt {victim.split('-')[1]}", images=[URL])
    async with ViduClient(flaky.api_key, base_url=flaky.url) as client:
        made = await client.create(request, correlation_key=key)
    for _ in range(2):  # (the plan is the same with --retry-failed: this retry has no end yet)
        again = await submit(jobs)
        assert tasks_by_prompt(flaky)[str(request.prompt)] == 2
        assert again[victim]["task_id"] == made.task_id


async def test_a_lost_journal_finds_the_retry_task_by_its_key_instead_of_paying(
    flaky: FakeVidu, jobs: Path
) -> None:
    first = await submit(jobs)
    assert failed(first), "the simulator's seed fails some tasks"
    second = await submit(jobs, "--retry-failed")
    assert ends(second) != ends(first)
    made = flaky.stats.tasks_created
    jobs.with_name(jobs.name + ".journal.jsonl").unlink()
    # Without its journal the batch finds each job's first task again (the failed one), and
    # its retry finds the earlier retry's task under the next attempt's key.
    third = await submit(jobs, "--retry-failed")
    assert flaky.stats.tasks_created == made
    assert ends(third) == ends(second)
    assert ends(await submit(jobs)) == ends(second)
    assert flaky.stats.tasks_created == made


async def test_a_dry_run_with_retry_failed_counts_the_failed_jobs_as_to_send(
    flaky: FakeVidu, jobs: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    to_retry = failed(await submit(jobs))
    capfd.readouterr()
    argv = ["submit", str(jobs), "--model", "viduq2", "--image", URL, "--dry-run"]
    assert await asyncio.to_thread(main, argv) == 0
    assert f"done (replayed): {JOBS} jobs" in capfd.readouterr().out
    assert await asyncio.to_thread(main, [*argv, "--retry-failed"]) == 0
    out = capfd.readouterr().out
    assert f"done (replayed): {JOBS - len(to_retry)} jobs" in out
    assert f"to send: {len(to_retry)} job" in out
    assert flaky.stats.tasks_created == JOBS


async def test_a_task_failing_during_a_retry_failed_run_is_sent_again_once_per_run(
    cli_env: Callable[[FakeVidu], None], jobs: Path
) -> None:
    """Every task fails. With the flag from the first run, each job's failed task is retried
    in that run, once (a task that always fails is not paid for over and over); each rerun
    with the flag retries once more; without it, the last failure is replayed."""
    always = Timeline(created=0.01, processing=0.05, failure_rate=1.0,
                      failure_codes=("InternalServiceFailure",))
    async with FakeVidu(timeline=always, concurrency_limit=20) as fake:
        cli_env(fake)
        first = await submit(jobs, "--retry-failed")
        assert fake.stats.tasks_created == 2 * JOBS
        assert tasks_by_prompt(fake) == Counter({f"prompt {i}": 2 for i in range(JOBS)})
        assert set(failed(first)) == set(first)
        second = await submit(jobs, "--retry-failed")
        assert fake.stats.tasks_created == 3 * JOBS
        assert ends(await submit(jobs)) == ends(second)
        assert fake.stats.tasks_created == 3 * JOBS
    made = {task_id for task_id in fake.tasks}
    assert {r["task_id"] for r in first.values()} <= made


async def test_a_rerun_after_retries_goes_at_once_knowing_every_attempts_key(
    cli_env: Callable[[FakeVidu], None], jobs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The list shows each job's first (failed) task and its retry; the journal recorded both
    attempts' intents, so a rerun with a new line has no unknown run to wait out the list's
    lag for."""
    caplog.set_level(logging.INFO, logger="vidu_async")
    always = Timeline(created=0.01, processing=0.05, failure_rate=1.0,
                      failure_codes=("InternalServiceFailure",))
    async with FakeVidu(timeline=always, concurrency_limit=20) as fake:
        cli_env(fake)
        await submit(jobs, "--retry-failed")
        with jobs.open("a") as handle:
            handle.write('{"custom_id": "new", "prompt": "a new prompt"}\n')
        caplog.clear()
        await submit(jobs, "-v")
        assert fake.stats.tasks_created == 2 * JOBS + 1
    assert "before creating jobs not found on the account" not in caplog.text
