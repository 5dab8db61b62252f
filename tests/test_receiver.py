"""CallbackReceiver end to end: the simulator calls back a real receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpClient

from vidu_async.callbacks import sign_callback
from vidu_async.client import ViduClient
from vidu_async.errors import ConfigurationError
from vidu_async.loglimit import LogLimiter
from vidu_async.receiver import CallbackEvent, CallbackReceiver, ReceiverOptions
from vidu_async.requests import ReferenceToVideoRequest
from vidu_async.retry import RetryPolicy, no_wait
from vidu_async.tasks import TaskResult
from vidu_async.testing import Account, FakeVidu, ManualClock, Timeline

README = Path(__file__).parents[1] / "README.md"
KEY = "vda_receiver_key_a"
OTHER_KEY = "vda_receiver_key_b"
TIMELINE = Timeline(created=1.0, processing=1.0)
"""A task processes 1 s after its creation and succeeds 1 s later (simulator time)."""


@attrs.define
class Stepper:
    """The simulator on a manual clock: ``step()`` moves every task one state on."""

    sim: FakeVidu
    clock: ManualClock

    async def step(self) -> None:
        """Advance tasks (created -> processing -> success) and wait for their callbacks."""
        self.clock.advance(1.0)
        self.sim.tick()
        await self.sim.callbacks_settled()


@pytest.fixture
async def stepper() -> AsyncIterator[Stepper]:
    clock = ManualClock()
    accounts = {KEY: Account(), OTHER_KEY: Account()}
    async with FakeVidu(
        KEY, accounts=accounts, clock=clock, timeline=TIMELINE, callback_retry_delay=0.0
    ) as sim:
        yield Stepper(sim, clock)


@pytest.fixture
async def clients(stepper: Stepper) -> AsyncIterator[tuple[ViduClient, ViduClient]]:
    retry = RetryPolicy(sleep=no_wait)
    async with ViduClient(KEY, base_url=stepper.sim.url, retry=retry) as client:
        yield client, client.for_account(attrs.evolve(client.account, api_key=OTHER_KEY))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def create(client: ViduClient, callback_url: str) -> str:
    request = ReferenceToVideoRequest(
        "viduq2", "a cat", images=("https://example.com/a.png",), callback_url=callback_url
    )
    return (await client.create_reference2video(request)).task_id


async def next_event(events: AsyncIterator[CallbackEvent]) -> CallbackEvent:
    async with asyncio.timeout(5):  # a guard against a hang, not a wait for something to happen
        return await anext(events)


async def post(
    http: aiohttp.ClientSession,
    url: str,
    body: Any,
    *,
    key: str = KEY,
    date: str | None = None,
    signed: dict[str, str] | None = None,
    **headers: str,
) -> tuple[int, str]:
    """POST ``body`` (bytes as they are, else as JSON) as a callback signed with ``key``, or
    with the ``signed`` headers of an earlier delivery."""
    signed = (signed or sign_callback(key, url, date=date)) | headers
    data = body if isinstance(body, bytes) else json.dumps(body)
    async with http.post(url, data=data, headers=signed) as response:
        return response.status, await response.text()


def read(stepper: Stepper) -> int:
    """How many single-task reads the simulator has answered."""
    return stepper.sim.stats.requests_to("query")


# --- the life of a task -------------------------------------------------------------------------


async def test_callbacks_become_events_and_an_end_is_read_back_first(
    stepper: Stepper, clients: tuple[ViduClient, ViduClient]
) -> None:
    receiver = CallbackReceiver(clients[0])
    events = receiver.events()
    async with receiver.serve() as url:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/vidu/callback")
        task_id = await create(clients[0], url)

        await stepper.step()
        processing = await next_event(events)
        assert (processing.task_id, processing.claimed, processing.confirmed) == (
            task_id,
            "processing",
            False,
        )
        assert processing.result.state == "processing" and not processing.is_terminal
        assert read(stepper) == 0  # a processing notice is passed on as sent

        await stepper.step()
        success = await next_event(events)
        assert (success.claimed, success.confirmed, success.is_terminal) == ("success", True, True)
        assert success.result == await clients[0].get_task(task_id)
        assert success.result.creations[0].url.startswith(stepper.sim.url)
        assert read(stepper) == 1 + 1  # the confirmation, and the read just above
        assert receiver.finished(task_id) == success.result
    assert stepper.sim.stats.callbacks_delivered == 2


async def test_redeliveries_are_answered_2xx_and_dropped(
    stepper: Stepper, clients: tuple[ViduClient, ViduClient], http: aiohttp.ClientSession
) -> None:
    receiver = CallbackReceiver(clients[0], ReceiverOptions(confirm_concurrency=1))
    events = receiver.events()
    async with receiver.serve() as url:
        task_id = await create(clients[0], url)
        await stepper.step()
        assert (await next_event(events)).claimed == "processing"
        processing = {"id": task_id, "state": "processing"}
        # Vidu sends again when our answer is lost: a fresh nonce, the same (task, state).
        assert await post(http, url, processing) == (200, "ignored: a duplicate delivery")

        await stepper.step()
        assert (await next_event(events)).is_terminal
        reads = read(stepper)
        for state in ("success", "failed", "processing"):
            answer = await post(http, url, {"id": task_id, "state": state})
            assert answer == (200, "ignored: the task has already finished")
        assert read(stepper) == reads

        other = await create(clients[0], url)
        await stepper.step()
        assert (await next_event(events)).task_id == other  # nothing dropped came first


async def test_a_success_the_task_does_not_confirm_reports_what_the_read_says(
    stepper: Stepper, clients: tuple[ViduClient, ViduClient], http: aiohttp.ClientSession
) -> None:
    # The body is not signed: signed headers with a changed body claim a success too early.
    receiver = CallbackReceiver(clients[0], ReceiverOptions(confirm_concurrency=1))
    events = receiver.events()
    async with receiver.serve() as url:
        task_id = await create(clients[0], url)
        await stepper.step()
        assert (await next_event(events)).claimed == "processing"

        lie = {"id": task_id, "state": "success", "creations": [{"url": "https://evil/x.mp4"}]}
        assert await post(http, url, lie) == (200, "accepted")
        event = await next_event(events)
        assert (event.claimed, event.confirmed, event.result.state) == (
            "success",
            True,
            "processing",
        )
        assert not event.is_terminal and event.result.creations == ()
        assert receiver.finished(task_id) is None

        await stepper.step()  # the genuine success is not mistaken for a duplicate
        genuine = await next_event(events)
        assert genuine.is_terminal and genuine.result.creations[0].url.startswith(stepper.sim.url)


async def test_each_account_s_callbacks_are_verified_and_read_with_its_own_client(
    stepper: Stepper, clients: tuple[ViduClient, ViduClient]
) -> None:
    receiver = CallbackReceiver(clients, ReceiverOptions(confirm_concurrency=1))
    events = receiver.events()
    async with receiver.serve() as url:
        ids = [await create(client, url) for client in clients]
        await stepper.step()
        await stepper.step()
        ended = [e async for e in _take(events, 4) if e.is_terminal]
    # Reading a task with the other account's key would be a 404, and give no event.
    assert sorted(e.task_id for e in ended) == sorted(ids)


async def _take(events: AsyncIterator[CallbackEvent], n: int) -> AsyncIterator[CallbackEvent]:
    for _ in range(n):
        yield await next_event(events)


async def test_a_task_that_cannot_be_read_gives_no_event_and_may_be_delivered_again(
    stepper: Stepper, clients: tuple[ViduClient, ViduClient], http: aiohttp.ClientSession
) -> None:
    receiver = CallbackReceiver(clients[0], ReceiverOptions(confirm_concurrency=1))
    events = receiver.events()
    async with receiver.serve() as url:
        unknown = {"id": "no-such-task", "state": "success"}
        assert await post(http, url, unknown) == (200, "accepted")
        assert await post(http, url, {"id": "no-such-task", "state": "failed"}) == (200, "accepted")
        task_id = await create(clients[0], url)
        await stepper.step()
        assert (await next_event(events)).task_id == task_id
        # The failed read forgot the claim, so a redelivery is tried again, not dropped.
        assert await post(http, url, unknown) == (200, "accepted")


async def test_without_confirmation_an_end_is_passed_on_as_sent(
    stepper: Stepper, clients: tuple[ViduClient, ViduClient]
) -> None:
    receiver = CallbackReceiver(clients[0], ReceiverOptions(confirm=False, confirm_concurrency=1))
    events = receiver.events()
    async with receiver.serve() as url:
        task_id = await create(clients[0], url)
        await stepper.step()
        await stepper.step()
        claims = [await next_event(events) for _ in range(2)]
    assert [(e.task_id, e.claimed, e.confirmed) for e in claims] == [
        (task_id, "processing", False),
        (task_id, "success", False),
    ]
    assert claims[1].result.succeeded and not claims[1].is_terminal  # the consumer reads it
    assert read(stepper) == 0
    assert receiver.finished(task_id) is None


# --- a confirming read that fails ----------------------------------------------------------------


@attrs.define
class Waits:
    """A ``sleep`` that records each wait; while ``gate`` is closed, a wait lasts until it opens."""

    seconds: list[float] = attrs.field(factory=list)
    gate: asyncio.Event = attrs.field(factory=asyncio.Event)

    def __attrs_post_init__(self) -> None:
        self.gate.set()

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)
        await self.gate.wait()


def failing_reads(failures: dict[str, list[int]]) -> web.Application:
    """A Vidu whose reads of task ``t`` answer the statuses ``failures[t]`` in turn (each an
    error), then the task as succeeded."""
    reasons = {401: "Unauthorized", 404: "NotFound", 500: "InternalServiceFailure"}

    async def read_task(request: web.Request) -> web.Response:
        task_id = request.match_info["task_id"]
        if failures.get(task_id):
            status = failures[task_id].pop(0)
            body = {"code": status, "reason": reasons[status], "message": "scripted"}
            return web.json_response(body, status=status)
        return web.json_response({"id": task_id, "state": "success", "creations": []})

    app = web.Application()
    app.router.add_get("/ent/v2/tasks/{task_id}/creations", read_task)
    return app


@pytest.fixture
async def flaky_client(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> AsyncIterator[tuple[ViduClient, dict[str, list[int]]]]:
    """A client of ``failing_reads``, one request per read, and the failures to script."""
    failures: dict[str, list[int]] = {}
    server = await aiohttp_server(failing_reads(failures))
    retry = RetryPolicy(max_attempts=1, sleep=no_wait)
    async with ViduClient(KEY, base_url=str(server.make_url("/")), retry=retry) as client:
        yield client, failures


def confirm_retry(waits: Waits, attempts: int = 10) -> ReceiverOptions:
    """Options whose reads are retried ``attempts`` times, each wait its backoff ceiling."""
    policy = RetryPolicy(max_attempts=attempts, initial_wait=1.0, sleep=waits, random=lambda: 1.0)
    return ReceiverOptions(confirm_concurrency=1, confirm_retry=policy)


async def test_an_end_whose_read_fails_is_read_again_with_backoff_until_it_answers(
    flaky_client: tuple[ViduClient, dict[str, list[int]]], http: aiohttp.ClientSession
) -> None:
    client, failures = flaky_client
    failures["t"] = [500, 500, 500]
    waits = Waits()
    receiver = CallbackReceiver(client, confirm_retry(waits))
    events = receiver.events()
    async with receiver.serve() as url:
        assert await post(http, url, {"id": "t", "state": "success"}) == (200, "accepted")
        event = await next_event(events)
    assert (event.task_id, event.confirmed, event.is_terminal) == ("t", True, True)
    assert waits.seconds == [1.0, 2.0, 4.0] and failures["t"] == []
    assert receiver.finished("t") == event.result


async def test_an_end_that_cannot_be_read_is_passed_on_unconfirmed(
    flaky_client: tuple[ViduClient, dict[str, list[int]]],
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, failures = flaky_client
    failures["t"] = [500] * 4
    waits = Waits()
    receiver = CallbackReceiver(client, confirm_retry(waits, attempts=3))
    events = receiver.events()
    async with receiver.serve() as url:
        claim = {"id": "t", "state": "success", "creations": [{"url": "https://x/v.mp4"}]}
        assert await post(http, url, claim) == (200, "accepted")
        event = await next_event(events)
        assert (event.claimed, event.confirmed, event.is_terminal) == ("success", False, False)
        assert event.result.succeeded and event.result.creations[0].url == "https://x/v.mp4"
        assert waits.seconds == [1.0, 2.0]  # three reads in all
        assert receiver.finished("t") is None
        # A redelivery is not taken for a duplicate: it may be confirmed this time.
        assert await post(http, url, claim) == (200, "accepted")
        assert (await next_event(events)).is_terminal
    lines = [r.getMessage() for r in caplog.records if r.name == "vidu_async.receiver"]
    assert lines[0].startswith("could not confirm that task t is success (GET ")
    assert lines[0].endswith("reading it again in the background")
    assert lines[1].startswith("could not confirm that task t is success (3 reads, GET ")
    assert lines[1].endswith("): passed on unconfirmed")


async def test_a_read_again_that_hangs_is_cut_short_at_the_confirm_budget(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The budget bounds the reads too, not only the waits between them: a read the client
    would wait minutes for (its own timeouts) ends when the budget does."""
    reads: list[str] = []

    async def read_task(request: web.Request) -> web.Response:
        reads.append(request.match_info["task_id"])
        if len(reads) > 1:
            await asyncio.Event().wait()  # never answers
        body = {"code": 500, "reason": "InternalServiceFailure", "message": "scripted"}
        return web.json_response(body, status=500)

    app = web.Application()
    app.router.add_get("/ent/v2/tasks/{task_id}/creations", read_task)
    server = await aiohttp_server(app)
    waits = Waits()
    policy = RetryPolicy(max_attempts=10, initial_wait=0.1, budget=0.3, sleep=waits)
    options = ReceiverOptions(confirm_concurrency=1, confirm_retry=policy)
    retry = RetryPolicy(max_attempts=1, sleep=no_wait)
    async with ViduClient(KEY, base_url=str(server.make_url("/")), retry=retry) as client:
        receiver = CallbackReceiver(client, options)
        events = receiver.events()
        async with receiver.serve() as url:
            assert await post(http, url, {"id": "t", "state": "success"}) == (200, "accepted")
            event = await next_event(events)  # not the client's 60 s read timeout
    assert (event.task_id, event.confirmed) == ("t", False)
    assert reads == ["t", "t"] and len(waits.seconds) == 1
    last = [r.getMessage() for r in caplog.records if r.name == "vidu_async.receiver"][-1]
    assert "(2 reads, GET /ent/v2/tasks/t/creations: no answer within the 0.3s budget)" in last


