"""Faults on demand: each fires at its configured rate in a seeded run, looks to a raw aiohttp
client the way the real failure would, and is counted in the stats."""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.waiting import until
from vidu_async.testing import (
    FAULT_KINDS,
    NO_ANSWER,
    EndpointFaults,
    FakeVidu,
    Faults,
    ManualClock,
    RateLimit,
)

BODY = {"model": "viduq2", "prompt": "a cat", "images": ["https://example.com/a.png"]}
HEADERS = {"Authorization": "Token k"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def observe(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> str:
    """What a client sees: "ok", the error reason, "disconnected" or "truncated"."""
    try:
        async with http.request(method, url, headers=HEADERS, **kwargs) as resp:
            body = await resp.read()
            return "ok" if resp.status == 200 else str(json.loads(body)["reason"])
    except aiohttp.ServerDisconnectedError:
        return "disconnected"
    except aiohttp.ClientPayloadError:
        return "truncated"


def within(count: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


async def test_every_create_fault_fires_at_its_rate_and_is_counted(
    http: aiohttp.ClientSession,
) -> None:
    n, p = 600, 0.1
    faults = Faults(
        create=EndpointFaults(
            quota_exceeded=p,
            too_many_requests=p,
            system_throttling=p,
            server_error=p,
            reset=p,
            truncated=p,
            commit_then_drop=p,
            error_after_commit=p,
            latency=0.001,
            latency_rate=p,
        )
    )
    async with FakeVidu("k", faults=faults, seed=1, credits=10**7) as sim:
        url = f"{sim.url}/ent/v2/reference2video"
        seen = Counter([await observe(http, "POST", url, json=BODY) for _ in range(n)])
        stats = sim.stats

    injected = stats.faults
    assert seen["QuotaExceeded"] == injected["quota_exceeded"]
    assert seen["TooManyRequests"] == injected["too_many_requests"]
    assert seen["SystemThrottling"] == injected["system_throttling"]
    assert seen["InternalServiceFailure"] == (
        injected["server_error"] + injected["error_after_commit"]
    )
    assert seen["truncated"] == injected["truncated"]
    assert seen["disconnected"] == injected["reset"] + injected["commit_then_drop"]
    for kind in (*FAULT_KINDS, "latency"):
        assert within(injected[kind], n, p), (kind, injected[kind])
    # Tasks exist for the answered creates, the truncated answers, the dropped commits and
    # the 500s after the commit.
    assert stats.tasks_created == seen["ok"] + sum(
        injected[k] for k in ("truncated", "commit_then_drop", "error_after_commit")
    )
    assert stats.requests[("create", NO_ANSWER)] == seen["disconnected"]
    assert stats.requests[("create", 429)] == sum(
        seen[r] for r in ("QuotaExceeded", "TooManyRequests", "SystemThrottling")
    )


async def test_faults_apply_per_endpoint(http: aiohttp.ClientSession) -> None:
    n, p = 400, 0.2
    faults = Faults(credits=EndpointFaults(server_error=p))
    async with FakeVidu("k", faults=faults, seed=2) as sim:
        on_credits = Counter(
            [await observe(http, "GET", f"{sim.url}/ent/v2/credits") for _ in range(n)]
        )
        on_list = Counter(
            [await observe(http, "GET", f"{sim.url}/ent/v2/tasks") for _ in range(50)]
        )

    assert within(on_credits["InternalServiceFailure"], n, p)
    assert on_credits["InternalServiceFailure"] + on_credits["ok"] == n
    assert on_list == {"ok": 50}


async def test_the_same_seed_meets_the_same_faults(http: aiohttp.ClientSession) -> None:
    faults = Faults.everywhere(EndpointFaults(server_error=0.3, too_many_requests=0.3))
    runs = []
    for _ in range(2):
        async with FakeVidu("k", faults=faults, seed=9) as sim:
            url = f"{sim.url}/ent/v2/credits"
            runs.append([await observe(http, "GET", url) for _ in range(40)])

    assert runs[0] == runs[1]
    assert len(set(runs[0])) == 3


async def test_commit_then_drop_creates_and_bills_the_task(http: aiohttp.ClientSession) -> None:
    faults = Faults(create=EndpointFaults(commit_then_drop=1.0))
    async with FakeVidu("k", faults=faults, credits=100) as sim:
        seen = await observe(
            http, "POST", f"{sim.url}/ent/v2/reference2video", json={**BODY, "payload": "p1"}
        )
        assert seen == "disconnected"
        [task] = sim.tasks.values()
        assert (task.payload, task.credits, sim.balance()) == ("p1", 45, 55)
        # The client can find the task it never heard about by listing and matching payload.
        async with http.get(f"{sim.url}/ent/v2/tasks", headers=HEADERS) as resp:
            listed = (await resp.json())["tasks"]
    assert [(t["id"], t["payload"]) for t in listed] == [(task.task_id, "p1")]


async def test_reset_drops_the_connection_before_handling(http: aiohttp.ClientSession) -> None:
    faults = Faults(create=EndpointFaults(reset=1.0))
    async with FakeVidu("k", faults=faults) as sim:
        seen = await observe(http, "POST", f"{sim.url}/ent/v2/reference2video", json=BODY)
        assert seen == "disconnected"
        assert sim.tasks == {}
        assert sim.stats.faults == {"reset": 1}


async def test_a_client_that_hangs_up_mid_body_is_no_answer_not_a_simulator_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A timeout around a create closes the connection while the body is on its way: the
    simulator records no answer, logs no traceback and makes no task."""
    async with FakeVidu("k") as sim:
        host, port = sim.url.removeprefix("http://").split(":")
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /ent/v2/reference2video HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Token k\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"model\": ")
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        async with asyncio.timeout(5):
            while sim.stats.in_flight or not sim.stats.requests:  # noqa: ASYNC110 - no event
                await asyncio.sleep(0.01)
    assert sim.stats.requests == {("create", NO_ANSWER): 1}
    assert sim.tasks == {}
    assert "the simulator failed" not in caplog.text


HOLD = 5.0
"""Seconds (simulator clock) a held create waits before it is committed."""


async def test_a_held_create_is_committed_after_its_client_hung_up(
    http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """The client gives up on a held create (a timeout, a cancel, a crash): the server still
    makes and bills the task once the hold ends, stamped with that moment, exactly once."""
    clock = ManualClock(now=100.0)
    faults = Faults(create=EndpointFaults(hold=HOLD))
    async with FakeVidu("k", faults=faults, clock=clock, credits=100) as sim:
        url = f"{sim.url}/ent/v2/reference2video"
        post = asyncio.create_task(observe(http, "POST", url, json={**BODY, "payload": "p1"}))
        await until(lambda: sim.simulation.held == 1)
        clock.advance(HOLD - 1.0)
        post.cancel()  # the client gives up, closing the connection
        with pytest.raises(asyncio.CancelledError):
            await post
        sim.tick()
        assert sim.tasks == {}  # still held
        clock.advance(1.0)
        sim.tick()
        [task] = sim.tasks.values()
        assert (task.payload, task.created_at, sim.balance()) == ("p1", 100.0 + HOLD, 55)
        await until(lambda: sim.stats.in_flight == 0)
        clock.advance(100.0)
        sim.tick()
        assert len(sim.tasks) == 1 and sim.simulation.held == 0
        async with http.get(f"{sim.url}/ent/v2/tasks", headers=HEADERS) as resp:
            listed = (await resp.json())["tasks"]
    assert [(t["id"], t["payload"]) for t in listed] == [(task.task_id, "p1")]
    assert sim.stats.requests == {("create", 200): 1, ("list_tasks", 200): 1}  # to nobody
    assert sim.stats.faults == {"hold": 1}
    assert sim.stats.payloads == {"p1": 1}
    assert "the simulator failed" not in caplog.text


async def test_a_held_create_answers_its_waiting_client_when_the_hold_ends(
    http: aiohttp.ClientSession,
) -> None:
    """A client that waits gets the task (or the refusal) once the hold ends, not before."""
    clock = ManualClock()
    faults = Faults(create=EndpointFaults(hold=HOLD))
    async with FakeVidu("k", faults=faults, clock=clock, credits=50) as sim:
        url = f"{sim.url}/ent/v2/reference2video"
        posts = [asyncio.create_task(observe(http, "POST", url, json=BODY)) for _ in range(2)]
        await until(lambda: sim.simulation.held == 2)
        clock.advance(HOLD - 0.1)
        sim.tick()
        assert sim.tasks == {} and not any(post.done() for post in posts)
        clock.advance(0.1)  # the background ticks commit both, the second one unpaid
        seen = sorted(await asyncio.gather(*posts))
    assert seen == ["CreditInsufficient", "ok"]
    assert len(sim.tasks) == 1 and sim.balance() == 5
    assert sim.stats.requests == {("create", 200): 1, ("create", 400): 1}


async def test_a_simulator_closing_drops_the_creates_it_holds(
    http: aiohttp.ClientSession,
) -> None:
    """Closing does not wait for a hold to end: the held create is never made."""
    faults = Faults(create=EndpointFaults(hold=HOLD))
    async with asyncio.timeout(5):
        async with FakeVidu("k", faults=faults, clock=ManualClock()) as sim:
            url = f"{sim.url}/ent/v2/reference2video"
            post = asyncio.create_task(observe(http, "POST", url, json=BODY))
            await until(lambda: sim.simulation.held == 1)
        assert await post == "disconnected"
    assert sim.tasks == {} and sim.simulation.held == 0


async def test_a_truncated_answer_promises_more_than_it_sends(http: aiohttp.ClientSession) -> None:
    faults = Faults(credits=EndpointFaults(truncated=1.0))
    async with (
        FakeVidu("k", faults=faults) as sim,
        http.get(f"{sim.url}/ent/v2/credits", headers=HEADERS) as resp,
    ):
        assert resp.status == 200 and resp.content_length
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()


@pytest.mark.parametrize(("retry_after", "header"), [(2.5, "2.5"), (None, None)])
async def test_injected_429_carries_retry_after_only_when_configured(
    http: aiohttp.ClientSession, retry_after: float | None, header: str | None
) -> None:
    faults = Faults(query=EndpointFaults(quota_exceeded=1.0, retry_after=retry_after))
    async with (
        FakeVidu("k", faults=faults) as sim,
        http.get(f"{sim.url}/ent/v2/tasks/1/creations", headers=HEADERS) as resp,
    ):
        body = await resp.json()
        assert (resp.status, body["reason"], body["code"]) == (429, "QuotaExceeded", 429)
        assert resp.headers.get("Retry-After") == header


async def test_the_rate_limit_is_a_token_bucket_on_the_simulator_clock(
    http: aiohttp.ClientSession,
) -> None:
    clock = ManualClock()
    faults = Faults(rate_limit=RateLimit(rate=2.0, burst=3))
    async with FakeVidu("k", faults=faults, clock=clock) as sim:
        url = f"{sim.url}/ent/v2/credits"

        async def get() -> tuple[int, str | None]:
            async with http.get(url, headers=HEADERS) as resp:
                return resp.status, resp.headers.get("Retry-After")

        assert [await get() for _ in range(4)] == [(200, None)] * 3 + [(429, "1")]
        clock.advance(0.5)  # one token back
        assert [await get() for _ in range(2)] == [(200, None), (429, "1")]
        clock.advance(10.0)  # the bucket refills only up to the burst
        assert [(await get())[0] for _ in range(4)] == [200, 200, 200, 429]
        assert sim.stats.faults == {"rate_limited": 3}


async def test_concurrent_requests_show_in_max_in_flight(http: aiohttp.ClientSession) -> None:
    faults = Faults(credits=EndpointFaults(latency=0.05, latency_rate=1.0))
    async with FakeVidu("k", faults=faults) as sim:
        url = f"{sim.url}/ent/v2/credits"
        async with asyncio.TaskGroup() as tg:
            for _ in range(6):
                tg.create_task(observe(http, "GET", url))
        assert sim.stats.max_in_flight == 6
        assert sim.stats.faults == {"latency": 6}
        assert sim.stats.in_flight == 0


def test_fault_configuration_is_checked() -> None:
    with pytest.raises(ValueError, match="more than 1"):
        EndpointFaults(server_error=0.6, reset=0.6)
    with pytest.raises(ValueError, match="create"):
        Faults(query=EndpointFaults(commit_then_drop=0.1))
    with pytest.raises(ValueError, match="hold only applies to create"):
        Faults(list_tasks=EndpointFaults(hold=1.0))
    with pytest.raises(ValueError, match="hold"):
        EndpointFaults(hold=-1.0)
    with pytest.raises(ValueError, match="reset"):
        EndpointFaults(reset=1.5)
    with pytest.raises(ValueError, match="'rate' must be a finite number: inf"):
        RateLimit(rate=math.inf)
    with pytest.raises(ValueError, match="'link_ttl' must be >= 0"):
        FakeVidu("k", link_ttl=-1.0)
    with pytest.raises(ValueError, match="'link_ttl' must be a finite number: nan"):
        FakeVidu("k", link_ttl=math.nan)
    everywhere = Faults.everywhere(EndpointFaults(reset=0.1, commit_then_drop=0.2, hold=3.0))
    assert (everywhere.create.commit_then_drop, everywhere.create.hold) == (0.2, 3.0)
    assert everywhere.query == EndpointFaults(reset=0.1)
