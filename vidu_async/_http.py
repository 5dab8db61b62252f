"""Accounts, the session pool, and one HTTP exchange with the API mapped to our errors.

An ``Account`` is where and as whom to call (base URL, key, auth scheme). ``SessionPool`` keeps
one ``aiohttp.ClientSession`` per account, plus one keyless session for file hosts, so no
download ever carries an ``Authorization`` header. ``send()`` makes a single attempt: retries
live in ``retry.py`` and ``client.py``. The key is sent only in the ``Authorization`` header of
an API request, never follows a redirect, and appears in no repr, log or error message.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import ipaddress
import json
import logging
import os
import re
import time
import urllib.parse
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from typing import Any

import aiohttp
import attrs

from vidu_async._loops import PerLoop
from vidu_async._version import __version__
from vidu_async.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ConfigurationError,
    RateLimitError,
    ResponseFormatError,
    holds_secret,
    redact,
    scrub,
    status_error_class,
    strings_hold_secret,
)
from vidu_async.loglimit import LogLimiter
from vidu_async.retry import parse_retry_after

__all__ = [
    "API_PREFIX",
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT",
    "MAX_ANSWER_BYTES",
    "PARSE_OFF_LOOP",
    "USER_AGENT",
    "Account",
    "SessionPool",
    "answer_limit",
    "call_name",
    "normalize_base_url",
    "read_bounded",
    "send",
    "status_error",
]

logger = logging.getLogger("vidu_async.http")

DEFAULT_BASE_URL = "https://api.vidu.com"
API_PREFIX = "/ent/v2"
USER_AGENT = f"vidu-async/{__version__}"
DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=300, sock_connect=15, sock_read=60)
"""API calls: 15 s to connect, 1 min between bytes of the answer (a stalled server is named
within a minute), 5 min in all (large uploads)."""

PREPARE_AT_ONCE = 2
"""Create bodies with inline media prepared at once: measured, more starve the event loop."""
STREAM_ABOVE = 2**20
"""Request bodies larger than this (inline media) are streamed in chunks, not written at once."""
MAX_ANSWER_BYTES = 16 * 2**20
"""The most one API answer may hold: a page of 100 tasks is well under 1 MB. A bigger (or
endless) answer fails its call rather than filling memory. An answer to a request with a body
may hold twice that body more (``answer_limit``)."""
PARSE_OFF_LOOP = 256 * 2**10
"""Answers larger than this are parsed in a thread (a create's echo of its inline images: 10 MB
took 25-130 ms); smaller ones, nearly all, inline (a thread hop costs more than their parse)."""
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})
_SNIPPET = 300


def normalize_base_url(value: str) -> str:
    """``value`` without a trailing ``/`` or ``/ent/v2``; checks it is an absolute http(s) URL
    that requests can be made to, so that a bad one fails here, not as a call's network error."""
    url = value.strip().rstrip("/")
    if url.endswith(API_PREFIX):
        url = url[: -len(API_PREFIX)].rstrip("/")
    parts = _split(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"base_url must be an absolute http(s) URL such as {DEFAULT_BASE_URL}, got {value!r}"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigurationError(
            f"base_url for {parts.hostname} must be a plain URL, without query, fragment or "
            "user:password"
        )
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ConfigurationError(f"base_url must not hold spaces or control characters: {url!r}")
    try:
        port = parts.port  # a port out of 0-65535 or not a plain number raises
        if parts.netloc.startswith("[") and not re.fullmatch(r"\[[^\]]+\](:\d+)?",
                                                             parts.netloc):
            raise ValueError("an [IPv6] host is followed by nothing but :port")
    except ValueError as exc:
        raise ConfigurationError(f"base_url {url!r} is not a valid URL: {exc}") from None
    if port == 0:
        raise ConfigurationError(f"base_url {url!r} has port 0, where no server listens")
    return url


def _split(url: str) -> urllib.parse.SplitResult:
    try:
        return urllib.parse.urlsplit(url)
    except ValueError as exc:  # a malformed [IPv6] host
        raise ConfigurationError(f"base_url {url!r} is not a valid URL: {exc}") from None


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine: localhost, 127.0.0.0/8 or ::1."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_key(_: object, __: object, value: str) -> None:
    if not value or value != value.strip() or any(c in value for c in "\r\n"):
        raise ConfigurationError(
            "the API key is empty or has surrounding whitespace or line breaks (check VIDU_API_KEY)"
        )


def _check_scheme(_: object, __: object, value: str) -> None:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", value):
        raise ConfigurationError(
            f"auth_scheme must be one word such as Token or Bearer, got {value!r}"
        )


@attrs.frozen
class Account:
    """One Vidu account: its API host and key. The key never shows in a repr.

    Building an account refuses to send the key over plain ``http://`` to anything but a
    loopback address (the embedded simulator).
    """

    api_key: str = attrs.field(repr=False, validator=_check_key)
    base_url: str = attrs.field(default=DEFAULT_BASE_URL, converter=normalize_base_url)
    auth_scheme: str = attrs.field(default="Token", validator=_check_scheme)

    def __attrs_post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.base_url)
        if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
            raise ConfigurationError(
                f"refusing to send the API key over plain http to {parts.hostname}: use https "
                "(plain http is allowed only to a loopback address, such as the simulator)"
            )

    @classmethod
    def from_env(
        cls,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        auth_scheme: str | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> Account:
        """An account from the arguments, falling back to ``VIDU_API_KEY``, ``VIDU_BASE_URL``
        and ``VIDU_AUTH_SCHEME`` (empty values count as unset), then to the defaults."""
        key = api_key or environ.get("VIDU_API_KEY", "")
        if not key:
            raise ConfigurationError(
                "no API key: pass api_key=... or set the VIDU_API_KEY environment variable"
            )
        return cls(
            key,
            base_url or environ.get("VIDU_BASE_URL") or DEFAULT_BASE_URL,
            auth_scheme or environ.get("VIDU_AUTH_SCHEME") or "Token",
        )

    def url(self, path: str, prefix: str = API_PREFIX) -> str:
        """The full URL of an API ``path`` such as ``/tasks`` (under ``prefix``)."""
        return f"{self.base_url}{prefix}{path}"

    def headers(self) -> dict[str, str]:
        """The headers of an API request (the only place the key is used)."""
        return {"Authorization": f"{self.auth_scheme} {self.api_key}", "Accept": "application/json"}


class SessionPool:
    """One ``aiohttp.ClientSession`` per account, created on first use and reused; ``close()``
    closes them all. ``session(None)`` is the keyless session used for file downloads.

    ``timeout`` and the connector limits apply to every session of the pool. The sessions
    belong to the event loop they were made in (see ``session``).
    """

    def __init__(
        self,
        *,
        timeout: aiohttp.ClientTimeout | None = None,
        limit: int = 100,
        limit_per_host: int = 0,
    ) -> None:
        self.timeout = timeout or DEFAULT_TIMEOUT
        self.limit = limit
        self.limit_per_host = limit_per_host
        self._sessions: dict[Account | None, aiohttp.ClientSession] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        """The loop the sessions were made in."""
        self._watch: AsyncGenerator[None, None] | None = None
        """Closes the sessions when closed: as the loop shuts down, or by ``close``."""
        self._retiring: set[asyncio.Task[None]] = set()
        """Closes sessions left by a loop closed without shutting down, from the next loop."""
        self.preparing = PerLoop(lambda: asyncio.Semaphore(PREPARE_AT_ONCE))
        """Bounds the create bodies with inline media being prepared in threads at once."""
        self.no_answer = LogLimiter()
        """Calls of the pool's clients that got no answer are warned about at most once per
        kind of call and error every ten seconds (a dead network under a busy batch would
        otherwise print a line per request)."""
        self._closed = False

    def __repr__(self) -> str:
        return f"<SessionPool sessions={len(self._sessions)} closed={self._closed}>"

    def api_keys(self) -> tuple[str, ...]:
        """The keys of the accounts this pool has sessions for: scrubbed from any server text."""
        return tuple(account.api_key for account in self._sessions if account is not None)

    def session(self, account: Account | None) -> aiohttp.ClientSession:
        """The session for ``account`` (None: file hosts); must be called in a running loop.

        Sessions belong to the event loop they were made in, and are closed as it shuts down
        (``asyncio.run`` ends). Called from another loop once that one is closed (a second
        ``asyncio.run``, a loop per test), the pool makes new ones; while it is open,
        ``RuntimeError``."""
        if self._closed:
            raise RuntimeError("the client is closed; create a new ViduClient")
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._move_to(loop)
        session = self._sessions.get(account)
        if session is None:
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self.limit, limit_per_host=self.limit_per_host
                ),
                timeout=self.timeout,
                headers={"User-Agent": USER_AGENT},
            )
            self._sessions[account] = session
        return session

    def _move_to(self, loop: asyncio.AbstractEventLoop) -> None:
        """Makes ``loop`` the pool's loop, if the sessions' loop is closed (or there is none)."""
        if self._loop is not None and not self._loop.is_closed():
            raise RuntimeError(
                "a ViduClient belongs to one event loop: this one's sessions were made in "
                "another event loop, which is still open (two threads, or two loops in turn); "
                "make a ViduClient per event loop"
            )
        self._retiring = set()  # any earlier ones ended with their loop
        if self._watch is not None and self._sessions:  # closed without shutting down
            self._retiring.add(loop.create_task(self._watch.aclose()))
        self._loop, self._sessions = loop, {}
        self._watch = _closing_at_shutdown(self._sessions)
        _start(self._watch)

    async def close(self) -> None:
        """Close every session; the pool cannot be used afterwards."""
        loop = asyncio.get_running_loop()
        if self._loop not in (None, loop):
            self._move_to(loop)  # raises while the sessions' loop is open
        self._closed = True
        if self._watch is not None:
            await self._watch.aclose()
        await asyncio.gather(*self._retiring)


