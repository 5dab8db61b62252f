"""ViduClient against a small scripted Vidu server on 127.0.0.1 (real sockets, scripted faults)."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import logging
import socket
import traceback
from collections.abc import Awaitable, Callable
from email.utils import format_datetime
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from vidu_async._http import Account, SessionPool, _connection_error
from vidu_async._keys import REMEMBERED
from vidu_async._version import __version__
from vidu_async.client import SCAN_RETRY_WAIT, ViduClient
from vidu_async.errors import (
    AmbiguousCreateError,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    ConfigurationError,
    InsufficientCreditsError,
    NotFoundError,
    RateLimitError,
    ResponseFormatError,
    ServerError,
    TaskTimeoutError,
    ValidationError,
)
from vidu_async.requests import ReferenceToVideoRequest
from vidu_async.retry import RetryPolicy, no_wait
from vidu_async.tasks import TaskState, new_correlation_key, split_payload
from vidu_async.testing import ManualClock

KEY = "sk-test-0123456789abcdef-SECRET"
IMAGE = "https://example.com/cat.png"

ServerFactory = Callable[..., Awaitable[TestServer]]


def error_body(code: int, reason: str, message: str = "") -> dict[str, Any]:
    return {"code": code, "reason": reason, "message": message, "metadata": {"trace_id": "tr-1"}}


class FakeVidu:
    """Just enough of the Vidu API, with scripted faults.

    ``create_faults`` / ``list_faults`` / ``query_faults`` are consumed one per call (then
    normal). A fault is a status code (answered with a Vidu error body, the task not created),
    or one of: "reset-after" / "500-after" / "409-after" / "hang-after" / "truncated-after"
    (create the task, then drop the connection / answer 500 or 409 / not answer until
    ``release`` / cut the answer
    short), "html-502", "redirect", "garbage" (a 200 that is not JSON), "empty" (an empty
    task list).
    """

    def __init__(self) -> None:
        self.tasks: dict[str, dict[str, Any]] = {}
        self.progress: dict[str, list[dict[str, Any]]] = {}
        self.calls: list[str] = []
        self.create_bodies: list[dict[str, Any]] = []
        self.content_types: list[str] = []
        self.authorizations: list[str | None] = []
        self.user_agents: list[str | None] = []
        self.peers: set[Any] = set()
        self.create_faults: list[Any] = []
        self.list_faults: list[Any] = []
        self.query_faults: list[Any] = []
        self.headers: dict[str, str] = {}
        self.list_queries: list[dict[str, str]] = []
        self.release = asyncio.Event()
        self._ids = itertools.count(900_000_000_000_000_001)

    def count(self, call: str) -> int:
        return self.calls.count(call)

    def app(self) -> web.Application:
        app = web.Application(
            middlewares=[self._record_and_authenticate], client_max_size=21 * 1024 * 1024
        )
        app.router.add_post("/ent/v2/reference2video", self._create)
        app.router.add_get("/ent/v2/tasks", self._list)
        app.router.add_get("/ent/v2/tasks/{id}/creations", self._query)
        app.router.add_post("/ent/v2/tasks/{id}/cancel", self._cancel)
        app.router.add_get("/ent/v2/credits", self._credits)
        app.router.add_get("/elsewhere", self._elsewhere)
        return app

    @web.middleware
    async def _record_and_authenticate(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.calls.append(f"{request.method} {request.path}")
        self.authorizations.append(request.headers.get("Authorization"))
        self.user_agents.append(request.headers.get("User-Agent"))
        self.peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        if request.headers.get("Authorization") != f"Token {KEY}":
            return web.json_response(error_body(401, "Unauthorized", "bad key"), status=401)
        return await handler(request)

    async def _fault(self, faults: list[Any], request: web.Request) -> web.StreamResponse | None:
        fault = faults.pop(0) if faults else None
        if isinstance(fault, int):
            reason = {
                429: "TooManyRequests",
                400: "OperationInProcess",
                500: "InternalServiceFailure",
            }
            if fault == 402:  # stands for a 400 CreditInsufficient
                return web.json_response(error_body(400, "CreditInsufficient"), status=400)
            return web.json_response(
                error_body(fault, reason.get(fault, "Oops")), status=fault, headers=self.headers
            )
        if fault == "html-502":
            page = "<html><body><h1>502 Bad Gateway</h1><p>nginx</p></body></html>"
            return web.Response(text=page, status=502, content_type="text/html")
        if fault == "redirect":
            return web.Response(status=302, headers={"Location": "/elsewhere?token=abc"})
        if fault == "empty":
            return web.json_response({"tasks": [], "next_page_token": ""})
        if fault == "garbage":
            return web.Response(text="<html>hello</html>", content_type="text/html")
        return None

    async def _elsewhere(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({})

    async def _create(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.create_bodies.append(body)
        self.content_types.append(request.content_type)
        fault = self.create_faults.pop(0) if self.create_faults else None
        scripted = ("reset-after", "500-after", "409-after", "hang-after", "truncated-after")
        if fault not in (*scripted, None):
            self.create_faults.insert(0, fault)
            answer = await self._fault(self.create_faults, request)
            assert answer is not None
            return answer
        task = self.add_task(
            payload=body.get("payload", ""), model=body["model"], prompt=body["prompt"]
        )
        if fault == "reset-after":
            assert request.transport is not None
            request.transport.abort()
            raise ConnectionResetError("scripted reset")
        if fault == "500-after":
            return web.json_response(error_body(500, "InternalServiceFailure"), status=500)
        if fault == "409-after":
            return web.json_response(error_body(409, "Conflict"), status=409)
        if fault == "hang-after":
            await asyncio.wait_for(self.release.wait(), 5)
        if fault == "truncated-after":
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.content_length = 1000
            await response.prepare(request)
            await response.write(b'{"task_id": "9')
            assert request.transport is not None
            request.transport.abort()
            raise ConnectionResetError("scripted truncation")
        answer = {
            "task_id": task["id"],
            "type": "reference2video",
            "state": "created",
            "model": task["model"],
            "prompt": task["prompt"],
            "images": body.get("images", []),
            "credits": 45,
            "payload": task["payload"],
            "created_at": task["created_at"],
        }
        return web.json_response(answer)

    def add_task(self, **fields: Any) -> dict[str, Any]:
        task = {
            "id": str(next(self._ids)),
            "state": "created",
            "err_code": "",
            "credits": 45,
            "payload": "",
            "model": "viduq2",
            "prompt": "",
            "creations": [],
            "created_at": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
        }
        task.update(fields)
        self.tasks[task["id"]] = task
        return task

    async def _list(self, request: web.Request) -> web.StreamResponse:
        answer = await self._fault(self.list_faults, request)
        if answer is not None:
            return answer
        q = request.query
        self.list_queries.append(dict(q))
        since = dt.datetime.fromisoformat(q.get("created_at.from", "2000-01-01T00:00:00Z"))
        until = dt.datetime.fromisoformat(q.get("created_at.to", "2100-01-01T00:00:00Z"))
        ids, states = q.getall("task_ids", []), q.getall("states", [])
        matching = [
            t
            for t in self.tasks.values()
            if since <= dt.datetime.fromisoformat(t["created_at"]) <= until
            and (not ids or t["id"] in ids)
            and (not states or t["state"] in states)
        ]
        size = int(q.get("pager.pagesz", "10"))
        start = int(q.get("pager.page_token") or 0)
        end = start + size
        token = str(end) if end < len(matching) else ""
        return web.json_response({"tasks": matching[start:end], "next_page_token": token})

    async def _query(self, request: web.Request) -> web.StreamResponse:
        answer = await self._fault(self.query_faults, request)
        if answer is not None:
            return answer
        task_id = request.match_info["id"]
        if task_id not in self.tasks:
            return web.json_response(error_body(404, "TaskNotFound"), status=404)
        steps = self.progress.get(task_id)
        if steps:
            self.tasks[task_id].update(steps.pop(0))
        return web.json_response(self.tasks[task_id])

    async def _cancel(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        task = self.tasks[request.match_info["id"]]
        assert body == {"id": task["id"]}
        task["state"] = "failed"
        task["err_code"] = "Cancelled"
        return web.json_response({})

    async def _credits(self, request: web.Request) -> web.StreamResponse:
        answer = await self._fault(self.query_faults, request)
        if answer is not None:
            return answer
        return web.json_response(
            {
                "remains": [
                    {
                        "type": "metered",
                        "credit_remain": 1000,
                        "concurrency_limit": 5,
                        "current_concurrency": 2,
                        "queue_count": 7,
                    }
                ],
                "packages": [],
            }
        )


@pytest.fixture
def vidu() -> FakeVidu:
    return FakeVidu()


@pytest.fixture
async def server(vidu: FakeVidu, aiohttp_server: ServerFactory) -> Any:
    server = await aiohttp_server(vidu.app())
    yield server
    vidu.release.set()


@pytest.fixture
async def client(server: TestServer, policy: RetryPolicy) -> Any:
    async with ViduClient(KEY, base_url=str(server.make_url("/")), retry=policy) as client:
        yield client


def request(payload: str | None = "my own payload") -> ReferenceToVideoRequest:
    return ReferenceToVideoRequest("viduq2", "a cat surfing", images=(IMAGE,), payload=payload)


# --- configuration -------------------------------------------------------------------------


def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIDU_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="VIDU_API_KEY"):
        ViduClient()


def test_environment_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDU_API_KEY", KEY)
    monkeypatch.setenv("VIDU_BASE_URL", "https://api.vidu.cn/ent/v2/")
    monkeypatch.setenv("VIDU_AUTH_SCHEME", "Bearer")
    client = ViduClient()
    assert client.account == Account(KEY, "https://api.vidu.cn", "Bearer")
    monkeypatch.delenv("VIDU_BASE_URL")
    monkeypatch.delenv("VIDU_AUTH_SCHEME")
    assert ViduClient().account == Account(KEY, "https://api.vidu.com", "Token")
    assert ViduClient("other-key").account.api_key == "other-key"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://api.vidu.com", "https://api.vidu.com"),
        ("https://api.vidu.com/", "https://api.vidu.com"),
        ("https://api.vidu.com/ent/v2", "https://api.vidu.com"),
        ("https://api.vidu.com/ent/v2/", "https://api.vidu.com"),
        ("https://gateway.example/vidu/ent/v2", "https://gateway.example/vidu"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://127.3.4.5", "http://127.3.4.5"),
        ("http://localhost:9000/ent/v2", "http://localhost:9000"),
        ("http://[::1]:9000", "http://[::1]:9000"),
    ],
)
def test_base_url_forms(given: str, expected: str) -> None:
    assert Account(KEY, given).base_url == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://api.vidu.com",
        "http://10.0.0.1",
        "http://128.0.0.1",
        "ftp://api.vidu.com",
        "api.vidu.com",
    ],
)
def test_key_is_never_configured_for_plain_http_or_other_schemes(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Account(KEY, url)
    assert KEY not in str(info.value)


def test_key_is_not_in_reprs() -> None:
    client = ViduClient(KEY)
    assert KEY not in repr(client)
    assert KEY not in repr(client.account)
    assert KEY not in str(client.account)
    assert "api.vidu.com" in repr(client)


@pytest.mark.parametrize("key", ["", " padded-secret", "line\nbreak-secret"])
def test_a_malformed_key_is_refused_without_echoing_it(key: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Account(key)
    assert "secret" not in str(info.value)


def test_pool_settings_are_not_silently_ignored() -> None:
    with pytest.raises(ConfigurationError, match="pool"):
        ViduClient(KEY, pool=SessionPool(), limit=3)


@pytest.mark.parametrize(
    "url",
    [
        "https://api.vidu.com:99999",
        "https://api.vidu.com:abc",
        "https://api.vidu.com:-1",
        "http://127.0.0.1:0",
        "https://api.vidu .com",
        "https://api.vidu.com\n.example",
        "http://[::1",
        "http://[::1]x:80",
    ],
)
def test_a_base_url_no_request_can_be_made_to_is_refused_at_once(url: str) -> None:
    with pytest.raises(ConfigurationError, match="base_url"):
        ViduClient(KEY, base_url=url)


# --- the endpoints -------------------------------------------------------------------------


async def test_create_sends_the_correlation_envelope_and_keeps_the_user_payload(
    client: ViduClient, vidu: FakeVidu
) -> None:
    task = await client.create_reference2video(request(), correlation_key="ab" * 16)
    assert task.task_id in vidu.tasks
    assert task.payload == "my own payload"
    assert task.correlation_key == "ab" * 16
    assert task.credits == 45
    (body,) = vidu.create_bodies
    assert body["payload"] == "va1:" + "ab" * 16 + ":my own payload"
    assert body["images"] == [IMAGE]
    assert vidu.authorizations == [f"Token {KEY}"]
    assert vidu.user_agents == [f"vidu-async/{__version__}"]
    assert vidu.content_types == ["application/json"]


async def test_create_without_a_user_payload_still_carries_a_fresh_key(
    client: ViduClient, vidu: FakeVidu
) -> None:
    first = await client.create_reference2video(request(payload=None))
    second = await client.create_reference2video(request(payload=None))
    assert first.payload == second.payload == ""
    assert first.correlation_key and second.correlation_key
    assert first.correlation_key != second.correlation_key


async def test_an_invalid_request_is_never_sent(client: ViduClient, vidu: FakeVidu) -> None:
    bad = ReferenceToVideoRequest("viduq2", "", images=(IMAGE,), duration=99)
    with pytest.raises(ValidationError) as info:
        await client.create_reference2video(bad)
    assert {"prompt", "duration"} <= set(info.value.fields)
    assert vidu.calls == []


async def test_a_dict_instead_of_a_request_is_a_type_error_that_says_so(
    client: ViduClient, vidu: FakeVidu
) -> None:
    for call in (client.create, client.prepare_create_body):
        with pytest.raises(TypeError, match=r"request must be a request object .*, not dict"):
            await call({"model": "viduq2", "prompt": "a cat"}, correlation_key="a" * 32)  # type: ignore[arg-type]
    assert vidu.calls == []


async def test_a_payload_too_long_once_wrapped_is_refused_before_sending(
    client: ViduClient, vidu: FakeVidu
) -> None:
    with pytest.raises(ValidationError) as info:
        await client.create_reference2video(request(payload="x" * (1_048_576 - 10)))
    assert info.value.fields == ("payload",)
    assert "at most 1048539 characters" in str(info.value)
    await client.create_reference2video(request(payload="x" * 1_048_539))  # exactly fits
    assert vidu.calls == ["POST /ent/v2/reference2video"]
    assert len(vidu.create_bodies[0]["payload"]) == 1_048_576


async def test_get_task_cancel_and_credits(client: ViduClient, vidu: FakeVidu) -> None:
    task = vidu.add_task(payload="va1:" + "cd" * 16 + ":mine", state="queueing")
    result = await client.get_task(task["id"])
    assert (result.id, result.state, result.payload, result.correlation_key) == (
        task["id"],
        TaskState.QUEUEING,
        "mine",
        "cd" * 16,
    )
    await client.cancel_task(task["id"])
    assert (await client.get_task(task["id"])).err_code == "Cancelled"
    credits = await client.get_credits()
    assert credits.remains[0].credit_remain == 1000
    assert credits.remains[0].queue_count == 7


async def test_paced_requests_wait_their_turn_and_creates_are_left_to_their_caller(
    client: ViduClient, vidu: FakeVidu
) -> None:
    turns: list[int] = []

    async def pacer() -> None:
        turns.append(len(vidu.calls))  # how many requests the server had seen by then

    task = vidu.add_task(state="queueing")
    vidu.query_faults = [503]  # a retried query waits its turn again
    with client.paced(pacer):
        await client.create_reference2video(request())
        await client.get_task(task["id"])
        await client.get_credits()
    # The query, its retry and the credits each waited before being sent; the create did not.
    assert turns == [1, 2, 3]
    await client.get_credits()
    assert turns == [1, 2, 3]  # not paced any more


async def test_a_paced_request_answered_429_is_told_to_the_pacing(
    client: ViduClient, vidu: FakeVidu
) -> None:
    """A batch pacing its account learns of a limit from every request it paces (its closing
    scan's pages met a probing pace's 429s one after another, and the pace never heard)."""
    refusals: list[float | None] = []

    async def pacer() -> None:
        pass

    task = vidu.add_task(state="queueing")
    vidu.headers = {"Retry-After": "2"}
    vidu.query_faults = [429]
    with client.paced(pacer, refusals.append):
        assert (await client.get_task(task["id"])).id == task["id"]  # retried, then answered
    assert refusals == [2.0]
    vidu.query_faults = [429]
    await client.get_task(task["id"])  # not paced any more: nobody to tell
    assert refusals == [2.0]


async def test_a_paced_request_answered_is_told_to_the_pacing_with_its_turn(
    client: ViduClient, vidu: FakeVidu
) -> None:
    """Each paced request answered (a success, or an error other than a 429) hands its
    pacer's turn back, once; a 429 goes to ``refused`` instead, and its retry's own turn comes
    back when that is answered."""
    turns = iter(range(1, 100))
    answered: list[int] = []
    refusals: list[float | None] = []

    async def pacer() -> int:
        return next(turns)

    task = vidu.add_task(state="queueing")
    vidu.query_faults = [429]
    with client.paced(pacer, refusals.append, answered.append):
        await client.get_task(task["id"])  # turn 1 refused, turn 2 answered
        with pytest.raises(NotFoundError):
            await client.get_task("no-such-task")  # turn 3: answered all the same
        await client.create_reference2video(request())  # a create takes no turn
    assert refusals == [None]
    assert answered == [2, 3]


async def test_a_missing_task_is_not_found_without_retrying(
    client: ViduClient, vidu: FakeVidu
) -> None:
    with pytest.raises(NotFoundError) as info:
        await client.get_task("../../credits")
    assert info.value.reason == "TaskNotFound"  # the id stayed one path segment
    assert info.value.trace_id == "tr-1"
    assert info.value.call == "GET /ent/v2/tasks/..%2F..%2Fcredits/creations"
    assert len(vidu.calls) == 1


async def test_calls_reuse_one_session_and_connection(client: ViduClient, vidu: FakeVidu) -> None:
    for _ in range(3):
        await client.get_credits()
    assert len(vidu.peers) == 1


async def test_list_tasks_walks_every_page_with_filters(client: ViduClient, vidu: FakeVidu) -> None:
    made = [vidu.add_task(state="success" if i % 2 else "failed") for i in range(25)]
    listed = [t.id async for t in client.list_tasks(page_size=10)]
    assert listed == [t["id"] for t in made]
    assert vidu.count("GET /ent/v2/tasks") == 3
    wanted = [t["id"] for t in made[:5]]
    picked = [t.id async for t in client.list_tasks(task_ids=wanted, states=[TaskState.SUCCESS])]
    assert picked == [t for t in wanted if vidu.tasks[t]["state"] == "success"]
    future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    assert [t async for t in client.list_tasks(created_after=future)] == []


async def test_list_tasks_checks_its_arguments_before_any_call(
    client: ViduClient, vidu: FakeVidu
) -> None:
    with pytest.raises(ValidationError, match="at most 100 per call, got 101"):
        client.list_tasks(task_ids=[str(i) for i in range(101)])
    with pytest.raises(ValidationError, match="page_size"):
        client.list_tasks(page_size=101)
    with pytest.raises(ValidationError, match="timezone-aware"):
        client.list_tasks(created_after=dt.datetime(2026, 1, 1))
    assert vidu.calls == []


async def test_find_task_by_correlation_key(client: ViduClient, vidu: FakeVidu) -> None:
    for _ in range(150):
        vidu.add_task(payload="someone else's")
    target = vidu.add_task(payload="va1:" + "ef" * 16 + ":x")
    now = dt.datetime.now(dt.UTC)
    hour = dt.timedelta(hours=1)
    found = await client.find_task_by_correlation_key(
        "ef" * 16, created_after=now - hour, created_before=now + hour
    )
    assert found is not None and found.id == target["id"]
    missing = await client.find_task_by_correlation_key(
        "00" * 16, created_after=now - hour, created_before=now + hour
    )
    assert missing is None


async def test_a_lookups_failed_page_is_asked_again_soon_a_listings_after_the_backoff(
    client: ViduClient, vidu: FakeVidu, time: ManualClock
) -> None:
    # Every key waiting on a lookup's scan waits with its page: retried within SCAN_RETRY_WAIT.
    now = dt.datetime.now(dt.UTC)
    hour = dt.timedelta(hours=1)
    vidu.list_faults = [500]
    missing = await client.find_task_by_correlation_key(
        "00" * 16, created_after=now - hour, settled_at=now - hour  # no lag left to wait
    )
    assert missing is None
    assert time.waits == [SCAN_RETRY_WAIT]  # random() is 1.0: the ceiling itself
    vidu.list_faults = [500]
    assert [t async for t in client.list_tasks()] == []
    assert time.waits == [SCAN_RETRY_WAIT, client.retry.initial_wait]
    assert vidu.count("GET /ent/v2/tasks") == 4


# --- errors ----------------------------------------------------------------------------------


async def test_wrong_key_fails_after_exactly_one_request(
    server: TestServer, vidu: FakeVidu, policy: RetryPolicy
) -> None:
    async with ViduClient("wrong-key", base_url=str(server.make_url("/")), retry=policy) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.create_reference2video(request())
    assert vidu.calls == ["POST /ent/v2/reference2video"]
    assert info.value.status == 401
    assert "VIDU_API_KEY" in str(info.value)
    assert "auth_scheme" in str(info.value)
    assert vidu.tasks == {}


async def test_credit_insufficient_is_never_retried(client: ViduClient, vidu: FakeVidu) -> None:
    vidu.create_faults = [402]
    with pytest.raises(InsufficientCreditsError):
        await client.create_reference2video(request())
    assert vidu.count("POST /ent/v2/reference2video") == 1


async def test_an_html_error_page_still_gives_a_useful_error(
    client: ViduClient, vidu: FakeVidu, time: ManualClock
) -> None:
    vidu.query_faults = ["html-502"] * 5
    with pytest.raises(ServerError) as info:
        await client.get_credits()
    assert info.value.status == 502
    assert "502 Bad Gateway nginx" in str(info.value)
    assert "GET /ent/v2/credits" in str(info.value)
    assert "<h1>" not in info.value.message
    assert vidu.count("GET /ent/v2/credits") == 5  # retried: a GET on a 5xx


async def test_a_non_json_success_is_a_format_error(client: ViduClient, vidu: FakeVidu) -> None:
    vidu.query_faults = ["garbage"]
    with pytest.raises(ResponseFormatError, match="not JSON"):
        await client.get_credits()


async def test_redirects_are_refused_not_followed(client: ViduClient, vidu: FakeVidu) -> None:
    vidu.query_faults = ["redirect"]
    with pytest.raises(APIStatusError) as info:
        await client.get_credits()
    assert info.value.status == 302
    assert "base_url" in str(info.value)
    assert "token=abc" not in str(info.value)
    assert vidu.calls == ["GET /ent/v2/credits"]


async def test_connection_refused_is_never_sent_and_retried(
    policy: RetryPolicy, time: ManualClock
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with ViduClient(KEY, base_url=f"http://127.0.0.1:{port}", retry=policy) as client:
        with pytest.raises(APIConnectionError) as info:
            await client.create_reference2video(request())
    assert info.value.sent is False
    assert info.value.call == "POST /ent/v2/reference2video"
    assert time.waits == [1.0, 2.0, 4.0, 8.0]  # resent: it never left


@pytest.mark.parametrize(
    ("error", "sent"),
    [
        (aiohttp.InvalidUrlClientError("https://api.vidu.com:99999/ent/v2/tasks"), False),
        (aiohttp.NonHttpUrlClientError("ftp://api.vidu.com/ent/v2/tasks"), False),
        (aiohttp.InvalidUrlRedirectClientError("http://[::1", "bad Location"), True),
        (aiohttp.ServerDisconnectedError(), True),
    ],
)
def test_a_url_aiohttp_refuses_to_request_was_never_sent(error: Exception, sent: bool) -> None:
    assert _connection_error(error, "POST /ent/v2/text2video", ()).sent is sent


# --- retries ---------------------------------------------------------------------------------


async def test_queries_retry_429_5xx_and_operation_in_process(
    client: ViduClient, vidu: FakeVidu, time: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vidu_async")
    vidu.query_faults = [429, 500, 400]
    assert (await client.get_credits()).remains
    assert vidu.count("GET /ent/v2/credits") == 4
    assert time.waits == [1.0, 2.0, 4.0]
    logged = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert ["429 TooManyRequests" in logged[0], "OperationInProcess" in logged[2]] == [True, True]


@pytest.mark.parametrize("fault", [429, 400])
async def test_creates_are_resent_when_the_server_refused_them(
    client: ViduClient, vidu: FakeVidu, time: ManualClock, fault: int
) -> None:
    vidu.create_faults = [fault, fault]
    task = await client.create_reference2video(request())
    assert vidu.count("POST /ent/v2/reference2video") == 3
    assert list(vidu.tasks) == [task.task_id]
    assert vidu.count("GET /ent/v2/tasks") == 0  # no lookup needed


async def test_a_caller_pacing_itself_gets_429_at_once(
    client: ViduClient, vidu: FakeVidu, time: ManualClock
) -> None:
    vidu.create_faults = [429]
    with pytest.raises(RateLimitError) as info:
        await client.create_reference2video(request(), retry_rate_limits=False)
    assert info.value.reason == "TooManyRequests"
    assert vidu.count("POST /ent/v2/reference2video") == 1
    assert time.waits == []


async def test_retry_after_seconds_and_http_date_are_honoured(
    client: ViduClient, vidu: FakeVidu, time: ManualClock
) -> None:
    vidu.headers = {"Retry-After": "17"}
    vidu.create_faults = [429]
    await client.create_reference2video(request())
    vidu.headers = {
        "Retry-After": format_datetime(
            dt.datetime.now(dt.UTC) + dt.timedelta(seconds=40), usegmt=True
        )
    }
    vidu.create_faults = [429]
    await client.create_reference2video(request())
    assert time.waits[0] == 17.0
    assert 37.0 < time.waits[1] <= 40.0


async def test_a_retry_after_over_the_cap_is_raised_not_slept(
    client: ViduClient, vidu: FakeVidu, time: ManualClock
) -> None:
    vidu.headers = {"retry-after-ms": "600000"}
    vidu.create_faults = [429]
    with pytest.raises(RateLimitError) as info:
        await client.create_reference2video(request())
    assert info.value.retry_after == 600.0
    assert time.waits == []
    assert vidu.tasks == {}


async def test_the_time_budget_bounds_a_call(
    server: TestServer, vidu: FakeVidu, time: ManualClock
) -> None:
    policy = RetryPolicy(
        sleep=time.sleep, clock=time, random=lambda: 1.0, max_attempts=50, budget=20.0
    )
    vidu.query_faults = [500] * 50
    async with ViduClient(KEY, base_url=str(server.make_url("/")), retry=policy) as client:
        with pytest.raises(ServerError):
            await client.get_credits()
    assert time.waits == [1.0, 2.0, 4.0, 8.0]  # 15 s waited; 16 more would overrun 20 s
    assert vidu.count("GET /ent/v2/credits") == 5


# --- ambiguous creates -----------------------------------------------------------------------


async def ambiguous_client(
    server: TestServer, policy: RetryPolicy, sock_read: float | None = None
) -> ViduClient:
    timeout = aiohttp.ClientTimeout(total=10, sock_read=sock_read)
    return ViduClient(KEY, base_url=str(server.make_url("/")), retry=policy, timeout=timeout)


@pytest.mark.parametrize("fault", ["reset-after", "500-after", "hang-after", "truncated-after"])
async def test_a_lost_answer_finds_the_task_instead_of_paying_twice(
    server: TestServer, vidu: FakeVidu, policy: RetryPolicy, fault: str
) -> None:
    vidu.create_faults = [fault]
    async with await ambiguous_client(server, policy, sock_read=0.2) as client:
        task = await client.create_reference2video(request())
    vidu.release.set()
    assert vidu.count("POST /ent/v2/reference2video") == 1
    (only,) = vidu.tasks.values()
    assert task.task_id == only["id"]
    assert task.payload == "my own payload"
    assert split_payload(only["payload"]) == (task.correlation_key, "my own payload")
    assert task.model == "viduq2"


async def test_a_409_conflict_on_create_is_looked_up_and_the_task_returned(
    client: ViduClient, vidu: FakeVidu, time: ManualClock
) -> None:
    vidu.create_faults = ["409-after"]
    task = await client.create_reference2video(request())
    assert vidu.count("POST /ent/v2/reference2video") == 1
    assert list(vidu.tasks) == [task.task_id]
    assert task.payload == "my own payload"
    assert time.waits == []  # found at once: no wait needed


async def test_lookups_send_both_page_size_spellings_and_no_window_end(
    client: ViduClient, vidu: FakeVidu
) -> None:
    vidu.create_faults = ["500-after"]
    await client.create_reference2video(request())
    assert vidu.list_queries[0]["pager.pagesz"] == vidu.list_queries[0]["paper.pagesz"] == "100"
    assert "created_at.from" in vidu.list_queries[0]
    assert "created_at.to" not in vidu.list_queries[0]


async def test_a_cancelled_create_retried_with_the_same_key_makes_one_task(
    client: ViduClient, vidu: FakeVidu
) -> None:
    vidu.create_faults = ["hang-after"]  # the task is created; its answer never comes
    key = new_correlation_key()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await client.create_reference2video(request(), correlation_key=key)
    (only,) = vidu.tasks.values()
    found = await client.find_task_by_correlation_key(key)
    task = await client.create_reference2video(request(), correlation_key=key)
    assert found is not None and found.id == task.task_id == only["id"]
    assert vidu.count("POST /ent/v2/reference2video") == 1  # looked up, never resent
    assert task.payload == "my own payload"


async def test_creates_sharing_a_key_at_once_send_it_once(
    client: ViduClient, vidu: FakeVidu
) -> None:
    """Two workers retrying one key together: the second waits for the first (here cut off by
    a timeout, its task made and its answer never sent); the next call looks it up."""
    vidu.create_faults = ["hang-after"]
    key = new_correlation_key()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await asyncio.gather(
                client.create_reference2video(request(), correlation_key=key),
                client.create_reference2video(request(), correlation_key=key),
            )
    task = await client.create_reference2video(request(), correlation_key=key)
    assert list(vidu.tasks) == [task.task_id]
    assert vidu.count("POST /ent/v2/reference2video") == 1


async def test_a_key_that_made_a_task_returns_it_again_and_refuses_another_request(
    client: ViduClient, vidu: FakeVidu
) -> None:
    key = new_correlation_key()
    first = await client.create_reference2video(request(), correlation_key=key)
    again = await client.create_reference2video(request(), correlation_key=key)
    assert again == first
    other = attrs.evolve(request(), prompt="another prompt")
    with pytest.raises(ValueError, match=f"correlation key {key} already made task "
                                         f"{first.task_id} for another request"):
        await client.create_reference2video(other, correlation_key=key)
    assert vidu.count("POST /ent/v2/reference2video") == 1


async def test_a_cut_off_key_reused_for_another_request_is_refused_not_answered(
    client: ViduClient, vidu: FakeVidu
) -> None:
    """The key's first create was cut off (its task made, its answer never read): a create of
    another request under it finds that task, and refuses, before sending anything."""
    vidu.create_faults = ["hang-after"]
    key = new_correlation_key()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await client.create_reference2video(request(), correlation_key=key)
    (only,) = vidu.tasks.values()
    other = attrs.evolve(request(), prompt="another prompt")
    for _ in range(2):  # found by a lookup, then remembered: no scan the second time
        with pytest.raises(ValueError, match=f"correlation key {key} already made task "
                                             f"{only['id']} for another request"):
            await client.create_reference2video(other, correlation_key=key)
    assert vidu.count("GET /ent/v2/tasks") == 1
    task = await client.create_reference2video(request(), correlation_key=key)
    assert task.task_id == only["id"]
    assert vidu.count("POST /ent/v2/reference2video") == 1


async def test_the_client_remembers_only_its_latest_cut_off_creates(
    client: ViduClient, vidu: FakeVidu
) -> None:
    keys = [new_correlation_key() for _ in range(REMEMBERED + 1)]
    for key in keys:  # cut off before any answer (most before they are even sent)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0):
                await client.create_reference2video(request(), correlation_key=key)
    assert list(client._unsettled) == keys[1:]  # the oldest forgotten, the latest kept


async def test_a_cut_off_create_the_client_no_longer_remembers_is_looked_up_before_a_resend(
    client: ViduClient, vidu: FakeVidu
) -> None:
    """An outage cuts off many creates, retried later with their keys: the oldest, past what
    the client keeps of each, is still looked up first and its task returned, never paid
    again."""
    vidu.create_faults = ["hang-after"]  # made, then no answer
    key = new_correlation_key()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await client.create_reference2video(request(), correlation_key=key)
    (made,) = vidu.tasks.values()
    for other in [new_correlation_key() for _ in range(REMEMBERED)]:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0):
                await client.create_reference2video(request(), correlation_key=other)
    assert key not in client._unsettled
    task = await client.create_reference2video(request(), correlation_key=key)
    assert task.task_id == made["id"]
    assert [t["id"] for t in vidu.tasks.values()].count(made["id"]) == 1
    assert sum(key in str(t.get("payload")) for t in vidu.tasks.values()) == 1


async def test_a_create_proven_absent_is_resent_with_the_same_key(
    client: ViduClient, vidu: FakeVidu, time: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vidu_async")
    vidu.create_faults = [500]  # refused before creating anything
    task = await client.create_reference2video(request())
    assert vidu.count("POST /ent/v2/reference2video") == 2
    # At once, then once absence can be proven (and again if the clock seems to have jumped:
    # this test's clock stands still while the server's Date runs).
    assert vidu.count("GET /ent/v2/tasks") >= 2
    first, second = (b["payload"] for b in vidu.create_bodies)
    assert first == second
    assert list(vidu.tasks) == [task.task_id]
    # visibility_lag plus twice the server clock's uncertainty; no backoff beyond that wait
    assert 30 < time.waits[0] <= 34 and time.waits[1:] == [0.0]
    assert any("no task has correlation key" in r.getMessage() for r in caplog.records)


async def test_a_task_appearing_late_in_the_list_is_still_found(
    client: ViduClient, vidu: FakeVidu, time: ManualClock
) -> None:
    vidu.create_faults = ["500-after"]
    vidu.list_faults = ["empty"]  # the list lags behind the create once
    task = await client.create_reference2video(request())
    assert vidu.count("POST /ent/v2/reference2video") == 1
    assert vidu.count("GET /ent/v2/tasks") == 2
    assert list(vidu.tasks) == [task.task_id]
    assert len(time.waits) == 1 and 30 < time.waits[0] <= 34  # lag + twice the uncertainty


async def test_a_failed_lookup_raises_ambiguous_and_never_resends(
    client: ViduClient, vidu: FakeVidu
) -> None:
    vidu.create_faults = ["500-after"]
    vidu.list_faults = [500] * 20
    with pytest.raises(AmbiguousCreateError) as info:
        await client.create_reference2video(request())
    assert vidu.count("POST /ent/v2/reference2video") == 1
    (only,) = vidu.tasks.values()
    assert split_payload(only["payload"])[0] == info.value.correlation_key
    assert isinstance(info.value.cause, ServerError)
    assert info.value.correlation_key in str(info.value)


# --- waiting ---------------------------------------------------------------------------------


async def test_wait_for_task_through_a_full_cycle(
    client: ViduClient, vidu: FakeVidu, time: ManualClock
) -> None:
    task = vidu.add_task()
    vidu.progress[task["id"]] = [
        {"state": "created"},
        {"state": "queueing"},
        {"state": "processing"},
        {"state": "processing"},
        {"state": "success", "creations": [{"id": "c1", "url": "https://files/x.mp4"}]},
    ]
    result = await client.wait_for_task(task["id"], poll_interval=2.0, max_interval=4.0)
    assert result.succeeded
    assert result.creations[0].id == "c1"
    assert vidu.count(f"GET /ent/v2/tasks/{task['id']}/creations") == 5
    assert time.waits == [2.0, 3.0, 4.0, 4.0]


async def test_wait_for_task_returns_a_failed_task_with_its_err_code(
    client: ViduClient, vidu: FakeVidu
) -> None:
    task = vidu.add_task()
    vidu.progress[task["id"]] = [
        {"state": "processing"},
        {"state": "failed", "err_code": "AuditSubmitIllegal"},
    ]
    result = await client.wait_for_task(task["id"])
    assert result.state == TaskState.FAILED
    assert result.err_code == "AuditSubmitIllegal"


async def test_wait_for_task_times_out_with_the_last_state(
    client: ViduClient, vidu: FakeVidu, time: ManualClock
) -> None:
    task = vidu.add_task(state="processing")
    with pytest.raises(TaskTimeoutError) as info:
        await client.wait_for_task(task["id"], timeout=60.0, poll_interval=10.0, max_interval=30.0)
    assert info.value.task_id == task["id"]
    assert info.value.last.state == TaskState.PROCESSING
    assert sum(time.waits) == 60.0  # slept up to the deadline, not past it


async def test_wait_for_task_cuts_off_a_poll_still_unanswered_at_its_deadline(
    aiohttp_server: ServerFactory,
) -> None:
    """A server that never answers: the deadline (0.2 s), not the pool's 60 s read timeout
    and its retries, ends the wait."""
    never = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await never.wait()
        return web.Response()

    app = web.Application()
    app.router.add_get("/ent/v2/tasks/{task_id}/creations", hang)
    server = await aiohttp_server(app)
    async with ViduClient(KEY, base_url=str(server.make_url("/"))) as client:
        with pytest.raises(TaskTimeoutError) as info:
            await client.wait_for_task("t1", timeout=0.2)
    never.set()
    assert info.value.task_id == "t1" and info.value.last is None
    assert "still unknown after 0.2s (a poll got no answer before the deadline)" in str(info.value)


# --- sessions and accounts -------------------------------------------------------------------


async def test_clients_for_other_accounts_share_the_pool(
    server: TestServer, vidu: FakeVidu, policy: RetryPolicy
) -> None:
    base = str(server.make_url("/"))
    async with ViduClient(KEY, base_url=base, retry=policy) as main:
        other = main.for_account(Account("second-account-key", base))
        with pytest.raises(AuthenticationError):
            await other.get_credits()
        await main.get_credits()
        assert vidu.authorizations == ["Token second-account-key", f"Token {KEY}"]
        assert other.retry is main.retry
        await other.close()  # does not close the shared sessions
        await main.get_credits()
    with pytest.raises(RuntimeError, match="closed"):
        await other.get_credits()


async def test_a_client_moves_to_a_new_event_loop_once_the_old_one_is_closed(
    server: TestServer,
) -> None:
    pool = SessionPool()
    client = ViduClient(KEY, base_url=str(server.make_url("/")), pool=pool)
    used: list[aiohttp.ClientSession] = []

    async def credits() -> int:
        used.append(pool.session(client.account))
        return (await client.get_credits()).remains[0].credit_remain

    # Two asyncio.run calls in turn, as with a module-level client; the test's loop serves.
    assert await asyncio.to_thread(asyncio.run, credits()) == 1000
    assert used[0].closed  # as its loop shut down, while its connection could still be closed
    assert await asyncio.to_thread(asyncio.run, credits()) == 1000
    assert used[1] is not used[0]
    assert used[1].closed
    await asyncio.to_thread(asyncio.run, pool.close())


async def test_lost_answers_are_looked_up_together_in_each_event_loop_in_turn(
    server: TestServer, vidu: FakeVidu
) -> None:
    """Two creates whose answers are lost, at once, in one ``asyncio.run`` and then in another:
    their lookups queue for the one scan at a time (a semaphore) in each loop; one bound to
    the first loop would refuse the second ("bound to a different event loop")."""
    retry = RetryPolicy(sleep=no_wait, visibility_lag=0)
    client = ViduClient(KEY, base_url=str(server.make_url("/")), retry=retry)

    async def two_lost() -> list[str]:
        vidu.create_faults = ["500-after", "500-after"]
        made = await asyncio.gather(client.create_reference2video(request()),
                                    client.create_reference2video(request()))
        return [task.task_id for task in made]

    first = await asyncio.to_thread(asyncio.run, two_lost())
    second = await asyncio.to_thread(asyncio.run, two_lost())
    await asyncio.to_thread(asyncio.run, client.close())
    assert sorted(first + second) == sorted(vidu.tasks)
    assert vidu.count("POST /ent/v2/reference2video") == 4  # found, never resent


def test_sessions_of_a_loop_closed_without_shutting_down_are_closed_from_the_next() -> None:
    pool = SessionPool()

    async def session() -> aiohttp.ClientSession:
        return pool.session(None)

    old_loop = asyncio.new_event_loop()
    first = old_loop.run_until_complete(session())
    old_loop.close()  # without shutdown_asyncgens(): the pool is not told
    second = asyncio.run(session())
    assert first.closed  # not left to warn "Unclosed client session"
    assert second is not first


async def test_a_client_belongs_to_one_open_event_loop(
    client: ViduClient, vidu: FakeVidu
) -> None:
    await client.get_credits()  # its sessions belong to the test's loop, still running
    with pytest.raises(RuntimeError, match="belongs to one event loop"):
        await asyncio.to_thread(asyncio.run, client.get_credits())
    with pytest.raises(RuntimeError, match="belongs to one event loop"):
        await asyncio.to_thread(asyncio.run, client.close())
    await client.get_credits()
    assert vidu.calls == ["GET /ent/v2/credits"] * 2


# --- the key never leaks ---------------------------------------------------------------------


async def test_the_key_appears_in_no_log_record_repr_or_error(
    server: TestServer, vidu: FakeVidu, policy: RetryPolicy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    vidu.create_faults = ["hang-after", "500-after"]
    vidu.list_faults = [500] * 10

    async def redirected() -> Any:
        vidu.query_faults = ["redirect"]
        return await client.get_credits()

    async with await ambiguous_client(server, policy, sock_read=0.2) as client:
        for call in (
            lambda: client.create_reference2video(request()),
            lambda: client.create_reference2video(request()),
            redirected,
            lambda: client.for_account(Account("wrong", str(server.make_url("/")))).get_task("1"),
        ):
            try:
                await call()
            except Exception as error:
                errors.append(error)
        texts = [repr(client), repr(client.account), repr(client.retry)]
    vidu.release.set()
    assert [type(e) for e in errors] == [
        AmbiguousCreateError,
        AmbiguousCreateError,
        APIStatusError,
        AuthenticationError,
    ]
    assert isinstance(errors[0].cause, APITimeoutError)  # type: ignore[attr-defined]
    for error in errors:
        texts += [str(error), repr(error), "".join(traceback.format_exception(error))]
    texts += [record.getMessage() for record in caplog.records]
    texts += [json.dumps(record.args, default=repr) for record in caplog.records if record.args]
    assert caplog.records  # there was something to look at
    assert not [text for text in texts if KEY in text]