@pytest.mark.parametrize(("status", "confirmed"), [(401, False), (404, None)])
async def test_a_read_that_fails_for_good_is_not_retried(
    flaky_client: tuple[ViduClient, dict[str, list[int]]],
    http: aiohttp.ClientSession,
    status: int,
    confirmed: bool | None,
) -> None:
    client, failures = flaky_client
    failures["t"] = [status]
    waits = Waits()
    receiver = CallbackReceiver(client, confirm_retry(waits))
    events = receiver.events()
    async with receiver.serve() as url:
        assert await post(http, url, {"id": "t", "state": "failed"}) == (200, "accepted")
        assert await post(http, url, {"id": "u", "state": "processing"}) == (200, "accepted")
        got = [await next_event(events) for _ in range(1 if confirmed is None else 2)]
    # A 401 may pass once the key is fixed: the claim goes on, to be checked. A 404 says the
    # task is not that account's: the claim is dropped.
    claims = [(e.task_id, e.claimed, e.confirmed) for e in got]
    assert claims == [*([("t", "failed", confirmed)] if confirmed is not None else []),
                      ("u", "processing", False)]
    assert waits.seconds == []


async def test_reads_retried_in_the_background_hold_no_worker_and_are_bounded(
    flaky_client: tuple[ViduClient, dict[str, list[int]]], http: aiohttp.ClientSession
) -> None:
    client, failures = flaky_client
    failures.update(t=[500], v=[500])
    waits = Waits()
    waits.gate.clear()  # t's retry waits until the end
    options = attrs.evolve(confirm_retry(waits), max_pending=1)
    receiver = CallbackReceiver(client, options)
    events = receiver.events()
    async with asyncio.timeout(5):  # a guard against a hang: stopping cancels t's retry
        async with receiver.serve() as url:
            assert await post(http, url, {"id": "t", "state": "success"}) == (200, "accepted")
            assert await post(http, url, {"id": "u", "state": "processing"}) == (200, "accepted")
            assert (await next_event(events)).task_id == "u"  # the only worker is free
            # One claim is being retried already (max_pending=1): v goes on unconfirmed at once.
            assert await post(http, url, {"id": "v", "state": "success"}) == (200, "accepted")
            v = await next_event(events)
    assert (v.task_id, v.confirmed, v.result.succeeded) == ("v", False, True)
    assert waits.seconds == [1.0]  # t's first wait, never ended
    async with receiver.serve() as url:
        # t was dropped with its retry: delivered again, it is new, not a duplicate.
        assert await post(http, url, {"id": "t", "state": "success"}) == (200, "accepted")
        t = await next_event(events)
    assert (t.task_id, t.is_terminal) == ("t", True)


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "headers", "reason"),
    [
        (OTHER_KEY, {}, "signature does not match for POST /vidu/callback"),
        ("a guessed key", {}, "signature does not match"),
        (KEY, {"X-HMAC-ACCESS-KEY": "admin"}, "X-HMAC-ACCESS-KEY is 'admin'"),
        (KEY, {"x-request-nonce": "swapped"}, "signature does not match"),
        (KEY, {"date": "Tue, 06 May 2025 12:09:42 GMT"}, "in the past, outside the 300 s"),
    ],
)
async def test_forged_callbacks_get_401_with_the_reason(
    clients: tuple[ViduClient, ViduClient],
    http: aiohttp.ClientSession,
    key: str,
    headers: dict[str, str],
    reason: str,
) -> None:
    receiver = CallbackReceiver(clients[0])
    async with receiver.serve() as url:
        body = {"id": "t", "state": "success"}
        status, text = await post(http, url, body, key=key, **headers)
    assert status == 401
    assert reason in text
    assert KEY not in text and OTHER_KEY not in text


