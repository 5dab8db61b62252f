"""The server's checks of a create body, answering as Vidu does: one reason per refusal.

In order: the body must be a JSON object of at most 20 MB (``BadRequest``); no unknown field
(``FieldUnwanted``); ``model`` and ``prompt`` present (``FieldLacking``); no ``null`` and media
lists of http(s) URLs or data URIs (``FieldInvalid``); then every rule of the capability table,
through ``ReferenceToVideoRequest.check()`` (``FieldInvalid``, all problems in one message).
Unlike a client, the server never treats a string as a local path.
"""

from __future__ import annotations

import json
from typing import Any

from vidu_async.capabilities import BODY_MAX_BYTES
from vidu_async.errors import ValidationError
from vidu_async.requests import KNOWN_FIELDS, REQUIRED_FIELDS, ReferenceToVideoRequest
from vidu_async.testing.answers import SimError

__all__ = ["parse_create_body", "too_large"]

_MEDIA_FIELDS = ("images", "videos", "sounds")
_MEDIA_PREFIXES = ("http://", "https://", "data:")


def parse_create_body(raw: bytes) -> dict[str, Any]:
    """The create body as a dict if the server accepts it; ``SimError`` (400) naming the problem.

    Blocking on a large body (JSON parsing, data URI headers): call it through a thread.
    """
    if len(raw) > BODY_MAX_BYTES:
        raise too_large(len(raw))
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise SimError(400, "BadRequest", f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise SimError(400, "BadRequest", "the body must be a JSON object")
    unknown = [key for key in body if key not in KNOWN_FIELDS]
    if unknown:
        raise SimError(400, "FieldUnwanted", f"unknown field(s): {', '.join(unknown)}")
    lacking = [key for key in REQUIRED_FIELDS if key not in body]
    if lacking:
        raise SimError(400, "FieldLacking", f"missing field(s): {', '.join(lacking)}")
    problems = _raw_problems(body)
    if not problems:
        try:
            result = ReferenceToVideoRequest.from_dict(body).check(strict=True)
        except ValidationError as exc:
            problems = [str(problem) for problem in exc.problems]
        else:
            problems = [str(problem) for problem in result.errors]
    if problems:
        raise SimError(400, "FieldInvalid", "; ".join(problems))
    return body


def too_large(size: int | None) -> SimError:
    """The refusal of a body over the limit (of ``size`` bytes when known)."""
    what = "the body" if size is None else f"the body of {size} bytes"
    return SimError(400, "BadRequest", f"{what} is over the {BODY_MAX_BYTES // 1_048_576} MB limit")


def _raw_problems(body: dict[str, Any]) -> list[str]:
    """What only a server sees in raw JSON: ``null`` values, media that are not URLs/data URIs."""
    problems = [f"{key}: must not be null" for key, value in body.items() if value is None]
    for key in _MEDIA_FIELDS:
        items = body.get(key)
        if items is None:
            continue
        if not isinstance(items, list):
            problems.append(f"{key}: must be an array of strings")
            continue
        problems += [
            f"{key}[{index}]: must be an http(s) URL or a data URI"
            for index, item in enumerate(items)
            if not (isinstance(item, str) and item.lower().startswith(_MEDIA_PREFIXES))
        ]
    return problems
