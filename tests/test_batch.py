"""BatchSubmitter against the simulator (and, for what it cannot do, a scripted Vidu on 127.0.0.1).

Every wait is instant or driven by the test: ``BatchOptions(sleep=...)`` and
``RetryPolicy(sleep=no_wait)``; where the simulator's time matters it runs on a ``ManualClock``
that the test advances.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import vidu_async.testing
from tests.waiting import SpinGuard
from vidu_async.batch import BatchOptions, BatchSubmitter, account_label
from vidu_async.batch.identity import cost_class, fingerprint, job_key
from vidu_async.client import ViduClient
from vidu_async.errors import AuthenticationError
from vidu_async.jobs import Job, JobLine, read_jobs
from vidu_async.journal import Journal, read_journal
from vidu_async.outcome import Outcome
from vidu_async.requests import ReferenceToVideoRequest
from vidu_async.retry import RetryPolicy, no_wait
from vidu_async.tasks import Task, split_payload
from vidu_async.testing import (
    Account,
    EndpointFaults,
    FakeVidu,
    Faults,
    ManualClock,
    RateLimit,
    Timeline,
    task_cost,
)
from vidu_async.throttle import Throttle

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]

IMAGE = "https://example.com/cat.png"
COST = task_cost("viduq2", 5, off_peak=False)
FAST = Timeline(created=0.01, processing=0.05)
INSTANT = Timeline(created=0, processing=0)
POLL = 7.0
"""A poll interval no other wait equals, so an injected sleep can tell polls apart."""


def request(prompt: str) -> ReferenceToVideoRequest:
    return ReferenceToVideoRequest("viduq2", prompt, images=(IMAGE,), duration=5)


def make_jobs(n: int, prefix: str = "job") -> list[Job]:
    return [Job(f"{prefix}-{i}", request(f"a cat surfing, take {i}"), i) for i in range(1, n + 1)]


def client(base_url: str, key: str) -> ViduClient:
    return ViduClient(key, base_url=base_url, retry=RetryPolicy(sleep=no_wait))


def sim_client(sim: FakeVidu, key: str | None = None) -> ViduClient:
    return client(sim.url, key or sim.api_key)


def submitter(clients: ViduClient | list[ViduClient], **options: Any) -> BatchSubmitter:
    if "sleep" not in options:  # virtual time: every pause passes at once, in order
        time = options.setdefault("clock", ManualClock())
        options["sleep"] = time.sleep
    options.setdefault("poll_interval", POLL)
    return BatchSubmitter(clients, BatchOptions(**options))


async def collect(batch: BatchSubmitter, jobs: Iterable[Job | JobLine]) -> list[Outcome]:
    return [outcome async for outcome in batch.run(jobs)]


def by_id(outcomes: list[Outcome]) -> dict[str | None, Outcome]:
    counts = Counter(o.custom_id for o in outcomes)
    assert max(counts.values()) == 1, f"some jobs settled twice: {counts.most_common(3)}"
    return {o.custom_id: o for o in outcomes}


def assert_each_job_created_once(sim: FakeVidu, n: int) -> None:
    assert sim.stats.tasks_created == len(sim.tasks) == n
    assert sim.stats.duplicate_payloads() == {}


_SERVER_SIDE = (str(Path(aiohttp.__file__).parent), str(Path(vidu_async.testing.__file__).parent))


def batch_tasks() -> set[asyncio.Task[Any]]:
    """Running tasks, less the simulator's own (its connection handlers live while the client
    pools the connection, its callback senders start when needed: not the batch's doing)."""
    return {
        t for t in asyncio.all_tasks()
        if not getattr(t.get_coro(), "cr_code", None)
        or not t.get_coro().cr_code.co_filename.startswith(_SERVER_SIDE)  # type: ignore[union-attr]
    }


def file_sizes(folder: Path) -> dict[str, int]:
    """The files in ``folder`` (none if it does not exist) and their sizes."""
    return {p.name: p.stat().st_size for p in folder.iterdir()} if folder.exists() else {}


class Waits:
    """An injected ``sleep`` that records every wait and only yields to the event loop."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seen.append(seconds)
        await asyncio.sleep(0)


class CreatedCount:
    """A ``BatchObserver`` whose ``all_created`` is set once ``expected`` tasks were created."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.created = 0
        self.all_created = asyncio.Event()

    def job_created(self, task_id: str, credits: int | None) -> None:
        self.created += 1
        if self.created == self.expected:
            self.all_created.set()

    def task_state(self, task_id: str, state: str) -> None:
        pass


def polls_after_all_created(observer: CreatedCount, clock: ManualClock) -> Waits:
    """A sleep whose polls hold until every task exists, then move the clock a minute on
    (every task ends); other waits (the pacing's) move it by their length at once. ``seen``
    lists the polls."""

    class PollClock(Waits):
        async def __call__(self, seconds: float) -> None:
            if seconds != POLL:
                clock.advance(seconds)
                await asyncio.sleep(0)
                return
            await observer.all_created.wait()
            clock.advance(60)
            await super().__call__(seconds)

    return PollClock()


# --- a scripted Vidu, for what the simulator does not do -----------------------------------------


def _error(status: int, reason: str) -> web.Response:
    body = {"code": status, "reason": reason, "message": f"scripted {reason}",
            "metadata": {"trace_id": "tr-1"}}
    return web.json_response(body, status=status)


