"""Following tasks through a gateway's 404s, replays that fetch a video not saved yet, the
start-up wait said only when it waits, and the results of lines whose id could not be read.

Against the simulator on 127.0.0.1, through a small proxy (``Gateway``) where a fault must sit
between them; every wait is virtual (``ManualClock``) or recorded.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from vidu_async.batch import BatchOptions, BatchSubmitter
from vidu_async.batch.follow import GONE_AFTER, GONE_QUERIES, Schedule
from vidu_async.cli import main
from vidu_async.client import ViduClient
from vidu_async.failures import failure_of
from vidu_async.jobs import Job
from vidu_async.journal import read_journal
from vidu_async.outcome import Outcome
from vidu_async.requests import ReferenceToVideoRequest
from vidu_async.retry import RetryPolicy, no_wait
from vidu_async.testing import FakeVidu, ManualClock, Timeline

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]

IMAGE = "https://example.com/cat.png"
INSTANT = Timeline(created=0, processing=0)
POLL = 60.0


def jobs(*names: str) -> list[Job]:
    return [Job(name, ReferenceToVideoRequest("viduq2", f"a {name} surfing", images=(IMAGE,),
                                              duration=5), i)
            for i, name in enumerate(names, 1)]


class Gateway:
    """A proxy in front of the simulator that answers ``404 page not found`` (plain text, as a
    gateway does) to the next ``misses`` reads of tasks (``GET /ent/v2/tasks*``: the list and
    each task's query); every other request passes through."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.misses: float = 0
        self.answered_404 = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if (request.method == "GET" and request.path.startswith("/ent/v2/tasks")
                and self.misses > 0):
            self.misses -= 1
            self.answered_404 += 1
            return web.Response(status=404, text="404 page not found")
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length")}
        async with aiohttp.ClientSession() as session, session.request(
            request.method, self.upstream + request.path_qs, data=await request.read(),
            headers=headers,
        ) as answer:
            body = await answer.read()
            kept = {k: v for k, v in answer.headers.items()
                    if k.lower() in ("content-type", "date", "retry-after")}
        return web.Response(status=answer.status, body=body, headers=kept)


@pytest.fixture
async def sim() -> AsyncIterator[FakeVidu]:
    async with FakeVidu(timeline=INSTANT) as fake:
        yield fake


@pytest.fixture
async def gateway(sim: FakeVidu, aiohttp_server: ServerFactory) -> tuple[Gateway, str]:
    proxy = Gateway(sim.url)
    server = await aiohttp_server(proxy.app())
    return proxy, str(server.make_url("/")).rstrip("/")


def batch(c: ViduClient, **options: Any) -> BatchSubmitter:
    clock = ManualClock()
    return BatchSubmitter(c, BatchOptions(wait=True, poll_interval=POLL, clock=clock,
                                          sleep=clock.sleep, **options))


async def collect(submitter: BatchSubmitter, items: list[Job]) -> dict[str | None, Outcome]:
    return {o.custom_id: o async for o in submitter.run(items)}


# --- a 404 while following is "not known now" -------------------------------------------------


def test_a_followed_task_is_given_up_only_after_long_repeated_404s() -> None:
    s = Schedule(poll_interval=5, callback_poll_interval=120)
    s.add("t1", "a", by_callback=False, now=0)
    assert not any(s.missed("t1", now=t) for t in (10, 20, 30, 40))
    assert not s.missed("t1", now=10 + GONE_AFTER - 1)  # five 404s, not long enough
    assert s.missed("t1", now=10 + GONE_AFTER)
    s.add("t2", "a", by_callback=False, now=0)
    assert not s.missed("t2", now=0)
    assert not s.missed("t2", now=GONE_AFTER * 3)  # long, but two queries are no proof
    s.found("t2")  # one good read starts the count over
    assert not any(s.missed("t2", now=GONE_AFTER * 3 + t) for t in range(GONE_QUERIES))
    assert not s.missed("untracked", now=GONE_AFTER * 9)


async def test_a_short_404_on_reading_a_task_is_not_its_failure_and_no_retry_pays_again(
    sim: FakeVidu, gateway: tuple[Gateway, str], tmp_path: Path
) -> None:
    proxy, url = gateway
    journal = tmp_path / "j.journal.jsonl"
    async with ViduClient(sim.api_key, base_url=url, retry=RetryPolicy(sleep=no_wait)) as c:
        proxy.misses = 6  # three rounds: the list and the task's own query each answer 404
        first = await collect(batch(c, journal=journal), jobs("cat"))
        assert first["cat"].status == "succeeded"
        assert proxy.answered_404 == 6 and proxy.misses == 0
        again = await collect(batch(c, journal=journal, retry_failed=True), jobs("cat"))
    assert again["cat"].status == "succeeded"
    assert sim.stats.tasks_created == 1


async def test_a_task_404_for_long_is_given_up_unjournalled_and_a_retry_run_follows_it(
    sim: FakeVidu, gateway: tuple[Gateway, str], tmp_path: Path
) -> None:
    proxy, url = gateway
    journal = tmp_path / "j.journal.jsonl"
    clock = ManualClock()
    async with ViduClient(sim.api_key, base_url=url, retry=RetryPolicy(sleep=no_wait)) as c:
        proxy.misses = math.inf
        submitter = BatchSubmitter(c, BatchOptions(wait=True, poll_interval=POLL, clock=clock,
                                                   sleep=clock.sleep, journal=journal))
        gone = (await collect(submitter, jobs("cat")))["cat"]
        assert clock.now >= GONE_AFTER and proxy.answered_404 >= 2 * GONE_QUERIES
        assert gone.status == "failed" and gone.task_id == next(iter(sim.tasks))
        assert gone.error is not None and gone.error.reason == "TaskNotFound"
        failure = failure_of(gone, retry_failed=True)
        assert failure is not None and not failure.resubmit
        assert "not sent again" in failure.advice
        (record,) = read_journal(journal).jobs
        assert record.final is None and record.task_id == gone.task_id  # followed again
        proxy.misses = 0
        again = await collect(batch(c, journal=journal, retry_failed=True), jobs("cat"))
    assert again["cat"].status == "succeeded" and again["cat"].task_id == gone.task_id
    assert sim.stats.tasks_created == 1


# --- batch status / download name the tasks a 404 hides ------------------------------------------


async def cli(*argv: str) -> int:
    code: int = await asyncio.to_thread(main, list(argv))
    return code


async def test_batch_status_and_download_name_a_task_that_answers_404_and_exit_non_zero(
    sim: FakeVidu, gateway: tuple[Gateway, str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
) -> None:
    proxy, url = gateway
    journal = tmp_path / "j.journal.jsonl"
    async with ViduClient(sim.api_key, base_url=url, retry=RetryPolicy(sleep=no_wait)) as c:
        clock = ManualClock()
        submitter = BatchSubmitter(c, BatchOptions(journal=journal, clock=clock,
                                                   sleep=clock.sleep))
        assert (await collect(submitter, jobs("cat")))["cat"].status == "submitted"
    monkeypatch.setenv("VIDU_API_KEY", sim.api_key)
    monkeypatch.setenv("VIDU_BASE_URL", url)
    monkeypatch.delenv("VIDU_API_KEYS", raising=False)
    proxy.misses = math.inf
    capfd.readouterr()
    assert await cli("batch", "status", str(journal)) == 1
    out = capfd.readouterr().out
    assert "1 jobs: 1 unknown" in out and "cat: task" in out and "answered 404" in out
    assert await cli("batch", "download", str(journal), str(tmp_path / "videos")) == 1
    err = capfd.readouterr().err
    assert "cat: task" in err and "could not be read" in err
    proxy.misses = 0
    assert await cli("batch", "download", str(journal), str(tmp_path / "videos")) == 0
    assert "downloaded 1 file of 1 task" in capfd.readouterr().out


# --- a replayed success downloads a video its folder lacks ---------------------------------------


async def test_a_replayed_success_is_downloaded_where_its_video_is_missing_with_no_create(
    sim: FakeVidu, tmp_path: Path
) -> None:
    journal = tmp_path / "j.journal.jsonl"
    here, there = tmp_path / "here", tmp_path / "there"
    async with ViduClient(sim.api_key, base_url=sim.url, retry=RetryPolicy(sleep=no_wait)) as c:

        async def rerun(folder: Path | None) -> Outcome:
            outcome = (await collect(batch(c, journal=journal, download=folder),
                                     jobs("cat")))["cat"]
            assert outcome.status == "succeeded"
            return outcome

        assert (await rerun(None)).files == ()  # --wait without --download
        queries = sim.stats.requests_to("list_tasks") + sim.stats.requests_to("query")
        fetched = await rerun(here)
        assert [Path(f).parent for f in fetched.files] == [here]
        assert Path(fetched.files[0]).is_file()
        assert sim.stats.requests_to("list_tasks") + sim.stats.requests_to("query") > queries
        queries = sim.stats.requests_to("list_tasks") + sim.stats.requests_to("query")
        assert (await rerun(here)).files == fetched.files  # in the folder: replayed, nothing asked
        assert sim.stats.requests_to("list_tasks") + sim.stats.requests_to("query") == queries
        assert [Path(f).parent for f in (await rerun(there)).files] == [there]
        Path(fetched.files[0]).unlink()
        assert (await rerun(here)).files == fetched.files and Path(fetched.files[0]).is_file()
    assert sim.stats.tasks_created == 1


# --- the start-up wait is said only when a job waits ---------------------------------------------


async def test_a_rerun_that_only_finds_its_tasks_says_no_wait_and_a_first_run_says_its_own(
    sim: FakeVidu, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vidu_async.batch")
    async with ViduClient(sim.api_key, base_url=sim.url, retry=RetryPolicy(sleep=no_wait)) as c:
        first = await collect(batch(c, batch_id="named"), jobs("cat", "dog"))
        assert {o.status for o in first.values()} == {"succeeded"}
        assert "waiting" in caplog.text and "before creating jobs" in caplog.text
        caplog.clear()
        # No journal: an earlier run is possible, but every job finds its task at once.
        again = await collect(batch(c, batch_id="named"), jobs("cat", "dog"))
    assert {o.task_id for o in again.values()} == {o.task_id for o in first.values()}
    assert "before creating jobs" not in caplog.text
    assert sim.stats.tasks_created == 2
