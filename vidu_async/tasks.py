"""What the API answers about tasks, as frozen attrs types, plus the correlation envelope.

Each type is parsed by a hand-written ``from_dict``. The fields the client acts on (a task's id,
``state``, ``credits``, ``payload``, ``err_code``, ``creations``; a page's token; the account's
balances) are checked strictly: a wrong JSON type raises ``ResponseFormatError`` naming the field
(``creations[0].url``). The fields it only reports, mostly echoes of the request (``duration``,
``watermark``, ``images``, ``created_at``...), are read leniently: a 200 create answer with a task
id is a billed task, so calling it lost over ``"watermark": "false"`` would be wrong. ``"true"``
and ``"false"`` (and 0, 1) read as booleans, ``5.0`` and ``"123"`` as integers, and a value still
unusable is dropped (the field's default) with a debug log, never an error. Vidu keeps adding
fields, so an unknown field never fails: it lands in ``extra``, and the whole answer is kept in
``raw``. Conventions for what a response leaves out (or sends as ``null``): strings become ``""``
(the API's own "empty"), booleans ``False``, numbers and timestamps ``None``, lists ``()``. Only
the task id is required.

Equality: ``extra`` takes part in ``==`` (an answer with different unknown fields is a different
answer) but not in ``hash``; ``raw`` takes part in neither and is left out of ``repr`` (it repeats
the parsed fields and can hold a megabyte of payload); in ``repr`` a data URI shows its type
and size only, and text over 1,000 characters its start. Timestamps are aware UTC datetimes,
truncated to microseconds.

The correlation envelope. A create whose answer is lost may still have created a billed task.
So the client puts a fresh key in every create's ``payload`` (the API echoes ``payload`` back on
query, list and callback) and can later find the task by listing tasks and matching the key::

    payload sent = "va1:" + <32 lowercase hex> + ":" + the user's own payload

``wrap_payload`` builds it, ``split_payload`` takes it apart, and the parsed types expose the two
halves separately: ``.payload`` is the user's payload exactly as they gave it, ``.correlation_key``
the key (``None`` for a task not created through this client). A payload not in exactly that
shape passes through untouched, so a user's own payload that merely starts with ``"va1:"``
survives. The API's limit of ``capabilities.PAYLOAD_MAX_CHARS`` characters applies to the sent
string, so through the client a user's payload can hold at most
``PAYLOAD_MAX_CHARS - CORRELATION_OVERHEAD`` characters.
"""

from __future__ import annotations

import abc
import datetime as dt
import enum
import logging
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Self, TypeVar

import attrs

from vidu_async.errors import ResponseFormatError

__all__ = [
    "CORRELATION_OVERHEAD",
    "CORRELATION_PREFIX",
    "MAX_PAGE_SIZE",
    "Creation",
    "CreditBalance",
    "Credits",
    "Task",
    "TaskPage",
    "TaskResult",
    "TaskState",
    "is_cancellable",
    "is_terminal",
    "new_correlation_key",
    "parse_state",
    "parse_timestamp",
    "split_payload",
    "wrap_payload",
]

logger = logging.getLogger("vidu_async.tasks")
_T = TypeVar("_T")


class TaskState(enum.StrEnum):
    """The documented task states: created -> queueing -> processing -> success | failed."""

    CREATED = "created"
    QUEUEING = "queueing"
    PROCESSING = "processing"
    SUCCESS = "success"
    FAILED = "failed"


_TERMINAL_STATES = frozenset({TaskState.SUCCESS, TaskState.FAILED})
_CANCELLABLE_STATES = frozenset({TaskState.CREATED, TaskState.QUEUEING})


def parse_state(value: str) -> TaskState | str:
    """The ``TaskState`` for a documented state; any other value stays a plain string."""
    try:
        return TaskState(value)
    except ValueError:
        return value


def is_terminal(state: TaskState | str) -> bool:
    """Whether a task in ``state`` will change no more: success or failed (unknown states: no)."""
    return state in _TERMINAL_STATES


def is_cancellable(state: TaskState | str) -> bool:
    """Whether a cancel of a task in ``state`` is accepted (free): it has not started, it is
    created or queueing."""
    return state in _CANCELLABLE_STATES


# --- the correlation envelope ------------------------------------------------------------------

