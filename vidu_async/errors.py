"""Every exception and warning vidu-async raises, under one base class, ``ViduError``.

Callers catch exactly what they mean: ``ValidationError`` before anything was sent,
``APIStatusError`` subclasses for an answer from Vidu, ``APIConnectionError`` when no answer came,
``AmbiguousCreateError`` when a billed create may or may not exist. This module imports nothing of
ours, so every other module can use it.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, AnyStr

import attrs

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AmbiguousCreateError",
    "AuthenticationError",
    "ConfigurationError",
    "DownloadError",
    "FieldProblem",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "JournalError",
    "JournalLockedError",
    "ModerationError",
    "NotFoundError",
    "RateLimitError",
    "ResponseFormatError",
    "RetryLaterError",
    "ServerError",
    "TaskTimeoutError",
    "ValidationError",
    "ViduError",
    "ViduWarning",
    "holds_secret",
    "redact",
    "scrub",
    "status_error_class",
    "strings_hold_secret",
]

REDACTED = "[redacted]"


class ViduWarning(UserWarning):
    """A request the server accepts but partly ignores (e.g. ``bgm`` on a q3 model)."""


@attrs.frozen
class FieldProblem:
    """One problem with one field: ``field`` is the request field (``images[2]`` for an item)."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class ViduError(Exception):
    """Base class of every error raised by vidu-async."""


class ConfigurationError(ViduError):
    """The client cannot be used as configured (no API key, key over plain http, bad base URL)."""


class ValidationError(ViduError, ValueError):
    """A request is wrong for its model; raised before anything is sent.

    ``problems`` lists every problem found, not just the first, each naming its field.
    """

    def __init__(self, problems: Iterable[FieldProblem], *, model: str | None = None) -> None:
        self.problems: tuple[FieldProblem, ...] = tuple(problems)
        self.model = model
        super().__init__(self._render())

    def _render(self) -> str:
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''} in the request"
        if self.model:
            head += f" for {self.model}"
        return head + ":\n" + "\n".join(f"  - {p}" for p in self.problems)

    @property
    def fields(self) -> tuple[str, ...]:
        """The names of the fields that have a problem, in order, without repeats."""
        return tuple(dict.fromkeys(p.field for p in self.problems))


class APIError(ViduError):
    """Something went wrong talking to the API (the request was valid)."""


class APIConnectionError(APIError):
    """No HTTP answer: the connection failed, was reset, or the answer was cut short.

    ``call`` says which call failed (e.g. ``GET /ent/v2/tasks/123/creations``);
    ``sent`` is False only when the request is known never to have left this machine.
    """

    def __init__(self, message: str, *, call: str, sent: bool = True) -> None:
        self.call = call
        self.sent = sent
        super().__init__(f"{call}: {message}")


class APITimeoutError(APIConnectionError):
    """The call timed out (connecting, or waiting for the answer)."""


