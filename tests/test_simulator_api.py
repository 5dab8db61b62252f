"""Conformance of the simulator's endpoints, spoken to in raw HTTP (plain aiohttp, not our client).

The spec (shared/spec/API.md and the seed) is the judge: the seed's request is accepted, its
response has the seed's fields and types, and every refusal has the documented status, reason
and error shape.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import pytest
from PIL import Image

from vidu_async.testing import (
    CANCELED,
    Account,
    FakeVidu,
    ManualClock,
    Quirks,
    Timeline,
    task_cost,
)

# The seed's request and response examples, verbatim.
SEED_REQUEST: dict[str, Any] = json.loads(
    '{"model": "viduq3-mix", "images": ['
    '"https://picx.zhimg.com/v2-4911df093b40ee5511938a1ac2a5cdc4_r.jpg"],'
    '"prompt": "一只可爱的cat在草地上奔跑,阳光明媚,画面温馨"}'
)
SEED_RESPONSE: dict[str, Any] = {
    "task_id": "911084878697623552",
    "type": "character2video",
    "state": "created",
    "model": "viduq2",
    "style": "general",
    "prompt": "一只可爱的@cat在草地上奔跑,阳光明媚,画面温馨",
    "images": ["https://picx.zhimg.com/v2-4911df093b40ee5511938a1ac2a5cdc4_r.jpg"],
    "duration": 5,
    "seed": 1830691647,
    "aspect_ratio": "16:9",
    "resolution": "720p",
    "movement_amplitude": "auto",
    "created_at": "2026-01-20T06:37:57.371761937Z",
    "credits": 45,
    "payload": "",
    "cus_priority": 0,
    "off_peak": False,
    "watermark": False,
    "is_rec": False,
    "wm_position": "unspecified",
    "wm_url": "",
    "meta_data": "",
    "client_request_id": "",
}
IMAGE = "https://example.com/ref.png"
TIMESTAMP = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{9}Z"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def sim(clock: ManualClock) -> AsyncIterator[FakeVidu]:
    timeline = Timeline(created=0.1, processing=1.0)
    async with FakeVidu("key-a", clock=clock, timeline=timeline, link_ttl=60.0) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Api:
    """Raw calls to one simulator, authenticated with ``key``."""

    def __init__(self, http: aiohttp.ClientSession, sim: FakeVidu, key: str = "key-a") -> None:
        self.http, self.sim, self.key = http, sim, key

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.key}"}

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        kwargs.setdefault("headers", self.headers)
        async with self.http.request(method, self.sim.url + path, **kwargs) as resp:
            return resp.status, await resp.json()

    async def create(self, **fields: Any) -> dict[str, Any]:
        body = {"model": "viduq2", "prompt": "a cat", "images": [IMAGE], **fields}
        status, answer = await self.call("POST", "/ent/v2/reference2video", json=body)
        assert status == 200, answer
        return dict(answer)

    async def query(self, task_id: str) -> dict[str, Any]:
        status, answer = await self.call("GET", f"/ent/v2/tasks/{task_id}/creations")
        assert status == 200, answer
        return dict(answer)

    async def list(self, params: Any = ()) -> tuple[int, Any]:
        return await self.call("GET", "/ent/v2/tasks", params=params)


@pytest.fixture
def api(http: aiohttp.ClientSession, sim: FakeVidu) -> Api:
    return Api(http, sim)


def assert_error(status: int, body: Any, want_status: int, want_reason: str) -> None:
    """Vidu's error shape, exactly: code, reason, message, metadata.trace_id."""
    assert (status, body["reason"]) == (want_status, want_reason), body
    assert set(body) == {"code", "reason", "message", "metadata"}
    assert body["code"] == want_status
    assert isinstance(body["message"], str) and body["message"]
    assert set(body["metadata"]) == {"trace_id"}
    assert isinstance(body["metadata"]["trace_id"], str) and body["metadata"]["trace_id"]


# --- create -------------------------------------------------------------------------------------