CORRELATION_PREFIX = "va1:"
_KEY_LENGTH = 32
_HEX_DIGITS = frozenset("0123456789abcdef")
CORRELATION_OVERHEAD = len(CORRELATION_PREFIX) + _KEY_LENGTH + 1
"""How many characters of the API's payload limit the envelope takes."""
MAX_PAGE_SIZE = 100
"""The API's largest list page, and the most ``task_ids`` one list call may filter on."""


def _is_key(text: str) -> bool:
    return len(text) == _KEY_LENGTH and _HEX_DIGITS.issuperset(text)


def new_correlation_key() -> str:
    """A fresh random correlation key: 32 lowercase hex digits."""
    return uuid.uuid4().hex


def wrap_payload(key: str, user_payload: str) -> str:
    """The payload to send: the envelope carrying ``key``, then ``user_payload`` unchanged."""
    if not _is_key(key):
        raise ValueError(f"a correlation key is 32 lowercase hex digits, got {key!r}")
    return f"{CORRELATION_PREFIX}{key}:{user_payload}"


def split_payload(sent: str) -> tuple[str | None, str]:
    """``(key, user payload)`` from a payload as sent; ``(None, sent)`` if it has no envelope."""
    start = len(CORRELATION_PREFIX)
    end = start + _KEY_LENGTH
    key = sent[start:end]
    if sent.startswith(CORRELATION_PREFIX) and _is_key(key) and sent[end : end + 1] == ":":
        return key, sent[end + 1 :]
    return None, sent


# --- timestamps ----------------------------------------------------------------------------------

# RFC 3339 date-time. ASCII digits only (\d would take any Unicode digit); one unbounded run of
# digits and nothing nested, so matching is linear in the length of the text.
_RFC3339 = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]([0-9]{2}:[0-9]{2}:[0-9]{2})"
    r"(?:\.([0-9]+))?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def parse_timestamp(value: str, *, field: str = "created_at") -> dt.datetime | None:
    """An RFC 3339 timestamp as an aware UTC datetime; ``""`` gives None.

    Fractional seconds of any length (Vidu sends nanoseconds) are truncated to microseconds.
    Raises ``ResponseFormatError`` naming ``field`` for anything else.
    """
    if value == "":
        return None
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise ResponseFormatError(
            f"expected an RFC 3339 timestamp such as 2026-01-20T06:37:57.371761937Z, "
            f"got {_preview(value)}",
            field=field,
        )
    date, time, fraction, offset = match.groups()
    micros = (fraction or "")[:6].ljust(6, "0")
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        parsed = dt.datetime.fromisoformat(f"{date}T{time}.{micros}{offset}")
        return parsed.astimezone(dt.UTC)
    except (ValueError, OverflowError) as exc:
        raise ResponseFormatError(
            f"not a valid timestamp ({exc}): {_preview(value)}", field=field
        ) from None


# --- reading typed fields out of JSON ------------------------------------------------------------

_JSON_KINDS: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),  # before int: bool is a subclass of int
    (int, "an integer"),
    (float, "a number"),
    (str, "a string"),
    (list, "an array"),
    (Mapping, "an object"),
)


