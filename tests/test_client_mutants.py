"""Pay-once paths of the client, the reconciler and the journal no other test pinned down,
found by breaking the code: each test here fails against one small change (a dropped guard, a
narrowed window, a forgotten cut-off create, a record not synced) that every other test let
pass. The servers are real (the scripted one of ``test_client``, or the simulator); time is a
``ManualClock``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpServer

from tests.test_client import KEY, FakeVidu, request
from vidu_async.batch import BatchOptions, BatchSubmitter
from vidu_async.client import LOOKUP_SLACK, ViduClient
from vidu_async.errors import AmbiguousCreateError, InsufficientCreditsError
from vidu_async.jobs import Job
from vidu_async.journal import Journal
from vidu_async.outcome import Outcome
from vidu_async.reconcile import Found, Reconciler, ScanLimitError, ScanLimits
from vidu_async.requests import ReferenceToVideoRequest
from vidu_async.retry import RetryPolicy, no_wait
from vidu_async.server_clock import ServerClock
from vidu_async.tasks import Task, TaskPage, TaskResult, new_correlation_key, wrap_payload
from vidu_async.testing import EndpointFaults, Faults, ManualClock, Quirks
from vidu_async.testing import FakeVidu as Simulator

POST = "POST /ent/v2/reference2video"


class NamingVidu(FakeVidu):
    """Answers every create with its task's id in a shape the client cannot read, and lists
    nothing: the task exists (the answer says so) but no lookup will ever show it."""

    async def _create(self, request: web.Request) -> web.StreamResponse:
        self.create_bodies.append(await request.json())
        return web.json_response({"task_id": "777", "state": "created", "credits": "many"})


async def scripted(
    vidu: FakeVidu, aiohttp_server: AiohttpServer, policy: RetryPolicy
) -> AsyncIterator[ViduClient]:
    server = await aiohttp_server(vidu.app())
    try:
        async with ViduClient(KEY, base_url=str(server.make_url("/")), retry=policy) as client:
            yield client
    finally:
        vidu.release.set()


async def test_an_answer_naming_its_task_in_a_shape_it_cannot_read_is_never_sent_again(
    aiohttp_server: AiohttpServer, policy: RetryPolicy
) -> None:
    """The list proves the key absent, but the answer named a task: it exists and is billed,
    so the create is ambiguous (naming the task), not resent."""
    vidu = NamingVidu()
    async for client in scripted(vidu, aiohttp_server, policy):
        with pytest.raises(AmbiguousCreateError, match="answered with task '777'"):
            await client.create_reference2video(request())
    assert vidu.count(POST) == 1


async def test_a_create_again_after_an_ambiguous_one_looks_before_it_sends(
    aiohttp_server: AiohttpServer, policy: RetryPolicy
) -> None:
    """The README's pattern after an ``AmbiguousCreateError`` (its task made, the lookup
    failed): the same call again with the same key finds that task instead of paying twice."""
    vidu = FakeVidu()
    vidu.create_faults = ["500-after"]
    vidu.list_faults = [500] * 20
    key = new_correlation_key()
    async for client in scripted(vidu, aiohttp_server, policy):
        with pytest.raises(AmbiguousCreateError):
            await client.create_reference2video(request(), correlation_key=key)
        vidu.list_faults = []  # the list answers again
        task = await client.create_reference2video(request(), correlation_key=key)
    (only,) = vidu.tasks.values()
    assert task.task_id == only["id"]
    assert vidu.count(POST) == 1


async def test_a_key_carried_by_two_tasks_finds_the_oldest_and_names_both(
    aiohttp_server: AiohttpServer, policy: RetryPolicy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="vidu_async")
    vidu = FakeVidu()
    key = new_correlation_key()
    now = dt.datetime.now(dt.UTC)
    stamps = [(now - dt.timedelta(seconds=s)).isoformat() for s in (5, 10)]
    newer, older = (vidu.add_task(payload=wrap_payload(key, ""), created_at=s) for s in stamps)
    async for client in scripted(vidu, aiohttp_server, policy):
        found = await client.find_task_by_correlation_key(key)
    assert found is not None and found.id == older["id"]
    (warning,) = (r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert f"is carried by 2 tasks: {older['id']}, {newer['id']}" in warning


async def test_three_creates_sharing_a_key_take_turns(
    aiohttp_server: AiohttpServer, policy: RetryPolicy
) -> None:
    """Two calls wait while a third holds the key; it is refused (nothing made), so both are
    woken: one sends, the other waits its turn and gets that task, never sending it too."""
    vidu = FakeVidu()
    vidu.create_faults = [402]  # the first create is refused: no task
    key = new_correlation_key()
    async for client in scripted(vidu, aiohttp_server, policy):
        async with asyncio.timeout(10):  # a waiter never woken fails, not hangs
            refused, *made = await asyncio.gather(
                *(client.create_reference2video(request(), correlation_key=key)
                  for _ in range(3)),
                return_exceptions=True,
            )
    assert isinstance(refused, InsufficientCreditsError)
    (only,) = vidu.tasks.values()
    assert [t.task_id for t in made if isinstance(t, Task)] == [only["id"]] * 2
    assert vidu.count(POST) == 2


async def test_a_sleep_that_moves_no_clock_still_proves_absence_with_one_more_scan(
    aiohttp_server: AiohttpServer,
) -> None:
    """``RetryPolicy(sleep=no_wait)`` on the real clock: the wait for the list's lag ends at
    once, and the scan after it counts as made when the wait ended, so the lookup ends (one
    more scan) instead of asking the list again and again until the lag has really passed."""
    vidu = FakeVidu()
    async for client in scripted(vidu, aiohttp_server, RetryPolicy(sleep=no_wait)):
        async with asyncio.timeout(10):
            assert await client.find_task_by_correlation_key(new_correlation_key()) is None
    assert vidu.count("GET /ent/v2/tasks") == 2


# --- against the simulator -------------------------------------------------------------------

HOLD = 15.0
"""Seconds the simulator takes to commit a create (``EndpointFaults.hold``)."""
GIVE_UP = 10.0
"""Seconds after sending that the caller's timeout cuts the create off."""