class ScriptedVidu:
    """Just enough Vidu: ``refusals`` map a prompt fragment to the (status, reason) a create
    containing it gets; with ``quota``, a create while one of the account's tasks runs gets 429
    ``QuotaExceeded``. Tasks stay ``processing`` while ``hold`` is set, then succeed on the next
    poll. ``answers`` lists what each create got.
    """

    def __init__(self, *, refusals: Mapping[str, tuple[int, str]] = {}, quota: bool = False
                 ) -> None:
        self.refusals = dict(refusals)
        self.quota = quota
        self.hold = asyncio.Event()
        self.hold.set()
        self.running: set[str] = set()
        self.answers: list[str] = []
        self.list_calls = 0
        self._ids = itertools.count(1000)
        self._poll_waiters: list[tuple[int, asyncio.Future[None]]] = []

    def polled(self, more: int) -> asyncio.Future[None]:
        """Done once ``more`` list requests have been answered from now."""
        done = asyncio.get_running_loop().create_future()
        self._poll_waiters.append((self.list_calls + more, done))
        return done

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/ent/v2/credits", self.credits)
        app.router.add_post("/ent/v2/reference2video", self.create)
        app.router.add_get("/ent/v2/tasks", self.list_tasks)
        return app

    async def credits(self, request: web.Request) -> web.Response:
        remain = {"type": "metered", "credit_remain": 10_000, "concurrency_limit": 1,
                  "current_concurrency": 0, "queue_count": 0}
        return web.json_response({"remains": [remain], "packages": []})

    async def create(self, request: web.Request) -> web.Response:
        body = await request.json()
        for fragment, (status, reason) in self.refusals.items():
            if fragment in body["prompt"]:
                self.answers.append(reason)
                return _error(status, reason)
        if self.quota and self.running:
            self.answers.append("QuotaExceeded")
            return _error(429, "QuotaExceeded")
        task_id = str(next(self._ids))
        self.running.add(task_id)
        self.answers.append("created")
        return web.json_response({"task_id": task_id, "state": "created", "credits": COST,
                                  "payload": body["payload"]})

    async def list_tasks(self, request: web.Request) -> web.Response:
        self.list_calls += 1
        items = []
        for task_id in request.query.getall("task_ids", []):
            state = "processing"
            if not self.hold.is_set():
                self.running.discard(task_id)
                state = "success"
            items.append({"id": task_id, "state": state, "credits": COST})
        for target, done in self._poll_waiters:
            if self.list_calls >= target and not done.done():
                done.set_result(None)
        return web.json_response({"tasks": items, "next_page_token": ""})


@pytest.fixture
async def scripted_url(aiohttp_server: ServerFactory) -> Callable[[ScriptedVidu], Awaitable[str]]:
    async def start(vidu: ScriptedVidu) -> str:
        server = await aiohttp_server(vidu.app())
        return str(server.make_url("/"))

    return start


# --- the whole batch ---------------------------------------------------------------------------


async def test_300_jobs_through_429s_500s_and_lost_answers_each_make_exactly_one_task() -> None:
    faults = Faults(create=EndpointFaults(
        too_many_requests=0.1, server_error=0.1, commit_then_drop=0.1
    ))
    jobs = make_jobs(300)
    # Each create attempt fails with p = 0.2 (500 or lost answer; 429s are the batch's own), so
    # the default 5 attempts would leave a job unsent about once in ten runs: allow plenty.
    patient = RetryPolicy(sleep=no_wait, max_attempts=50)
    async with FakeVidu(faults=faults, timeline=FAST, concurrency_limit=50, seed=3) as sim, \
            ViduClient(sim.api_key, base_url=sim.url, retry=patient) as c:
        outcomes = by_id(await collect(submitter(c, wait=True), jobs))
    assert_each_job_created_once(sim, 300)
    assert set(outcomes) == {job.custom_id for job in jobs}
    assert {o.status for o in outcomes.values()} == {"succeeded"}
    assert {o.task_id for o in outcomes.values()} == set(sim.tasks)
    assert all(outcomes[job.custom_id].line == job.line for job in jobs)
    for kind in ("too_many_requests", "server_error", "commit_then_drop"):
        assert sim.stats.faults[kind] > 10, kind


async def test_no_jobs_is_an_empty_run() -> None:
    async with FakeVidu() as sim, sim_client(sim) as c:
        assert await collect(submitter(c, wait=True), []) == []


async def test_an_async_iterable_of_jobs_is_consumed_too() -> None:
    async def jobs() -> AsyncIterator[Job]:
        for job in make_jobs(5):
            yield job

    async with FakeVidu(timeline=INSTANT) as sim, sim_client(sim) as c:
        outcomes = [o async for o in submitter(c).run(jobs())]
    assert sorted(o.custom_id for o in outcomes) == [f"job-{i}" for i in range(1, 6)]
    assert_each_job_created_once(sim, 5)


async def test_a_repeated_custom_id_from_python_is_refused_and_the_first_job_still_runs(
    tmp_path: Path,
) -> None:
    # Both would be paid for, one video saved over the other, one journal record for two.
    jobs = [Job("same", request("a cat")), Job("same", request("a dog")),
            Job("other", request("a fox"), 7), Job("other", request("a cow"), 9)]
    async with FakeVidu(timeline=INSTANT) as sim, sim_client(sim) as c:
        outcomes = await collect(submitter(c, wait=True, download=tmp_path / "videos",
                                           journal=tmp_path / "journal.jsonl"), jobs)
    ends = sorted((o.custom_id, o.status, o.line) for o in outcomes)
    assert ends == [("other", "invalid", 9), ("other", "succeeded", 7),
                    ("same", "invalid", None), ("same", "succeeded", None)]
    refused = {o.error.message for o in outcomes if o.status == "invalid" and o.error}
    assert refused == {"custom_id: 'same' is already used by another job of this batch; give "
                       "each job its own id",
                       "custom_id: 'other' is already used by another job of this batch (line "
                       "7); give each job its own id"}
    assert_each_job_created_once(sim, 2)
    assert sorted(t.request["prompt"] for t in sim.tasks.values()) == ["a cat", "a fox"]
    assert sorted(file_sizes(tmp_path / "videos")) == ["other.mp4", "same.mp4"]