async def _closing_at_shutdown(
    sessions: dict[Account | None, aiohttp.ClientSession],
) -> AsyncGenerator[None, None]:
    """Closes ``sessions`` when it is closed: by ``SessionPool.close``, or, as an async generator
    its loop knows of, by the ``shutdown_asyncgens()`` that ``asyncio.run`` calls before closing
    the loop (when the connections can still be closed, not left to the garbage collector)."""
    try:
        yield
    finally:
        closing = list(sessions.values())
        sessions.clear()
        for session in closing:  # a closed loop's are only marked closed: not warned about
            await session.close()


def _start(watch: AsyncGenerator[None, None]) -> None:
    """Runs ``watch`` to its first ``yield``, now: it is then an open async generator of the
    running loop (the loop's hook sees its first step), closed at the loop's shutdown."""
    try:
        watch.asend(None).send(None)
    except StopIteration:
        return
    raise RuntimeError("an async generator of SessionPool awaited before its first yield")


def _snippet(text: str) -> str:
    """A short, single-line, tag-free excerpt of an answer body for an error message."""
    text = re.sub(r"<[^>]*>", " ", text)
    text = " ".join(text.split())
    return text if len(text) <= _SNIPPET else text[: _SNIPPET - 3] + "..."


def status_error(
    status: int,
    phrase: str,
    headers: Mapping[str, str],
    body: bytes,
    call: str,
    now: dt.datetime,
    *,
    secrets: Iterable[str] = (),
) -> APIStatusError:
    """The exception for an error answer, from Vidu's ``{"code", "reason", "message",
    "metadata": {"trace_id"}}`` body; any other body (a proxy's HTML page) gives the HTTP
    phrase and a snippet of its text. Every text kept is scrubbed of ``secrets`` (``redact``)."""
    secrets = tuple(secrets)
    text = redact(body.decode("utf-8", errors="replace"), secrets)
    lowered = {name.lower(): redact(value, secrets) for name, value in headers.items()}
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("reason"):
        reason, message = str(data["reason"]), str(data.get("message") or "")
        metadata = data.get("metadata")
        trace_id = metadata.get("trace_id") if isinstance(metadata, dict) else None
    else:
        kind = lowered.get("content-type", "unknown type")
        reason, trace_id = phrase or "HTTPError", None
        message = f"answer is not a Vidu error ({kind}): {_snippet(text)}" if body else ""
    fields: dict[str, Any] = {
        "status": status,
        "reason": redact(reason, secrets),
        "message": redact(message, secrets),
        "trace_id": redact(str(trace_id), secrets) if trace_id else None,
        "body": text,
        "call": call,
        "headers": lowered,
    }
    cls = status_error_class(status, reason)
    if issubclass(cls, RateLimitError):
        return cls(retry_after=parse_retry_after(lowered, now), **fields)
    return cls(**fields)


