"""The API key never leaves through an error: a gateway echoing it back is scrubbed everywhere.

Real sockets: a small aiohttp.web gateway that puts the ``Authorization`` header it received into
its error messages, headers and bodies, and one that answers malformed HTTP (so that aiohttp's
own error, holding the request's headers, is what the client sees).
"""

from __future__ import annotations

import base64
import json
import logging
import random
import traceback
import urllib.parse
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given
from hypothesis import strategies as st

from vidu_async.client import ViduClient
from vidu_async.errors import APIError, APIStatusError, ResponseFormatError, holds_secret, redact
from vidu_async.requests import TextToVideoRequest
from vidu_async.retry import RetryPolicy, no_wait

KEY = "vda_sk/secret+key=0123456789"
"""A key with characters that JSON (``\\/``) and URLs (``%2F``) escape."""

ServerFactory = Callable[..., Awaitable[TestServer]]


def echo_gateway() -> web.Application:
    """Every task read fails; each answer repeats the ``Authorization`` header in some form."""

    async def echo(request: web.Request) -> web.StreamResponse:
        auth = request.headers["Authorization"]
        kind = request.match_info["task_id"]
        if kind == "json":
            body = {
                "code": 400,
                "reason": f"BadRequest {auth}",
                "message": f"unknown credentials {auth!r}",
                "metadata": {"trace_id": auth},
            }
            return web.json_response(body, status=400, headers={"X-Echo": auth})
        if kind == "escaped":  # a PHP-style encoder escapes '/'
            text = json.dumps({"reason": "Unauthorized", "message": auth}).replace("/", "\\/")
            return web.Response(status=401, text=text, content_type="application/json")
        if kind == "text":
            return web.Response(status=500, text=f"<h1>upstream failed</h1> got {auth}")
        if kind == "redirect":
            raise web.HTTPFound(f"https://elsewhere.example/{auth.split()[1]}?k={auth}")
        if kind == "garbage":
            return web.Response(status=200, text=f"not json: {auth}")
        assert request.transport is not None
        request.transport.write(f"HTTP/1.1 200 OK\r\nX-Bad: {auth}\x00\r\n\r\n".encode())
        request.transport.close()  # malformed: aiohttp raises ClientResponseError
        return web.Response()

    app = web.Application()
    app.router.add_get("/ent/v2/tasks/{task_id}/creations", echo)
    return app


def everything_shown(error: BaseException) -> str:
    """All an error reporter prints: str and repr along the whole chain, and the traceback."""
    parts = ["".join(traceback.format_exception(error))]
    seen: BaseException | None = error
    while seen is not None:
        parts += [str(seen), repr(seen), repr(vars(seen))]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


@pytest.mark.parametrize("kind", ["json", "escaped", "text", "redirect", "garbage", "malformed"])
async def test_an_echoed_key_appears_in_no_error_chain_traceback_or_log(
    aiohttp_server: ServerFactory, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    caplog.set_level(logging.DEBUG)
    server = await aiohttp_server(echo_gateway())
    retry = RetryPolicy(max_attempts=2, sleep=no_wait)
    async with ViduClient(KEY, base_url=str(server.make_url("/")), retry=retry) as client:
        with pytest.raises(APIError) as caught:
            await client.get_task(kind)
    shown = everything_shown(caught.value)
    assert "[redacted]" in shown or kind == "malformed"
    for form in (KEY, "secret+key", "secret%2Bkey", "sk\\/secret"):
        assert form not in shown
        assert form not in caplog.text


async def test_an_echoed_key_is_scrubbed_from_every_field_of_the_error(
    aiohttp_server: ServerFactory,
) -> None:
    server = await aiohttp_server(echo_gateway())
    async with ViduClient(KEY, base_url=str(server.make_url("/"))) as client:
        with pytest.raises(APIError) as caught:
            await client.get_task("json")
    error = caught.value
    assert isinstance(error, APIStatusError)
    assert error.reason == "BadRequest Token [redacted]"
    assert error.message == "unknown credentials 'Token [redacted]'"
    assert error.trace_id == "Token [redacted]"
    assert error.headers["x-echo"] == "Token [redacted]"
    assert KEY not in error.body and error.body.count("[redacted]") == 3


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        ("Token sk/e+y!01", ["sk/e+y!01"], "Token [redacted]"),
        ('{"m": "sk\\/e+y!01"}', ["sk/e+y!01"], '{"m": "[redacted]"}'),
        ("?auth=Token%20sk%2Fe%2By%2101", ["sk/e+y!01"], "?auth=Token%20[redacted]"),
        ("key-aaaa or key-bbbb", ["key-aaaa", "key-bbbb"], "[redacted] or [redacted]"),
        ("not known", ["k"], "not known"),  # shorter than any real key: words stay whole
        ("nothing to hide", [""], "nothing to hide"),
        ("no secrets", [], "no secrets"),
    ],
)
def test_redact(text: str, secrets: list[str], expected: str) -> None:
    assert redact(text, secrets) == expected


