"""A sweep (every task created since a time: a batch's closing duplicate check) reads a long
range in time slices at once, misses no task at a slice's edge, and stops every slice when one
fails."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
from collections.abc import AsyncGenerator

import pytest

from vidu_async import ViduClient
from vidu_async.errors import APIConnectionError
from vidu_async.reconcile import (
    SLICE_MIN,
    SLICE_OVERLAP,
    SWEEP_AT_ONCE,
    Reconciler,
    sweep_slices,
)
from vidu_async.requests import ReferenceToVideoRequest
from vidu_async.retry import RetryPolicy
from vidu_async.server_clock import ServerClock
from vidu_async.tasks import TaskPage, TaskResult
from vidu_async.testing import FakeVidu, ManualClock, Quirks

T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("since", "now", "pages", "count"),
    [
        (None, at(3600), 1000, 1),  # the default window: no start to cut from
        (T0, at(3600), 7, 1),  # under two slices' pages
        (T0, at(3600), 8, 2),
        (T0, at(3600), 1000, SWEEP_AT_ONCE),
        (T0, at(15), 1000, 1),  # too short: two slices would overlap by a fifteenth
        (T0, at(25), 1000, 2),
        (T0, T0, 1000, 1),
        (T0, at(-30), 1000, 1),  # now before since (a clock's estimate): nothing to cut
    ],
)
def test_sweep_slices_cut_only_a_long_range_of_many_pages(
    since: dt.datetime | None, now: dt.datetime, pages: int, count: int
) -> None:
    slices = sweep_slices(since, now, pages)
    assert len(slices) == count
    assert slices[0][0] == since and slices[-1][1] is None  # from the start, the last open
    for (start, end), (following, _) in itertools.pairwise(slices):
        assert end == following + SLICE_OVERLAP  # contiguous, reaching into the next
        assert following - start >= SLICE_MIN


def listed_tasks(count: int, span: float) -> list[TaskResult]:
    """``count`` tasks spread evenly over ``span`` seconds from ``T0``, with payloads."""
    return [
        TaskResult.from_dict({
            "id": str(i), "payload": "",
            "created_at": at(span * i / count).isoformat().replace("+00:00", "Z"),
        })
        for i in range(count)
    ]


class ListedRange:
    """A strict list over ``tasks``: ``created_at.from`` inclusive, ``created_at.to``
    exclusive and cut to the whole second (the harshest readings), pages of 100 in order of
    creation; counts the pages being read at once."""

    def __init__(self, tasks: list[TaskResult], fail_after: int | None = None,
                 *, ignore_to: bool = False) -> None:
        self.tasks = tasks
        self.fail_after = fail_after
        self.ignore_to = ignore_to
        self.reading = 0
        self.most_at_once = 0
        self.pages = 0

    async def __call__(
        self, since: dt.datetime | None, until: dt.datetime | None
    ) -> AsyncGenerator[TaskPage, None]:
        end = None if until is None or self.ignore_to else until.replace(microsecond=0)
        chosen = [
            t for t in self.tasks
            if since is None or t.created_at is None or t.created_at >= since
            if end is None or t.created_at is None or t.created_at < end
        ]
        self.reading += 1
        try:
            for first in range(0, max(len(chosen), 1), 100):
                self.most_at_once = max(self.most_at_once, self.reading)
                await asyncio.sleep(0)  # the round trip: the other slices go meanwhile
                self.pages += 1
                if self.fail_after is not None and self.pages > self.fail_after:
                    raise APIConnectionError("connection lost", call="GET /ent/v2/tasks")
                more = first + 100 < len(chosen)
                yield TaskPage(tasks=tuple(chosen[first:first + 100]),
                               next_page_token=str(first) if more else "")
        finally:
            self.reading -= 1


def reconciler(pages: ListedRange, now: dt.datetime) -> Reconciler:
    async def get_task(task_id: str) -> TaskResult:
        raise AssertionError("a sweep confirms nothing")

    clock = ServerClock(ManualClock())
    clock.offset = (now - clock.local_now()).total_seconds()  # the server's now: ``now``
    return Reconciler(pages=pages, get_task=get_task, clock=clock, policy=RetryPolicy())


async def test_a_long_sweep_reads_its_slices_at_once_and_misses_no_task_at_an_edge() -> None:
    tasks = listed_tasks(3000, 3600)  # 30 pages over an hour: a task every 1.2 s
    pages = ListedRange(tasks)
    # Whole seconds: every slice's edge falls on a task (every sixth is on a whole second).
    swept = [t.id async for t in reconciler(pages, at(3600)).sweep(T0, expected=3000)]
    assert set(swept) == {t.id for t in tasks}
    assert pages.most_at_once == 7  # 30 pages, 4 a slice at least
    assert len(swept) - len(tasks) <= 7  # a few listed twice, at the edges
    assert pages.pages <= 30 + 7  # a part-full page per slice, at most


async def test_a_server_that_ignores_created_at_to_is_read_once_whole_instead() -> None:
    """Each slice would list everything from its start (4.5 times the pages): the first page
    past its end stops the slices, and one reader goes through the range alone. Listed oldest
    first, each slice has read its own range by then: twice the pages, not 4.5 times."""
    tasks = listed_tasks(3000, 3600)
    pages = ListedRange(tasks, ignore_to=True)
    swept = [t.id async for t in reconciler(pages, at(3600)).sweep(T0, expected=3000)]
    assert set(swept) == {t.id for t in tasks}
    assert pages.pages <= 2 * 30 + 7


async def test_a_list_without_created_at_is_read_whole_by_one_reader() -> None:
    """Its slices cannot be told apart from a server ignoring ``created_at.to``: no slice
    stands alone on a list it cannot check (this one honours ``to``, and has only ids)."""
    tasks = [TaskResult.from_dict({"id": str(i), "payload": ""}) for i in range(3000)]
    pages = ListedRange(tasks)  # every task matches every slice: created_at unknown
    swept = [t.id async for t in reconciler(pages, at(3600)).sweep(T0, expected=3000)]
    assert set(swept) == {t.id for t in tasks}
    assert pages.pages <= 30 + 7


async def test_a_failed_slice_stops_the_sweep_and_every_other_slice() -> None:
    pages = ListedRange(listed_tasks(3000, 3600), fail_after=10)
    with pytest.raises(APIConnectionError, match="connection lost"):
        async for _ in reconciler(pages, at(3600)).sweep(T0, expected=3000):
            pass
    assert pages.reading == 0  # none left reading on its own
    assert pages.pages < 30


async def test_a_sweep_left_early_stops_every_slice() -> None:
    pages = ListedRange(listed_tasks(3000, 3600))
    sweep = reconciler(pages, at(3600)).sweep(T0, expected=3000)
    async with contextlib.aclosing(sweep) as listed:
        async for _ in listed:
            assert pages.reading == 7
            break
    assert pages.reading == 0


@pytest.mark.parametrize("skew", [0.0, 600.0, -600.0])
async def test_a_sweep_over_the_simulator_lists_every_task_of_a_long_run_once_or_at_an_edge(
    skew: float,
) -> None:
    """Real sockets: ``created_at.to`` as the client writes it and the simulator reads it; the
    slices' times are the server's, ten minutes off this machine's or not."""
    time = ManualClock()
    async with FakeVidu(clock=time, quirks=Quirks(clock_skew=skew)) as sim, ViduClient(
        sim.api_key, base_url=sim.url, retry=RetryPolicy(clock=time, sleep=time.sleep)
    ) as client:
        await client.get_credits()  # the server clock, learned
        since = client.server_clock.now() - MINUTE  # as a batch's check: the clock's error
        made = set()
        for i in range(900):  # 9 pages over 90 s: two slices
            task = await client.create(ReferenceToVideoRequest(
                "viduq2", f"a lark, take {i}", images=("https://example.com/lark.png",)))
            made.add(task.task_id)
            time.advance(0.1)
        requests = sim.stats.requests_to("list_tasks")
        swept = [t.id async for t in client.reconciler.sweep(since, expected=900)]
        assert set(swept) == made
        assert len(swept) <= 900 + 10  # the overlap's second, at most
        assert sim.stats.requests_to("list_tasks") - requests == 10  # a part-full page each