async def test_a_replayed_callback_gets_401(
    clients: tuple[ViduClient, ViduClient], http: aiohttp.ClientSession
) -> None:
    receiver = CallbackReceiver(clients[0])
    async with receiver.serve() as url:
        headers = sign_callback(KEY, url)
        body = json.dumps({"id": "t", "state": "processing"})
        async with http.post(url, data=body, headers=headers) as first:
            assert first.status == 200
        async with http.post(url, data=body, headers=headers) as replay:
            assert replay.status == 401
            assert "was seen before" in await replay.text()


async def test_the_date_window_is_configurable(
    clients: tuple[ViduClient, ViduClient], http: aiohttp.ClientSession
) -> None:
    # A Date has whole seconds: up to one more second of skew than the hour.
    hour_later = ReceiverOptions(clock=lambda: time.time() + 3600, max_skew=3605)
    receiver = CallbackReceiver(clients[0], hour_later)
    async with receiver.serve() as url:
        assert await post(http, url, {"id": "t", "state": "processing"}) == (200, "accepted")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "Expecting property name"),
        (b"[1, 2]", "the body must be a JSON object, got an array"),
        (b"null", "the body must be a JSON object, got null"),
        (b'"t"', "the body must be a JSON object, got a string"),
        (b'{"state": "success"}', "id: missing"),
        (b'{"id": "t", "credits": "many"}', "credits: "),
    ],
)
async def test_a_verified_callback_with_a_bad_body_gets_400(
    clients: tuple[ViduClient, ViduClient], http: aiohttp.ClientSession, body: bytes, reason: str
) -> None:
    receiver = CallbackReceiver(clients[0])
    async with receiver.serve() as url:
        status, text = await post(http, url, body)
    assert status == 400
    assert reason in text


