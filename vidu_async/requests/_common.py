"""Small pieces every request module shares: the check result, body serialization, helpers."""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from vidu_async.errors import FieldProblem
from vidu_async.media import MediaKind, is_local

__all__ = [
    "BOOL_FIELDS",
    "COMMON_FIELDS",
    "INT_FIELDS",
    "MEDIA_FIELDS",
    "RESERVED_FIELDS",
    "ValidationResult",
    "as_tuple",
    "dumps_body",
    "dumps_body_spliced",
    "num",
    "resolve",
    "seconds_over",
    "short",
    "str_or_none",
    "type_name",
]

COMMON_FIELDS: Final = (
    "seed",
    "payload",
    "off_peak",
    "watermark",
    "wm_position",
    "wm_url",
    "meta_data",
    "callback_url",
)
"""The optional fields every generation route takes, with the same meaning (ENDPOINTS.md)."""
BOOL_FIELDS: Final = ("bgm", "audio", "off_peak", "watermark", "is_rec")
INT_FIELDS: Final = ("duration", "seed", "wm_position")
MEDIA_FIELDS: Final[Mapping[str, MediaKind]] = {"images": "image", "videos": "video"}
RESERVED_FIELDS: Final = ("sounds",)
"""Documented but reserved by the API ("not supported yet"): always refused, never sent."""


_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
"""``json.dumps`` of a body, compact, without building an encoder per body."""


def dumps_body(body: Mapping[str, Any]) -> bytes:
    """Serialize a request body exactly as it is sent (compact UTF-8 JSON), so sizes agree."""
    return _compact(body).encode()


def dumps_body_spliced(build: Callable[[Callable[[str], str]], Mapping[str, Any]]) -> bytes:
    """``dumps_body`` of the body ``build(mark)`` makes, where ``mark(text)`` stands for a string
    needing no JSON escaping (base64): it is spliced into the output, copied, not escaped again.

    Megabytes of inline media are the same in every create; escaping them cost each body tens of
    milliseconds holding the GIL. ``mark`` must only be given ASCII text without ``"`` or ``\\``.
    """
    token = ""  # fresh per body (no value sent can contain it by chance), made when first needed
    texts: list[str] = []

    def mark(text: str) -> str:
        nonlocal token
        token = token or secrets.token_hex(8)
        texts.append(text)
        return f"{token}{len(texts) - 1}"

    body = dumps_body(build(mark))
    if not texts:  # no local media: nothing to splice (and no pattern to compile)
        return body
    parts = re.split(f'"{token}([0-9]+)"'.encode(), body)
    for at in range(1, len(parts), 2):
        parts[at] = b'"' + texts[int(parts[at])].encode("ascii") + b'"'
    return b"".join(parts)


@attrs.frozen
class ValidationResult:
    """What ``check()`` found: ``errors`` make the request unsendable, ``warnings`` do not.

    ``body_bytes`` is the size the serialized body will have, local media included.
    """

    errors: tuple[FieldProblem, ...]
    warnings: tuple[FieldProblem, ...]
    body_bytes: int

    @property
    def ok(self) -> bool:
        return not self.errors


def as_tuple(value: Any) -> Any:
    """Accept any list or tuple for a list field; leave other values for ``check()`` to report."""
    if isinstance(value, list | tuple):
        return tuple(value)
    return value


def resolve(item: Any, base_dir: Path) -> Any:
    """A relative local media path made relative to ``base_dir``; anything else as given."""
    if isinstance(item, str) and is_local(item):
        path = Path(item).expanduser()
        return path if path.is_absolute() else base_dir / path
    return item


def type_name(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def num(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and math.isfinite(value) else str(value)


def seconds_over(value: float, limit: float) -> str:
    """``value`` (seconds, over ``limit``) as precisely as a header gives it: 8.008, not 8.0,
    and never so rounded that it no longer reads as over the limit."""
    text = f"{value:.6f}".rstrip("0")
    if float(text) <= limit:
        return repr(value)
    return text + "0" if text.endswith(".") else text


def short(value: str, limit: int = 80) -> str:
    return value if len(value) <= limit else value[:limit] + "..."


def str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
