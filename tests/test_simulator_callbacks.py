"""Signed callbacks (spec section 6), checked by recomputing the signature independently here."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from vidu_async.testing import Account, FakeVidu, ManualClock, Timeline

BODY = {"model": "viduq2", "prompt": "a cat", "images": ["https://example.com/a.png"]}

def expected_signature(api_key: str, request: web.Request) -> str:
    """The signature recomputed from what the receiver got, following the spec literally."""
    names = request.headers["X-HMAC-SIGNED-HEADERS"].split(";")
    text = (
        f"{request.method}\n{request.path}\n{request.query_string}\nvidu\n"
        f"{request.headers['Date']}\n" + "".join(f"{n}:{request.headers[n]}\n" for n in names)
    )
    mac = hmac.new(api_key.encode(), text.encode(), hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


@attrs.define
class Received:
    request: web.Request
    body: dict[str, Any]


@attrs.define
class Receiver:
    """A callback receiver on a real local server; ``fail`` decides which deliveries get a 500."""

    fail: Callable[[dict[str, Any]], bool] = lambda body: False
    got: list[Received] = attrs.field(factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.got.append(Received(request, body))
        return web.Response(status=500 if self.fail(body) else 200)

    def states(self) -> list[str]:
        return [r.body["state"] for r in self.got]


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
async def callback_url(
    receiver: Receiver, aiohttp_server: Callable[[web.Application], Awaitable[TestServer]]
) -> str:
    app = web.Application()
    app.router.add_post("/vidu/callback", receiver.handle)
    server = await aiohttp_server(app)
    return str(server.make_url("/vidu/callback?name=james&age=36"))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def run_task(
    http: aiohttp.ClientSession, sim: FakeVidu, clock: ManualClock, key: str, **extra: Any
) -> str:
    """Create a task, let it finish, and wait for its callbacks to be delivered or given up."""
    async with http.post(
        f"{sim.url}/ent/v2/reference2video",
        json={**BODY, **extra},
        headers={"Authorization": f"Token {key}"},
    ) as resp:
        assert resp.status == 200
        task_id: str = (await resp.json())["task_id"]
    clock.advance(0.5)
    sim.tick()
    clock.advance(5.0)
    sim.tick()
    await sim.callbacks_settled()
    return task_id


async def test_processing_and_success_are_posted_signed_with_the_tasks_key(
    http: aiohttp.ClientSession, receiver: Receiver, callback_url: str
) -> None:
    clock = ManualClock()
    accounts = {"key-a": Account(), "key-b": Account()}
    async with FakeVidu(accounts=accounts, clock=clock) as sim:
        task_id = await run_task(
            http, sim, clock, "key-b", callback_url=callback_url, payload="job-7"
        )

    assert sorted(receiver.states()) == ["processing", "success"]
    for got in receiver.got:
        headers = got.request.headers
        assert headers["X-HMAC-SIGNED-HEADERS"] == "Date;x-request-nonce"
        assert headers["X-HMAC-ALGORITHM"] == "hmac-sha256"
        assert headers["X-HMAC-ACCESS-KEY"] == "vidu"
        assert headers["Date"].endswith(" GMT") and headers["x-request-nonce"]
        assert headers["X-HMAC-SIGNATURE"] == expected_signature("key-b", got.request)
        assert headers["X-HMAC-SIGNATURE"] != expected_signature("key-a", got.request)
        assert (got.body["id"], got.body["payload"]) == (task_id, "job-7")
    assert len({got.request.headers["x-request-nonce"] for got in receiver.got}) == 2
    [success] = [got.body for got in receiver.got if got.body["state"] == "success"]
    assert success["creations"][0]["url"].startswith(sim.url)
    assert sim.stats.callbacks_delivered == 2


async def test_a_failed_task_posts_failed_with_its_err_code(
    http: aiohttp.ClientSession, receiver: Receiver, callback_url: str
) -> None:
    clock = ManualClock()
    timeline = Timeline(failure_rate=1.0, failure_codes=("InternalServiceFailure",))
    async with FakeVidu("k", clock=clock, timeline=timeline) as sim:
        await run_task(http, sim, clock, "k", callback_url=callback_url)

    [failed] = [got.body for got in receiver.got if got.body["state"] == "failed"]
    assert (failed["err_code"], failed["creations"]) == ("InternalServiceFailure", [])


async def test_success_is_redelivered_until_the_receiver_accepts_it(
    http: aiohttp.ClientSession, receiver: Receiver, callback_url: str
) -> None:
    refusals = {"processing": 1, "success": 2}

    def fail(body: dict[str, Any]) -> bool:
        left = refusals[body["state"]]
        refusals[body["state"]] = left - 1
        return left > 0

    receiver.fail = fail
    clock = ManualClock()
    async with FakeVidu("k", clock=clock, callback_retry_delay=0.0) as sim:
        await run_task(http, sim, clock, "k", callback_url=callback_url)

    # processing is sent once; success is sent again after each of its two refusals.
    assert sorted(receiver.states()) == ["processing"] + ["success"] * 3
    assert (sim.stats.callbacks_delivered, sim.stats.callback_attempts_failed) == (1, 3)


async def test_a_receiver_that_always_fails_gets_the_initial_post_and_three_retries(
    http: aiohttp.ClientSession, receiver: Receiver, callback_url: str
) -> None:
    receiver.fail = lambda body: True
    clock = ManualClock()
    async with FakeVidu("k", clock=clock, callback_retry_delay=0.0) as sim:
        await run_task(http, sim, clock, "k", callback_url=callback_url)

    assert sorted(receiver.states()) == ["processing"] + ["success"] * 4
    assert sim.stats.callbacks_delivered == 0


async def test_an_unreachable_receiver_is_given_up_on(http: aiohttp.ClientSession) -> None:
    clock = ManualClock()
    async with FakeVidu("k", clock=clock, callback_retry_delay=0.0) as sim:
        await run_task(http, sim, clock, "k", callback_url="http://127.0.0.1:9/nowhere")

    assert sim.stats.callback_attempts_failed == 1 + 4
    assert sim.stats.callbacks_delivered == 0