# --- embedding, backpressure, configuration -----------------------------------------------------


async def test_the_handler_mounts_on_another_app_behind_a_path_prefix(
    clients: tuple[ViduClient, ViduClient], aiohttp_client: AiohttpClient
) -> None:
    # Vidu signed the public URL /hooks/vidu/cb; the proxy stripped /hooks on the way.
    received: list[CallbackEvent] = []

    async def on_event(event: CallbackEvent) -> None:
        received.append(event)

    receiver = CallbackReceiver(
        clients[0], ReceiverOptions(path_prefix="/hooks"), on_event=on_event
    )
    app = web.Application()
    app.router.add_post("/vidu/cb", receiver.handler)
    http = await aiohttp_client(app)
    body = json.dumps({"id": "t", "state": "processing"})
    public = sign_callback(KEY, "https://example.com/hooks/vidu/cb?x=1")

    response = await http.post("/vidu/cb?x=1", data=body, headers=public)
    assert response.status == 503  # not running: its workers are not there to confirm
    assert "not running" in await response.text()

    async with receiver.running():
        response = await http.post("/vidu/cb?x=1", data=body, headers=public)
        assert response.status == 200
        unprefixed = sign_callback(KEY, "/vidu/cb?x=1")
        response = await http.post("/vidu/cb?x=1", data=body, headers=unprefixed)
        assert response.status == 401
        assert "POST /hooks/vidu/cb?x=1" in await response.text()
    assert [(e.task_id, e.claimed) for e in received] == [("t", "processing")]