async def test_seed_request_is_accepted_with_the_seed_response_fields_and_types(
    api: Api, sim: FakeVidu
) -> None:
    status, answer = await api.call("POST", "/ent/v2/reference2video", json=SEED_REQUEST)

    assert status == 200
    assert list(answer) == list(SEED_RESPONSE)
    for name, example in SEED_RESPONSE.items():
        assert type(answer[name]) is type(example), name
    assert answer["task_id"].isdigit() and len(answer["task_id"]) == 18
    assert answer["state"] == "created"
    assert (answer["model"], answer["prompt"], answer["images"]) == (
        "viduq3-mix",
        SEED_REQUEST["prompt"],
        SEED_REQUEST["images"],
    )
    assert (answer["duration"], answer["resolution"], answer["aspect_ratio"]) == (5, "720p", "16:9")
    assert answer["created_at"][:-1].split(".")[1].isdigit()
    assert len(answer["created_at"].split(".")[1]) == 10  # nine digits and the Z
    assert answer["credits"] == task_cost("viduq3-mix", 5, off_peak=False)
    assert sim.tasks[answer["task_id"]].state == "created"


async def test_create_echoes_the_request_and_bills_the_task(api: Api, sim: FakeVidu) -> None:
    before = sim.balance()
    answer = await api.create(
        duration=4,
        seed=42,
        payload="job-1",
        off_peak=True,
        watermark=True,
        wm_position=2,
        meta_data='{"Label": "x"}',
    )

    assert (answer["duration"], answer["seed"], answer["payload"]) == (4, 42, "job-1")
    assert (answer["off_peak"], answer["watermark"], answer["meta_data"]) == (
        True,
        True,
        '{"Label": "x"}',
    )
    assert answer["wm_position"] == "top_right"
    assert answer["credits"] == task_cost("viduq2", 4, off_peak=True) == 18  # half of 36
    assert sim.balance() == before - 18
    assert sim.stats.tasks_created == 1
    assert sim.stats.payloads == {"job-1": 1}


async def test_task_ids_are_unique_and_a_duplicate_payload_is_counted(
    api: Api, sim: FakeVidu
) -> None:
    ids = [(await api.create(payload=p))["task_id"] for p in ("a", "b", "a", "")]

    assert len(set(ids)) == 4
    assert sim.stats.duplicate_payloads() == {"a": 2}


@pytest.mark.parametrize(
    ("headers", "scheme"),
    [
        ({}, "Token"),
        ({"Authorization": "Token wrong-key"}, "Token"),
        ({"Authorization": "Bearer key-a"}, "Token"),
        ({"Authorization": "Token key-a"}, "Bearer"),
        ({"Authorization": "key-a"}, "Token"),
    ],
)
async def test_a_missing_or_wrong_key_or_scheme_is_unauthorized_and_never_echoed(
    http: aiohttp.ClientSession, headers: dict[str, str], scheme: str
) -> None:
    async with FakeVidu("key-a", auth_scheme=scheme) as sim:
        api = Api(http, sim)
        for method, path in [
            ("POST", "/ent/v2/reference2video"),
            ("GET", "/ent/v2/tasks/1/creations"),
            ("POST", "/ent/v2/tasks/1/cancel"),
            ("GET", "/ent/v2/tasks"),
            ("GET", "/ent/v2/credits"),
        ]:
            status, body = await api.call(method, path, headers=headers, json=SEED_REQUEST)
            assert_error(status, body, 401, "Unauthorized")
            assert "key-a" not in body["message"] and "wrong-key" not in body["message"]
        assert sim.stats.tasks_created == 0


async def test_bearer_scheme_is_accepted_when_configured(http: aiohttp.ClientSession) -> None:
    async with FakeVidu("key-b", auth_scheme="Bearer") as sim:
        status, _ = await Api(http, sim).call(
            "GET", "/ent/v2/credits", headers={"Authorization": "Bearer key-b"}
        )
        assert status == 200


