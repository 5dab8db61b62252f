"""Vidu's signed callbacks (spec section 6), sans-IO: sign, verify, and remember nonces.

Vidu POSTs a task's query body to its ``callback_url`` with ``Date``, ``x-request-nonce`` and
``X-HMAC-*`` headers, the signature being ``base64(HMAC-SHA256(api_key, signing_string))``::

    POST\\n/vidu/callback\\nname=james&age=36\\nvidu\\n<Date>\\nDate:<Date>\\nx-request-nonce:<nonce>\\n

``signing_string``, ``sign`` and ``sign_callback`` build that (the simulator signs with them);
``verify_callback`` takes a plain method, URL (or path and query), headers and key, so any web
framework can check a callback with it. ``vidu_async.receiver`` is the aiohttp receiver.

The body is not covered by the signature. A verified callback proves only that Vidu (or someone
holding the key) sent *something* about a task: treat it as "task X changed" and read the task
with the client before acting on it (before reporting a ``success``, downloading, or billing).
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import hashlib
import hmac
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from email.utils import formatdate, parsedate_to_datetime
from urllib.parse import urlsplit

from vidu_async.errors import ConfigurationError, ViduError

__all__ = [
    "ACCESS_KEY",
    "ALGORITHM",
    "DEFAULT_MAX_SKEW",
    "SIGNED_HEADERS",
    "CallbackVerificationError",
    "NonceCache",
    "check_nonce",
    "sign",
    "sign_callback",
    "signing_string",
    "verify_callback",
]

ACCESS_KEY = "vidu"
ALGORITHM = "hmac-sha256"
SIGNED_HEADERS = ("Date", "x-request-nonce")
DEFAULT_MAX_SKEW = 300.0
"""How far (seconds) a callback's ``Date`` may be from our clock, either way: 5 minutes."""

_SIGNATURE = "X-HMAC-SIGNATURE"
_REQUIRED = (_SIGNATURE, "X-HMAC-ALGORITHM", "X-HMAC-ACCESS-KEY", "X-HMAC-SIGNED-HEADERS")


class CallbackVerificationError(ViduError):
    """A callback failed verification; the message says which check failed and why."""


def signing_string(
    method: str,
    url: str,
    headers: Mapping[str, str],
    signed_headers: Sequence[str] = SIGNED_HEADERS,
) -> str:
    """The exact text Vidu signs for a callback to ``url`` (a full URL, or a path and query).

    The path is ``/`` when empty and the query is kept as written (not re-sorted or decoded).
    ``headers`` must hold ``Date`` and every name in ``signed_headers`` (looked up
    case-insensitively); those are listed in the order given, each as ``Name:Value`` with the
    name as written in ``signed_headers``. Raises ``KeyError`` naming a header that is absent.
    """
    values = {k.lower(): v for k, v in headers.items()}
    parts = urlsplit(url)
    text = f"{method.upper()}\n{parts.path or '/'}\n{parts.query}\n{ACCESS_KEY}\n{values['date']}\n"
    return text + "".join(f"{name}:{values[name.lower()]}\n" for name in signed_headers)