SPELLINGS: dict[str, Callable[[str], str]] = {
    "itself": str,
    "quote": urllib.parse.quote,  # safe="/": the '/' stays, '+' and '=' become %2B and %3D
    "quote_all": lambda text: urllib.parse.quote(text, safe=""),
    "quote_plus": urllib.parse.quote_plus,  # the space of "Token " becomes '+'
    "quote_lowercase": lambda text: urllib.parse.quote(text).lower(),
    "json_slash": lambda text: json.dumps(text)[1:-1].replace("/", "\\/"),
    "json_u": lambda text: "".join(f"\\u{ord(c):04X}" for c in text),
    "json_u_some": lambda text: "".join(f"\\u{ord(c):04x}" if i % 3 else c
                                        for i, c in enumerate(text)),
    "html": lambda text: "".join(c if c.isalnum() else f"&#{ord(c)};" for c in text),
    "html_hex": lambda text: "".join(c if c.isalnum() else f"&#x{ord(c):X};" for c in text),
    "html_no_semicolon": lambda text: "".join(c if c.isalnum() else f"&#{ord(c)}"
                                              for c in text),  # HTML reads "&#43" as '+' too
    "js_escape": lambda text: "".join(f"%u{ord(c):04X}" for c in text),  # escape() of old
    "backslash_x": lambda text: "".join(f"\\x{ord(c):02x}" if c.isascii() else c
                                        for c in text),  # C, Python and JS string escapes
}
"""How gateways and proxies spell a header they echo, applied to ``Token <key>`` whole."""

KEYS = ["sk-plain0123456789abcdef", "Ab/cd+EF=ghIJ12345", KEY, "k3y==/+/+=="]
"""A plain key and keys with the characters URL and JSON encoders escape."""


def leaked_forms(key: str) -> list[str]:
    """Every spelling of ``key`` (lowercased: looked for in lowercased text)."""
    return [spell(key).lower() for spell in SPELLINGS.values()]


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_redact_knows_every_spelling_of_every_key(key: str, spelling: str) -> None:
    spelled = SPELLINGS[spelling]("Token " + key)
    assert redact(f"<p>got {spelled}.</p>", [key]) == (
        f"<p>got {spelled.removesuffix(SPELLINGS[spelling](key))}[redacted].</p>"
    )


@pytest.mark.parametrize("key", [*KEYS, "ünï-Cödé-key"])
@given(data=st.data())
def test_answers_are_found_to_hold_a_key_in_every_spelling_redact_knows(
    key: str, data: st.DataObject
) -> None:
    """``holds_secret`` (a fast search of every answer) never misses what ``redact`` replaces:
    the key spelled a different way character by character, within other text."""
    spellings = [*SPELLINGS.values(), lambda c: urllib.parse.quote(urllib.parse.quote(c))]
    spelled = "".join(data.draw(st.sampled_from(spellings))(c) for c in key)
    cased = data.draw(st.sampled_from([str, str.lower, str.upper]))(spelled)
    text = data.draw(st.text(max_size=5)) + cased + data.draw(st.text(max_size=5))
    assert (redact(text, [key]) != text) is holds_secret(text.encode(), [key])