@pytest.mark.parametrize(
    ("body", "reason", "named"),
    [
        ({**SEED_REQUEST, "style": "anime"}, "FieldUnwanted", "style"),
        ({"model": "viduq2", "images": [IMAGE]}, "FieldLacking", "prompt"),
        ({"prompt": "a cat", "images": [IMAGE]}, "FieldLacking", "model"),
        ({**SEED_REQUEST, "duration": "5"}, "FieldInvalid", "duration"),
        ({**SEED_REQUEST, "duration": 17}, "FieldInvalid", "duration"),
        ({**SEED_REQUEST, "bgm": "true"}, "FieldInvalid", "bgm"),
        ({**SEED_REQUEST, "seed": None}, "FieldInvalid", "seed"),
        ({**SEED_REQUEST, "images": [123]}, "FieldInvalid", "images[0]"),
        ({**SEED_REQUEST, "images": ["/etc/passwd"]}, "FieldInvalid", "images[0]"),
        ({**SEED_REQUEST, "images": "https://a/b.png"}, "FieldInvalid", "images"),
        ({**SEED_REQUEST, "images": [IMAGE] * 8}, "FieldInvalid", "images"),
        ({**SEED_REQUEST, "model": "vidu9"}, "FieldInvalid", "model"),
        ({**SEED_REQUEST, "movement_amplitude": "large"}, "FieldInvalid", "movement_amplitude"),
        ({**SEED_REQUEST, "model": "viduq2", "audio": True}, "FieldInvalid", "audio"),
        ({**SEED_REQUEST, "model": "viduq1", "aspect_ratio": "21:9"}, "FieldInvalid", "aspect"),
        ({**SEED_REQUEST, "prompt": "x" * 5001}, "FieldInvalid", "prompt"),
        ({**SEED_REQUEST, "sounds": ["https://a/b.mp3"]}, "FieldInvalid", "sounds"),
        ([SEED_REQUEST], "BadRequest", "object"),
    ],
)
async def test_a_wrong_create_body_is_refused_naming_the_field(
    api: Api, sim: FakeVidu, body: Any, reason: str, named: str
) -> None:
    status, answer = await api.call("POST", "/ent/v2/reference2video", json=body)

    assert_error(status, answer, 400, reason)
    assert named in answer["message"]
    assert sim.stats.tasks_created == 0


async def test_a_body_that_is_not_json_is_a_bad_request(api: Api) -> None:
    status, answer = await api.call(
        "POST", "/ent/v2/reference2video", data=b"{not json", headers=api.headers
    )
    assert_error(status, answer, 400, "BadRequest")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_over_20_mb_is_refused(api: Api, sim: FakeVidu, chunked: bool) -> None:
    huge = json.dumps({**SEED_REQUEST, "payload": "x" * (20 * 1024 * 1024)}).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(huge), 1 << 20):
            yield huge[start : start + (1 << 20)]

    data: Any = chunks() if chunked else io.BytesIO(huge)
    headers = {**api.headers, "Content-Type": "application/json"}
    status, answer = await api.call("POST", "/ent/v2/reference2video", data=data, headers=headers)

    assert_error(status, answer, 400, "BadRequest")
    assert "20 MB" in answer["message"]
    assert sim.stats.tasks_created == 0


async def test_an_empty_balance_answers_credit_insufficient_until_topped_up(
    http: aiohttp.ClientSession,
) -> None:
    async with FakeVidu("key-a", credits=50) as sim:
        api = Api(http, sim)
        await api.create()  # 45 credits
        status, answer = await api.call(
            "POST", "/ent/v2/reference2video", json={**SEED_REQUEST, "model": "viduq2"}
        )
        assert_error(status, answer, 400, "CreditInsufficient")
        assert sim.balance() == 5 and sim.stats.tasks_created == 1

        sim.top_up(40)
        await api.create()
        assert sim.balance() == 0


# --- query, links and files -----------------------------------------------------------------


async def test_query_follows_the_task_to_success_with_served_creations(
    api: Api, clock: ManualClock
) -> None:
    task_id = (await api.create(payload="p", bgm=True))["task_id"]
    first = await api.query(task_id)
    assert (first["id"], first["state"], first["creations"]) == (task_id, "created", [])

    clock.advance(0.1)
    assert (await api.query(task_id))["state"] == "processing"
    clock.advance(1.0)
    done = await api.query(task_id)

    assert done["state"] == "success" and done["err_code"] == ""
    assert (done["payload"], done["bgm"], done["off_peak"], done["credits"]) == (
        "p",
        True,
        False,
        45,
    )
    assert done["created_at"] == first["created_at"]
    [creation] = done["creations"]
    assert "watermarked_url" not in creation
    async with api.http.get(creation["url"]) as resp:
        video = await resp.read()
        assert (resp.status, resp.content_type) == (200, "video/mp4")
    assert video[4:8] == b"ftyp" and b"moov" in video
    async with api.http.get(creation["cover_url"]) as resp:
        assert (resp.status, resp.content_type) == (200, "image/jpeg")
        cover = Image.open(io.BytesIO(await resp.read()))
    assert cover.format == "JPEG" and cover.size == (160, 90)