def test_a_job_of_something_else_than_a_request_is_refused_where_it_is_made() -> None:
    with pytest.raises(TypeError, match=r"Job\.request must be a request object \("
                       r"ReferenceToVideoRequest, .*\), not dict; request_from_dict\(\)"):
        Job("x", {"model": "viduq2", "prompt": "a cat"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'custom_id' must be <class 'str'>"):
        Job(7, request("a cat"))  # type: ignore[arg-type]


async def test_an_error_that_is_no_jobs_fault_is_raised_as_is_with_everything_stopped(
    tmp_path: Path,
) -> None:
    def jobs() -> Iterator[Job]:
        yield from make_jobs(5)
        raise OSError("the jobs file went away")

    before = batch_tasks()
    async with FakeVidu(timeline=INSTANT) as sim, sim_client(sim) as c:
        with pytest.raises(OSError, match="the jobs file went away"):
            await collect(submitter(c, journal=tmp_path / "journal.jsonl"), jobs())
        assert batch_tasks() == before


def test_download_without_wait_is_refused() -> None:
    with pytest.raises(ValueError, match="download needs wait=True"):
        BatchOptions(download=Path("videos"))


# --- credits, keys, budget ---------------------------------------------------------------------


async def test_credits_running_out_stop_submission_and_a_rerun_after_top_up_finishes(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "journal.jsonl"
    jobs = make_jobs(30)
    async with FakeVidu(credits=10 * COST, timeline=INSTANT) as sim, sim_client(sim) as c:
        first = submitter(c, journal=journal, concurrency=4)
        before = by_id(await collect(first, jobs))
        done = {key for key, o in before.items() if o.status == "submitted"}
        assert len(done) == 10
        assert_each_job_created_once(sim, 10)
        rest = [o for o in before.values() if o.custom_id not in done]
        assert {o.status for o in rest} == {"not_submitted"}
        assert {o.error.reason if o.error else None for o in rest} == {"CreditInsufficient"}
        assert first.stop_reason is not None
        assert first.stop_reason.reason == "CreditInsufficient"

        sim.top_up(20 * COST)
        creates = sim.stats.requests_to("create")
        after = by_id(await collect(submitter(c, journal=journal, concurrency=4), jobs))
    assert {o.status for o in after.values()} == {"submitted"} and len(after) == 30
    assert {key: after[key].task_id for key in done} == {key: before[key].task_id for key in done}
    assert sim.stats.requests_to("create") - creates == 20
    assert_each_job_created_once(sim, 30)
    assert sim.balance() == 0


async def test_a_rejected_key_raises_from_the_first_iteration_before_any_job_is_read() -> None:
    read: list[str] = []

    def jobs() -> Iterator[Job]:
        for job in make_jobs(3):
            read.append(job.custom_id)
            yield job

    before = batch_tasks()
    async with FakeVidu() as sim, sim_client(sim, "sk-wrong-0123456789") as c:
        with pytest.raises(AuthenticationError) as caught:
            await collect(submitter(c), jobs())
        assert sim.stats.requests_to("create") == 0
    assert read == []
    assert "sk-wrong-0123456789" not in str(caught.value)
    assert batch_tasks() <= before


async def test_a_key_rejected_on_create_stops_every_job_as_not_submitted(
    scripted_url: Callable[[ScriptedVidu], Awaitable[str]],
) -> None:
    vidu = ScriptedVidu(refusals={"": (401, "Unauthorized")})
    async with client(await scripted_url(vidu), "sk-revoked") as c:
        batch = submitter(c, concurrency=3)
        outcomes = await collect(batch, make_jobs(20))
    assert len(by_id(outcomes)) == 20
    assert {(o.status, o.error.reason if o.error else None) for o in outcomes} == {
        ("not_submitted", "Unauthorized")
    }
    assert batch.stop_reason is not None and batch.stop_reason.reason == "Unauthorized"
    assert 1 <= len(vidu.answers) <= 3  # only the creates already under way


@pytest.mark.parametrize("budget", [COST, 100, 200])
async def test_max_credits_is_never_exceeded_and_the_rest_are_not_submitted(budget: int) -> None:
    async with FakeVidu(timeline=INSTANT) as sim, sim_client(sim) as c:
        start = sim.balance()
        batch = submitter(c, max_credits=budget, concurrency=4)
        outcomes = await collect(batch, make_jobs(10))
    created = budget // COST
    assert batch.credits_spent == start - sim.balance() == created * COST <= budget
    assert Counter(o.status for o in outcomes) == {"submitted": created,
                                                   "not_submitted": 10 - created}
    assert {o.error.reason for o in outcomes if o.error} == {"BudgetReached"}
    assert batch.stop_reason is not None and batch.stop_reason.reason == "BudgetReached"


LOST_AND_UNLISTED = Faults(create=EndpointFaults(commit_then_drop=1.0),
                          list_tasks=EndpointFaults(server_error=1.0))
"""Every create billed, its answer lost, the list unreadable: every job ends ambiguous."""


@pytest.mark.parametrize("price_known", [False, True])
async def test_creates_that_may_have_made_tasks_count_in_max_credits(
    tmp_path: Path, price_known: bool
) -> None:
    # An ambiguous create's task may exist and cost: its worst case is in the budget. Before,
    # a price not known yet counted 0 (five of five sent under a cap of two), and the count
    # never followed a price learned later.
    journal, spent_before = tmp_path / "journal.jsonl", 0
    if price_known:  # a clean earlier run of this journal learned the price
        async with FakeVidu(timeline=INSTANT) as clean, sim_client(clean) as c:
            await collect(submitter(c, journal=journal), make_jobs(1, "earlier"))
        spent_before = COST
    cap = spent_before + 2 * COST
    async with FakeVidu(timeline=INSTANT, faults=LOST_AND_UNLISTED) as sim, \
            client(sim.url, sim.api_key) as c:
        start = sim.balance()
        batch = submitter(c, journal=journal, max_credits=cap, concurrency=4)
        outcomes = await collect(batch, make_jobs(5))
        billed = start - sim.balance()
    statuses = Counter(o.status for o in outcomes)
    if price_known:  # two fit, then the cap holds
        assert billed == 2 * COST and statuses == {"ambiguous": 2, "not_submitted": 3}
        assert {o.error.reason for o in outcomes if o.status == "not_submitted"} == {
            "BudgetReached"}
    else:  # the first goes alone; its price unknown, nothing more can be proven to fit
        assert billed == COST and statuses == {"ambiguous": 1, "not_submitted": 4}
        refused = {o.error.message for o in outcomes if o.status == "not_submitted" and o.error}
        assert refused == {f"max_credits {cap} cannot be kept: 1 create(s) may have made a task "
                           "of a price not known yet (the answer was lost and the task neither "
                           "found nor proven absent); nothing more is sent. A rerun looks them "
                           "up first; or rerun without --max-credits"}


# --- pacing ------------------------------------------------------------------------------------


async def test_a_429_s_retry_after_holds_its_request_and_waits_never_stack() -> None:
    """On virtual time: every create answered 429 waits at least the Retry-After (3 s) before
    it is sent again, and no wait ever holds two pauses, however many 429s came meanwhile;
    the throttle's own tests pin down when a run of 429s slows everyone."""
    faults = Faults(create=EndpointFaults(too_many_requests=0.1, retry_after=3))
    time = ManualClock()
    async with FakeVidu(faults=faults, timeline=INSTANT, seed=5) as sim, sim_client(sim) as c:
        batch = submitter(c, concurrency=8, sleep=time.sleep, clock=time)
        outcomes = await collect(batch, make_jobs(40))
    assert {o.status for o in outcomes} == {"submitted"}
    assert_each_job_created_once(sim, 40)
    throttled = sim.stats.faults["too_many_requests"]
    assert throttled >= 3
    assert sum(1 for w in time.waits if w >= 3.0) >= throttled
    assert max(time.waits) < 2 * 3.0  # a pause, plus at most a slot of the slower schedule


async def test_a_told_rate_keeps_one_worker_waiting_for_the_clock() -> None:
    """On virtual time, rate 10/s and 8 workers: one pacing wait at a time, each a whole
    interval (the others wait their turn, so no two workers wake, or spin, for one slot)."""
    time = ManualClock()
    sleeping, most = 0, 0

    async def sleep(seconds: float) -> None:
        nonlocal sleeping, most
        sleeping += 1
        most = max(most, sleeping)
        try:
            await time.sleep(seconds)
        finally:
            sleeping -= 1

    async with FakeVidu(timeline=INSTANT, clock=time) as sim, sim_client(sim) as c:
        batch = submitter(c, concurrency=8, rate=10.0, sleep=sleep, clock=time)
        outcomes = await collect(batch, make_jobs(30))
    assert {o.status for o in outcomes} == {"submitted"}
    assert_each_job_created_once(sim, 30)
    assert most == 1
    requests = sum(sim.stats.requests.values())  # every one paced: the first goes at once
    assert time.waits == pytest.approx([1 / (10.0 * 0.99)] * (requests - 1))


async def test_quota_exceeded_without_followed_tasks_waits_quota_wait() -> None:
    faults = Faults(create=EndpointFaults(quota_exceeded=0.3))
    waits = Waits()
    async with FakeVidu(faults=faults, timeline=INSTANT, seed=2) as sim, sim_client(sim) as c:
        outcomes = await collect(submitter(c, sleep=waits, quota_wait=123.0), make_jobs(20))
    assert {o.status for o in outcomes} == {"submitted"}
    assert sim.stats.faults["quota_exceeded"] > 0
    assert waits.seen.count(123.0) == sim.stats.faults["quota_exceeded"]
    assert_each_job_created_once(sim, 20)


async def test_quota_exceeded_waits_for_a_running_task_to_finish(
    scripted_url: Callable[[ScriptedVidu], Awaitable[str]],
) -> None:
    """The quota timer here never fires: only the end of the running task may wake the worker."""
    vidu = ScriptedVidu(quota=True)
    quota_waits: list[str] = []
    waiting = asyncio.Event()

    async def sleep(seconds: float) -> None:
        if seconds != 999.0:
            await asyncio.sleep(0)
            return
        quota_waits.append("started")
        waiting.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            quota_waits.append("cut short")
            raise

    async with client(await scripted_url(vidu), "sk-test") as c:
        batch = submitter(c, concurrency=1, wait=True, sleep=sleep, quota_wait=999.0)
        run = asyncio.ensure_future(collect(batch, make_jobs(2)))
        await waiting.wait()
        await vidu.polled(5)
        assert quota_waits == ["started"]
        assert vidu.answers == ["created", "QuotaExceeded"]  # no retry while the task runs
        vidu.hold.clear()
        outcomes = await run
    assert {o.status for o in outcomes} == {"succeeded"} and len(outcomes) == 2
    assert vidu.answers == ["created", "QuotaExceeded", "created"]
    assert quota_waits == ["started", "cut short"]


# --- job failures are outcomes -----------------------------------------------------------------


async def test_invalid_lines_are_reported_with_their_line_numbers_and_the_rest_run(
    tmp_path: Path,
) -> None:
    good = {"model": "viduq2", "images": [IMAGE]}
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join([
        json.dumps({"custom_id": "ok-1", "prompt": "a cat", **good}),
        "{not json",
        json.dumps({"custom_id": "bad-3", "prompt": "a cat", "duration": 99, **good}),
        json.dumps({"custom_id": "ok-4", "prompt": "a dog", **good}),
    ]) + "\n")
    async with FakeVidu(timeline=INSTANT) as sim, sim_client(sim) as c:
        outcomes = by_id(await collect(submitter(c), read_jobs(path)))
    assert {k: (o.status, o.line) for k, o in outcomes.items()} == {
        "ok-1": ("submitted", 1),
        None: ("invalid", 2),  # its id could not be read: none stands in
        "bad-3": ("invalid", 3),
        "ok-4": ("submitted", 4),
    }
    bad = outcomes["bad-3"].error
    assert bad is not None and bad.reason == "ValidationError" and "duration" in bad.message
    assert_each_job_created_once(sim, 2)


async def test_a_refusal_by_the_server_fails_that_job_and_the_batch_goes_on(
    scripted_url: Callable[[ScriptedVidu], Awaitable[str]],
) -> None:
    vidu = ScriptedVidu(refusals={
        "forbidden": (400, "TaskPromptPolicyViolation"),
        "misshapen": (400, "FieldInvalid"),
    })
    jobs = [Job("a", request("a forbidden cat"), 1), Job("b", request("a cat"), 2),
            Job("c", request("a misshapen cat"), 3), Job("d", request("a dog"), 4)]
    async with client(await scripted_url(vidu), "sk-test") as c:
        batch = submitter(c, concurrency=2)
        outcomes = by_id(await collect(batch, jobs))
    assert {k: (o.status, o.error.reason if o.error else None) for k, o in outcomes.items()} == {
        "a": ("failed", "TaskPromptPolicyViolation"),
        "b": ("submitted", None),
        "c": ("failed", "FieldInvalid"),
        "d": ("submitted", None),
    }
    assert batch.stop_reason is None


# --- memory and stopping -----------------------------------------------------------------------


async def test_memory_stays_flat_over_100k_lazy_jobs() -> None:
    """Counted, not timed: live Job objects are sampled each time the input is advanced. The
    account pays for 2,000 tasks; the other 98,000 jobs still flow through the same queues,
    refused (not_submitted) without a request, which keeps the test to about two seconds."""
    n, paid, concurrency = 100_000, 2_000, 4
    alive: weakref.WeakSet[Job] = weakref.WeakSet()
    most = 0
    req = request("a cat surfing")

    def jobs() -> Iterator[Job]:
        nonlocal most
        for i in range(n):
            most = max(most, len(alive))
            job = Job(f"job-{i}", req, i)
            alive.add(job)
            yield job

    async with FakeVidu(credits=paid * COST, timeline=INSTANT) as sim, sim_client(sim) as c:
        counts: Counter[str] = Counter()
        async for outcome in submitter(c, concurrency=concurrency).run(jobs()):
            counts[outcome.status] += 1
    assert counts == {"submitted": paid, "not_submitted": n - paid}
    assert sim.stats.tasks_created == paid
    # inbox (2 x concurrency) + one per worker + the one being fed + the input's own
    assert most <= 3 * concurrency + 2


async def _stop_after(how: str, batch: BatchSubmitter, jobs: list[Job], k: int) -> list[Outcome]:
    seen: list[Outcome] = []
    if how == "aclosing":
        async with contextlib.aclosing(batch.run(jobs)) as outcomes:
            async for outcome in outcomes:
                seen.append(outcome)
                if len(seen) == k:
                    break
    elif how == "break":
        before = batch_tasks()
        async for outcome in batch.run(jobs):
            seen.append(outcome)
            if len(seen) == k:
                break
        await asyncio.sleep(0)  # the loop's async-generator finalizer schedules aclose()
        await asyncio.wait(batch_tasks() - before, timeout=10)
    else:
        enough = asyncio.Event()

        async def consume() -> None:
            async for outcome in batch.run(jobs):
                if len(seen) < k:  # outcomes after the k-th may come before the cancel
                    seen.append(outcome)
                if len(seen) == k:
                    enough.set()

        consumer = asyncio.ensure_future(consume())
        await enough.wait()
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer
    return seen


async def test_a_stopped_batch_leaves_to_reconcile_only_the_creates_that_left(
    tmp_path: Path,
) -> None:
    """Creates held by the server a second, 2 at a time, the batch following its tasks (so many
    jobs are alive): the other jobs' intents are written (they join the fsyncs) and they wait
    for a slot. Stopped there, those jobs' intents are withdrawn
    (their creates never left), so a rerun need prove absent (which a list without payloads
    never can) only the two creates in flight."""
    journal = tmp_path / "journal.jsonl"
    faults = Faults(create=EndpointFaults(latency=1.0, latency_rate=1.0))

    def intents() -> int:
        return journal.read_text().count('"kind": "intent"') if journal.exists() else 0

    async with FakeVidu(faults=faults, timeline=FAST, concurrency_limit=20) as sim, \
            sim_client(sim) as c:
        run = asyncio.ensure_future(
            collect(submitter(c, journal=journal, concurrency=2, wait=True), make_jobs(12))
        )
        async with asyncio.timeout(10):
            while sim.stats.in_flight < 2 or intents() < 6:  # noqa: ASYNC110 - no event to wait on
                await asyncio.sleep(0.01)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
    records = read_journal(journal).jobs
    assert len(records) >= 6
    assert sum(record.needs_reconcile for record in records) == 2


@pytest.mark.parametrize("how", ["aclosing", "break", "cancel"])
async def test_stopping_early_leaves_no_task_behind_and_a_rerun_completes_the_batch(
    tmp_path: Path, how: str
) -> None:
    journal = tmp_path / "journal.jsonl"
    jobs = make_jobs(40)
    async with FakeVidu(timeline=FAST, concurrency_limit=50) as sim, sim_client(sim) as c:
        before = batch_tasks()
        options = {"journal": journal, "wait": True, "concurrency": 4}
        seen = await _stop_after(how, submitter(c, **options), jobs, 10)
        assert batch_tasks() == before
        assert len(seen) == 10
        after = by_id(await collect(submitter(c, **options), jobs))
    assert len(after) == 40 and {o.status for o in after.values()} == {"succeeded"}
    assert all(after[o.custom_id] == o for o in seen)
    assert_each_job_created_once(sim, 40)


# --- resuming from the journal -----------------------------------------------------------------


BATCH = "earlier-batch"
AN_HOUR_AGO = time.time() - 3600


async def journal_earlier_run(
    journal: Path, job: Job, account: str, *, task: Task | None = None,
    final: Outcome | None = None, server_at: float = AN_HOUR_AGO,
) -> str:
    """Journal what an earlier run of ``BATCH`` did for ``job``, as its batch would have:
    the intent (sent an hour ago), then the task and the end if given. Returns the job's key."""
    print_ = fingerprint(job.request)
    key = job_key(BATCH, job.custom_id, print_)
    async with await Journal.open(journal, batch_id=BATCH) as earlier:
        await earlier.intent(job.custom_id, key=key, account=account, fingerprint=print_,
                             cost_class=cost_class(job.request), server_at=server_at)
        if task is not None:
            await earlier.created(job.custom_id, task_id=task.task_id, credits=task.credits)
        if final is not None:
            await earlier.final(job.custom_id, final.to_dict())
    return key


async def journalled(journal: Path, job_id: str) -> Any:
    async with await Journal.open(journal, batch_id=BATCH) as later:
        return later.take(job_id)


async def test_an_intent_whose_task_exists_is_found_by_its_key_not_sent_again(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "journal.jsonl"
    [job] = make_jobs(1)
    async with FakeVidu(timeline=INSTANT) as sim, sim_client(sim) as c:
        key = await journal_earlier_run(journal, job, account_label(c))
        task = await c.create_reference2video(job.request, correlation_key=key)  # answer lost
        [outcome] = await collect(submitter(c, journal=journal), [job])
        assert sim.stats.requests_to("create") == 1
    assert (outcome.status, outcome.task_id) == ("submitted", task.task_id)
    assert_each_job_created_once(sim, 1)
    record = await journalled(journal, job.custom_id)
    assert record is not None and record.task_id == task.task_id


async def test_an_intent_whose_task_never_arrived_is_sent_once_under_the_same_key(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "journal.jsonl"
    [job] = make_jobs(1)
    async with FakeVidu(timeline=INSTANT) as sim, sim_client(sim) as c:
        key = await journal_earlier_run(journal, job, account_label(c))
        [outcome] = await collect(submitter(c, journal=journal), [job])
    [task] = sim.tasks.values()
    assert split_payload(task.payload)[0] == key
    assert (outcome.status, outcome.task_id) == ("submitted", task.task_id)
    assert_each_job_created_once(sim, 1)


async def test_a_created_task_is_followed_to_its_end_not_created_again(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    [job] = make_jobs(1)
    async with FakeVidu(timeline=FAST) as sim, sim_client(sim) as c:
        task = await c.create_reference2video(job.request)
        await journal_earlier_run(journal, job, account_label(c), task=task)
        [outcome] = await collect(submitter(c, journal=journal, wait=True), [job])
    assert (outcome.status, outcome.task_id, outcome.credits) == (
        "succeeded", task.task_id, COST
    )
    assert_each_job_created_once(sim, 1)
    record = await journalled(journal, job.custom_id)
    assert record is not None and record.final == outcome.to_dict()


FINISHED = Outcome(
    "job-1", "succeeded", 1, task_id="901", state="success", credits=COST,
    creations=({"id": "9011", "url": "https://files.example/v.mp4"},),
    files=("videos/job-1.mp4",), kind="reference2video",
)
FINISHED_TASK = Task(task_id="901", credits=COST)


async def test_a_finished_job_is_reported_from_the_journal_without_a_request(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "journal.jsonl"
    job = attrs.evolve(make_jobs(1)[0], line=5)
    await journal_earlier_run(journal, job, "acct-old", task=FINISHED_TASK, final=FINISHED)
    size = journal.stat().st_size
    async with FakeVidu() as sim, sim_client(sim) as c:
        [outcome] = await collect(submitter(c, journal=journal, wait=True), [job])
    assert outcome == attrs.evolve(FINISHED, line=5)
    assert sum(sim.stats.requests.values()) == sim.stats.requests_to("credits") == 1
    assert journal.stat().st_size == size  # nothing journalled again


async def test_a_torn_last_line_is_dropped_and_its_job_sent(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    jobs = make_jobs(2)
    await journal_earlier_run(journal, jobs[0], "acct-old", task=FINISHED_TASK, final=FINISHED)
    with journal.open("ab") as handle:
        handle.write(b'{"v": 2, "kind": "intent", "job": "job-2", "ke')  # killed mid-write
    async with FakeVidu(timeline=INSTANT) as sim, sim_client(sim) as c:
        outcomes = by_id(await collect(submitter(c, journal=journal), jobs))
    assert outcomes["job-1"] == FINISHED
    assert outcomes["job-2"].status == "submitted"
    assert_each_job_created_once(sim, 1)
    kinds = [json.loads(line)["kind"] for line in journal.read_bytes().splitlines()]
    assert kinds == ["batch", "intent", "created", "final", "intent", "created"]


# --- following and downloading -----------------------------------------------------------------


async def test_finished_tasks_are_downloaded_under_their_custom_id(tmp_path: Path) -> None:
    dest = tmp_path / "videos"
    jobs = [Job(f"clip {i}", request(f"a cat, take {i}"), i) for i in range(1, 4)]
    async with FakeVidu(timeline=FAST) as sim, sim_client(sim) as c:
        outcomes = by_id(await collect(submitter(c, wait=True, download=dest), jobs))
    sizes = file_sizes(dest)
    assert sorted(sizes) == ["clip 1.mp4", "clip 2.mp4", "clip 3.mp4"]
    assert min(sizes.values()) > 0
    for i in range(1, 4):
        outcome = outcomes[f"clip {i}"]
        assert outcome.status == "succeeded" and outcome.creations
        assert outcome.files == (str(dest / f"clip {i}.mp4"),)


async def test_a_failed_task_is_a_failed_outcome_with_its_err_code(tmp_path: Path) -> None:
    dest = tmp_path / "videos"
    timeline = attrs.evolve(FAST, failure_rate=1.0)
    async with FakeVidu(timeline=timeline) as sim, sim_client(sim) as c:
        outcomes = await collect(submitter(c, wait=True, download=dest), make_jobs(4))
    assert {o.status for o in outcomes} == {"failed"}
    for outcome in outcomes:
        assert outcome.err_code in timeline.failure_codes
        assert outcome.error is not None and outcome.error.reason == outcome.err_code
        assert outcome.files == () and outcome.creations == ()
    assert file_sizes(dest) == {}


async def test_followed_tasks_are_refreshed_100_ids_per_list_request() -> None:
    clock = ManualClock()
    observer = CreatedCount(250)
    waits = polls_after_all_created(observer, clock)
    async with FakeVidu(timeline=FAST, concurrency_limit=300, clock=clock) as sim, \
            sim_client(sim) as c:
        batch = BatchSubmitter(c, BatchOptions(wait=True, poll_interval=POLL, sleep=waits,
                                               clock=clock, start_rate=None),
                               observer=observer)
        outcomes = await collect(batch, make_jobs(250))
    assert len(outcomes) == 250 and {o.status for o in outcomes} == {"succeeded"}
    assert waits.seen == [POLL]  # one round: every task had ended
    # The round's 3 (100 + 100 + 50 ids), then the duplicate check's scan (3 pages of 100).
    assert sim.stats.requests_to("list_tasks") == 3 + 3
    assert sim.stats.requests_to("query") == 0


async def test_when_listing_fails_followed_tasks_are_queried_one_by_one() -> None:
    clock = ManualClock()
    observer = CreatedCount(250)
    waits = polls_after_all_created(observer, clock)
    faults = Faults(list_tasks=EndpointFaults(server_error=1.0))
    async with FakeVidu(timeline=FAST, concurrency_limit=300, clock=clock, faults=faults) as sim, \
            sim_client(sim) as c:
        batch = BatchSubmitter(c, BatchOptions(wait=True, poll_interval=POLL, sleep=waits,
                                               clock=clock, start_rate=None),
                               observer=observer)
        outcomes = await collect(batch, make_jobs(250))
        attempts = c.retry.max_attempts
    assert len(outcomes) == 250 and {o.status for o in outcomes} == {"succeeded"}
    assert waits.seen == [POLL]
    # Each of the 3 list requests of the round, then the duplicate check's scan (which gives
    # up: logged, not raised), tried ``attempts`` times.
    assert sim.stats.requests_to("list_tasks") == (3 + 1) * attempts
    assert sim.stats.requests_to("query") == 250


# --- several accounts --------------------------------------------------------------------------


async def test_jobs_go_to_the_account_with_free_capacity() -> None:
    """Ten workers pick at once, and nothing ends until all ten tasks exist, so every pick sees
    the creates and tasks before it: the accounts (concurrency 1 and 4) end up equally over
    their limits, within one task (not all on the one that looked freest at the start)."""
    clock = ManualClock()
    observer = CreatedCount(10)
    waits = polls_after_all_created(observer, clock)
    accounts = {"k1": Account(concurrency_limit=1), "k2": Account(concurrency_limit=4)}
    async with FakeVidu(accounts=accounts, timeline=FAST, clock=clock) as sim, \
            sim_client(sim, "k1") as one, sim_client(sim, "k2") as two:
        batch = BatchSubmitter([one, two], BatchOptions(
            wait=True, concurrency=10, poll_interval=POLL, sleep=waits
        ), observer=observer)
        outcomes = await collect(batch, make_jobs(10))
    assert {o.status for o in outcomes} == {"succeeded"}
    per_key = Counter(task.api_key for task in sim.tasks.values())
    assert per_key["k1"] + per_key["k2"] == 10
    assert abs((per_key["k1"] - 1) - (per_key["k2"] - 4)) <= 1
    assert_each_job_created_once(sim, 10)


async def test_when_one_account_runs_out_of_credits_the_other_takes_the_rest() -> None:
    accounts = {"k1": Account(credits=2 * COST), "k2": Account()}
    async with FakeVidu(accounts=accounts, timeline=INSTANT) as sim, \
            sim_client(sim, "k1") as one, sim_client(sim, "k2") as two:
        batch = submitter([one, two], concurrency=4)
        outcomes = await collect(batch, make_jobs(12))
    assert {o.status for o in outcomes} == {"submitted"} and len(outcomes) == 12
    assert batch.stop_reason is None
    assert Counter(task.api_key for task in sim.tasks.values()) == {"k1": 2, "k2": 10}
    assert_each_job_created_once(sim, 12)


# --- shared images go up once ------------------------------------------------------------------


def png_file(path: Path, shade: int) -> Path:
    from PIL import Image  # the test extra has Pillow

    Image.new("RGB", (256, 256), (shade, 100, 200)).save(path, "PNG")
    return path


async def test_shared_local_images_are_uploaded_once_and_sent_as_uris(tmp_path: Path) -> None:
    """Twelve jobs, two local images shared by all: two uploads, every create names the URIs,
    and a rerun with the same journal (new jobs, same images) uploads nothing."""
    cat, hat = png_file(tmp_path / "cat.png", 10), png_file(tmp_path / "hat.png", 200)
    journal = tmp_path / "journal.jsonl"

    def jobs(prefix: str, n: int) -> list[Job]:
        return [Job(f"{prefix}-{i}", ReferenceToVideoRequest(
            "viduq2", f"{prefix} {i}", images=[cat, hat, IMAGE], duration=5)) for i in range(n)]

    async with FakeVidu(timeline=INSTANT) as sim, sim_client(sim) as c:
        outcomes = await collect(submitter(c, journal=journal, concurrency=4), jobs("first", 12))
        assert {o.status for o in outcomes} == {"submitted"}
        uploads = sim.simulation.account(sim.api_key).uploads  # type: ignore[union-attr]
        assert len(uploads) == 2
        sent = [t.request["images"] for t in sim.tasks.values()]
        assert all(len(i) == 3 and i[0].startswith("ssupload:") and i[1].startswith("ssupload:")
                   and i[2] == IMAGE for i in sent)
        assert len({i[0] for i in sent}) == 1 and len({i[1] for i in sent}) == 1
        again = await collect(submitter(c, journal=journal), jobs("again", 3))
        assert {o.status for o in again} == {"submitted"}
        assert len(uploads) == 2  # remembered in the journal: not uploaded again
    assert_each_job_created_once(sim, 15)


async def test_without_uploads_local_images_are_inlined(tmp_path: Path) -> None:
    cat = png_file(tmp_path / "cat.png", 10)
    job = Job("j", ReferenceToVideoRequest("viduq2", "a cat", images=[cat], duration=5))
    async with FakeVidu(timeline=INSTANT) as sim, sim_client(sim) as c:
        [outcome] = await collect(submitter(c, upload_images=False), [job])
    assert outcome.status == "submitted"
    [task] = sim.tasks.values()
    assert task.request["images"][0].startswith("data:image/png;base64,")


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_429_to_a_request_the_batch_paces_reaches_its_pacing(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The closing scan's pages (and lookups) take their turn in the batch's pacing; each 429
    they meet is told to it as a create's is (the client retries the page itself), so a pace
    probing above a limit steps back instead of drawing a 429 on every page."""
    heard: list[float | None] = []
    told = Throttle.throttled

    def throttled(self: Throttle, retry_after: float | None = None,
                  sent_at: float | None = None) -> float:
        heard.append(retry_after)
        return told(self, retry_after, sent_at)

    monkeypatch.setattr(Throttle, "throttled", throttled)
    faults = Faults(list_tasks=EndpointFaults(too_many_requests=0.5, retry_after=0.01))
    policy = RetryPolicy(sleep=no_wait, max_attempts=20, visibility_lag=0.0)
    options = BatchOptions(batch_id="named", sleep=no_wait)  # it looks for earlier tasks
    async with FakeVidu(faults=faults, seed=seed) as sim, \
            ViduClient(sim.api_key, base_url=sim.url, retry=policy) as client:
        outcomes = [o async for o in BatchSubmitter(client, options).run(make_jobs(3))]
        refused = sim.stats.faults["too_many_requests"]
    assert [o.status for o in outcomes] == ["submitted"] * 3
    assert refused >= 1
    assert heard == [0.01] * refused


@pytest.mark.parametrize("seed", [1, 4])
async def test_a_lookup_during_the_search_for_a_strict_limit_waits_for_it(seed: int) -> None:
    """An untold batch meets a strict limit in its start window and searches for its interval;
    a create whose answer was lost meanwhile looks its task up with list pages that take their
    turn in the pacing. Their turn waits out the search (a page is no probe): the lookup's
    wait for it once asked for a probe's turn instead, got it at once, and spun without ever
    waiting (the event loop stuck for the search's seconds; for ever on a virtual clock)."""
    clock = ManualClock(now=1000.0)
    faults = Faults(create=EndpointFaults(commit_then_drop=0.6),
                    rate_limit=RateLimit(rate=2.0, burst=1))
    policy = RetryPolicy(sleep=clock.sleep, clock=clock, max_attempts=8)
    async with FakeVidu(clock=clock, faults=faults, seed=seed, timeline=INSTANT) as sim, \
            ViduClient(sim.api_key, base_url=sim.url, retry=policy) as vidu:
        options = BatchOptions(concurrency=4, clock=SpinGuard(clock), sleep=clock.sleep)
        outcomes = [o async for o in BatchSubmitter(vidu, options).run(make_jobs(12))]
        lost = sim.stats.faults["commit_then_drop"]
        refused = sim.stats.faults["rate_limited"]
    assert lost >= 1 and refused >= 2
    assert Counter(o.status for o in outcomes) == {"submitted": 12}
    assert_each_job_created_once(sim, 12)
