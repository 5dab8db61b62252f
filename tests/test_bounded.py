"""An API answer is bounded: an endless or announced-huge body fails its call, reading no more."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from vidu_async._http import MAX_ANSWER_BYTES
from vidu_async.client import ViduClient
from vidu_async.errors import ResponseFormatError
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