async def test_links_expire_with_403_and_a_new_query_gives_fresh_ones(
    api: Api, clock: ManualClock
) -> None:
    task_id = (await api.create(watermark=True))["task_id"]
    clock.advance(2.0)
    [creation] = (await api.query(task_id))["creations"]
    for url in (creation["url"], creation["cover_url"], creation["watermarked_url"]):
        async with api.http.get(url) as resp:
            assert resp.status == 200

    clock.advance(60.0)
    async with api.http.get(creation["url"]) as resp:
        assert_error(resp.status, await resp.json(), 403, "Forbidden")
    [fresh] = (await api.query(task_id))["creations"]
    assert fresh["url"] != creation["url"]
    async with api.http.get(fresh["url"]) as resp:
        assert resp.status == 200


async def test_a_tampered_link_is_forbidden(api: Api, clock: ManualClock) -> None:
    task_id = (await api.create())["task_id"]
    clock.advance(2.0)
    [creation] = (await api.query(task_id))["creations"]
    # Point the cover's signed token at the video: the signature covers the file name.
    forged = creation["cover_url"].replace("cover.jpg", "video.mp4")
    async with api.http.get(forged) as resp:
        assert_error(resp.status, await resp.json(), 403, "Forbidden")


async def test_an_unknown_task_is_not_found_and_accounts_do_not_see_each_other(
    http: aiohttp.ClientSession,
) -> None:
    accounts = {"key-a": Account(), "key-b": Account()}
    async with FakeVidu(accounts=accounts) as sim:
        a, b = Api(http, sim, "key-a"), Api(http, sim, "key-b")
        task_id = (await a.create())["task_id"]
        for api, path in [
            (a, "/ent/v2/tasks/123/creations"),
            (b, f"/ent/v2/tasks/{task_id}/creations"),
        ]:
            status, body = await api.call("GET", path)
            assert_error(status, body, 404, "TaskNotFound")
        status, body = await b.call("POST", f"/ent/v2/tasks/{task_id}/cancel", json={"id": task_id})
        assert_error(status, body, 404, "TaskNotFound")
        assert (await b.list())[1]["tasks"] == []


# --- cancel -------------------------------------------------------------------------------------