async def world(time: ManualClock, faults: Faults) -> AsyncIterator[tuple[Simulator, ViduClient]]:
    policy = RetryPolicy(sleep=time.sleep, clock=time, random=lambda: 1.0, visibility_lag=10.0)
    async with (
        Simulator(clock=time, faults=faults, quirks=Quirks(), seed=3) as sim,
        ViduClient(sim.api_key, base_url=sim.url, retry=policy) as client,
    ):
        yield sim, client


REQUEST = ReferenceToVideoRequest("viduq2", "a cat surfing", images=("https://example.com/c.png",))


async def test_a_callers_created_after_is_taken_with_lookup_slack(time: ManualClock) -> None:
    """A caller's ``created_after`` is a guess (read after the fact, on another clock): the
    window starts ``LOOKUP_SLACK`` before it, so a task made a little earlier is still found,
    never proven absent (and paid again)."""
    async for _sim, client in world(time, Faults()):
        task = await client.create(REQUEST)
        time.advance(30.0)
        late_guess = client.server_clock.local_now() - dt.timedelta(seconds=20)  # 10 s late
        assert dt.timedelta(seconds=10) < LOOKUP_SLACK
        found = await client.find_task_by_correlation_key(
            task.correlation_key or "", created_after=late_guess
        )
    assert found is not None and found.id == task.task_id


async def until_held(sim: Simulator) -> None:
    async with asyncio.timeout(10):
        while sim.simulation.held != 1:  # noqa: ASYNC110 - the simulator offers no event
            await asyncio.sleep(0.005)


async def test_a_find_for_a_create_this_client_cut_off_goes_by_what_it_remembers(
    time: ManualClock,
) -> None:
    """A caller's ``settled_at`` long past does not prove a key absent at once when this client
    cut its create off just now: the server may still commit it, so the lookup waits out the
    lag from the cut-off (as the client remembers it) and finds the task."""
    deadline = asyncio.timeout(None)
    key = new_correlation_key()

    async def create_within_deadline(client: ViduClient) -> Task:
        async with deadline:
            return await client.create(REQUEST, correlation_key=key)

    async for sim, client in world(time, Faults(create=EndpointFaults(hold=HOLD))):
        first = asyncio.create_task(create_within_deadline(client))
        await until_held(sim)
        time.advance(GIVE_UP)
        deadline.reschedule(asyncio.get_running_loop().time())  # the caller's timeout
        with pytest.raises(TimeoutError):
            await first
        assert sim.tasks == {}
        long_ago = client.server_clock.local_now() - dt.timedelta(minutes=5)
        found = await client.find_task_by_correlation_key(
            key, created_after=long_ago, settled_at=long_ago
        )
        [made] = sim.tasks.values()
    assert found is not None and found.id == made.task_id
    assert sim.stats.requests_to("create") == 1


