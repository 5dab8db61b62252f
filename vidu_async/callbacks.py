"""The receiving side of Vidu's signed callbacks (spec section 6): sign, verify, an aiohttp handler.

Vidu POSTs a task's query body to its ``callback_url`` with ``Date``, ``x-request-nonce`` and
``X-HMAC-*`` headers, the signature being ``base64(HMAC-SHA256(api_key, signing_string))``::

    POST\\n/vidu/callback\\nname=james&age=36\\nvidu\\n<Date>\\nDate:<Date>\\nx-request-nonce:<nonce>\\n

``signing_string`` and ``sign`` are pure; ``verify_callback`` takes a plain method, URL (or path
and query), headers and key, so any web framework can use it; ``callback_handler`` wraps it for
aiohttp.

The body is not covered by the signature. A verified callback proves only that Vidu (or someone
holding the key) sent *something* about a task: treat it as "task X changed" and read the task
with the client before acting on it (before reporting a ``success``, downloading, or billing).
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler

from vidu_async.errors import ConfigurationError, ViduError
from vidu_async.tasks import TaskResult

__all__ = [
    "ACCESS_KEY",
    "ALGORITHM",
    "SIGNED_HEADERS",
    "CallbackVerificationError",
    "NonceCache",
    "callback_handler",
    "sign",
    "signing_string",
    "verify_callback",
]

logger = logging.getLogger("vidu_async.callbacks")

ACCESS_KEY = "vidu"
ALGORITHM = "hmac-sha256"
SIGNED_HEADERS = ("Date", "x-request-nonce")

_SIGNATURE = "X-HMAC-SIGNATURE"
_REQUIRED = (_SIGNATURE, "X-HMAC-ALGORITHM", "X-HMAC-ACCESS-KEY", "X-HMAC-SIGNED-HEADERS")


class CallbackVerificationError(ViduError):
    """A callback failed verification; the message says which check failed and why."""


def signing_string(
    method: str,
    url: str,
    date: str,
    nonce: str,
    signed_headers: Sequence[str] = SIGNED_HEADERS,
    *,
    headers: Mapping[str, str] | None = None,
) -> str:
    """The exact text Vidu signs for a callback to ``url`` (a full URL, or a path and query).

    The path is ``/`` when empty and the query is kept as written (not re-sorted). The signed
    headers are listed in the order given, each as ``Name:Value`` with the name as written
    there; ``Date`` and ``x-request-nonce`` take ``date`` and ``nonce``, any other name is looked
    up (case-insensitively) in ``headers``. Raises ``KeyError`` naming a header it has no value for.
    """
    values = {k.lower(): v for k, v in (headers or {}).items()}
    values |= {"date": date, "x-request-nonce": nonce}
    parts = urlsplit(url)
    text = f"{method.upper()}\n{parts.path or '/'}\n{parts.query}\n{ACCESS_KEY}\n{date}\n"
    return text + "".join(f"{name}:{values[name.lower()]}\n" for name in signed_headers)


def sign(api_key: str, signing_string: str) -> str:
    """``base64(HMAC-SHA256(api_key, signing_string))``, as sent in ``X-HMAC-SIGNATURE``."""
    digest = hmac.new(api_key.encode(), signing_string.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


class NonceCache:
    """The nonces of recently verified callbacks, so that a replayed callback is refused.

    Each nonce is kept ``ttl`` seconds on ``clock`` (a monotonic clock); make ``ttl`` at least
    twice the ``Date`` window of ``verify_callback``, since a callback is accepted from
    ``max_skew`` before to ``max_skew`` after its date. At most ``max_size`` nonces are kept:
    past that the oldest are forgotten, so size it above the callbacks expected within ``ttl``.
    """

    def __init__(
        self,
        *,
        ttl: float = 600.0,
        max_size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_size = max_size
        self._clock = clock
        self._expiries: collections.OrderedDict[str, float] = collections.OrderedDict()

    def add(self, nonce: str) -> bool:
        """Remember ``nonce``; ``False`` when it was already seen within ``ttl``."""
        now = self._clock()
        self._forget_expired(now)
        if nonce in self._expiries:
            return False
        self._expiries[nonce] = now + self.ttl
        if len(self._expiries) > self.max_size:
            self._expiries.popitem(last=False)
        return True

    def __contains__(self, nonce: object) -> bool:
        self._forget_expired(self._clock())
        return nonce in self._expiries

    def __len__(self) -> int:
        self._forget_expired(self._clock())
        return len(self._expiries)

    def _forget_expired(self, now: float) -> None:
        # Insertion order is expiry order: the ttl is constant and the clock monotonic.
        while self._expiries and next(iter(self._expiries.values())) <= now:
            self._expiries.popitem(last=False)


def _shown(value: str) -> str:
    """A header value quoted for a message, cut short: it comes from whoever sent the request."""
    return repr(value if len(value) <= 60 else value[:60] + "...")


def verify_callback(
    method: str,
    url: str,
    headers: Mapping[str, str],
    api_key: str,
    *,
    now: float | None = None,
    max_skew: float = 300.0,
    seen_nonces: NonceCache | None = None,
) -> None:
    """Check a callback's signature and freshness; raise ``CallbackVerificationError`` if bad.

    ``url`` is the callback URL as Vidu was given it: a full URL or the path and query exactly as
    received (behind a proxy that rewrites paths, the public path). Headers are looked up
    case-insensitively. Checked, in order: every signature header is present, the algorithm is
    ``hmac-sha256``, the access key is ``vidu``, the nonce is among the signed headers (else a
    replay could swap it), the signature matches (compared in constant time), ``Date`` is within
    ``max_skew`` seconds of ``now`` (POSIX seconds, default the current time), and, given
    ``seen_nonces``, the nonce is new; it is remembered only once every other check passed.
    """
    if not api_key:
        raise ConfigurationError("no API key to verify callbacks with")
    found = {k.lower(): v for k, v in headers.items()}
    missing = [n for n in (*_REQUIRED, *SIGNED_HEADERS) if n.lower() not in found]
    if missing:
        raise CallbackVerificationError(
            f"missing header{'s' if len(missing) > 1 else ''} {', '.join(missing)}: "
            "not a signed Vidu callback"
        )
    algorithm = found["x-hmac-algorithm"]
    if algorithm.lower() != ALGORITHM:
        raise CallbackVerificationError(
            f"X-HMAC-ALGORITHM is {_shown(algorithm)}; only {ALGORITHM!r} is accepted"
        )
    access_key = found["x-hmac-access-key"]
    if access_key != ACCESS_KEY:
        raise CallbackVerificationError(
            f"X-HMAC-ACCESS-KEY is {_shown(access_key)}; Vidu sends {ACCESS_KEY!r}"
        )
    names = [n.strip() for n in found["x-hmac-signed-headers"].split(";") if n.strip()]
    if "x-request-nonce" not in (n.lower() for n in names):
        raise CallbackVerificationError(
            f"X-HMAC-SIGNED-HEADERS {_shown(found['x-hmac-signed-headers'])} does not sign "
            "x-request-nonce, so the nonce cannot protect against replay"
        )
    unsigned = [n for n in names if n.lower() not in found]
    if unsigned:
        raise CallbackVerificationError(
            f"X-HMAC-SIGNED-HEADERS names {', '.join(unsigned)}, absent from the request"
        )
    date, nonce = found["date"], found["x-request-nonce"]
    expected = sign(api_key, signing_string(method, url, date, nonce, names, headers=found))
    if not hmac.compare_digest(expected.encode(), found[_SIGNATURE.lower()].encode()):
        parts = urlsplit(url)
        target = parts.path or "/"
        raise CallbackVerificationError(
            f"signature does not match for {method.upper()} {target}"
            f"{'?' + parts.query if parts.query else ''}: the API key is not the one the task was "
            "created with, or the request was changed on the way (a proxy rewriting the path?)"
        )
    _check_date(date, time.time() if now is None else now, max_skew)
    if seen_nonces is not None and not seen_nonces.add(nonce):
        raise CallbackVerificationError(
            f"nonce {_shown(nonce)} was seen before: a replayed or duplicated callback"
        )


def _check_date(date: str, now: float, max_skew: float) -> None:
    try:
        sent = parsedate_to_datetime(date).timestamp()  # naive ("-0000") is read as UTC
    except ValueError:
        raise CallbackVerificationError(
            f"Date {_shown(date)} is not an HTTP date (e.g. 'Tue, 06 May 2025 12:09:42 GMT')"
        ) from None
    skew = now - sent
    if abs(skew) > max_skew:
        when = "in the past" if skew > 0 else "in the future"
        raise CallbackVerificationError(
            f"Date {_shown(date)} is {abs(skew):.0f} s {when}, outside the {max_skew:g} s window: "
            "a replayed callback, or this machine's clock is wrong"
        )


def callback_handler(
    api_key: str,
    on_task: Callable[[TaskResult], Awaitable[None]],
    *,
    max_skew: float = 300.0,
    nonce_cache: NonceCache | None = None,
    path_prefix: str = "",
    clock: Callable[[], float] = time.time,
) -> Handler:
    """An aiohttp handler for Vidu's callback POSTs: verify, parse, ``await on_task(result)``.

    Answers 200 once ``on_task`` returns (keep it quick: hand the result to a queue), 401 with the
    reason when verification fails, 400 when the body is not a task. If ``on_task`` raises, aiohttp
    answers 500 and Vidu redelivers. Replays are refused through ``nonce_cache`` (a fresh
    ``NonceCache`` by default). ``path_prefix`` is put back in front of the request path for a
    receiver behind a proxy that strips it. ``clock`` gives POSIX seconds for the ``Date`` check.

    The body is not signed: ``on_task`` gets a claim that task ``result.id`` changed, and should
    read the task with the client before acting on it.
    """
    if not api_key:
        raise ConfigurationError("no API key to verify callbacks with")
    nonces = NonceCache() if nonce_cache is None else nonce_cache

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            verify_callback(
                request.method,
                path_prefix + request.raw_path,
                request.headers,
                api_key,
                now=clock(),
                max_skew=max_skew,
                seen_nonces=nonces,
            )
        except CallbackVerificationError as error:
            logger.warning("refused a callback to %s: %s", request.raw_path, error)
            return web.Response(status=401, text=str(error))
        try:
            data = json.loads(await request.read())
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, got {type(data).__name__}")
            result = TaskResult.from_dict(data)
        except ValueError as error:  # bad JSON or UTF-8, or ResponseFormatError naming a field
            logger.warning("a verified callback has a bad body: %s", error)
            return web.Response(status=400, text=f"the body is not a task: {error}")
        await on_task(result)
        return web.Response(text="ok")

    return handle