def _redirect_error(
    status: int, location: str, call: str, secrets: Iterable[str]
) -> APIStatusError:
    target = urllib.parse.urlsplit(location)._replace(query="", fragment="").geturl()
    target = redact(target, secrets)
    return APIStatusError(
        status=status,
        reason="Redirect",
        message=(
            f"the API redirected to {target or '(no Location)'}; redirects are not followed so "
            "the key is never sent elsewhere: set base_url to the final address"
        ),
        call=call,
    )


def call_name(method: str, path: str, prefix: str = API_PREFIX) -> str:
    """How errors and logs name a call: ``GET /ent/v2/tasks``."""
    return f"{method} {prefix}{path}"


def _parse_success(body: bytes, call: str, secrets: Sequence[str]) -> Any:
    """A 2xx answer, parsed, with any key a server echoed in it (in any spelling ``redact``
    knows, ``\\u`` escapes too: ``holds_secret``) scrubbed. A JSON escape may hide a spelling
    from the raw bytes (``\\u0026#118;``, a nested JSON text's ``\\\\\\/``): with a backslash
    in them, the parsed strings are searched too."""
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
        if secrets and (
            holds_secret(body, secrets)
            or (b"\\" in body and strings_hold_secret(data, secrets))
        ):
            data = scrub(data, secrets)
        return data
    except RecursionError:
        problem = "JSON nested too deeply to read"
    except ValueError:
        problem = "something that is not JSON"
    # Raised outside the except: the decode error's context holds the body.
    text = redact(body.decode("utf-8", errors="replace"), secrets)
    raise ResponseFormatError(f"{call} answered with {problem}: {_snippet(text)}", field="(body)")