def sign(api_key: str, signing_string: str) -> str:
    """``base64(HMAC-SHA256(api_key, signing_string))``, as sent in ``X-HMAC-SIGNATURE``."""
    digest = hmac.new(api_key.encode(), signing_string.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def sign_callback(
    api_key: str,
    url: str,
    *,
    method: str = "POST",
    date: str | None = None,
    nonce: str | None = None,
    signed_headers: Sequence[str] = SIGNED_HEADERS,
) -> dict[str, str]:
    """Every header Vidu sends with a callback to ``url``, signature included.

    ``date`` defaults to now (an HTTP date in GMT) and ``nonce`` to a fresh UUID. This is how the
    simulator signs its callbacks, and how a test forges a genuine-looking one.
    """
    headers = {
        "Date": formatdate(usegmt=True) if date is None else date,
        "x-request-nonce": str(uuid.uuid4()) if nonce is None else nonce,
    }
    return {
        **headers,
        "X-HMAC-SIGNED-HEADERS": ";".join(signed_headers),
        "X-HMAC-ALGORITHM": ALGORITHM,
        "X-HMAC-ACCESS-KEY": ACCESS_KEY,
        _SIGNATURE: sign(api_key, signing_string(method, url, headers, signed_headers)),
    }


class NonceCache:
    """Keys seen recently (callback nonces, or any other), forgotten after ``ttl`` seconds.

    For nonces, make ``ttl`` at least twice the ``Date`` window of ``verify_callback``, since a
    callback is accepted from ``max_skew`` before to ``max_skew`` after its date. At most
    ``max_size`` keys are kept: past that the oldest are forgotten early, so size it above the
    callbacks expected within ``ttl``. ``clock`` is monotonic seconds.
    """

    def __init__(
        self,
        *,
        ttl: float = 2 * DEFAULT_MAX_SKEW,
        max_size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl <= 0 or max_size < 1:
            raise ValueError(f"NonceCache needs ttl > 0 and max_size >= 1, got {ttl}, {max_size}")
        self.ttl = ttl
        self.max_size = max_size
        self._clock = clock
        self._expiries: collections.OrderedDict[str, float] = collections.OrderedDict()

    def add(self, key: str) -> bool:
        """Remember ``key``; ``False`` when it was already seen within ``ttl``."""
        now = self._clock()
        self._forget_expired(now)
        if key in self._expiries:
            return False
        self._expiries[key] = now + self.ttl
        if len(self._expiries) > self.max_size:
            self._expiries.popitem(last=False)
        return True

    def discard(self, key: str) -> None:
        """Forget ``key`` now, so that it counts as new again."""
        self._expiries.pop(key, None)

    def __contains__(self, key: object) -> bool:
        self._forget_expired(self._clock())
        return key in self._expiries

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
    api_key: str | Sequence[str],
    *,
    now: float | None = None,
    max_skew: float = DEFAULT_MAX_SKEW,
    seen_nonces: NonceCache | None = None,
    record_nonce: bool = True,
    path_prefix: str = "",
) -> str:
    """Check a callback's signature and freshness; return the key that signed it.

    ``url`` is the URL the callback was sent to: a full URL or the path and query exactly as
    received. Behind a proxy that strips a leading part of the public path, pass that part as
    ``path_prefix`` (it is put back in front of the path: Vidu signed the public one).
    ``api_key`` is the key, or several (one per account; the one that matches is returned).
    Headers are looked up case-insensitively.

    Raises ``CallbackVerificationError`` saying why, checking in order: every signature header
    is present, the algorithm is ``hmac-sha256``, the access key is ``vidu``, the nonce is among
    the signed headers (else a replay could swap it), the headers it reads are ASCII (Vidu's
    are; aiohttp passes other bytes on undecodable), the signature matches a key (compared in
    constant time), ``Date`` is within ``max_skew`` seconds of ``now`` (POSIX seconds, default
    the current time), and, given ``seen_nonces``, the nonce is new. The nonce is remembered only
    once every other check passed, so forgeries cannot use nonces up; with ``record_nonce=False``
    it is only checked, for a server that may still refuse the callback (a bad body, a full
    queue): Vidu delivers a refused callback again with the same nonce, so such a server records
    it with ``check_nonce`` once it accepts the callback.
    """
    keys = [api_key] if isinstance(api_key, str) else list(api_key)
    if not keys or not all(keys):
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
    odd = [n for n in (*_REQUIRED, *SIGNED_HEADERS, *names) if not found[n.lower()].isascii()]
    if odd:
        raise CallbackVerificationError(
            f"{odd[0]} {_shown(found[odd[0].lower()])} is not ASCII: not a header Vidu sends"
        )
    parts = urlsplit(url)
    target = f"{path_prefix}{parts.path}" + (f"?{parts.query}" if parts.query else "")
    text = signing_string(method, target, found, names)
    received = found[_SIGNATURE.lower()].encode()
    signer = next(
        (key for key in keys if hmac.compare_digest(sign(key, text).encode(), received)), None
    )
    if signer is None:
        raise CallbackVerificationError(
            f"signature does not match for {method.upper()} {target or '/'}: the API key is not "
            "the one the task was created with, or the request was changed on the way (a proxy "
            "rewriting the path? then set the path prefix)"
        )
    _check_date(found["date"], time.time() if now is None else now, max_skew)
    if seen_nonces is not None:
        check_nonce(seen_nonces, found, record=record_nonce)
    return signer


def check_nonce(
    seen_nonces: NonceCache, headers: Mapping[str, str], *, record: bool = True
) -> str:
    """The ``x-request-nonce`` of a verified callback's ``headers``, remembered in ``seen_nonces``
    unless ``record`` is false; ``CallbackVerificationError`` when it was seen before (a replay).
    """
    nonce = {k.lower(): v for k, v in headers.items()}["x-request-nonce"]
    if not (seen_nonces.add(nonce) if record else nonce not in seen_nonces):
        raise CallbackVerificationError(
            f"nonce {_shown(nonce)} was seen before: a replayed or duplicated callback"
        )
    return nonce


def _check_date(date: str, now: float, max_skew: float) -> None:
    try:
        sent = parsedate_to_datetime(date)
    except ValueError:
        raise CallbackVerificationError(
            f"Date {_shown(date)} is not an HTTP date (e.g. 'Tue, 06 May 2025 12:09:42 GMT')"
        ) from None
    if sent.tzinfo is None:  # "-0000": UTC, by RFC 5322, not local time
        sent = sent.replace(tzinfo=dt.UTC)
    skew = now - sent.timestamp()
    if abs(skew) > max_skew:
        when = "in the past" if skew > 0 else "in the future"
        raise CallbackVerificationError(
            f"Date {_shown(date)} is {abs(skew):.0f} s {when}, outside the {max_skew:g} s window: "
            "a replayed callback, or this machine's clock is wrong"
        )

