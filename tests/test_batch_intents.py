"""Intents do not run ahead of creates: a journalled intent waits for its create behind at most
``2 * concurrency - 1`` others (a crash leaves no more to look up), and a told rate paces the
creates themselves, not only their intents."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_batch import collect, make_jobs, sim_client, submitter
from tests.waiting import until
from vidu_async.batch import submitter as submitter_module
from vidu_async.jobs import Job
from vidu_async.journal import read_journal
from vidu_async.testing import EndpointFaults, FakeVidu, Faults, ManualClock, Timeline

INSTANT = Timeline(created=0, processing=0)
STILL_BEFORE_A_SLOT = ("preparing", "reconciling", "waiting", "submitted")
"""Stages of a job that has no pacing slot booked, or whose create was answered."""


def intents(journal: Path) -> int:
    """Intents written to ``journal`` so far (what a ``kill -9`` now would leave)."""
    if not journal.exists():
        return 0
    lines = journal.read_bytes().splitlines()
    return sum(1 for line in lines if json.loads(line).get("kind") == "intent")


async def test_with_every_create_held_at_most_2c_minus_1_jobs_are_left_to_look_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Creates the server holds unanswered: the batch stands with ``concurrency`` creates in
    flight, and a crash then leaves at most ``2c - 1`` intents without a task (it wrote one
    per job, 30, before the fix), whatever ``max_pending`` lets live."""
    c, n = 3, 30
    journal = tmp_path / "jobs.journal.jsonl"
    held = Faults(create=EndpointFaults(hold=60.0))  # on a clock that never moves
    async with FakeVidu(faults=held, timeline=INSTANT, clock=ManualClock(),
                        concurrency_limit=100) as sim, sim_client(sim) as client:
        # Told no rate: the batch starts with one create in flight, one more per answer, and
        # these are never answered; each window held full past its stall lets one more go.
        monkeypatch.setattr(submitter_module, "WINDOW_STALL", 0.05)
        batch = submitter(client, concurrency=c, wait=True, journal=journal)
        run = asyncio.create_task(collect(batch, make_jobs(n)))

        def standing() -> bool:
            """Every job not waiting for a slot has its intent on disk, c creates held."""
            waiting = batch.snapshot().get("waiting", 0)
            return sim.stats.faults["hold"] == c and intents(journal) == n - waiting

        await until(standing, f"{c} creates held")
        crashed = tmp_path / "crashed.jsonl"
        shutil.copyfile(journal, crashed)  # what a kill -9 at this moment leaves
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
    to_look_up = [job for job in read_journal(crashed).jobs if job.needs_reconcile]
    assert c <= len(to_look_up) <= 2 * c - 1


async def test_intents_ahead_of_creates_stay_bounded_through_a_run(tmp_path: Path) -> None:
    """Sampled through a whole run whose creates take a while to answer: intents on disk less
    creates the server received never exceed ``2c - 1`` plus the ``c`` on their way."""
    c, n = 2, 40
    journal = tmp_path / "jobs.journal.jsonl"
    slow = Faults(create=EndpointFaults(hold=0.02))
    async with FakeVidu(faults=slow, timeline=INSTANT, concurrency_limit=100) as sim, \
            sim_client(sim) as client:
        batch = submitter(client, concurrency=c, wait=True, journal=journal)
        run = asyncio.create_task(collect(batch, make_jobs(n)))
        ahead = []
        while not run.done():
            written = intents(journal)
            ahead.append(written - sim.stats.faults["hold"])
            await asyncio.sleep(0.002)
        outcomes = await run
    assert {o.status for o in outcomes} == {"succeeded"}
    assert len(ahead) > 10
    assert max(ahead) <= 2 * c - 1 + c


async def test_a_told_rate_paces_creates_and_the_first_leaves_at_once(tmp_path: Path) -> None:
    """With a journal and rate R on a recorded clock, creates reach the server 1/R apart and
    the first within 1/R of the start (intents were paced, creates bunched at the end, before).
    Virtual time moves only once every create whose slot was booked is answered, as in a real
    run, where an fsync takes milliseconds and a pacing interval 1/R."""
    rate, n = 10.0, 12
    journal = tmp_path / "jobs.journal.jsonl"
    clock = ManualClock()
    async with FakeVidu(timeline=INSTANT, clock=clock, concurrency_limit=100) as sim, \
            sim_client(sim) as client:

        read = 0

        def jobs() -> Iterator[Job]:
            nonlocal read
            for job in make_jobs(n):
                yield job
                read += 1  # asked for the next: this one was handed to its life

        def all_booked_sent() -> bool:
            """No job is past its pacing slot without its create answered."""
            snap = batch.snapshot()
            return read == sum(snap.get(stage, 0) for stage in STILL_BEFORE_A_SLOT)

        async def sleep(seconds: float) -> None:
            with contextlib.suppress(AssertionError):  # before the fix: waits in vain
                await until(all_booked_sent, "creates sent", within=1.0)
            await clock.sleep(seconds)

        batch = submitter(client, concurrency=4, rate=rate, journal=journal, clock=clock,
                          sleep=sleep)
        outcomes = await collect(batch, jobs())
    assert {o.status for o in outcomes} == {"submitted"}
    sent = sorted(task.created_at for task in sim.tasks.values())
    assert sent[0] <= 2 / rate  # one request is paced before it: reading the credits
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert min(gaps) >= 1 / rate - 1e-6  # before the fix: a burst, nothing for 0.5 s first
