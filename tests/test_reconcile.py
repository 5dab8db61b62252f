"""The reconciler: pure decisions by table, then lost creates against the simulator's readings.

Time is virtual: the simulator and the client share a ``ManualClock``, so a 30 s visibility lag
costs nothing and every wait is recorded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import pytest

from vidu_async import ViduClient
from vidu_async._keys import REMEMBERED
from vidu_async.errors import AmbiguousCreateError
from vidu_async.reconcile import (
    SERVER_SKEW,
    Absent,
    Found,
    Reconciler,
    Rescan,
    TaskIndex,
    Unknown,
    Window,
    judge,
    lookup_window,
    merge_windows,
    proof_time,
)
from vidu_async.requests import ReferenceToVideoRequest
from vidu_async.retry import RetryPolicy
from vidu_async.server_clock import ServerClock
from vidu_async.tasks import Task, TaskPage, TaskResult, new_correlation_key, wrap_payload
from vidu_async.testing import EndpointFaults, FakeVidu, Faults, ManualClock, Quirks

T0 = dt.datetime(2026, 1, 20, 6, 0, 0, tzinfo=dt.UTC)
IMAGE = "https://example.com/cat.png"


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def item(task_id: str, key: str | None = None, **fields: Any) -> TaskResult:
    data: dict[str, Any] = {"id": task_id, "model": "viduq2", "prompt": "p", **fields}
    if key is not None:
        data["payload"] = wrap_payload(key, "")
    return TaskResult.from_dict(data)


# --- pure decisions ------------------------------------------------------------------------


def test_proof_time_adds_the_lag_and_twice_the_uncertainty() -> None:
    assert proof_time(at(0), 30.0, 2.0) == at(34)


def test_proof_time_on_one_clock_adds_the_lag_and_only_the_servers_skew() -> None:
    assert proof_time(at(0), 30.0, 2.0, one_clock=True) == at(30 + SERVER_SKEW)


@pytest.mark.parametrize(
    ("sent", "trusted", "expected"),
    [
        (at(10), True, Window(at(9.75))),
        (at(10), False, Window(at(-50))),
        (None, True, Window(None)),
        (None, False, Window(None)),
    ],
)
def test_lookup_window_starts_the_uncertainty_before_the_create_and_never_ends(
    sent: dt.datetime | None, trusted: bool, expected: Window
) -> None:
    # No end: a create the client gave up on may be committed, and stamped, any time later.
    assert lookup_window(sent, 0.25, trusted=trusted) == expected


@pytest.mark.parametrize(
    ("starts", "expected"),
    [
        ([5], 5),
        ([5, 1, 3], 1),
        ([None, None], None),
        ([None, 101], None),  # the default window (from 101 at the latest) covers it
        ([150, None, 120], None),
        ([None, 99.5, 150], 99),  # near the default's start: from its earliest, covering both
        ([None, 100.5], 99),  # (the default may start after 100.5: from 99 covers it too)
        ([None, 50, 150], 50),  # before the default window: covers it too
        ([5, None], 5),
    ],
)
def test_merge_windows_starts_at_the_earliest_start(
    starts: list[float | None], expected: float | None
) -> None:
    """The list's default window starts between 99 and 101 (the server's clock known to 1 s)."""
    windows = [Window(None if t is None else at(t)) for t in starts]
    assert merge_windows(windows, (at(99), at(101))) == Window(
        None if expected is None else at(expected))


def test_merging_no_window_is_an_error() -> None:
    with pytest.raises(ValueError, match="no window"):
        merge_windows([], (at(99), at(101)))


KEY, OTHER = "ab" * 16, "cd" * 16


@pytest.mark.parametrize(
    ("hits", "visible", "started", "expected"),
    [
        ((item("1", KEY),), True, 0, Found(item("1", KEY))),
        ((item("1", KEY), item("2", KEY)), True, 0, Found(item("1", KEY), (item("2", KEY),))),
        ((item("1", KEY),), False, 99, Found(item("1", KEY))),
        ((), True, 33.9, Rescan(at(34))),
        ((), False, 10, Rescan(at(34))),
        ((), True, 34, Absent()),
        ((), False, 34, Unknown),
    ],
)
def test_judge(
    hits: tuple[TaskResult, ...], visible: bool, started: float, expected: object
) -> None:
    verdict = judge(hits, payload_visible=visible, scan_started=at(started), proof_at=at(34))
    if expected is Unknown:
        assert isinstance(verdict, Unknown) and "payload" in verdict.reason
    else:
        assert verdict == expected


@pytest.mark.parametrize(
    ("tasks", "visible", "candidates"),
    [
        ((), True, ()),
        ((item("1", KEY), item("2", OTHER)), True, ()),
        ((item("1"), item("2", prompt="q"), item("3", model="viduq1")), False, ("1",)),
        ((item("1", KEY), item("2")), False, ("2",)),
    ],
)
def test_task_index(
    tasks: tuple[TaskResult, ...], visible: bool, candidates: tuple[str, ...]
) -> None:
    index = TaskIndex.of(tasks, at(0), at(0))
    assert index.payload_visible is visible
    assert index.candidates("viduq2", "p") == candidates
    assert {k: [t.id for t in v] for k, v in index.by_key.items()} == {
        t.correlation_key: [t.id] for t in tasks if t.correlation_key
    }


async def test_confirmed_tasks_are_fetched_once_among_the_last_remembered() -> None:
    """A candidate confirmed is not fetched again while among the reconciler's last
    ``REMEMBERED``; older ones are forgotten (fetched again if ever asked), so a long-lived
    client holds no more."""
    fetched: list[str] = []

    async def get_task(task_id: str) -> TaskResult:
        fetched.append(task_id)
        return item(task_id, KEY)

    async def no_pages(
        since: dt.datetime | None, until: dt.datetime | None
    ) -> AsyncGenerator[TaskPage, None]:
        yield TaskPage(())  # never listed: only confirmations here

    reconciler = Reconciler(pages=no_pages, get_task=get_task, clock=ServerClock(),
                            policy=RetryPolicy())
    ids = [str(i) for i in range(REMEMBERED + 10)]
    assert [t.id for t in await reconciler.confirm(ids)] == ids
    assert [t.id for t in await reconciler.confirm(ids[::-1])] == ids[::-1]
    # The second call fetched only the ten the first pushed out, each once.
    assert fetched == ids + ids[9::-1]


# --- lost creates against the simulator ------------------------------------------------------

DROPPED = Faults(create=EndpointFaults(commit_then_drop=1.0))
"""Every create is committed and billed, then its connection dropped without an answer."""
MIXED = Faults(create=EndpointFaults(commit_then_drop=0.4, server_error=0.3))
"""Lost answers whose task exists, and 500s whose task does not."""
FAILED_AFTER_COMMIT = Faults(create=EndpointFaults(error_after_commit=0.4, server_error=0.3))
"""500s after the task was made and billed, and 500s before: the same answer, either truth."""


def request(prompt: str = "a cat surfing") -> ReferenceToVideoRequest:
    return ReferenceToVideoRequest("viduq2", prompt, images=(IMAGE,))


async def world(
    time: ManualClock, faults: Faults, quirks: Quirks
) -> AsyncIterator[tuple[FakeVidu, ViduClient]]:
    policy = RetryPolicy(sleep=time.sleep, clock=time, random=lambda: 1.0, max_attempts=10)
    async with (
        FakeVidu(clock=time, faults=faults, quirks=quirks, seed=3) as sim,
        ViduClient(sim.api_key, base_url=sim.url, retry=policy) as client,
    ):
        yield sim, client


async def create_all(client: ViduClient, n: int) -> list[Task | AmbiguousCreateError]:
    async def one(i: int) -> Task | AmbiguousCreateError:
        try:
            return await client.create_reference2video(request(f"prompt {i % 3}"))
        except AmbiguousCreateError as error:
            return error

    return list(await asyncio.gather(*(one(i) for i in range(n))))


def assert_no_second_task(sim: FakeVidu, outcomes: list[Task | AmbiguousCreateError]) -> None:
    assert sim.stats.duplicate_payloads() == {}
    by_key = {t.payload: t for t in sim.tasks.values()}
    for outcome in outcomes:
        if isinstance(outcome, Task):
            assert sim.tasks[outcome.task_id].payload == wrap_payload(
                outcome.correlation_key or "", ""
            )
    returned = {o.task_id for o in outcomes if isinstance(o, Task)}
    assert returned <= {t.task_id for t in by_key.values()}


READINGS = {
    "list lags 10 s": Quirks(list_lag=10.0),
    "server clock +10 min": Quirks(clock_skew=600.0),
    "server clock -10 min": Quirks(clock_skew=-600.0),
    "list without payload": Quirks(list_without_payload=True),
    "paper paging": Quirks(paper_paging=True),
    "all at once": Quirks(
        list_lag=10.0, clock_skew=-600.0, list_without_payload=True, paper_paging=True
    ),
}


@pytest.mark.parametrize("quirks", READINGS.values(), ids=READINGS.keys())
@pytest.mark.parametrize(
    "faults", [DROPPED, MIXED, FAILED_AFTER_COMMIT], ids=["dropped", "mixed", "500 after commit"]
)
async def test_lost_creates_never_make_a_second_task(
    time: ManualClock, faults: Faults, quirks: Quirks
) -> None:
    async for sim, client in world(time, faults, quirks):
        outcomes = await create_all(client, 12)
        assert_no_second_task(sim, outcomes)
        if faults is DROPPED:  # every task exists: each is found, under every reading
            assert all(isinstance(o, Task) for o in outcomes)
            assert sim.stats.tasks_created == 12
        if not quirks.list_without_payload:  # absence is provable: nothing stays ambiguous
            assert all(isinstance(o, Task) for o in outcomes)


async def test_concurrent_lost_creates_share_scans(time: ManualClock) -> None:
    async for sim, client in world(time, DROPPED, Quirks(list_lag=10.0)):
        outcomes = await create_all(client, 30)
        assert all(isinstance(o, Task) for o in outcomes)
        assert client.reconciler.scans <= 6  # far fewer than one (or two) per create
        assert sim.stats.requests_to("list_tasks") == client.reconciler.scans  # one page each
        assert sim.stats.requests_to("credits") == 1  # the server clock learned once


async def test_find_for_an_unknown_key_waits_out_the_lag_then_proves_absence(
    time: ManualClock,
) -> None:
    async for _sim, client in world(time, Faults(), Quirks(clock_skew=600.0)):
        assert await client.find_task_by_correlation_key(new_correlation_key()) is None
        clock = client.server_clock  # learned from answers that took no time: to 0.5 s at first
        assert clock.uncertainty <= 0.5 and abs(clock.offset - 600) <= clock.uncertainty
        # The lag and the server machines' skew: "settled" is this client's own reading, timed
        # on this machine's clock, so the offset's 0.5 s uncertainty does not count.
        assert time.waits == [pytest.approx(30.0 + SERVER_SKEW, abs=0.001)]


async def test_find_with_a_callers_settled_time_also_waits_out_the_clocks_uncertainty(
    time: ManualClock,
) -> None:
    async for _sim, client in world(time, Faults(), Quirks(clock_skew=600.0)):
        now = client.server_clock.local_now()  # a caller's reading: compared on the server's
        assert await client.find_task_by_correlation_key(
            new_correlation_key(), settled_at=now
        ) is None
        assert time.waits == [pytest.approx(31.0, abs=0.001)]  # the lag, and twice 0.5 s


async def test_find_without_payload_in_the_list_is_ambiguous_not_absent(
    time: ManualClock,
) -> None:
    async for _sim, client in world(time, Faults(), Quirks(list_without_payload=True)):
        await client.create_reference2video(request())
        with pytest.raises(AmbiguousCreateError, match="no payload"):
            await client.find_task_by_correlation_key(new_correlation_key())


async def test_find_with_a_create_settled_long_ago_proves_absence_at_once(
    time: ManualClock,
) -> None:
    async for _sim, client in world(time, Faults(), Quirks()):
        long_ago = client.server_clock.local_now() - dt.timedelta(minutes=5)
        missing = new_correlation_key()
        assert await client.find_task_by_correlation_key(missing, settled_at=long_ago) is None
        assert time.waits == []
