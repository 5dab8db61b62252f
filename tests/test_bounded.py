"""An API answer is bounded: an endless or announced-huge body fails its call, reading no more."""

from __future__ import annotations

import asyncio
import gzip
import logging
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from vidu_async._http import MAX_ANSWER_BYTES
from vidu_async.client import ViduClient
from vidu_async.errors import APITimeoutError, ResponseFormatError
from vidu_async.reconcile import ScanLimitError, ScanLimits
from vidu_async.retry import RetryPolicy, no_wait

ServerFactory = Callable[..., Awaitable[TestServer]]
CHUNK = b"x" * 2**16


class Flood:
    """A status endpoint that streams without end (counting what it sent), or that announces a
    body of a terabyte and then sends nothing more."""

    def __init__(self) -> None:
        self.sent = 0
        self.stopped = asyncio.Event()

    async def endless(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        try:
            while True:
                await response.write(CHUNK)
                self.sent += len(CHUNK)
        finally:  # the client hung up: the write fails, or the handler is cancelled
            self.stopped.set()

    async def compressed(self, request: web.Request) -> web.StreamResponse:
        """A small body (its Content-Length true) that unpacks to more than the limit."""
        body = gzip.compress(b'{"id": "' + b"x" * (MAX_ANSWER_BYTES + 2**20) + b'"}')
        return web.Response(body=body, headers={"Content-Type": "application/json",
                                                "Content-Encoding": "gzip"})

    async def announced(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = 10**12
        await response.prepare(request)
        await response.write(b'{"id": "')
        await asyncio.Event().wait()  # until the client hangs up
        return response

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/ent/v2/tasks/endless/creations", self.endless)
        app.router.add_get("/ent/v2/tasks/announced/creations", self.announced)
        app.router.add_get("/ent/v2/tasks/compressed/creations", self.compressed)
        return app


@pytest.fixture
async def flood_client(
    aiohttp_server: ServerFactory,
) -> tuple[Flood, ViduClient]:
    flood = Flood()
    server = await aiohttp_server(flood.app())
    retry = RetryPolicy(max_attempts=1, sleep=no_wait)
    return flood, ViduClient("k-bounded", base_url=str(server.make_url("/")), retry=retry)


async def test_an_endless_answer_fails_after_about_the_limit(
    flood_client: tuple[Flood, ViduClient],
) -> None:
    flood, client = flood_client
    async with client:
        with pytest.raises(ResponseFormatError, match="larger than 16,777,216 bytes") as caught:
            await client.get_task("endless")
        async with asyncio.timeout(5):  # a guard against a hang: the server sees the hang-up
            await flood.stopped.wait()
    assert "GET /ent/v2/tasks/endless/creations" in str(caught.value)
    # What the server got out before the hang-up: the limit plus what socket buffers hold.
    assert MAX_ANSWER_BYTES < flood.sent < MAX_ANSWER_BYTES + 8 * 2**20


async def test_a_too_large_content_length_fails_before_reading(
    flood_client: tuple[Flood, ViduClient],
) -> None:
    _, client = flood_client
    async with client, asyncio.timeout(5):  # the body never comes: only the header can fail it
        with pytest.raises(ResponseFormatError, match="announces 1,000,000,000,000 bytes"):
            await client.get_task("announced")


async def test_a_small_compressed_answer_that_unpacks_past_the_limit_fails(
    flood_client: tuple[Flood, ViduClient],
) -> None:
    _, client = flood_client  # its Content-Length (of the compressed bytes) is no bound
    async with client, asyncio.timeout(10):
        with pytest.raises(ResponseFormatError, match="larger than 16,777,216 bytes"):
            await client.get_task("compressed")


# --- a list that pages forever, a server that never answers ---------------------------------------


def endless_pages(counter: list[int]) -> web.Application:
    """A task list that answers every page with one task and a fresh next-page token."""

    async def tasks(request: web.Request) -> web.Response:
        counter.append(1)
        n = len(counter)
        item = {"id": f"t{n}", "state": "success", "payload": "", "created_at":
                "2026-01-20T06:37:57Z"}
        return web.json_response({"tasks": [item], "next_page_token": f"page-{n}"})

    app = web.Application()
    app.router.add_get("/ent/v2/tasks", tasks)
    return app


async def test_a_list_that_pages_forever_stops_at_the_scan_limit(
    aiohttp_server: ServerFactory,
) -> None:
    served: list[int] = []
    server = await aiohttp_server(endless_pages(served))
    limits = ScanLimits(max_pages=7)
    async with ViduClient("k", base_url=str(server.make_url("/")), scan_limits=limits,
                          retry=RetryPolicy(sleep=no_wait)) as client:
        with pytest.raises(ScanLimitError, match="7"):
            await client.reconciler.snapshot()
    assert len(served) == 7


async def test_a_server_that_never_answers_is_named_within_its_read_deadline(
    aiohttp_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The read deadline (60 s by default; short here) ends each wait, and the first retry of a
    call that got no answer is a warning naming the call and why."""
    hold = asyncio.Event()

    async def never(request: web.Request) -> web.Response:
        await hold.wait()
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/ent/v2/credits", never)
    server = await aiohttp_server(app)
    caplog.set_level(logging.INFO, logger="vidu_async")
    async with ViduClient("k", base_url=str(server.make_url("/")),
                          timeout=aiohttp.ClientTimeout(total=5, sock_read=0.2),
                          retry=RetryPolicy(sleep=no_wait, max_attempts=2)) as client:
        with pytest.raises(APITimeoutError, match="GET /ent/v2/credits"):
            await client.get_credits()
    hold.set()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "GET /ent/v2/credits failed" in warnings[0] and "timed out" in warnings[0]
