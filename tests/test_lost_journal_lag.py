"""A named batch rerun at once after its journal was lost, on an account whose task list lags:
the rerun must find every task the first run made, not pay for it again.

The first scan of the rerun cannot see the first run's tasks yet (the list lags 10 s), so each
job that was not found waits for the scan made once the visibility lag has passed. Time is
virtual (one ``ManualClock`` for the simulator, the client's retries and the batch), except
through the command line, which waits out a 1 s lag on the real clock.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from vidu_async.batch import BatchOptions, BatchSubmitter
from vidu_async.cli import main
from vidu_async.client import ViduClient
from vidu_async.jobs import Job
from vidu_async.outcome import Outcome
from vidu_async.requests import ReferenceToVideoRequest
from vidu_async.retry import RetryPolicy
from vidu_async.testing import FakeVidu, ManualClock, Quirks, Timeline
from vidu_async.testing import app as simulator_app

IMAGE = "https://example.com/ref.png"
LAG = 10.0
"""Seconds a new task stays out of the simulator's list."""
VISIBILITY_LAG = 30.0
"""What the client is told the list may lag (at least ``LAG``, as the contract requires)."""

WAITING = "before creating jobs not found on the account"
"""What a run says when it waits out the list's lag before creating."""

QUIRKS = {
    "list lags": Quirks(list_lag=LAG),
    "list lags, without payloads": Quirks(list_lag=LAG, list_without_payload=True),
}


def jobs(count: int) -> list[Job]:
    return [Job(f"job-{i}", ReferenceToVideoRequest("viduq2", f"a lighthouse at dusk, take {i}",
                                                    images=(IMAGE,), duration=5), i + 1)
            for i in range(count)]


def results(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


async def run(sim: FakeVidu, clock: ManualClock, journal: Path | None, count: int = 3
              ) -> list[Outcome]:
    """One run of the batch ``named`` to its submission, every wait on ``clock``."""
    policy = RetryPolicy(sleep=clock.sleep, clock=clock, visibility_lag=VISIBILITY_LAG)
    options = BatchOptions(journal=journal, batch_id="named", clock=clock, sleep=clock.sleep)
    async with ViduClient(sim.api_key, base_url=sim.url, retry=policy) as client:
        return [o async for o in BatchSubmitter(client, options).run(jobs(count))]


@pytest.mark.parametrize("quirks", QUIRKS.values(), ids=QUIRKS.keys())
@pytest.mark.parametrize("journal_kept", ["deleted", "never kept"])
async def test_a_rerun_at_once_after_a_lost_journal_finds_each_task_the_list_hides(
    tmp_path: Path, quirks: Quirks, journal_kept: str
) -> None:
    clock = ManualClock(now=1000.0)
    journal = tmp_path / "named.journal.jsonl" if journal_kept == "deleted" else None
    async with FakeVidu(clock=clock, quirks=quirks) as sim:
        first = await run(sim, clock, journal)
        assert [o.status for o in first] == ["submitted"] * 3
        if journal is not None:
            journal.unlink()  # its .lock file stays: the rerun knows the journal was used
        started = clock.now
        again = await run(sim, clock, journal)
        assert sim.stats.duplicate_payloads() == {}
        assert len(sim.tasks) == 3
    assert [o.status for o in again] == ["submitted"] * 3
    assert {o.custom_id: o.task_id for o in again} == {o.custom_id: o.task_id for o in first}
    assert clock.now - started >= LAG  # the hidden tasks were found by waiting, not by chance


# --- the same through the command line ----------------------------------------------------------

CLI_LAG = 1.0
"""Real seconds the list lags for the command line (it runs on the real clock)."""


async def test_the_command_line_rerun_at_once_after_a_lost_journal_pays_each_job_once(
    cli_env: Callable[[FakeVidu], None], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The rerun starts well within ``CLI_LAG`` of the first run's creates (no subprocess), so
    its first scan sees none of them; it must say it waits, wait, and find them all."""
    caplog.set_level(logging.INFO, logger="vidu_async")
    jobs_file = tmp_path / "prompts.txt"
    jobs_file.write_text("".join(f"lagging list {i}\n" for i in range(3)), encoding="utf-8")
    out = tmp_path / "results.jsonl"
    argv = ["submit", str(jobs_file), "--model", "viduq2", "--image", IMAGE, "--quiet",
            "--results", str(out), "--visibility-lag", str(CLI_LAG), "-v"]
    async with FakeVidu(timeline=Timeline(created=0.01, processing=0.05),
                        quirks=Quirks(list_lag=CLI_LAG)) as sim:
        cli_env(sim)
        assert await asyncio.to_thread(main, argv) == 0
        first = results(out)
        (tmp_path / "prompts.txt.journal.jsonl").unlink()
        caplog.clear()
        assert await asyncio.to_thread(main, argv) == 0
        assert sim.stats.duplicate_payloads() == {}
        assert sim.stats.tasks_created == 3
        assert WAITING in caplog.text
    again = results(out)
    assert {r["custom_id"]: r["task_id"] for r in again} == {
        r["custom_id"]: r["task_id"] for r in first}


async def test_after_a_lost_journal_only_the_first_rerun_waits_out_the_lag(
    tmp_path: Path,
) -> None:
    """The rerun that found the lost journal's tasks journals them with their keys: the rerun
    after it, with a new job, knows its journal records every task of the batch, and sends
    the new job without waiting out the list's lag again."""
    clock = ManualClock(now=1000.0)
    journal = tmp_path / "named.journal.jsonl"
    async with FakeVidu(clock=clock, quirks=Quirks(list_lag=LAG)) as sim:
        await run(sim, clock, journal)
        journal.unlink()
        found = clock.now
        await run(sim, clock, journal)
        assert clock.now - found >= LAG  # it had to wait: nothing recorded those tasks
        clock.advance(2 * VISIBILITY_LAG)  # every task listed by now
        third = clock.now
        again = await run(sim, clock, journal, count=4)
        assert len(sim.tasks) == 4
    assert [o.status for o in again] == ["submitted"] * 4
    assert clock.now - third < 1.0


async def test_a_found_task_journalled_without_its_creation_time_is_found_again_after_a_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A list without ``created_at`` (a reading of the docs): the rerun that found a lost
    journal's task records its intent with no time (from the beginning), never this run's
    start. Cut off before its ``created`` record, the next run looks from there and finds the
    task an hour old instead of proving it absent and paying again."""
    shown = simulator_app.result_body
    monkeypatch.setattr(simulator_app, "result_body", lambda task, links: {
        k: v for k, v in shown(task, links).items() if k != "created_at"})
    clock = ManualClock(now=1000.0)
    journal = tmp_path / "named.journal.jsonl"
    async with FakeVidu(clock=clock) as sim:
        [first] = await run(sim, clock, None, count=1)
        clock.advance(3600)
        await run(sim, clock, journal, count=1)  # finds it, journals intent and created
        lines = journal.read_text().splitlines()
        assert json.loads(lines[-1])["kind"] == "created"
        journal.write_text("\n".join(lines[:-1]) + "\n")  # killed between the two records
        clock.advance(60)
        [again] = await run(sim, clock, journal, count=1)
        assert len(sim.tasks) == 1
    assert again.task_id == first.task_id