async def test_cancel_before_start_refunds_and_reads_failed_task_canceled(
    http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    async with FakeVidu("key-a", clock=clock, concurrency_limit=1) as sim:
        api = Api(http, sim)
        running = (await api.create())["task_id"]
        waiting = (await api.create())["task_id"]
        clock.advance(0.2)
        assert (await api.query(waiting))["state"] == "queueing"
        before = sim.balance()

        status, answer = await api.call(
            "POST", f"/ent/v2/tasks/{waiting}/cancel", json={"id": waiting}
        )
        assert (status, answer) == (200, {})
        cancelled = await api.query(waiting)
        assert (cancelled["state"], cancelled["err_code"], cancelled["credits"]) == (
            "failed",
            CANCELED,
            0,
        )
        assert sim.balance() == before + 45

        status, answer = await api.call(
            "POST", f"/ent/v2/tasks/{running}/cancel", json={"id": running}
        )
        assert_error(status, answer, 400, "BadRequest")
        assert answer["message"] == "task state is scheduled, can not cancel"
        assert (await api.query(running))["state"] == "processing"


async def test_cancel_of_a_just_created_task_and_a_mismatched_body(api: Api) -> None:
    task_id = (await api.create())["task_id"]
    status, answer = await api.call("POST", f"/ent/v2/tasks/{task_id}/cancel", json={"id": "9"})
    assert_error(status, answer, 400, "FieldInvalid")

    status, answer = await api.call("POST", f"/ent/v2/tasks/{task_id}/cancel")
    assert (status, answer) == (200, {})
    assert (await api.query(task_id))["err_code"] == CANCELED


# --- list and credits -----------------------------------------------------------------------


async def test_list_pages_through_every_task_once_newest_first(api: Api) -> None:
    created = [(await api.create(payload=str(i)))["task_id"] for i in range(23)]
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        params = {"pager.pagesz": "10", **({"pager.page_token": token} if token else {})}
        status, page = await api.list(params)
        assert status == 200
        seen += [task["id"] for task in page["tasks"]]
        pages += 1
        token = page["next_page_token"]
        if not token:
            break
    assert pages == 3
    assert seen == created[::-1]

    status, page = await api.list({"pager.page": "2", "pager.pagesz": "10"})
    assert [t["id"] for t in page["tasks"]] == created[2::-1]
    assert page["next_page_token"] == ""


async def test_list_filters_by_task_ids_and_states(api: Api, clock: ManualClock) -> None:
    first = (await api.create())["task_id"]
    clock.advance(2.0)
    second = (await api.create())["task_id"]
    third = (await api.create())["task_id"]

    _, page = await api.list([("task_ids", first), ("task_ids", third)])
    assert {t["id"] for t in page["tasks"]} == {first, third}
    _, page = await api.list([("states", "success")])
    assert [t["id"] for t in page["tasks"]] == [first]
    assert page["tasks"][0]["creations"][0]["url"].startswith(api.sim.url)
    _, page = await api.list([("states", "created"), ("states", "failed")])
    assert {t["id"] for t in page["tasks"]} == {second, third}
    item = page["tasks"][0]
    assert {"id", "state", "model", "prompt", "payload", "created_at", "creations"} <= set(item)


async def test_list_default_window_is_seven_days_and_rfc3339_bounds_work(
    api: Api, clock: ManualClock
) -> None:
    old = await api.create()
    clock.advance(8 * 24 * 3600.0)
    new = await api.create()

    _, page = await api.list()
    assert [t["id"] for t in page["tasks"]] == [new["task_id"]]
    _, page = await api.list({"created_at.from": old["created_at"]})  # nine fraction digits
    assert [t["id"] for t in page["tasks"]] == [new["task_id"], old["task_id"]]
    _, page = await api.list(
        {"created_at.from": "2000-01-01T00:00:00+08:00", "created_at.to": old["created_at"]}
    )
    assert [t["id"] for t in page["tasks"]] == [old["task_id"]]


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"pager.pagesz": "101"}, "PageSizeOutOfRange"),
        ({"pager.pagesz": "0"}, "PageSizeOutOfRange"),
        ({"pager.pagesz": "ten"}, "FieldInvalid"),
        ({"pager.page": "-1"}, "FieldInvalid"),
        ({"pager.page_token": "garbage"}, "FieldInvalid"),
        ({"states": "done"}, "FieldInvalid"),
        ({"created_at.from": "yesterday"}, "FieldInvalid"),
        ([("task_ids", str(i)) for i in range(101)], "FieldItemCountOutOfRange"),
    ],
)
async def test_a_wrong_list_query_is_refused(api: Api, params: Any, reason: str) -> None:
    status, body = await api.list(params)
    assert_error(status, body, 400, reason)


async def test_list_accepts_100_task_ids_and_100_a_page(api: Api) -> None:
    status, _ = await api.list(
        [("task_ids", str(i)) for i in range(100)] + [("pager.pagesz", "100")]
    )
    assert status == 200