def readme_callback_app() -> Callable[[CallbackReceiver], web.Application]:
    """``callback_app`` as the README's example of mounting the handler defines it."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    [block] = [b for b in blocks if "def callback_app(" in b]
    namespace: dict[str, Any] = {}
    exec(block, namespace)
    made: Callable[[CallbackReceiver], web.Application] = namespace["callback_app"]
    return made


async def test_the_readme_s_app_takes_a_callback_with_the_largest_payload(
    clients: tuple[ViduClient, ViduClient], aiohttp_client: AiohttpClient
) -> None:
    # The documented limit of characters, each JSON-escaped as 12 bytes (two \uXXXX).
    payload = "\U0001f3ac" * 1_048_576
    body = json.dumps({"id": "t", "state": "processing", "payload": payload}).encode()
    assert len(body) > 12 * 2**20
    signed = sign_callback(KEY, "/vidu/callback")

    default = web.Application()  # what the README warns against: aiohttp's 1 MiB limit
    receiver = CallbackReceiver(clients[0])
    default.router.add_post("/vidu/callback", receiver.handler)
    async with receiver.running():
        response = await (await aiohttp_client(default)).post(
            "/vidu/callback", data=io.BytesIO(body), headers=signed
        )
        assert response.status == 413

    receiver = CallbackReceiver(clients[0])
    events = receiver.events()
    http = await aiohttp_client(readme_callback_app()(receiver))
    async with receiver.running():
        response = await http.post("/vidu/callback", data=io.BytesIO(body), headers=signed)
        assert (response.status, await response.text()) == (200, "accepted")
        assert (await next_event(events)).result.payload == payload


async def test_a_full_queue_answers_503_so_that_vidu_delivers_again(
    clients: tuple[ViduClient, ViduClient], http: aiohttp.ClientSession
) -> None:
    arrived = {task_id: asyncio.Event() for task_id in "abc"}
    release = asyncio.Event()
    order: list[str] = []

    async def slow_consumer(event: CallbackEvent) -> None:
        order.append(event.task_id)
        arrived[event.task_id].set()
        await release.wait()

    async def until(task_id: str) -> None:
        async with asyncio.timeout(5):  # a guard against a hang
            await arrived[task_id].wait()

    options = ReceiverOptions(max_pending=1, confirm_concurrency=1)
    receiver = CallbackReceiver(clients[0], options, on_event=slow_consumer)
    async with receiver.serve() as url:
        assert await post(http, url, {"id": "a", "state": "processing"}) == (200, "accepted")
        await until("a")  # the only worker is busy with "a"
        assert await post(http, url, {"id": "b", "state": "processing"}) == (200, "accepted")
        c, c_headers = {"id": "c", "state": "processing"}, sign_callback(KEY, url)
        status, text = await post(http, url, c, signed=c_headers)
        assert (status, text) == (503, "too many callbacks waiting; deliver it later")
        release.set()
        await until("b")
        # Neither "c" nor its nonce was remembered as seen: its redelivery is taken.
        assert await post(http, url, c, signed=c_headers) == (200, "accepted")
        await until("c")
    assert order == ["a", "b", "c"]


async def test_an_on_event_that_raises_is_logged_and_receiving_goes_on(
    clients: tuple[ViduClient, ViduClient],
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    handled = asyncio.Event()

    async def on_event(event: CallbackEvent) -> None:
        if event.task_id == "bad":
            raise KeyError("a bug in on_event")
        handled.set()

    receiver = CallbackReceiver(
        clients[0], ReceiverOptions(confirm_concurrency=1), on_event=on_event
    )
    async with receiver.serve() as url:
        assert await post(http, url, {"id": "bad", "state": "processing"}) == (200, "accepted")
        assert await post(http, url, {"id": "good", "state": "processing"}) == (200, "accepted")
        async with asyncio.timeout(5):  # a guard against a hang
            await handled.wait()
    [record] = [r for r in caplog.records if r.name == "vidu_async.receiver"]
    assert record.getMessage() == "on_event failed on the processing event of task bad"
    assert record.exc_info is not None and "a bug in on_event" in str(record.exc_info[1])


async def test_callbacks_queued_when_the_receiver_stops_are_forgotten(
    clients: tuple[ViduClient, ViduClient], http: aiohttp.ClientSession
) -> None:
    busy = asyncio.Event()

    async def stuck(event: CallbackEvent) -> None:
        busy.set()
        await asyncio.Event().wait()  # until cancelled

    options = ReceiverOptions(confirm_concurrency=1)
    receiver = CallbackReceiver(clients[0], options, on_event=stuck)
    async with receiver.serve() as url:
        assert await post(http, url, {"id": "a", "state": "processing"}) == (200, "accepted")
        async with asyncio.timeout(5):  # a guard against a hang
            await busy.wait()
        assert await post(http, url, {"id": "b", "state": "processing"}) == (200, "accepted")
    async with receiver.serve() as url:
        # "b" was never handed on: delivered again, it is new, not a duplicate.
        assert await post(http, url, {"id": "b", "state": "processing"}) == (200, "accepted")
        assert await post(http, url, {"id": "a", "state": "processing"}) == (
            200,
            "ignored: a duplicate delivery",
        )


async def test_finished_tasks_are_remembered_up_to_the_bound(
    clients: tuple[ViduClient, ViduClient], stepper: Stepper
) -> None:
    receiver = CallbackReceiver(clients[0], ReceiverOptions(remember=1, confirm_concurrency=1))
    events = receiver.events()
    async with receiver.serve() as url:
        first = await create(clients[0], url)
        await stepper.step()
        await stepper.step()
        second = await create(clients[0], url)
        await stepper.step()
        await stepper.step()
        ended = [e.task_id async for e in _take(events, 4) if e.is_terminal]
    assert ended == [first, second]
    assert receiver.finished(first) is None
    assert isinstance(receiver.finished(second), TaskResult)


async def test_misuse_is_refused(clients: tuple[ViduClient, ViduClient]) -> None:
    with pytest.raises(ConfigurationError, match="at least one account"):
        CallbackReceiver([])

    async def on_event(event: CallbackEvent) -> None:
        return None

    with pytest.raises(RuntimeError, match="hands its events to on_event"):
        await anext(CallbackReceiver(clients[0], on_event=on_event).events())
    receiver = CallbackReceiver(clients[0])
    async with receiver.running():
        with pytest.raises(RuntimeError, match="already running"):
            async with receiver.running():
                pass
    with pytest.raises(ValueError, match="max_pending"):
        ReceiverOptions(max_pending=0)
    for prefix in ("hooks", "/hooks/", "/hooks?x=1"):
        with pytest.raises(ValueError, match=f"path_prefix must be .* got '{re.escape(prefix)}'"):
            ReceiverOptions(path_prefix=prefix)


# --- under abuse --------------------------------------------------------------------------------


WRITERS: list[asyncio.StreamWriter] = []


@pytest.fixture(autouse=True)
async def close_writers() -> AsyncIterator[None]:
    """Close the raw connections a test opened."""
    yield
    while WRITERS:
        WRITERS.pop().close()


async def stall(url: str, count: int) -> list[asyncio.StreamReader]:
    """``count`` connections that send half a request's headers and then nothing (slowloris)."""
    host, port = url.split("/")[2].split(":")
    readers = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /vidu/callback HTTP/1.1\r\nHost: x\r\nDate: ")
        WRITERS.append(writer)
        readers.append(reader)
    return readers