def answer_limit(body: bytes | None) -> int:
    """The most the answer to a request sending ``body`` may hold: ``MAX_ANSWER_BYTES``, plus
    twice the body. A create's answer echoes its request, inline images and all (up to 20 MB),
    and JSON may escape their ``/``: its task id must be read, not lost over the echo's size."""
    return MAX_ANSWER_BYTES + 2 * len(body or b"")


async def parse_answer(body: bytes, call: str, secrets: Sequence[str]) -> Any:
    """A 2xx answer, parsed (``_parse_success``): a large one in a thread, so that the event
    loop is not held by decoding it, a small one inline."""
    if len(body) > PARSE_OFF_LOOP:
        return await asyncio.to_thread(_parse_success, body, call, secrets)
    return _parse_success(body, call, secrets)


async def read_bounded(
    response: aiohttp.ClientResponse, call: str, limit: int = MAX_ANSWER_BYTES
) -> bytes:
    """The body of ``response``; ``ResponseFormatError`` as soon as it is known to exceed
    ``limit`` bytes (its ``Content-Length`` says so, or that much has arrived), reading no more."""
    declared = response.content_length
    if declared is not None and declared > limit:
        response.close()
        raise _too_large(call, limit, f"it announces {declared:,} bytes")
    if declared is not None and "Content-Encoding" not in response.headers:
        return await response.read()  # bounded by its length (compressed, it would not be)
    content = bytearray()
    async for chunk in response.content.iter_any():
        content += chunk
        if len(content) > limit:
            response.close()
            raise _too_large(call, limit, f"{len(content):,} bytes had arrived")
    return bytes(content)