ECHOED_IMAGE = base64.b64encode(random.Random(7).randbytes(300_000))
"""Base64 as a create's answer echoes an inline image: ``+`` and ``/`` all over it."""


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_a_key_spelled_inside_a_large_base64_echo_is_found_wherever_it_is(
    key: str, spelling: str
) -> None:
    """A big answer is searched only around where a spelling could be (its escapes, the key's
    longest alphanumeric run): the key is found anyway, at the start, middle or end."""
    spelled = SPELLINGS[spelling]("Token " + key).encode()
    for at in (0, len(ECHOED_IMAGE) // 2, len(ECHOED_IMAGE)):
        image = ECHOED_IMAGE[:at] + spelled + ECHOED_IMAGE[at:]
        assert holds_secret(b'{"images": ["data:image/png;base64,%s"]}' % image, [key])


def test_a_large_base64_echo_without_a_key_is_not_scrubbed() -> None:
    escapes = b"%2B \\u00e9 &#233; " * 2000  # escapes, none of a key's characters
    assert not holds_secret(ECHOED_IMAGE + escapes + ECHOED_IMAGE, KEYS)


@pytest.mark.parametrize(
    ("spelled", "misspelled"),
    [
        ("&#x041;b/cd+EF=&#0103;hIJ12345", "&#x041;b/cd+EF=&#0104;hIJ12345"),
        (f"&#x{'0' * 300}41;b/cd+EF=&#{'0' * 300}103;hIJ12345",  # any number of zeros
         f"&#x{'0' * 300}41;b/cd+EF=&#{'0' * 300}104;hIJ12345"),
        ("Ab\\/cd+EF=ghIJ1234%35", "Ab\\/cd+EF=ghIJ1234%36"),  # the first escape at the end
    ],
)
def test_a_key_with_a_long_escape_in_a_large_answer_is_found(
    spelled: str, misspelled: str
) -> None:
    """A spelling starts at most two bytes a character before its first escape but may end far
    after it; URL escapes elsewhere change nothing."""
    key = "Ab/cd+EF=ghIJ12345"
    assert redact(spelled, [key]) == "[redacted]"
    for text, found in ((spelled, True), (misspelled, False)):
        body = b"%2F" * 50 + ECHOED_IMAGE + text.encode() + ECHOED_IMAGE
        assert holds_secret(body, [key]) is found


def test_answers_without_a_key_are_not_scrubbed() -> None:
    answer = b'{"task_id": "9027", "prompt": "a 100% \\"real\\" fox & hounds + more"}'
    assert not holds_secret(answer, KEYS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Ab/cd+EF=ghIJ1234", "Ab/cd+EF=ghIJ1234"),  # a character short
        ("Ab/cd+EF=ghIJ123456", "[redacted]6"),
        ("Ab/cd EF=ghIJ12345", "Ab/cd EF=ghIJ12345"),  # a '+' is not a space
        ("Ab%2Fcd%2b%45F%3dghIJ12345%", "[redacted]%"),  # an escape per character, any case
        ("Ab\\/cd\\u002bEF&#x3d;ghIJ12345", "[redacted]"),
    ],
)
def test_redact_matches_the_key_and_nothing_else(text: str, expected: str) -> None:
    assert redact(text, ["Ab/cd+EF=ghIJ12345"]) == expected


def spelling_gateway() -> web.Application:
    """Task ``{kind}-{spelling}`` fails as ``kind`` says (a JSON 401, an HTML 500, a redirect),
    with the ``Authorization`` header it received spelled as ``SPELLINGS[spelling]`` says."""

    async def echo(request: web.Request) -> web.StreamResponse:
        kind, spelling = request.match_info["task_id"].split("-")
        spelled = SPELLINGS[spelling](request.headers["Authorization"])
        if kind == "json":
            text = f'{{"code": 401, "reason": "Unauthorized", "message": "got {spelled}"}}'
            return web.Response(status=401, text=text, content_type="application/json")
        if kind == "html":
            return web.Response(status=500, text=f"<p>got {spelled}</p>", content_type="text/html")
        # '#' would start a fragment: a gateway building the URL escapes it
        raise web.HTTPFound(f"https://elsewhere.example/{spelled.replace('#', '%23')}")

    app = web.Application()
    app.router.add_get("/ent/v2/tasks/{task_id}/creations", echo)
    return app


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("kind", ["json", "html", "redirect"])
async def test_a_key_echoed_in_any_spelling_appears_in_no_error_repr_or_log(
    aiohttp_server: ServerFactory, caplog: pytest.LogCaptureFixture, kind: str, key: str
) -> None:
    caplog.set_level(logging.DEBUG)
    server = await aiohttp_server(spelling_gateway())
    retry = RetryPolicy(max_attempts=1, sleep=no_wait)
    shown = []
    async with ViduClient(key, base_url=str(server.make_url("/")), retry=retry) as client:
        shown.append(repr(client))
        for spelling in SPELLINGS:
            with pytest.raises(APIError) as caught:
                await client.get_task(f"{kind}-{spelling}")
            shown.append(everything_shown(caught.value))
            assert "[redacted]" in str(caught.value), spelling
    text = "\n".join([*shown, caplog.text]).lower()
    assert not [form for form in leaked_forms(key) if form in text]


