"""Signed callbacks, sans-IO: the spec's worked example, signing, and every rejection."""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
from email.utils import formatdate
from typing import Any

import pytest

from vidu_async.callbacks import (
    CallbackVerificationError,
    NonceCache,
    check_nonce,
    sign,
    sign_callback,
    signing_string,
    verify_callback,
)
from vidu_async.errors import ConfigurationError, ViduError
from vidu_async.testing import callbacks as simulator_callbacks

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


SPEC_HEADERS = {"Date": SPEC_DATE, "x-request-nonce": SPEC_NONCE}


def headers_for(
    url: str,
    *,
    key: str = KEY,
    date: str = SPEC_DATE,
    nonce: str = SPEC_NONCE,
    order: tuple[str, ...] = ("Date", "x-request-nonce"),
) -> dict[str, str]:
    """The headers Vidu would send with a callback to ``url``, built here from the spec."""
    text = signing_string("POST", url, {"Date": date, "x-request-nonce": nonce}, order)
    return {
        "Date": date,
        "x-request-nonce": nonce,
        "X-HMAC-SIGNED-HEADERS": ";".join(order),
        "X-HMAC-ALGORITHM": "hmac-sha256",
        "X-HMAC-ACCESS-KEY": "vidu",
        "X-HMAC-SIGNATURE": sign(key, text),
    }


def verify(url: str, headers: dict[str, str], **kwargs: Any) -> None:
    verify_callback("POST", url, headers, KEY, now=kwargs.pop("now", SPEC_TIME), **kwargs)


# --- the signing string and the signature ----------------------------------------------------


def test_the_signing_string_is_the_spec_worked_example() -> None:
    assert signing_string("POST", SPEC_URL, SPEC_HEADERS) == SPEC_STRING


def test_the_signature_is_base64_hmac_sha256_of_the_signing_string() -> None:
    digest = hmac.new(KEY.encode(), SPEC_STRING.encode(), hashlib.sha256).digest()
    assert sign(KEY, SPEC_STRING) == base64.b64encode(digest).decode()


def test_a_path_and_query_sign_like_the_full_url() -> None:
    lower_case = {k.lower(): v for k, v in SPEC_HEADERS.items()}
    path_only = signing_string("post", "/vidu/callback?name=james&age=36", lower_case)
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
    text = signing_string("POST", url, {"Date": "D", "x-request-nonce": "N"})
    assert text == f"POST\n{path}\n{query}\nvidu\nD\nDate:D\nx-request-nonce:N\n"


def test_signed_headers_follow_the_order_given_and_may_name_others() -> None:
    headers = {"date": "D", "X-REQUEST-NONCE": "N", "x-extra": "E"}
    text = signing_string("POST", "/cb", headers, ("x-request-nonce", "X-Extra", "Date"))
    assert text == "POST\n/cb\n\nvidu\nD\nx-request-nonce:N\nX-Extra:E\nDate:D\n"
    with pytest.raises(KeyError, match="x-other"):
        signing_string("POST", "/cb", headers, ("Date", "X-Other"))


def test_sign_callback_gives_every_header_of_the_spec_example() -> None:
    assert sign_callback(KEY, SPEC_URL, date=SPEC_DATE, nonce=SPEC_NONCE) == headers_for(SPEC_URL)
    reordered = sign_callback(
        KEY, SPEC_URL, date=SPEC_DATE, nonce=SPEC_NONCE, signed_headers=("x-request-nonce", "Date")
    )
    assert reordered == headers_for(SPEC_URL, order=("x-request-nonce", "Date"))


def test_sign_callback_defaults_to_now_and_a_fresh_nonce() -> None:
    first, second = sign_callback(KEY, SPEC_URL), sign_callback(KEY, SPEC_URL)
    assert first["x-request-nonce"] != second["x-request-nonce"]
    cache = NonceCache()
    verify_callback("POST", SPEC_URL, first, KEY, seen_nonces=cache)
    verify_callback("POST", SPEC_URL, second, KEY, seen_nonces=cache)


def test_the_simulator_signs_with_this_module() -> None:
    # One implementation: the simulator's sender signs with this module's signer.
    assert simulator_callbacks.sign_callback is sign_callback


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


@pytest.mark.parametrize(
    ("signed_url", "received"),
    [
        ("http://127.0.0.1:8080", "/"),
        ("http://127.0.0.1:8080", ""),
        ("http://127.0.0.1:8080/", "/"),
        ("http://127.0.0.1:8080?a=1&b=2", "/?a=1&b=2"),
    ],
)
def test_an_empty_path_signs_as_slash(signed_url: str, received: str) -> None:
    verify(received, headers_for(signed_url))