def _request_body(body: bytes | None) -> bytes | io.BytesIO | None:
    """What aiohttp is given to send: small bodies as they are (one write), large ones (inline
    media, up to 20 MB) streamed in chunks so that the event loop is not held by one write."""
    if body is None or len(body) <= STREAM_ABOVE:
        return body
    return io.BytesIO(body)


def _too_large(call: str, limit: int, seen: str) -> ResponseFormatError:
    return ResponseFormatError(
        f"{call}: the answer is larger than {limit:,} bytes, the most one API answer may hold "
        f"({seen}); stopped reading it",
        field="(body)",
    )


def _connection_error(exc: Exception, call: str, secrets: Iterable[str]) -> APIConnectionError:
    """Our error for an exchange that got no answer. It keeps the scrubbed text of ``exc``,
    never ``exc`` itself: aiohttp's request info repeats the ``Authorization`` header."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return APITimeoutError(
            f"timed out connecting ({redact(str(exc), secrets)})", call=call, sent=False
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        return APIConnectionError(
            f"could not connect: {redact(str(exc), secrets)}", call=call, sent=False
        )
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError) and not isinstance(
        exc, aiohttp.RedirectClientError
    ):
        return APIConnectionError(  # raised before any connection is attempted
            f"cannot request this URL ({redact(str(exc), secrets)})", call=call, sent=False
        )
    if isinstance(exc, TimeoutError):  # aiohttp's read timeouts and the total timeout
        return APITimeoutError("timed out waiting for the answer", call=call)
    detail = redact(f"{type(exc).__name__}: {exc}", secrets)
    return APIConnectionError(f"connection lost ({detail})", call=call)


async def send(
    pool: SessionPool,
    account: Account,
    method: str,
    path: str,
    *,
    params: Sequence[tuple[str, str]] = (),
    body: bytes | None = None,
    on_date: Callable[[str], None] | None = None,
    prefix: str = API_PREFIX,
) -> Any:
    """One request to the API: the decoded JSON answer, or an exception from ``errors``.

    ``path`` is under ``prefix``: ``/ent/v2`` for tasks, ``/tools/v2`` for the upload API.

    ``on_date`` is given the ``Date`` header of every answer, success or error, as soon as it
    arrives (the server clock learns from it).

    A 2xx answer is returned parsed; 3xx raises ``APIStatusError`` (not followed); any other
    status raises the ``status_error_class`` for it. Network failures raise
    ``APIConnectionError`` / ``APITimeoutError`` naming the call, with ``sent=False`` only when
    the request cannot have reached the server (no connection was made).
    """
    call = call_name(method, path, prefix)
    headers = account.headers()
    if body is not None:
        headers["Content-Type"] = "application/json"
    session = pool.session(account)
    secrets = pool.api_keys()
    started = time.monotonic()
    failure: APIConnectionError | None = None
    try:
        async with session.request(
            method,
            account.url(path, prefix),
            params=list(params) or None,
            data=_request_body(body),
            headers=headers,
            allow_redirects=False,
        ) as response:
            date = response.headers.get("Date")
            if on_date is not None and date:
                on_date(date)
            content = await read_bounded(response, call, answer_limit(body))
    except (aiohttp.ClientError, TimeoutError) as exc:
        failure = _connection_error(exc, call, secrets)
    if failure is not None:
        raise failure  # outside the except: no __context__ holding the request's headers
    logger.debug("%s -> %d in %.3fs", call, response.status, time.monotonic() - started)
    if 200 <= response.status < 300:
        return await parse_answer(content, call, secrets)
    if 300 <= response.status < 400:
        location = response.headers.get("Location", "")
        raise _redirect_error(response.status, location, call, secrets)
    raise status_error(
        response.status,
        response.reason or "",
        response.headers,
        content,
        call,
        dt.datetime.now(dt.UTC),
        secrets=secrets,
    )