def echoing_success() -> web.Application:
    """Every answer is a 200 that repeats the ``Authorization`` header: spelled with ``\\u``
    escapes (which no byte search finds) in a task, in a list in the credits, in a field of
    the wrong type in a create's answer."""

    def escaped(text: str) -> str:
        return "".join(f"\\u{ord(c):04x}" for c in text)

    async def task(request: web.Request) -> web.Response:
        auth = request.headers["Authorization"]
        text = f'{{"id": "t1", "state": "success", "echo": "{escaped(auth)}", "creations": []}}'
        return web.Response(text=text, content_type="application/json")

    async def credits(request: web.Request) -> web.Response:
        auth = request.headers["Authorization"]
        return web.json_response({"remains": [], "packages": [{"note": auth}]})

    async def create(request: web.Request) -> web.Response:
        auth = request.headers["Authorization"]
        return web.json_response({"task_id": "t1", "state": "created", "credits": auth})

    app = web.Application()
    app.router.add_get("/ent/v2/tasks/{task_id}/creations", task)
    app.router.add_get("/ent/v2/credits", credits)
    app.router.add_post("/ent/v2/text2video", create)
    return app


async def test_a_key_echoed_in_a_success_answer_is_scrubbed_before_anything_keeps_it(
    aiohttp_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = await aiohttp_server(echoing_success())
    retry = RetryPolicy(max_attempts=1, sleep=no_wait, visibility_lag=0)
    async with ViduClient(KEY, base_url=str(server.make_url("/")), retry=retry) as client:
        task = await client.get_task("t1")
        credits = await client.get_credits()
        with pytest.raises(APIError) as caught:  # "credits" holds a string: a format error
            await client.create(TextToVideoRequest("viduq2", "a cat"))
    assert task.extra["echo"] == "Token [redacted]"
    shown = "\n".join([repr(task), str(task), repr(task.raw), repr(credits), str(credits),
                       everything_shown(caught.value), caplog.text])
    assert "[redacted]" in everything_shown(caught.value)
    for form in (KEY, "secret+key", "secret%2Bkey", "sk\\/secret"):
        assert form not in shown


def escaped_again(auth: str) -> dict[str, str]:
    """``auth`` spelled so that a JSON escape hides the spelling in the raw bytes: a Go gateway
    (``&`` as ``\\u0026``) echoing HTML references, a nested JSON text, each escaping ``/``."""
    entities = "".join(f"&#{ord(c)};" for c in auth).replace("&", "\\u0026")
    nested = json.dumps(json.dumps({"auth": auth}).replace("/", "\\/")).replace("/", "\\/")
    return {"go": f'"{entities}"', "nested": nested}  # nested: ...6h\\\/Ij9...


@pytest.mark.parametrize("spelling", ["go", "nested"])
async def test_a_key_a_json_escape_hides_in_a_success_answer_is_scrubbed(
    aiohttp_server: ServerFactory, spelling: str
) -> None:
    async def task(request: web.Request) -> web.Response:
        echo = escaped_again(request.headers["Authorization"])[spelling]
        text = f'{{"id": "t1", "state": "success", "echo": {echo}, "creations": []}}'
        return web.Response(text=text, content_type="application/json")

    app = web.Application()
    app.router.add_get("/ent/v2/tasks/{task_id}/creations", task)
    server = await aiohttp_server(app)
    key = "vda_Ab3dEf6h/Ij9kLm2nOp5q"
    assert not holds_secret(escaped_again(key)[spelling].encode(), [key])  # hidden from it
    async with ViduClient(key, base_url=str(server.make_url("/"))) as client:
        task = await client.get_task("t1")
    assert "[redacted]" in task.extra["echo"]
    assert redact(task.extra["echo"], [key]) == task.extra["echo"]


async def test_an_answer_nested_too_deeply_is_a_format_error_naming_the_call(
    aiohttp_server: ServerFactory,
) -> None:
    async def deep(request: web.Request) -> web.Response:
        return web.Response(text="[" * 100_000 + "]" * 100_000, content_type="application/json")

    app = web.Application()
    app.router.add_get("/ent/v2/tasks/{task_id}/creations", deep)
    server = await aiohttp_server(app)
    async with ViduClient(KEY, base_url=str(server.make_url("/"))) as client:
        with pytest.raises(ResponseFormatError, match="tasks/t1/creations answered with JSON "
                                                      "nested too deeply to read"):
            await client.get_task("t1")