async def closed_at(reader: asyncio.StreamReader) -> float:
    """When the server closed the connection (event loop clock), after whatever it answered."""
    async with asyncio.timeout(5):  # a guard against a hang: without a deadline none closes
        await reader.read()
    return asyncio.get_running_loop().time()


async def test_slow_clients_are_closed_by_the_deadline_and_do_not_delay_a_callback(
    clients: tuple[ViduClient, ViduClient],
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    options = ReceiverOptions(read_timeout=0.3, max_connections=100)
    receiver = CallbackReceiver(clients[0], options)
    events = receiver.events()
    loop = asyncio.get_running_loop()
    async with receiver.serve() as url:
        opened = loop.time()  # each slow connection's deadline runs from its own accept
        slow = await stall(url, 60)
        started = loop.time()
        assert await post(http, url, {"id": "t", "state": "processing"}) == (200, "accepted")
        assert (await next_event(events)).task_id == "t"
        answered = loop.time() - started
        closed = [await closed_at(reader) for reader in slow]
    assert answered < options.read_timeout  # it was not queued behind the slow ones
    # Closed by the deadline (never before it, however long opening 60 connections took),
    # and soon after it.
    assert all(opened + options.read_timeout <= at < started + options.read_timeout + 2
               for at in closed)
    closes = [r for r in caplog.records if "sent no request" in r.getMessage()]
    assert [r.getMessage() for r in closes] == ["closed a connection that sent no request in 0.3 s"]


async def test_connections_beyond_the_cap_get_503_until_some_close(
    clients: tuple[ViduClient, ViduClient], http: aiohttp.ClientSession
) -> None:
    receiver = CallbackReceiver(clients[0], ReceiverOptions(read_timeout=0.3, max_connections=3))
    async with receiver.serve() as url:
        slow = await stall(url, 3)
        [extra] = await stall(url, 1)
        async with asyncio.timeout(5):  # a guard against a hang
            refusal = await extra.read()
        assert refusal.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        for reader in slow:  # closed by the deadline: their places are free again
            await closed_at(reader)
        assert await post(http, url, {"id": "t", "state": "processing"}) == (200, "accepted")


async def test_a_body_that_does_not_arrive_gets_408(
    clients: tuple[ViduClient, ViduClient], http: aiohttp.ClientSession
) -> None:
    receiver = CallbackReceiver(clients[0], ReceiverOptions(read_timeout=0.3))
    async with receiver.serve() as url:
        host, port = url.split("/")[2].split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        signed = sign_callback(KEY, url)
        WRITERS.append(send_half(writer, signed))
        async with asyncio.timeout(5):  # a guard against a hang
            answer = await reader.readline()
        assert answer.startswith(b"HTTP/1.1 408")
        # Its nonce was not used up: Vidu's redelivery of it is taken.
        body = {"id": "t", "state": "processing"}
        assert await post(http, url, body, signed=signed) == (200, "accepted")


@pytest.mark.parametrize("name", ["x-request-nonce", "Date", "X-HMAC-SIGNATURE"])
async def test_a_header_that_is_not_ascii_gets_401_and_a_warning(
    clients: tuple[ViduClient, ViduClient], caplog: pytest.LogCaptureFixture, name: str
) -> None:
    receiver = CallbackReceiver(clients[0])
    async with receiver.serve() as url:
        host, port = url.split("/")[2].split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        WRITERS.append(writer)
        headers = sign_callback(KEY, url) | {"Host": "x", "Connection": "close"}
        head = b"".join(
            f"{n}: {v}".encode() + (b"\xff" if n == name else b"") + b"\r\n"
            for n, v in headers.items()
        )
        writer.write(b"POST /vidu/callback HTTP/1.1\r\n" + head + b"Content-Length: 2\r\n\r\n{}")
        async with asyncio.timeout(5):  # a guard against a hang
            answer = await reader.read()
    assert answer.startswith(b"HTTP/1.1 401")
    assert f"{name} '".encode() in answer and b"is not ASCII" in answer
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith(f"refused a callback to /vidu/callback: {name} '")
    assert not [r for r in caplog.records if r.exc_info]  # no traceback


def send_half(writer: asyncio.StreamWriter, signed: dict[str, str]) -> asyncio.StreamWriter:
    """Send a callback's ``signed`` headers and the first byte of its 100-byte body."""
    headers = signed | {"Host": "x", "Content-Length": "100"}
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    writer.write(f"POST /vidu/callback HTTP/1.1\r\n{head}\r\n{{".encode())
    return writer


async def test_a_callback_refused_for_its_body_is_taken_when_delivered_again(
    clients: tuple[ViduClient, ViduClient], http: aiohttp.ClientSession
) -> None:
    receiver = CallbackReceiver(clients[0])
    async with receiver.serve() as url:
        signed = sign_callback(KEY, url)
        assert (await post(http, url, b"{cut sh", signed=signed))[0] == 400
        body = {"id": "t", "state": "processing"}
        assert await post(http, url, body, signed=signed) == (200, "accepted")
        status, text = await post(http, url, body, signed=signed)
        assert (status, "was seen before" in text) == (401, True)  # taken once: now a replay


async def test_of_two_deliveries_with_one_nonce_the_first_taken_wins(
    clients: tuple[ViduClient, ViduClient], http: aiohttp.ClientSession
) -> None:
    receiver = CallbackReceiver(clients[0])
    async with receiver.serve() as url:
        host, port = url.split("/")[2].split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        signed = sign_callback(KEY, url)
        WRITERS.append(send_half(writer, signed))  # verified, its body still on the way
        body = {"id": "t", "state": "processing"}
        assert await post(http, url, body, signed=signed) == (200, "accepted")
        writer.write(b'"id": "u", "state": "processing"}'.ljust(99))  # the first body's rest
        writer.write_eof()
        async with asyncio.timeout(5):  # a guard against a hang
            answer = await reader.read()
        assert answer.startswith(b"HTTP/1.1 401")
        assert b"was seen before" in answer


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper than 32 levels"),
        (b'{"id": "t", "x": ' + b"[" * 40 + b"]" * 40 + b"}", "nested deeper than 32 levels"),
    ],
)
async def test_a_deeply_nested_body_gets_400_and_the_next_callback_is_taken(
    clients: tuple[ViduClient, ViduClient], http: aiohttp.ClientSession, body: bytes, reason: str
) -> None:
    receiver = CallbackReceiver(clients[0])
    async with receiver.serve() as url:
        status, text = await post(http, url, body)
        assert (status, reason in text) == (400, True)
        shallow = {"id": "t", "state": "processing", "x": [[[[["five levels"]]]]]}
        assert await post(http, url, shallow) == (200, "accepted")