async def test_a_rerun_widens_the_window_of_an_earlier_runs_intent_time(
    time: ManualClock, tmp_path: Path
) -> None:
    """An earlier run's intent time is its own reading of the server's clock (here 30 s fast,
    so later than this client's first answer): the rerun's window still starts
    ``WINDOW_SLACK`` before it, finds the task that run's create made, and pays nothing."""
    journal = tmp_path / "j.jsonl"

    async def run() -> list[Outcome]:
        policy = RetryPolicy(sleep=time.sleep, clock=time, visibility_lag=10.0)
        options = BatchOptions(journal=journal, clock=time, sleep=time.sleep)
        async with ViduClient(sim.api_key, base_url=sim.url, retry=policy) as client:
            return [o async for o in BatchSubmitter(client, options).run([Job("job", REQUEST)])]

    async with Simulator(clock=time, faults=Faults(create=EndpointFaults(hold=HOLD))) as sim:
        first = asyncio.create_task(run())
        await until_held(sim)
        time.advance(GIVE_UP)
        first.cancel()  # Ctrl-C while the server holds the create
        with pytest.raises(asyncio.CancelledError):
            await first
        records = [json.loads(line) for line in journal.read_text().splitlines()]
        for record in records:
            if record["kind"] == "intent":
                record["server_at"] += 30.0
        journal.write_text("".join(json.dumps(r) + "\n" for r in records))
        again = asyncio.create_task(run())
        async with asyncio.timeout(10):
            while not again.done() and sim.stats.faults["hold"] < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        if not again.done():  # sent again: let that create be answered, to count it
            time.advance(HOLD)
        [outcome] = await again
        [made, *others] = sim.tasks.values()
    assert others == [] and outcome.task_id == made.task_id
    assert sim.stats.requests_to("create") == 1


# --- the journal -----------------------------------------------------------------------------


async def test_a_refund_and_a_retry_are_on_disk_when_they_return(tmp_path: Path) -> None:
    """Each makes its job unsent again, its next create under a new key: a crash right after
    must not leave a rerun following a task cancelled unpaid, or the old key."""
    path = tmp_path / "j.jsonl"
    async with await Journal.open(path, batch_id="b") as journal:
        for kind, task_id in (("refunded", "t1"), ("retry", "t2")):
            await journal.intent("job", key=kind * 4, account="a", fingerprint="f",
                                 cost_class="c", server_at=0.0)
            await journal.created("job", task_id=task_id, credits=45)
            syncs = journal.syncs
            if kind == "refunded":
                await journal.refunded("job", task_id=task_id, credits=45)
            else:
                await journal.retry("job", task_id=task_id)
            assert journal.syncs == syncs + 1
            with path.open("rb") as other:
                assert json.loads(other.read().splitlines()[-1])["kind"] == kind


async def test_a_retried_task_stays_counted_after_the_next_attempts_intent(
    tmp_path: Path,
) -> None:
    """The failed task a run retried was billed and is in ``spent``: a rerun (after the retry's
    intent) must still know it, or finding it in the account counts it twice."""
    path = tmp_path / "j.jsonl"
    async with await Journal.open(path, batch_id="b") as journal:
        await journal.intent("job", key="k1", account="a", fingerprint="f", cost_class="c",
                             server_at=0.0)
        await journal.created("job", task_id="t1", credits=45)
        await journal.final("job", {"status": "failed"})
        await journal.retry("job", task_id="t1")
        await journal.intent("job", key="k2", account="a", fingerprint="f", cost_class="c",
                             server_at=1.0)
    async with await Journal.open(path, batch_id="b") as journal:
        record = journal.take("job")
        assert journal.spent == 45
    assert record is not None
    assert (record.correlation_key, record.attempts, record.retried) == ("k2", 1, ("t1",))
    assert record.needs_reconcile


async def test_a_job_that_ended_without_a_task_needs_no_lookup(tmp_path: Path) -> None:
    """A create refused (its job final, no task): a rerun must not count it as maybe billed
    until looked up, which would hold back a budget forever."""
    path = tmp_path / "j.jsonl"
    async with await Journal.open(path, batch_id="b") as journal:
        await journal.intent("job", key="k1", account="a", fingerprint="f", cost_class="c",
                             server_at=0.0)
        await journal.final("job", {"status": "failed"})
    async with await Journal.open(path, batch_id="b") as journal:
        record = journal.take("job")
    assert record is not None and record.is_final and not record.needs_reconcile