class APIStatusError(APIError):
    """The API answered with an error status.

    Carries what a person needs to act on it: HTTP ``status``, Vidu ``reason``, ``message``,
    ``trace_id`` (quote it to Vidu support), the raw ``body`` text and the ``call`` made.
    """

    def __init__(
        self,
        *,
        status: int,
        reason: str,
        message: str,
        trace_id: str | None = None,
        body: str = "",
        call: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.trace_id = trace_id
        self.body = body
        self.call = call
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__(self._render())

    def _hint(self) -> str:
        return ""

    def _render(self) -> str:
        text = f"{self.call}: " if self.call else ""
        text += f"HTTP {self.status} {self.reason}"
        if self.message:
            text += f": {self.message}"
        if self.trace_id:
            text += f" (trace_id {self.trace_id})"
        hint = self._hint()
        if hint:
            text += f". {hint}"
        return text


class AuthenticationError(APIStatusError):
    """401 / 403: the key, the host or the auth scheme is wrong. Never retried."""

    def _hint(self) -> str:
        return (
            "Check the API key (VIDU_API_KEY), that it belongs to this host "
            "(api.vidu.com and api.vidu.cn have separate keys), and the auth scheme "
            "(auth_scheme, VIDU_AUTH_SCHEME or --auth-scheme: Token for the official hosts, "
            "Bearer for some gateways)"
        )


class InvalidRequestError(APIStatusError):
    """400 with a ``Field*``, ``BadRequest``, media or model reason: the request itself is wrong."""


class InsufficientCreditsError(APIStatusError):
    """400 ``CreditInsufficient``: every further create will fail the same way."""

    def _hint(self) -> str:
        return "Top up the account's credits; further creates will fail the same way"


class ModerationError(APIStatusError):
    """400 moderation refusal (prompt, input or output); permanent for this input."""


class NotFoundError(APIStatusError):
    """404: no such task or creation."""


class RateLimitError(APIStatusError):
    """429: ``QuotaExceeded`` (concurrency), ``TooManyRequests`` or ``SystemThrottling``.

    The task was not created. ``retry_after`` is the wait the server asked for, in seconds, if any.
    """

    def __init__(self, *, retry_after: float | None = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(**kwargs)


class RetryLaterError(APIStatusError):
    """400 ``OperationInProcess``: the server asks to retry later."""


class ServerError(APIStatusError):
    """5xx. For a create, the task may or may not exist."""


class ResponseFormatError(APIError, ValueError):
    """An answer from the API is not in the documented shape (a known field has the wrong type).

    ``field`` names the offending field; unknown extra fields never cause this.
    """

    def __init__(self, message: str, *, field: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class DownloadError(APIError):
    """A result file could not be fetched from the file host (not the API).

    ``url`` is the link without its query string (signed links carry their signature there);
    ``status`` is the file host's HTTP status, or None when no answer came.
    """

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        self.url = url
        self.status = status
        super().__init__(message)


class AmbiguousCreateError(APIError):
    """A create's answer was lost and the follow-up lookup failed too.

    The task may exist (and be billed) or not. ``correlation_key`` is the marker the client put in
    the task's ``payload``: reconcile later with ``ViduClient.find_task_by_correlation_key`` rather
    than sending the create again blindly.
    """

    def __init__(self, message: str, *, correlation_key: str, cause: BaseException | None) -> None:
        self.correlation_key = correlation_key
        self.cause = cause
        super().__init__(message)


class TaskTimeoutError(ViduError, TimeoutError):
    """``wait_for_task`` gave up; ``last`` is the last state seen (a ``TaskResult``) or None."""

    def __init__(self, message: str, *, task_id: str, last: Any = None) -> None:
        self.task_id = task_id
        self.last = last
        super().__init__(message)


class JournalError(ViduError):
    """The batch journal cannot be used (unreadable, corrupt, not a file, a failed write).

    The message is one line naming the path (and line) and what to do: the CLI prints it as is.
    """


class JournalLockedError(JournalError):
    """Another run (this process or another) holds the journal; the message names that process."""


SCRUBBED_MIN = 8
"""Secrets shorter than this are not scrubbed: a test's one-letter key would cut words, field
names and values apart ("not [redacted]nown"), and no real API key is that short."""


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each secret replaced by ``[redacted]``, however it is escaped or encoded.

    Server text (a gateway echoing the ``Authorization`` header) passes here before an error keeps
    it, so no message, body, header or log line built from an error can carry an API key.
    """
    for secret in secrets:
        pattern = _pattern(secret)
        if pattern is not None:
            text = pattern.sub(REDACTED, text)
    return text


def holds_secret(data: bytes, secrets: Iterable[str]) -> bool:
    """Whether ``data`` (an answer's raw bytes) carries a secret in a spelling ``redact`` knows,
    so that answers are scrubbed only when there is something to scrub. Every answer passes
    here, a create's echo of 20 MB of base64 too: plain searches, and the full pattern only
    around the places a spelling could be (``_plain_windows``, ``_escape_starts``)."""
    lowered = data.lower()
    escapes = sorted(_escape_starts(lowered))
    return any(_holds(secret, data, lowered, escapes) for secret in secrets)


_ESCAPES = (b"%", b"&#", b"\\")
"""What every long spelling of an ASCII character starts with (``%41``, ``%u0041``, ``&#65;``,
``\\u0041``, ``\\x41``, each URL-encoded again), in lowercased data, at most a byte after it
starts: one search for the backslash serves both of its escapes. The short spellings (the
character itself, ``\\/``, ``\\"``, ``+`` for a space) are two bytes at most."""


def _escape_starts(lowered: bytes) -> Iterator[int]:
    """Where each of ``_ESCAPES`` is in ``lowered``: plain searches, fast on an answer that has
    none or few (a base64 image has none)."""
    for escape in _ESCAPES:
        found = lowered.find(escape)
        while found >= 0:
            yield found
            found = lowered.find(escape, found + 1)


_SHIFT = 64
"""How many start positions one ``_shifted_pattern`` match tries."""


def _holds(secret: str, data: bytes, lowered: bytes, escapes: Sequence[int]) -> bool:
    if not secret.isascii():  # rare: searched in the text, cased as Unicode is
        return _search(_pattern(secret), data.decode("utf-8", "replace"))
    pattern = _byte_pattern(secret)
    if pattern is None:
        return False
    if secret.lower().encode() in lowered:
        return True
    if any(pattern.search(data, start, end) for start, end in _plain_windows(secret, lowered)):
        return True
    return _spelled_from_escape(secret, data, escapes)


def _plain_windows(secret: str, lowered: bytes) -> Iterator[tuple[int, int]]:
    """Where a spelling of ``secret`` without a long escape can be: such a spelling holds the
    key's longest alphanumeric run as is and takes at most two bytes per character."""
    anchor, offset = _anchor(secret)
    if not anchor:
        yield 0, len(lowered)
        return
    after = len(secret) - offset - len(anchor)
    found = lowered.find(anchor)
    while found >= 0:
        yield max(0, found - 2 * offset), found + len(anchor) + 2 * after
        found = lowered.find(anchor, found + 1)


def _spelled_from_escape(secret: str, data: bytes, escapes: Sequence[int]) -> bool:
    """Whether a spelling of ``secret`` with a long escape is in ``data``: it starts at most two
    bytes a character before its first escape (``escapes``, those of one of its characters:
    ``_codes``), and may end anywhere after it (``&#0000065;``), so starts are tried in ranges
    by ``_shifted_pattern``."""
    reach = 2 * len(secret)
    codes = _codes(secret)
    escapes = [at for at in escapes if data[at] == 38 or data[at + 1 : at + 3].lower() in codes
               or data[at + 2 : at + 4].lower() in codes or data[at + 4 : at + 6].lower() in codes]
    if len(escapes) * reach >= len(data):  # escapes all over: one search is cheaper
        return _search(_byte_pattern(secret), data)
    shifted = _shifted_pattern(secret)
    tried = 0  # every start before this was tried
    for escape in escapes:
        start = max(escape - reach, tried)
        while start <= escape:
            if shifted.match(data, start):
                return True
            start += _SHIFT + 1
        tried = max(tried, start)
    return False


def _search(pattern: re.Pattern[AnyStr] | None, text: AnyStr) -> bool:
    """Whether ``pattern`` (None: a secret too short to scrub) is found in ``text``."""
    return pattern is not None and pattern.search(text) is not None


def strings_hold_secret(value: Any, secrets: Sequence[str]) -> bool:
    """Whether the strings of a parsed JSON answer (keys too) carry a secret: a spelling a JSON
    escape hid from ``holds_secret`` on the raw bytes (``\\u0026#118;`` for ``&#118;``, a nested
    JSON text's ``\\\\\\/``). Searched in one go, one string a line."""
    found: list[str] = []
    _strings(value, found)
    return holds_secret("\n".join(found).encode("utf-8", "surrogatepass"), secrets)


def _strings(value: Any, found: list[str]) -> None:
    if isinstance(value, str):
        found.append(value)
    elif isinstance(value, list):
        for item in value:
            _strings(item, found)
    elif isinstance(value, dict):
        for key, item in value.items():
            found.append(key)
            _strings(item, found)


def scrub(value: Any, secrets: Sequence[str]) -> Any:
    """A parsed JSON answer with every string (keys too) ``redact``-ed: what the client keeps of
    a success answer (``Task.raw``, ``extra``, messages naming a field's value) never holds a
    key a server echoed. ``RecursionError`` on nesting deeper than Python's stack."""
    return _scrub(value, secrets) if any(map(_pattern, secrets)) else value


def _scrub(value: Any, secrets: Sequence[str]) -> Any:
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, list):
        return [_scrub(item, secrets) for item in value]
    if isinstance(value, dict):
        return {redact(key, secrets): _scrub(item, secrets) for key, item in value.items()}
    return value


@functools.lru_cache(maxsize=32)
def _byte_pattern(secret: str) -> re.Pattern[bytes] | None:
    pattern = _pattern(secret)
    return None if pattern is None else re.compile(pattern.pattern.encode(), re.IGNORECASE)


@functools.lru_cache(maxsize=32)
def _shifted_pattern(secret: str) -> re.Pattern[bytes]:
    """``_byte_pattern`` starting anywhere in the first ``_SHIFT + 1`` positions it is matched
    at: ``match`` tries those starts only, and the spelling may end as far on as it goes."""
    pattern = _byte_pattern(secret)
    assert pattern is not None
    return re.compile(rb"(?s:.){0,%d}?(?:%s)" % (_SHIFT, pattern.pattern), re.IGNORECASE)


@functools.lru_cache(maxsize=32)
def _codes(secret: str) -> frozenset[bytes]:
    """What follows ``%``, ``\\x``, ``%u00`` or ``\\u00`` where a long spelling of an ASCII
    ``secret`` starts: the hex code of one of its characters, of ``+`` for a space, or of what
    starts an escape URL-encoded again (``%25``, ``%5c``, ``%26``, ``%23``). ``&#`` is rare:
    always tried."""
    spaced = "+" if " " in secret else ""
    return frozenset(f"{ord(char):02x}".encode() for char in secret + spaced + "%\\&#")


@functools.lru_cache(maxsize=32)
def _anchor(secret: str) -> tuple[bytes, int]:
    """The longest run of ASCII letters and digits in ``secret``, lowercased, and where it starts:
    what every spelling of the key without a long escape holds as is."""
    runs = [(run.group().lower().encode(), run.start()) for run in _ALNUM.finditer(secret)]
    return max(runs, key=lambda run: len(run[0]), default=(b"", 0))


_ALNUM = re.compile("[0-9A-Za-z]+")


@functools.lru_cache(maxsize=32)
def _pattern(secret: str) -> re.Pattern[str] | None:
    """A regex matching ``secret`` however server text spells it, character by character:
    itself, percent-encoded (``quote`` with any ``safe``, ``quote_plus``), JSON-escaped
    (``\\uXXXX``, ``\\/``, ``\\"``) or an HTML character reference, any of these URL-encoded
    once more; ignoring case, since a gateway that lowercases what it echoes still gives most
    of a key away. None for a secret shorter than ``SCRUBBED_MIN``."""
    if len(secret) < SCRUBBED_MIN:
        return None
    groups = ("(?:" + "|".join(_spellings(char)) + ")" for char in secret)
    return re.compile("".join(groups), re.IGNORECASE)


def _spellings(char: str) -> list[str]:
    """Regex alternatives for one character of a secret, longest first (so that no escape is
    left half matched): ``\\uXXXX`` and ``%uXXXX`` (UTF-16 units), ``%XX`` (UTF-8 bytes), HTML
    references (their ``;`` optional, as HTML reads them), ``\\xXX`` (an ASCII character), the
    JSON escape, itself, and ``\\/`` for ``/``, ``+`` for a space."""
    units = char.encode("utf-16-be")
    code = ord(char)
    spellings = [
        *("".join(_literal(escape) + units[i : i + 2].hex() for i in range(0, len(units), 2))
          for escape in ("\\u", "%u")),
        "".join(_literal("%") + f"{byte:02x}" for byte in char.encode()),
        f"{_literal('&#x')}0*{code:x}(?:{_literal(';')})?",
        f"{_literal('&#')}0*{code}(?:{_literal(';')})?",
        *([_literal("\\x") + f"{code:02x}"] if code < 0x80 else []),
        _literal(json.dumps(char)[1:-1]),  # \" \\ \n: itself for most characters
        _literal(char),
        *{"/": [_literal("\\/")], " ": [_literal("+")]}.get(char, []),
    ]
    return sorted(dict.fromkeys(spellings), key=len, reverse=True)


def _literal(text: str) -> str:
    """A regex for ``text`` with each ASCII punctuation character also percent-encoded: a
    server may URL-encode an escape once more (``%5Cu002f``, ``%252F``, ``%26%2347%3B``)."""
    return "".join(
        f"(?:{re.escape(c)}|%{ord(c):02x})" if c.isascii() and not c.isalnum() else re.escape(c)
        for c in text
    )


_MODERATION_REASONS = frozenset(
    {"TaskPromptPolicyViolation", "AuditSubmitIllegal", "CreationPolicyViolation"}
)


def status_error_class(status: int, reason: str) -> type[APIStatusError]:
    """Which exception class an error answer maps to, from its HTTP status and Vidu reason."""
    if status in (401, 403):
        return AuthenticationError
    if status == 404:
        return NotFoundError
    if status == 429:
        return RateLimitError
    if status >= 500:
        return ServerError
    if reason == "CreditInsufficient":
        return InsufficientCreditsError
    if reason in _MODERATION_REASONS:
        return ModerationError
    if reason == "OperationInProcess":
        return RetryLaterError
    if 400 <= status < 500:
        return InvalidRequestError
    return APIStatusError