async def test_a_worker_hit_by_an_unexpected_error_logs_it_and_goes_on(
    stepper: Stepper,
    clients: tuple[ViduClient, ViduClient],
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A closed client raises RuntimeError (not a ViduError) when the worker reads the task.
    closed = ViduClient(OTHER_KEY, base_url=stepper.sim.url)
    await closed.close()
    receiver = CallbackReceiver([clients[0], closed], ReceiverOptions(confirm_concurrency=1))
    events = receiver.events()
    async with receiver.serve() as url:
        claim = {"id": "t-other", "state": "success"}
        assert await post(http, url, claim, key=OTHER_KEY) == (200, "accepted")
        assert await post(http, url, {"id": "t", "state": "processing"}) == (200, "accepted")
        assert (await next_event(events)).task_id == "t"  # the only worker is still there
        # The failed claim was forgotten: its redelivery is taken, not dropped as a duplicate.
        assert await post(http, url, claim, key=OTHER_KEY) == (200, "accepted")
    [record, *_] = [r for r in caplog.records if "unexpectedly" in r.getMessage()]
    message = "handling the success callback of task t-other failed unexpectedly"
    assert record.getMessage() == message
    assert record.exc_info is not None and "client is closed" in str(record.exc_info[1])
    assert KEY not in caplog.text and OTHER_KEY not in caplog.text


async def test_a_flood_of_forged_callbacks_logs_one_line_per_interval(
    clients: tuple[ViduClient, ViduClient],
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    receiver = CallbackReceiver(clients[0], ReceiverOptions(monotonic=clock))
    async with receiver.serve() as url:
        for _ in range(50):
            assert (await post(http, url, {"id": "t"}, key="a guess"))[0] == 401
        clock.advance(10.0)
        assert (await post(http, url, {"id": "t"}, key="a guess"))[0] == 401
    lines = [r.getMessage() for r in caplog.records if r.name == "vidu_async.receiver"]
    assert len(lines) == 2
    assert lines[0].startswith("refused a callback to /vidu/callback: signature does not match")
    assert lines[1].endswith("(and 49 more like it since the last report)")


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([(0.0, "a")], [0]),
        ([(0.0, "a"), (1.0, "a"), (9.9, "a")], [0, None, None]),
        ([(0.0, "a"), (1.0, "a"), (2.0, "a"), (10.0, "a"), (10.5, "a")], [0, None, None, 2, None]),
        ([(0.0, "a"), (1.0, "b"), (2.0, "a")], [0, 0, None]),
        ([(0.0, "a"), (25.0, "a")], [0, 0]),
    ],
)
def test_log_limiter(events: list[tuple[float, str]], expected: list[int | None]) -> None:
    clock = ManualClock()
    limiter = LogLimiter(interval=10.0, clock=clock)
    allowed = []
    for at, kind in events:
        clock.advance(at - clock())
        allowed.append(limiter.allow(kind))
    assert allowed == expected