def _preview(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_REPR_CHARS = 1000


def _brief(value: Any) -> Any:
    """``value`` with its long strings shortened, for a repr: a data URI keeps its media type
    and size (``data:image/png;base64,iVBORw0K…(2.1 MB)``), other text its first 100 chars."""
    if isinstance(value, str):
        if value.startswith("data:") and "," in value:
            head, _, data = value.partition(",")
            return f"{head},{data[:8]}…({_size(len(data) * 3 // 4)})"
        if len(value) > _REPR_CHARS:
            return f"{value[:100]}…({len(value):,} chars)"
        return value
    if isinstance(value, list | tuple):
        return type(value)(_brief(item) for item in value)
    if isinstance(value, Mapping):
        return {key: _brief(item) for key, item in value.items()}
    return value


def _size(count: int) -> str:
    for unit, scale in (("MB", 10**6), ("kB", 10**3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def _brief_repr(value: Any) -> str:
    return repr(_brief(value))


def _describe(value: object) -> str:
    """How a JSON value reads in an error message: its JSON kind, and a short preview of scalars."""
    if value is None:
        return "null"
    for kind, name in _JSON_KINDS:
        if isinstance(value, kind):
            if isinstance(value, list | Mapping):
                return name
            return f"{name} {_preview(value)}"
    return type(value).__name__


# Lenient readers of the fields the client only reports (``_Reader.echoed``): the value as the
# field's type, or None when it cannot be read as one. JSON decoding gives exact types, so
# ``type(...) is`` decides the common case first.

_BOOLEAN_WORDS = {"true": True, "false": False}
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]{1,30}")


def _as_text(value: Any) -> str | None:
    return value if type(value) is str else None


def _as_boolean(value: Any) -> bool | None:
    """A boolean, ``"true"``/``"false"`` (any case) or the integer 0 or 1."""
    if type(value) is bool:
        return value
    if type(value) is str:
        return _BOOLEAN_WORDS.get(value.strip().lower())
    return bool(value) if type(value) is int and value in (0, 1) else None


def _as_integer(value: Any) -> int | None:
    """An integer, a number without fraction (``5.0``) or a string of decimal digits."""
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    if type(value) is str and _INTEGER_TEXT.fullmatch(value.strip()):
        return int(value)
    return None


def _as_texts(value: Any) -> tuple[str, ...] | None:
    """An array of strings (one other item makes the whole unusable)."""
    if type(value) is list and all(type(item) is str for item in value):
        return tuple(value)
    return None


def _as_position(value: Any) -> int | str | None:
    """A watermark position: an integer 1..4 or a string such as ``"unspecified"``."""
    return value if type(value) is str else _as_integer(value)


def _as_timestamp(value: Any) -> dt.datetime | None:
    if type(value) is not str:
        return None
    try:
        return parse_timestamp(value)
    except ResponseFormatError:
        return None


class _Reader:
    """Reads typed fields out of one JSON object, remembering which keys were known.

    ``where`` is the object's path inside the answer ("" at the top, "creations[0]" below), so
    errors name the exact field. Missing keys and JSON nulls give the defaults of the module doc.
    """

    def __init__(self, data: object, where: str) -> None:
        if type(data) is not dict and not isinstance(data, Mapping):  # dict: no ABC check
            raise ResponseFormatError(
                f"expected an object, got {_describe(data)}", field=where or "response"
            )
        self.data: Mapping[str, Any] = data
        self._where = where
        self._known: set[str] = set()

    def path(self, key: str) -> str:
        return f"{self._where}.{key}" if self._where else key

    def _take(self, key: str, kinds: tuple[type, ...], expected: str) -> Any:
        """The value at ``key`` if it is of one of ``kinds``, None if missing or null."""
        self._known.add(key)
        value = self.data.get(key)
        if value is None or type(value) in kinds:  # what JSON decoding gives: checked at once
            return value
        # bool is a subclass of int, but true is not an integer in JSON.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise ResponseFormatError(
                f"expected {expected}, got {_describe(value)}", field=self.path(key)
            )
        return value

    def required_id(self, key: str) -> str:
        if key not in self.data:
            raise ResponseFormatError("missing: every task has an id", field=self.path(key))
        value: str | None = self._take(key, (str,), "a non-empty string")
        if not value:
            raise ResponseFormatError(
                f"expected a non-empty string, got {_describe(value)}", field=self.path(key)
            )
        return value

    # string, integer and boolean read every field of every answer: the common case (the
    # type JSON decoding gives, or missing) is decided inline, the rest by ``_take``.

    def string(self, key: str) -> str:
        self._known.add(key)
        value = self.data.get(key)
        if type(value) is str:
            return value
        return "" if value is None else self._take(key, (str,), "a string") or ""

    def integer(self, key: str) -> int | None:
        self._known.add(key)
        value = self.data.get(key)
        if value is None or type(value) is int:
            return value
        result: int | None = self._take(key, (int,), "an integer")
        return result

    def array(self, key: str) -> list[tuple[str, Any]]:
        """Each item of the array at ``key`` with its path (``images[2]``); [] if missing."""
        value: list[Any] = self._take(key, (list,), "an array") or []
        return [(f"{self.path(key)}[{index}]", item) for index, item in enumerate(value)]

    def echoed(self, key: str, read: Callable[[Any], _T | None], default: _T) -> _T:
        """A field the client only reports, read leniently by ``read`` (None: unusable). A
        missing, null or unusable value gives ``default``; an unusable one is logged (debug)."""
        self._known.add(key)
        value = self.data.get(key)
        if value is None:
            return default
        result = read(value)
        if result is None:
            logger.debug("ignored %s: %s", self.path(key), _describe(value))
            return default
        return result

    def state(self, key: str) -> TaskState | str:
        return parse_state(self.string(key))

    def payload(self, key: str) -> tuple[str | None, str]:
        return split_payload(self.string(key))

    def extra(self) -> dict[str, Any]:
        """The fields not read so far: call it last."""
        return {k: v for k, v in self.data.items() if k not in self._known}


class _Parsed(abc.ABC):
    """Gives each response type its ``from_dict``; the type says how to ``_read`` its fields."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Parse the JSON object the API answered with.

        Raises ``ResponseFormatError`` naming the field when a known field has the wrong type
        (or the task id is missing); unknown fields are kept in ``extra``.
        """
        return cls._read(_Reader(data, ""))

    @classmethod
    @abc.abstractmethod
    def _read(cls, r: _Reader) -> Self:
        """Build an instance from the fields of ``r``."""


# --- the response types --------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Task(_Parsed):
    """The answer to a create (``POST /ent/v2/reference2video``): the task as accepted.

    ``credits`` is what the task costs. ``payload`` is the user's payload (envelope removed),
    ``correlation_key`` the key the client put in it. ``wm_position`` is whatever the server
    echoed: an integer 1..4, or a string such as ``"unspecified"``.
    """

    task_id: str
    type: str = ""
    state: TaskState | str = ""
    model: str = ""
    style: str = ""
    prompt: str = attrs.field(default="", repr=_brief_repr)
    images: tuple[str, ...] = attrs.field(default=(), repr=_brief_repr)
    duration: int | None = None
    seed: int | None = None
    aspect_ratio: str = ""
    resolution: str = ""
    movement_amplitude: str = ""
    created_at: dt.datetime | None = None
    credits: int | None = None
    payload: str = attrs.field(default="", repr=_brief_repr)
    correlation_key: str | None = None
    cus_priority: int | None = None
    off_peak: bool = False
    watermark: bool = False
    is_rec: bool = False
    wm_position: int | str | None = None
    wm_url: str = attrs.field(default="", repr=_brief_repr)
    meta_data: str = ""
    client_request_id: str = ""
    extra: dict[str, Any] = attrs.field(factory=dict, hash=False, repr=_brief_repr)
    raw: dict[str, Any] = attrs.field(factory=dict, eq=False, repr=False)

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        correlation_key, payload = r.payload("payload")
        text, integer, boolean = _as_text, _as_integer, _as_boolean
        return cls(
            task_id=r.required_id("task_id"),
            type=r.echoed("type", text, ""),
            state=r.state("state"),
            model=r.echoed("model", text, ""),
            style=r.echoed("style", text, ""),
            prompt=r.echoed("prompt", text, ""),
            images=r.echoed("images", _as_texts, ()),
            duration=r.echoed("duration", integer, None),
            seed=r.echoed("seed", integer, None),
            aspect_ratio=r.echoed("aspect_ratio", text, ""),
            resolution=r.echoed("resolution", text, ""),
            movement_amplitude=r.echoed("movement_amplitude", text, ""),
            created_at=r.echoed("created_at", _as_timestamp, None),
            credits=r.integer("credits"),
            payload=payload,
            correlation_key=correlation_key,
            cus_priority=r.echoed("cus_priority", integer, None),
            off_peak=r.echoed("off_peak", boolean, False),
            watermark=r.echoed("watermark", boolean, False),
            is_rec=r.echoed("is_rec", boolean, False),
            wm_position=r.echoed("wm_position", _as_position, None),
            wm_url=r.echoed("wm_url", text, ""),
            meta_data=r.echoed("meta_data", text, ""),
            client_request_id=r.echoed("client_request_id", text, ""),
            extra=r.extra(),
            raw=dict(r.data),
        )


@attrs.frozen(kw_only=True)
class Creation(_Parsed):
    """One generated video of a finished task. Its links are signed and expire after about 24 h."""

    id: str = ""
    url: str = ""
    cover_url: str = ""
    watermarked_url: str = ""
    extra: dict[str, Any] = attrs.field(factory=dict, hash=False, repr=_brief_repr)
    raw: dict[str, Any] = attrs.field(factory=dict, eq=False, repr=False)

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        return cls(
            id=r.string("id"),
            url=r.string("url"),
            cover_url=r.string("cover_url"),
            watermarked_url=r.string("watermarked_url"),
            extra=r.extra(),
            raw=dict(r.data),
        )


@attrs.frozen(kw_only=True)
class TaskResult(_Parsed):
    """A task as a query (``GET /ent/v2/tasks/{id}/creations``) or a list item reports it.

    ``err_code`` names the failure of a failed task; ``creations`` are filled on success. Fields
    only the list endpoint sends (images, duration, ...) are in ``extra``.
    """

    id: str
    state: TaskState | str = ""
    err_code: str = ""
    credits: int | None = None
    payload: str = attrs.field(default="", repr=_brief_repr)
    correlation_key: str | None = None
    bgm: bool = False
    off_peak: bool = False
    creations: tuple[Creation, ...] = ()
    model: str = ""
    prompt: str = attrs.field(default="", repr=_brief_repr)
    created_at: dt.datetime | None = None
    extra: dict[str, Any] = attrs.field(factory=dict, hash=False, repr=_brief_repr)
    raw: dict[str, Any] = attrs.field(factory=dict, eq=False, repr=False)

    @property
    def task_id(self) -> str:
        """The task id (the same as ``id``, named as ``Task`` names it)."""
        return self.id

    @property
    def is_terminal(self) -> bool:
        """Whether the task is finished (success or failed) and will change no more."""
        return is_terminal(self.state)

    @property
    def succeeded(self) -> bool:
        return self.state == TaskState.SUCCESS

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        correlation_key, payload = r.payload("payload")
        return cls(
            id=r.required_id("id"),
            state=r.state("state"),
            err_code=r.string("err_code"),
            credits=r.integer("credits"),
            payload=payload,
            correlation_key=correlation_key,
            bgm=r.echoed("bgm", _as_boolean, False),
            off_peak=r.echoed("off_peak", _as_boolean, False),
            creations=tuple(
                Creation._read(_Reader(item, path)) for path, item in r.array("creations")
            ),
            model=r.echoed("model", _as_text, ""),
            prompt=r.echoed("prompt", _as_text, ""),
            created_at=r.echoed("created_at", _as_timestamp, None),
            extra=r.extra(),
            raw=dict(r.data),
        )


@attrs.frozen(kw_only=True)
class TaskPage(_Parsed):
    """One page of ``GET /ent/v2/tasks``; an empty ``next_page_token`` means the last page."""

    tasks: tuple[TaskResult, ...] = ()
    next_page_token: str = ""
    extra: dict[str, Any] = attrs.field(factory=dict, hash=False, repr=_brief_repr)
    raw: dict[str, Any] = attrs.field(factory=dict, eq=False, repr=False)

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        return cls(
            tasks=tuple(TaskResult._read(_Reader(item, path)) for path, item in r.array("tasks")),
            next_page_token=r.string("next_page_token"),
            extra=r.extra(),
            raw=dict(r.data),
        )


@attrs.frozen(kw_only=True)
class CreditBalance(_Parsed):
    """One entry of the account's ``remains``: credits left and the concurrency in use."""

    type: str = ""
    credit_remain: int | None = None
    concurrency_limit: int | None = None
    current_concurrency: int | None = None
    queue_count: int | None = None
    extra: dict[str, Any] = attrs.field(factory=dict, hash=False, repr=_brief_repr)
    raw: dict[str, Any] = attrs.field(factory=dict, eq=False, repr=False)

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        return cls(
            type=r.string("type"),
            credit_remain=r.integer("credit_remain"),
            concurrency_limit=r.integer("concurrency_limit"),
            current_concurrency=r.integer("current_concurrency"),
            queue_count=r.integer("queue_count"),
            extra=r.extra(),
            raw=dict(r.data),
        )


@attrs.frozen(kw_only=True)
class Credits(_Parsed):
    """The answer of ``GET /ent/v2/credits``. ``packages`` (undocumented) keeps items as sent."""

    remains: tuple[CreditBalance, ...] = ()
    packages: tuple[Any, ...] = attrs.field(default=(), hash=False)
    extra: dict[str, Any] = attrs.field(factory=dict, hash=False, repr=_brief_repr)
    raw: dict[str, Any] = attrs.field(factory=dict, eq=False, repr=False)

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        return cls(
            remains=tuple(
                CreditBalance._read(_Reader(item, path)) for path, item in r.array("remains")
            ),
            packages=tuple(item for _, item in r.array("packages")),
            extra=r.extra(),
            raw=dict(r.data),
        )
