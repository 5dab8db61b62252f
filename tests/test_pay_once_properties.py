"""The money invariants, driven by hypothesis through random sequences of runs, interruptions,
lost journals, new jobs, top-ups and time passing, against the simulator with faults on creates.

Each example is one account on the simulator, faulty in a random way (any mix of lost answers,
500s before or after the task was made, resets, 429s, some asking a wait the batch will not
make; a task list failing reads; few or many attempts per call; few credits; a request rate
limit it is not told of, so that its pacing searches while lookups and status rounds wait their
turn) and playing a random reading of the docs' uncertain points (a lagging list, a skewed
server clock, a list without payloads). The mix is drawn so that a run regularly ends jobs
ambiguous, resends creates proven absent, retries failed tasks, runs out of credits, halts on a
long Retry-After and leaves jobs unsent, budgets stopping only some examples. The machine then
runs the same batch again and again: to its end, or interrupted after a few outcomes (the
journal stays consistent, as after Ctrl-C), sometimes after its journal was deleted, sometimes
with a job added in front, sometimes retrying the jobs whose task failed (``retry_failed``: a
new task on purpose, under the next attempt's key). After every step:

- no correlation key has two tasks on the server (nothing was ever paid twice);
- a job's next task (cancelled ones aside) was made only after its last one failed, and at most
  once per retrying run;
- the budget, when there is one, was never passed while the journal lived;
as each job is reported not sent, no task of it was made in that run (but a failed one whose
retry was not sent); and after every run that was not interrupted, every job was reported
exactly once. ``--hypothesis-show-statistics`` counts the outcomes reached.

All time is virtual (one ``ManualClock`` for the simulator, the client's retries and the batch),
so a 30 s visibility lag costs nothing; the batch reads it through a ``SpinGuard``, so a loop
that never waits fails the example instead of hanging it. The examples are the same on every
run (the ``repeatable`` profile, ``tests/conftest.py``); ``--hypothesis-profile=explore`` draws
others.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import attrs
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tests.waiting import SpinGuard
from vidu_async.batch import BatchOptions, BatchSubmitter
from vidu_async.client import ViduClient
from vidu_async.errors import APIError
from vidu_async.jobs import Job
from vidu_async.journal import read_journal
from vidu_async.outcome import Outcome
from vidu_async.requests import ReferenceToVideoRequest
from vidu_async.retry import RetryPolicy
from vidu_async.testing import (
    CANCELED,
    EndpointFaults,
    FakeVidu,
    Faults,
    ManualClock,
    Quirks,
    RateLimit,
    SimTask,
    Timeline,
    task_cost,
)
from vidu_async.testing.state import FAILED

COST = task_cost("viduq2", 5, off_peak=False)
CREDITS = 100_000

CREATE_FAULTS: dict[str, dict[str, float]] = {
    "lost answers": {"commit_then_drop": 0.15},
    "500s after commit": {"error_after_commit": 0.1},
    "500s": {"server_error": 0.35},
    "resets": {"reset": 0.1},
    "truncated answers": {"truncated": 0.05},
    "throttled": {"too_many_requests": 0.1, "quota_exceeded": 0.05},
}
"""Faults a create may meet, each on or off in an example (at most one fires per create; all
of them, with a long Retry-After, add up to less than 1)."""
QUIRKS = {
    "documented": Quirks(),
    "server clock ahead": Quirks(clock_skew=600.0),
    "server clock behind": Quirks(clock_skew=-600.0),
    "list without payload": Quirks(list_without_payload=True),
    "paper paging": Quirks(paper_paging=True),
}

LIMITS = {
    "no rate limit": None,
    "strict 2/s": RateLimit(2.0),
    "5/s, bursts of 3": RateLimit(5.0, 3),
}
"""The account's request rate limit (every request counts), which the batch is never told: its
pacing searches for it while creates, lookups and status rounds share it."""


def job(i: int) -> Job:
    request = ReferenceToVideoRequest("viduq2", f"a heron fishing, take {i}",
                                      images=["https://example.com/heron.png"], duration=5)
    return Job(f"heron-{i}", request)


class PayOnce(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.folder = Path(tempfile.mkdtemp(prefix="pay-once-"))
        self.journal = self.folder / "batch.journal.jsonl"
        self.clock = ManualClock(now=1000.0)
        self.jobs = [job(i) for i in range(6)]
        self.next_job = 6
        self.sim: FakeVidu | None = None
        self.cap: int | None = None
        self.journal_lost = False
        self.retrying_runs = 0
        self.credits = CREDITS
        self.attempts = 8

    @initialize(
        creates=st.sets(st.sampled_from(sorted(CREATE_FAULTS))),
        long_retry_after=st.sampled_from([False, False, True]),
        list_failing=st.booleans(),
        quirks=st.sampled_from(sorted(QUIRKS)),
        lag=st.sampled_from([0.0, 10.0]),
        cap=st.sampled_from([None, None, 4, 8, 16]).map(lambda n: n and n * COST),
        credits=st.sampled_from([CREDITS, CREDITS, 3 * COST]),
        attempts=st.sampled_from([8, 2]),
        seed=st.integers(0, 2**16),
        failing=st.sampled_from([0.0, 0.5]),
        limit=st.sampled_from(sorted(LIMITS)),
    )
    def start(self, creates: set[str], long_retry_after: bool, list_failing: bool, quirks: str,
              lag: float, cap: int | None, credits: int, attempts: int, seed: int,
              failing: float, limit: str) -> None:
        rates = {kind: rate for name in creates for kind, rate in CREATE_FAULTS[name].items()}
        if long_retry_after:  # the batch halts: it waits 2 min at most
            rates["system_throttling"] = 0.05
        faults = Faults(
            create=EndpointFaults(**rates, retry_after=600.0 if long_retry_after else None),
            list_tasks=EndpointFaults(server_error=0.6 if list_failing else 0.0),
            rate_limit=LIMITS[limit],
        )
        event(f"limit: {limit}")
        quirk = attrs.evolve(QUIRKS[quirks], list_lag=lag)
        self.sim = FakeVidu(faults=faults, quirks=quirk, clock=self.clock,
                            seed=seed, credits=credits, timeline=Timeline(failure_rate=failing))
        self.loop.run_until_complete(self.sim.__aenter__())
        self.cap = cap
        self.credits = credits
        self.attempts = attempts

    async def _run(self, stop_after: int | None, *, retry_failed: bool = False
                   ) -> list[Outcome] | None:
        """One run of the batch (None: it refused to start), ``stop_after`` outcomes at most."""
        assert self.sim is not None
        policy = RetryPolicy(sleep=self.clock.sleep, clock=self.clock, max_attempts=self.attempts,
                             budget=3600.0, visibility_lag=30.0)
        options = BatchOptions(
            concurrency=3, wait=True, journal=self.journal, batch_id="herons",
            max_credits=self.cap, poll_interval=5.0, clock=SpinGuard(self.clock),
            sleep=self.clock.sleep,
            retry_failed=retry_failed,
        )
        outcomes: list[Outcome] = []
        made_before = set(self.sim.tasks)
        self._count_earlier_retries()
        async with ViduClient(self.sim.api_key, base_url=self.sim.url, retry=policy) as client:
            batch = BatchSubmitter(client, options)
            try:
                async with contextlib.aclosing(batch.run(list(self.jobs))) as run:
                    async for outcome in run:
                        event(f"outcome: {outcome.status}"
                              + (f" ({outcome.error.reason})" if outcome.error else ""))
                        if outcome.status == "not_submitted":
                            self._made_nothing(outcome, made_before)
                        outcomes.append(outcome)
                        if stop_after is not None and len(outcomes) >= stop_after:
                            break
            except APIError as error:
                if not str(error).startswith("cannot check"):
                    raise
                # The list failed every retry while the run looked for an earlier run's tasks.
                event("run refused: the task list could not be read")
                return None
        return outcomes

    def _count_earlier_retries(self) -> None:
        """Count (hypothesis events) the retries an earlier run left without an end, which this
        run must follow or look up under the retry's own key (never create again)."""
        if self.journal.exists():
            for record in read_journal(self.journal).jobs:
                if record.attempts and record.final is None:
                    event("an earlier run's retry to "
                          + ("follow" if record.task_id else "reconcile"))

    def _made_nothing(self, outcome: Outcome, made_before: set[str]) -> None:
        """A job reported not sent has no task made in this run (but the failed task whose
        retry was not sent, and a task cancelled unpaid): a rerun would send it again."""
        assert self.sim is not None
        prompt = next(j.request.prompt for j in self.jobs if j.custom_id == outcome.custom_id)
        made = [t.task_id for t in self.sim.tasks.values()
                if t.task_id not in made_before and t.request["prompt"] == prompt
                and t.err_code != CANCELED and t.state != FAILED]
        assert not made, f"{outcome.custom_id} reported not sent, yet task {made} was made"

    @rule()
    def run_to_the_end(self) -> None:
        outcomes = self.loop.run_until_complete(self._run(None))
        if outcomes is None:
            return
        reported = Counter(o.custom_id for o in outcomes if o.status != "duplicate")
        assert reported == Counter(j.custom_id for j in self.jobs), "every job reported once"
        assert not [o for o in outcomes if o.status == "duplicate"], "a key had two tasks"
        for outcome in outcomes:
            if outcome.status == "succeeded":
                assert outcome.task_id is not None
                assert self.sim is not None
                assert self.sim.tasks[outcome.task_id].request["prompt"] == (
                    next(j for j in self.jobs if j.custom_id == outcome.custom_id).request.prompt
                ), "a job was given another job's task"

    @rule(after=st.integers(0, 4))
    def interrupt(self, after: int) -> None:
        self.loop.run_until_complete(self._run(after))

    @rule(after=st.none() | st.integers(0, 4))
    def retry_failed(self, after: int | None) -> None:
        self.retrying_runs += 1
        self.loop.run_until_complete(self._run(after, retry_failed=True))

    @rule()
    def lose_the_journal(self) -> None:
        self.journal.unlink(missing_ok=True)
        self.journal_lost = True

    @rule()
    def add_a_job_in_front(self) -> None:
        self.jobs.insert(0, job(self.next_job))
        self.next_job += 1

    @rule()
    def top_up(self) -> None:
        assert self.sim is not None
        self.sim.top_up(5 * COST)
        self.credits += 5 * COST

    @rule(seconds=st.sampled_from([1.0, 20.0, 300.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def no_key_has_two_tasks(self) -> None:
        if self.sim is not None:
            assert self.sim.stats.duplicate_payloads() == {}

    @invariant()
    def a_job_gets_another_task_only_after_its_last_one_failed(self) -> None:
        if self.sim is None:
            return
        kept: dict[str, list[SimTask]] = {}
        for task in sorted(self.sim.tasks.values(), key=lambda t: (t.created_at, t.created_ns)):
            if task.err_code != CANCELED:
                kept.setdefault(str(task.request["prompt"]), []).append(task)
        for tasks in kept.values():
            for last, new in itertools.pairwise(tasks):
                assert last.state == FAILED, f"{new.task_id} made while {last.task_id} did not fail"
                assert last.finished_at is not None and last.finished_at <= new.created_at
            assert len(tasks) <= 1 + self.retrying_runs, "more than one retry per run"

    @invariant()
    def the_budget_holds_while_the_journal_lives(self) -> None:
        if self.sim is None or self.cap is None or self.journal_lost:
            return
        assert self.credits - self.sim.balance() <= self.cap

    def teardown(self) -> None:
        if self.sim is not None:
            self.loop.run_until_complete(self.sim.__aexit__(None, None, None))
        self.loop.close()
        shutil.rmtree(self.folder, ignore_errors=True)


PayOnce.TestCase.settings = settings(
    max_examples=200, stateful_step_count=8, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPayOnce = PayOnce.TestCase