def test_the_key_that_signed_is_returned_among_several() -> None:
    headers = headers_for(SPEC_URL, key="key-b")
    found = verify_callback("POST", SPEC_URL, headers, ["key-a", "key-b"], now=SPEC_TIME)
    assert found == "key-b"
    assert verify_callback("POST", SPEC_URL, headers, "key-b", now=SPEC_TIME) == "key-b"
    with pytest.raises(CallbackVerificationError, match="signature does not match"):
        verify_callback("POST", SPEC_URL, headers, ["key-a", "key-c"], now=SPEC_TIME)


def test_a_path_prefix_restores_the_public_path_a_proxy_stripped() -> None:
    # Vidu signed the public URL /hooks/vidu/callback; the proxy passed on /vidu/callback.
    public = headers_for("https://example.com/hooks/vidu/callback?name=james&age=36")
    received = "/vidu/callback?name=james&age=36"
    verify(received, public, path_prefix="/hooks")
    with pytest.raises(CallbackVerificationError, match=r"POST /vidu/callback\?name=james"):
        verify(received, public)
    with pytest.raises(CallbackVerificationError, match=r"POST /hooks/vidu/callback\?name"):
        verify(received, headers_for(SPEC_URL), path_prefix="/hooks")


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
        forged(**{"X-HMAC-SIGNATURE": "not base64 at all"}),
        "signature does not match",
        id="garbage-signature",
    ),
    *(
        pytest.param(
            SPEC_URL,
            forged(**{name: headers_for(SPEC_URL)[name] + odd}),
            f"{name} '.*' is not ASCII: not a header Vidu sends",
            id=f"not-ascii-{name}-{odd.encode('unicode_escape').decode()}",
        )
        # aiohttp decodes bytes that are not UTF-8 (b"\xff") as lone surrogates
        for name in ("X-HMAC-SIGNATURE", "Date", "x-request-nonce")
        for odd in ("\udcff", "é")
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


def test_a_date_in_minus_0000_is_utc_not_local_time() -> None:
    verify(SPEC_URL, headers_for(SPEC_URL, date="Tue, 06 May 2025 12:09:42 -0000"))


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
    with pytest.raises(CallbackVerificationError, match="in the past"):
        verify(SPEC_URL, headers_for(SPEC_URL), seen_nonces=cache, now=SPEC_TIME + 3600)
    assert SPEC_NONCE not in cache
    verify(SPEC_URL, headers_for(SPEC_URL), seen_nonces=cache)
    with pytest.raises(CallbackVerificationError, match=f"nonce '{SPEC_NONCE}' was seen before"):
        verify(SPEC_URL, headers_for(SPEC_URL), seen_nonces=cache)
    verify(SPEC_URL, headers_for(SPEC_URL, nonce="another"), seen_nonces=cache)


def test_a_nonce_checked_without_recording_is_used_up_only_by_check_nonce() -> None:
    cache = NonceCache(clock=lambda: 0.0)
    headers = headers_for(SPEC_URL)
    for _ in range(2):  # refused after verifying (a bad body, a full queue): delivered again
        verify(SPEC_URL, headers, seen_nonces=cache, record_nonce=False)
    assert SPEC_NONCE not in cache
    assert check_nonce(cache, {"X-Request-Nonce": SPEC_NONCE}) == SPEC_NONCE  # accepted
    assert SPEC_NONCE in cache
    with pytest.raises(CallbackVerificationError, match="was seen before"):
        verify(SPEC_URL, headers, seen_nonces=cache, record_nonce=False)
    with pytest.raises(CallbackVerificationError, match="was seen before"):
        check_nonce(cache, headers)


def test_an_empty_key_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="no API key"):
        verify_callback("POST", SPEC_URL, headers_for(SPEC_URL), "")
    with pytest.raises(ConfigurationError, match="no API key"):
        verify_callback("POST", SPEC_URL, headers_for(SPEC_URL), [KEY, ""])


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


def test_a_discarded_key_is_new_again() -> None:
    cache = NonceCache(clock=FakeClock())
    assert cache.add("a")
    cache.discard("a")
    cache.discard("never seen")
    assert cache.add("a")


@pytest.mark.parametrize("kwargs", [{"ttl": 0}, {"max_size": 0}])
def test_a_cache_that_keeps_nothing_is_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="ttl > 0 and max_size >= 1"):
        NonceCache(**kwargs)


def test_the_cache_keeps_at_most_max_size_nonces_dropping_the_oldest() -> None:
    cache = NonceCache(max_size=3, clock=FakeClock())
    for nonce in "abcd":
        assert cache.add(nonce)
    assert len(cache) == 3
    assert "a" not in cache
    assert not cache.add("d")
