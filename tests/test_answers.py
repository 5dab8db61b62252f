"""Odd but usable 200 answers, over real sockets: a create answer with a task id is the task
(odd echoes read leniently, a huge echo of the request still read), and a large answer is
parsed off the event loop."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from json.decoder import JSONDecoder
from types import FrameType
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from vidu_async._http import MAX_ANSWER_BYTES, PARSE_OFF_LOOP, Account, SessionPool, send
from vidu_async.client import ViduClient
from vidu_async.errors import AmbiguousCreateError, ResponseFormatError
from vidu_async.requests import TextToVideoRequest
from vidu_async.retry import RetryPolicy, no_wait
from vidu_async.tasks import Task, TaskState

ServerFactory = Callable[..., Awaitable[TestServer]]

# Echoes a server may send in another JSON type than the one sent (the seed's schema calls
# several of them strings).
ODD_ECHOES: dict[str, Any] = {
    "watermark": "false", "off_peak": "false", "duration": 5.0, "seed": "123", "bgm": "true",
}


class Echoing:
    """Answers every create and query with ``answer`` (plus the id), counting the calls."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.calls: list[str] = []

    async def create(self, request: web.Request) -> web.Response:
        self.calls.append("create")
        return web.json_response({"task_id": "911", **self.answer})

    async def query(self, request: web.Request) -> web.Response:
        self.calls.append("query")
        return web.json_response({"id": request.match_info["id"], **self.answer})

    async def listing(self, request: web.Request) -> web.Response:
        self.calls.append("list")
        return web.json_response({"tasks": []})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/ent/v2/text2video", self.create)
        app.router.add_get("/ent/v2/tasks/{id}/creations", self.query)
        app.router.add_get("/ent/v2/tasks", self.listing)
        return app


async def client_of(aiohttp_server: ServerFactory, server: Echoing) -> ViduClient:
    running = await aiohttp_server(server.app())
    retry = RetryPolicy(max_attempts=2, sleep=no_wait, visibility_lag=0.0)
    return ViduClient("k-answers", base_url=str(running.make_url("/")), retry=retry)


async def test_a_create_answer_with_odd_echoes_is_the_task(aiohttp_server: ServerFactory) -> None:
    server = Echoing({"state": "created", "credits": 10, **ODD_ECHOES})
    async with await client_of(aiohttp_server, server) as client:
        task = await client.create(TextToVideoRequest("viduq2", "a fox", duration=5))
    assert server.calls == ["create"]  # no lookup, no second create
    assert (task.task_id, task.state, task.credits) == ("911", TaskState.CREATED, 10)
    assert (task.watermark, task.off_peak, task.duration, task.seed) == (False, False, 5, 123)


async def test_waiting_reads_a_result_with_odd_echoes(aiohttp_server: ServerFactory) -> None:
    creation = {"id": "c1", "url": "https://cdn.example/v.mp4"}
    server = Echoing({"state": "success", "creations": [creation], **ODD_ECHOES})
    async with await client_of(aiohttp_server, server) as client:
        result = await client.wait_for_task("911", timeout=5)
    assert result.succeeded and result.bgm is True and result.creations[0].url == creation["url"]


@pytest.mark.parametrize(("field", "value"), [("state", 1), ("credits", "10"), ("task_id", 911)])
async def test_a_create_answer_naming_a_task_in_a_shape_not_readable_is_never_sent_again(
    aiohttp_server: ServerFactory, field: str, value: Any
) -> None:
    """The answer names its task, so the task exists (billed): when the task list does not
    show it (this server's list is empty), the create ends ambiguous naming the field, never
    sent again as a create proven absent would be."""
    server = Echoing({"state": "created", "credits": 10, field: value})
    async with await client_of(aiohttp_server, server) as client:
        with pytest.raises(AmbiguousCreateError, match="911") as caught:
            await client.create(TextToVideoRequest("viduq2", "a fox"))
    assert server.calls.count("create") == 1
    assert isinstance(caught.value.cause, ResponseFormatError)
    assert caught.value.cause.field == field


async def test_a_create_answer_without_a_task_is_a_lost_answer_and_sent_again_once_proven_absent(
    aiohttp_server: ServerFactory
) -> None:
    server = Echoing({"state": "created", "credits": 10, "task_id": ""})
    async with await client_of(aiohttp_server, server) as client:
        with pytest.raises(ResponseFormatError, match=r"^task_id: "):
            await client.create(TextToVideoRequest("viduq2", "a fox"))
    assert server.calls.count("create") == 2  # max_attempts


# --- large answers -------------------------------------------------------------------------------


def echo_app() -> web.Application:
    """A create that answers with its request echoed whole (as Vidu echoes inline images), and
    a query that answers with ``size`` bytes of image data."""

    async def create(request: web.Request) -> web.Response:
        sent = await request.read()
        body = b'{"task_id": "911", "state": "created", "request": ' + sent + b"}"
        return web.Response(body=body, content_type="application/json")

    async def query(request: web.Request) -> web.Response:
        size = int(request.query["size"])
        return web.json_response({"id": "911", "images": [IMAGE + "A" * size]})

    app = web.Application(client_max_size=MAX_ANSWER_BYTES * 2)
    app.router.add_post("/ent/v2/reference2video", create)
    app.router.add_get("/ent/v2/tasks/911/creations", query)
    return app


IMAGE = "data:image/png;base64,"


async def test_a_create_answer_echoing_more_than_the_answer_cap_is_read(
    aiohttp_server: ServerFactory,
) -> None:
    server = await aiohttp_server(echo_app())
    images = [IMAGE + "A" * (MAX_ANSWER_BYTES // 2)] * 2  # an answer cap of inline images
    body = json.dumps({"model": "viduq2", "prompt": "x", "images": images}).encode()
    pool = SessionPool()
    try:
        answer = await send(pool, Account("k-answers", str(server.make_url("/"))), "POST",
                            "/reference2video", body=body)
    finally:
        await pool.close()
    assert Task.from_dict(answer).task_id == "911" and answer["request"]["images"] == images


async def test_a_large_answer_is_parsed_off_the_event_loop(aiohttp_server: ServerFactory) -> None:
    """JSON decoded on the loop's thread is seen by a profiler there (one per thread): the
    small answer is, the large one is not, and both arrive whole."""
    server = await aiohttp_server(echo_app())
    account = Account("k-answers", str(server.make_url("/")))
    decoded_here: list[int] = []

    def profile(frame: FrameType, event: str, _: object) -> None:
        if event == "call" and frame.f_code is JSONDecoder.decode.__code__:
            decoded_here.append(len(frame.f_locals["s"]))

    pool = SessionPool()
    answers = []
    sys.setprofile(profile)
    try:
        for size in (1000, PARSE_OFF_LOOP):
            answers.append(await send(pool, account, "GET", "/tasks/911/creations",
                                      params=[("size", str(size))]))
    finally:
        sys.setprofile(None)
        await pool.close()
    assert [len(a["images"][0]) - len(IMAGE) for a in answers] == [1000, PARSE_OFF_LOOP]
    assert len(decoded_here) == 1 and decoded_here[0] < PARSE_OFF_LOOP