async def test_credits_report_balance_concurrency_and_queue(
    http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    async with FakeVidu("key-a", clock=clock, credits=1000, concurrency_limit=2) as sim:
        api = Api(http, sim)
        for _ in range(5):
            await api.create()
        clock.advance(0.2)
        status, answer = await api.call("GET", "/ent/v2/credits")

    assert status == 200
    assert answer == {
        "remains": [
            {
                "type": "metered",
                "credit_remain": 1000 - 5 * 45,
                "concurrency_limit": 2,
                "current_concurrency": 2,
                "queue_count": 3,
            }
        ],
        "packages": [],
    }


async def test_unknown_routes_answer_in_the_error_shape(api: Api) -> None:
    status, body = await api.call("GET", "/ent/v2/nothing")
    assert_error(status, body, 404, "NotFound")
    status, body = await api.call("DELETE", "/ent/v2/credits")
    assert_error(status, body, 405, "MethodNotAllowed")


async def test_stats_are_served_as_json(api: Api, sim: FakeVidu) -> None:
    await api.create(payload="x")
    await api.create(payload="x")
    await api.call("GET", "/ent/v2/tasks/1/creations")
    async with api.http.get(sim.url + "/_sim/stats") as resp:
        stats = await resp.json()

    assert stats["tasks_created"] == 2
    assert stats["duplicate_payloads"] == {"x": 2}
    assert stats["requests"] == {"create": {"200": 2}, "query": {"404": 1}}
    assert stats["max_in_flight"] >= 1 and stats["in_flight"] == 0


# --- the readings of the docs' uncertain points (Quirks) ----------------------------------------


async def test_every_answer_carries_a_date_on_the_skewed_clock(
    http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    async with FakeVidu("key-a", clock=clock, quirks=Quirks(clock_skew=-600.0)) as sim:
        api = Api(http, sim)
        created = await api.create()
        async with http.get(sim.url + "/ent/v2/credits", headers=api.headers) as ok:
            ok_date = parsedate_to_datetime(ok.headers["Date"])
        async with http.get(sim.url + "/ent/v2/tasks/1/creations", headers=api.headers) as miss:
            assert miss.status == 404
            miss_date = parsedate_to_datetime(miss.headers["Date"])
        now = dt.datetime.now(dt.UTC)
        for date in (ok_date, miss_date):
            assert abs((date - now).total_seconds() + 600) < 5
        created_at = dt.datetime.fromisoformat(created["created_at"])
        assert abs((created_at - ok_date).total_seconds()) < 2
        # the default window (7 days back from the skewed now) and explicit bounds both use it
        _, page = await api.list()
        assert [t["id"] for t in page["tasks"]] == [created["task_id"]]
        since = (now - dt.timedelta(seconds=60)).isoformat().replace("+00:00", "Z")
        _, page = await api.list({"created_at.from": since})
        assert page["tasks"] == []


async def test_a_lagging_list_hides_new_tasks_that_a_query_shows(
    http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    async with FakeVidu("key-a", clock=clock, quirks=Quirks(list_lag=10.0)) as sim:
        api = Api(http, sim)
        created = await api.create()
        assert (await api.query(created["task_id"]))["id"] == created["task_id"]
        clock.advance(9.9)
        assert (await api.list())[1]["tasks"] == []
        clock.advance(0.1)
        assert [t["id"] for t in (await api.list())[1]["tasks"]] == [created["task_id"]]


async def test_a_list_without_payload_omits_only_that_field(
    http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    async with FakeVidu("key-a", clock=clock, quirks=Quirks(list_without_payload=True)) as sim:
        api = Api(http, sim)
        created = await api.create(payload="mine")
        (item,) = (await api.list())[1]["tasks"]
        assert "payload" not in item
        assert (item["model"], item["prompt"]) == ("viduq2", "a cat")
        assert (await api.query(created["task_id"]))["payload"] == "mine"


async def test_paper_paging_reads_only_the_paper_spelling(
    http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    async with FakeVidu("key-a", clock=clock, quirks=Quirks(paper_paging=True)) as sim:
        api = Api(http, sim)
        created = [(await api.create(payload=str(i)))["task_id"] for i in range(23)]
        _, page = await api.list({"pager.pagesz": "100"})
        assert len(page["tasks"]) == 10  # pager.pagesz ignored: the default 10
        _status, page = await api.list({"pager.pagesz": "100", "paper.pagesz": "20"})
        assert len(page["tasks"]) == 20
        _, rest = await api.list(
            {"paper.pagesz": "20", "pager.page_token": page["next_page_token"]}
        )
        assert [t["id"] for t in page["tasks"] + rest["tasks"]] == created[::-1]
        _, third = await api.list({"paper.pagesz": "10", "paper.page": "2"})
        assert [t["id"] for t in third["tasks"]] == created[2::-1]