# --- the reconciler's bounds -----------------------------------------------------------------


async def test_a_lookup_confirms_as_many_candidates_as_its_limit_allows() -> None:
    """``ScanLimits.max_confirmations`` candidates (items without ``payload`` of the same model
    and prompt) are confirmed one by one, the key found among them (as its query tells); one
    more would be refused."""
    key = new_correlation_key()
    listed = [TaskResult.from_dict({"id": str(i), "model": "viduq2", "prompt": prompt,
                                    "state": "queueing"}) for i, prompt in enumerate("pppq")]

    async def pages(
        since: dt.datetime | None, until: dt.datetime | None
    ) -> AsyncGenerator[TaskPage, None]:
        yield TaskPage(tasks=tuple(listed))

    async def get_task(task_id: str) -> TaskResult:
        payload = wrap_payload(key if task_id == "2" else new_correlation_key(), "")
        return TaskResult.from_dict({"id": task_id, "payload": payload, "state": "success"})

    def reconciler(limit: int) -> Reconciler:
        return Reconciler(pages=pages, get_task=get_task, clock=ServerClock(),
                          policy=RetryPolicy(), limits=ScanLimits(max_confirmations=limit))

    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    verdict = await reconciler(3).lookup(key, model="viduq2", prompt="p", sent_at=long_ago,
                                         settled_at=long_ago)
    assert isinstance(verdict, Found) and verdict.task.id == "2"
    # The list item, completed and brought up to date by its query:
    assert (verdict.task.model, verdict.task.state) == ("viduq2", "success")
    with pytest.raises(ScanLimitError, match="max_confirmations=2"):
        await reconciler(2).lookup(key, model="viduq2", prompt="p", sent_at=long_ago,
                                   settled_at=long_ago)


async def test_a_scan_proves_absence_from_when_it_started_not_when_it_ended() -> None:
    """A scan whose page took long (asked again after a backoff) began before the list could
    show the create: however late it ends it proves nothing, and the next scan finds the task."""
    time = ManualClock()
    key = new_correlation_key()
    scans: list[dt.datetime | None] = []

    async def pages(
        since: dt.datetime | None, until: dt.datetime | None
    ) -> AsyncGenerator[TaskPage, None]:
        scans.append(since)
        if len(scans) == 1:
            time.advance(20.0)  # the page is answered 20 s after the scan started
            yield TaskPage()
        else:
            yield TaskPage(tasks=(TaskResult.from_dict(
                {"id": "1", "payload": wrap_payload(key, "")}),))

    async def get_task(task_id: str) -> TaskResult:
        raise AssertionError("the list carries payloads: nothing to confirm")

    clock = ServerClock(time)
    policy = RetryPolicy(sleep=time.sleep, clock=time, visibility_lag=10.0)
    reconciler = Reconciler(pages=pages, get_task=get_task, clock=clock, policy=policy)
    now = clock.now()
    verdict = await reconciler.lookup(key, model=None, prompt=None, sent_at=now, settled_at=now)
    assert isinstance(verdict, Found) and verdict.task.id == "1"
    assert len(scans) == 2


async def test_a_sweep_expecting_many_tasks_gets_time_for_their_pages() -> None:
    """``sweep(expected=...)`` adds ``budget`` per ``max_pages`` of the pages the expected tasks
    need: a batch rereading its own 250 tasks is not cut off by the budget of one scan."""
    time = ManualClock()

    async def pages(
        since: dt.datetime | None, until: dt.datetime | None
    ) -> AsyncGenerator[TaskPage, None]:
        for number in range(5):
            time.advance(5.0)  # each page takes 5 s: 25 s in all, over one scan's 10 s
            tasks = tuple(TaskResult.from_dict({"id": f"{number}-{i}"}) for i in range(50))
            yield TaskPage(tasks=tasks, next_page_token="" if number == 4 else str(number))

    async def get_task(task_id: str) -> TaskResult:
        raise AssertionError("a sweep confirms nothing")

    reconciler = Reconciler(pages=pages, get_task=get_task, clock=ServerClock(time),
                            policy=RetryPolicy(sleep=time.sleep, clock=time),
                            limits=ScanLimits(max_pages=2, budget=10.0))
    swept = [task.id async for task in reconciler.sweep(None, expected=250)]
    assert len(swept) == 250
    with pytest.raises(ScanLimitError, match=r"ScanLimits\.max_pages"):
        [task.id async for task in reconciler.sweep(None)]
