"""Signed callbacks: the spec's worked example, every rejection, and the aiohttp handler."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
from email.utils import formatdate
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from vidu_async.callbacks import (
    CallbackVerificationError,
    NonceCache,
    callback_handler,
    sign,
    signing_string,
    verify_callback,
)
from vidu_async.errors import ConfigurationError, ViduError
from vidu_async.tasks import TaskResult
from vidu_async.testing.callbacks import callback_headers

KEY = "vda_test_secret_key_0123456789"
SPEC_URL = "http://127.0.0.1:8080/vidu/callback?name=james&age=36"
SPEC_DATE = "Tue, 06 May 2025 12:09:42 GMT"
SPEC_TIME = 1746533382.0  # SPEC_DATE as POSIX seconds
SPEC_NONCE = "123e4567-e89b-12d3-a456-426614174000"
SPEC_STRING = (
    "POST\n"
    "/vidu/callback\n"
    "name=james&age=36\n"
    "vidu\n"
    "Tue, 06 May 2025 12:09:42 GMT\n"
    "Date:Tue, 06 May 2025 12:09:42 GMT\n"
    "x-request-nonce:123e4567-e89b-12d3-a456-426614174000\n"
)


def headers_for(
    url: str,
    *,
    key: str = KEY,
    date: str = SPEC_DATE,
    nonce: str = SPEC_NONCE,
    order: tuple[str, ...] = ("Date", "x-request-nonce"),
) -> dict[str, str]:
    """The headers Vidu would send with a callback to ``url``."""
    return {
        "Date": date,
        "x-request-nonce": nonce,
        "X-HMAC-SIGNED-HEADERS": ";".join(order),
        "X-HMAC-ALGORITHM": "hmac-sha256",
        "X-HMAC-ACCESS-KEY": "vidu",
        "X-HMAC-SIGNATURE": sign(key, signing_string("POST", url, date, nonce, order)),
    }


def verify(url: str, headers: dict[str, str], **kwargs: Any) -> None:
    verify_callback("POST", url, headers, KEY, now=kwargs.pop("now", SPEC_TIME), **kwargs)


# --- the signing string and the signature ----------------------------------------------------


def test_the_signing_string_is_the_spec_worked_example() -> None:
    assert signing_string("POST", SPEC_URL, SPEC_DATE, SPEC_NONCE) == SPEC_STRING


def test_the_signature_is_base64_hmac_sha256_of_the_signing_string() -> None:
    digest = hmac.new(KEY.encode(), SPEC_STRING.encode(), hashlib.sha256).digest()
    assert sign(KEY, SPEC_STRING) == base64.b64encode(digest).decode()


def test_a_path_and_query_sign_like_the_full_url() -> None:
    path_only = signing_string("post", "/vidu/callback?name=james&age=36", SPEC_DATE, SPEC_NONCE)
    assert path_only == SPEC_STRING


@pytest.mark.parametrize(
    ("url", "path", "query"),
    [
        ("http://h:1", "/", ""),
        ("http://h:1?x=1", "/", "x=1"),
        ("http://h/a/b", "/a/b", ""),
        ("https://h/cb?z=1&a=2&z=0", "/cb", "z=1&a=2&z=0"),  # as written, not re-sorted
        ("/cb?q=a%20b&r=", "/cb", "q=a%20b&r="),  # not decoded either
    ],
)
def test_path_and_query_are_taken_as_written(url: str, path: str, query: str) -> None:
    text = signing_string("POST", url, "D", "N")
    assert text == f"POST\n{path}\n{query}\nvidu\nD\nDate:D\nx-request-nonce:N\n"


def test_signed_headers_follow_the_order_given_and_may_name_others() -> None:
    text = signing_string(
        "POST", "/cb", "D", "N", ("x-request-nonce", "X-Extra", "Date"), headers={"x-extra": "E"}
    )
    assert text == "POST\n/cb\n\nvidu\nD\nx-request-nonce:N\nX-Extra:E\nDate:D\n"
    with pytest.raises(KeyError, match="x-other"):
        signing_string("POST", "/cb", "D", "N", ("Date", "X-Other"))


def test_the_simulators_signer_and_this_verifier_agree() -> None:
    headers = callback_headers(KEY, SPEC_URL, date=SPEC_DATE, nonce=SPEC_NONCE)
    verify(SPEC_URL, headers)
    assert headers["X-HMAC-SIGNATURE"] == sign(KEY, SPEC_STRING)


# --- verification ---------------------------------------------------------------------------


def test_a_genuine_callback_verifies_with_headers_in_any_case() -> None:
    headers = headers_for(SPEC_URL)
    verify(SPEC_URL, headers)
    verify("/vidu/callback?name=james&age=36", {k.upper(): v for k, v in headers.items()})
    verify(SPEC_URL, {k.lower(): v for k, v in headers.items()})


def test_reordered_signed_headers_verify_when_signed_in_that_order() -> None:
    order = ("x-request-nonce", "Date")
    verify(SPEC_URL, headers_for(SPEC_URL, order=order))
    claimed = headers_for(SPEC_URL) | {"X-HMAC-SIGNED-HEADERS": ";".join(order)}
    with pytest.raises(CallbackVerificationError, match="signature does not match"):
        verify(SPEC_URL, claimed)


def forged(**changes: str) -> dict[str, str]:
    return headers_for(SPEC_URL) | changes


def without(name: str) -> dict[str, str]:
    headers = headers_for(SPEC_URL)
    del headers[name]
    return headers


SIGNATURE_HEADERS = (
    "X-HMAC-SIGNATURE",
    "X-HMAC-ALGORITHM",
    "X-HMAC-ACCESS-KEY",
    "X-HMAC-SIGNED-HEADERS",
    "Date",
    "x-request-nonce",
)
REJECTIONS = [
    *(
        pytest.param(SPEC_URL, without(name), f"missing header {name}: not", id=f"no-{name}")
        for name in SIGNATURE_HEADERS
    ),
    pytest.param(SPEC_URL, {}, "missing headers X-HMAC-SIGNATURE, X-HMAC-ALGORITHM", id="none"),
    pytest.param(
        SPEC_URL, forged(**{"X-HMAC-ALGORITHM": "hmac-sha1"}), "'hmac-sha1'; only", id="algo"
    ),
    pytest.param(
        SPEC_URL, forged(**{"X-HMAC-ACCESS-KEY": "admin"}), "ACCESS-KEY is 'admin'", id="access"
    ),
    pytest.param(
        SPEC_URL,
        forged(**{"X-HMAC-SIGNED-HEADERS": "Date"}),
        "does not sign x-request-nonce",
        id="nonce-unsigned",
    ),
    pytest.param(
        SPEC_URL,
        forged(**{"X-HMAC-SIGNED-HEADERS": "Date;x-request-nonce;X-Extra"}),
        "names X-Extra, absent",
        id="signed-header-absent",
    ),
    pytest.param(
        SPEC_URL,
        forged(**{"X-HMAC-SIGNATURE": sign("another key", SPEC_STRING)}),
        "signature does not match for POST /vidu/callback[?]name=james&age=36",
        id="other-key",
    ),
    pytest.param(
        SPEC_URL,
        forged(**{"X-HMAC-SIGNATURE": "not base64 at all, ünïcode"}),
        "signature does not match",
        id="garbage-signature",
    ),
    pytest.param(SPEC_URL, forged(**{"x-request-nonce": "fresh"}), "does not match", id="nonce"),
    pytest.param(
        SPEC_URL,
        forged(Date="Tue, 06 May 2025 12:09:43 GMT"),
        "does not match",
        id="tampered-date",
    ),
    pytest.param(
        "http://127.0.0.1:8080/vidu/callback?age=36&name=james",
        headers_for(SPEC_URL),
        "does not match",
        id="query-reordered",
    ),
    pytest.param(
        "/other/callback?name=james&age=36", headers_for(SPEC_URL), "does not match", id="path"
    ),
]


@pytest.mark.parametrize(("url", "headers", "reason"), REJECTIONS)
def test_each_rejection_says_why_and_never_shows_the_key(
    url: str, headers: dict[str, str], reason: str
) -> None:
    with pytest.raises(CallbackVerificationError, match=reason) as caught:
        verify(url, headers)
    assert isinstance(caught.value, ViduError)
    assert KEY not in str(caught.value)


@pytest.mark.parametrize(
    ("offset", "reason"),
    [(301, "301 s in the past, outside the 300 s window"), (-301, "301 s in the future")],
)
def test_a_date_outside_the_window_is_refused(offset: float, reason: str) -> None:
    with pytest.raises(CallbackVerificationError, match=reason):
        verify(SPEC_URL, headers_for(SPEC_URL), now=SPEC_TIME + offset)
    verify(SPEC_URL, headers_for(SPEC_URL), now=SPEC_TIME + offset, max_skew=301)
    verify(SPEC_URL, headers_for(SPEC_URL), now=SPEC_TIME + math.copysign(300, offset))  # edge


def test_an_unparsable_date_is_refused() -> None:
    headers = headers_for(SPEC_URL, date="yesterday")
    with pytest.raises(CallbackVerificationError, match="'yesterday' is not an HTTP date"):
        verify(SPEC_URL, headers)


def test_the_default_now_is_the_current_time() -> None:
    fresh = headers_for(SPEC_URL, date=formatdate(usegmt=True))
    verify_callback("POST", SPEC_URL, fresh, KEY)
    with pytest.raises(CallbackVerificationError, match="in the past"):
        verify_callback("POST", SPEC_URL, headers_for(SPEC_URL), KEY)


def test_a_replayed_nonce_is_refused_and_forgeries_do_not_use_nonces_up() -> None:
    cache = NonceCache(clock=lambda: 0.0)
    with pytest.raises(CallbackVerificationError, match="does not match"):
        verify(SPEC_URL, forged(**{"X-HMAC-SIGNATURE": "AAAA"}), seen_nonces=cache)
    assert SPEC_NONCE not in cache
    verify(SPEC_URL, headers_for(SPEC_URL), seen_nonces=cache)
    with pytest.raises(CallbackVerificationError, match=f"nonce '{SPEC_NONCE}' was seen before"):
        verify(SPEC_URL, headers_for(SPEC_URL), seen_nonces=cache)
    verify(SPEC_URL, headers_for(SPEC_URL, nonce="another"), seen_nonces=cache)


def test_an_empty_key_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="no API key"):
        verify_callback("POST", SPEC_URL, headers_for(SPEC_URL), "")
    with pytest.raises(ConfigurationError, match="no API key"):
        callback_handler("", on_task=_ignore)


async def _ignore(result: TaskResult) -> None:
    return None


# --- the nonce cache ------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_nonces_expire_after_the_ttl() -> None:
    clock = FakeClock()
    cache = NonceCache(ttl=10, clock=clock)
    assert cache.add("a")
    clock.now = 5
    assert cache.add("b")
    assert not cache.add("a")
    clock.now = 10
    assert "a" not in cache
    assert "b" in cache
    assert len(cache) == 1
    assert cache.add("a")  # forgotten, so new again
    clock.now = 15
    assert len(cache) == 1


def test_the_cache_keeps_at_most_max_size_nonces_dropping_the_oldest() -> None:
    cache = NonceCache(max_size=3, clock=FakeClock())
    for nonce in "abcd":
        assert cache.add(nonce)
    assert len(cache) == 3
    assert "a" not in cache
    assert not cache.add("d")


# --- the aiohttp handler --------------------------------------------------------------------

BODY = {
    "id": "task-1",
    "state": "success",
    "err_code": "",
    "credits": 45,
    "payload": "",
    "creations": [{"id": "c1", "url": "https://files/x.mp4", "cover_url": "https://files/x.jpg"}],
}
PATH = "/vidu/callback?name=james&age=36"


async def serve(
    aiohttp_client: AiohttpClient, received: list[TaskResult], **kwargs: Any
) -> TestClient[web.Request, web.Application]:
    async def on_task(result: TaskResult) -> None:
        received.append(result)

    app = web.Application()
    handler = callback_handler(KEY, on_task, clock=lambda: SPEC_TIME + 5, **kwargs)
    app.router.add_post("/vidu/callback", handler)
    return await aiohttp_client(app)


async def test_a_signed_post_is_parsed_and_handed_over(aiohttp_client: AiohttpClient) -> None:
    received: list[TaskResult] = []
    client = await serve(aiohttp_client, received)
    response = await client.post(PATH, data=json.dumps(BODY), headers=headers_for(PATH))
    assert response.status == 200
    assert received == [TaskResult.from_dict(BODY)]
    assert received[0].creations[0].url == "https://files/x.mp4"


async def test_forged_and_replayed_posts_get_401(aiohttp_client: AiohttpClient) -> None:
    received: list[TaskResult] = []
    client = await serve(aiohttp_client, received)
    forgery = headers_for(PATH, key="a guessed key")
    response = await client.post(PATH, data=json.dumps(BODY), headers=forgery)
    assert response.status == 401
    assert "signature does not match" in await response.text()

    genuine = headers_for(PATH)
    assert (await client.post(PATH, data=json.dumps(BODY), headers=genuine)).status == 200
    replay = await client.post(PATH, data=json.dumps(BODY), headers=genuine)
    assert replay.status == 401
    assert "seen before" in await replay.text()
    assert len(received) == 1


async def test_the_body_is_not_signed(aiohttp_client: AiohttpClient) -> None:
    # The same signed headers carry any body: which is why on_task must re-read the task.
    received: list[TaskResult] = []
    client = await serve(aiohttp_client, received)
    other = BODY | {"id": "task-2", "state": "failed"}
    response = await client.post(PATH, data=json.dumps(other), headers=headers_for(PATH))
    assert response.status == 200
    assert [r.id for r in received] == ["task-2"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "Expecting property name"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (b'{"state": "success"}', "id: missing"),
        (b'{"id": "t", "credits": "many"}', "credits: "),
    ],
)
async def test_a_verified_post_with_a_bad_body_gets_400(
    aiohttp_client: AiohttpClient, body: bytes, reason: str
) -> None:
    received: list[TaskResult] = []
    client = await serve(aiohttp_client, received)
    response = await client.post(PATH, data=body, headers=headers_for(PATH))
    assert response.status == 400
    assert reason in await response.text()
    assert received == []


async def test_a_path_prefix_restores_the_public_path(aiohttp_client: AiohttpClient) -> None:
    # Vidu signed the public URL /hooks/vidu/callback; the proxy stripped /hooks on the way.
    received: list[TaskResult] = []
    client = await serve(aiohttp_client, received, path_prefix="/hooks")
    public = headers_for("https://example.com/hooks" + PATH)
    assert (await client.post(PATH, data=json.dumps(BODY), headers=public)).status == 200
    unprefixed = headers_for(PATH, nonce="n2")
    assert (await client.post(PATH, data=json.dumps(BODY), headers=unprefixed)).status == 401
    assert len(received) == 1
