"""The server's checks of a create body, answering as Vidu does: one reason per refusal.

Every route is checked by its request class (``ROUTES``: one table, the reference2video path
holding both of its forms, ``subjects`` picking the subject form). In order: the body must be a
JSON object of at most 20 MB (``BadRequest``); no field the route does not take
(``FieldUnwanted``); the required fields present (``FieldLacking``); no ``null``, media entries
that are http(s) URLs, data URIs or ``ssupload:`` URIs this server issued to the account
(``FieldInvalid``); then every rule of the route's capability table, through the request
class's ``check(strict=True, sent=True)`` (``FieldInvalid``, all problems in one message).
Unlike a client, the server never treats a string as a local path.
"""

from __future__ import annotations

import json
from collections.abc import Container, Iterator
from typing import Any

import attrs

from vidu_async.capabilities import BODY_MAX_BYTES, ModelCapabilities
from vidu_async.errors import ValidationError
from vidu_async.requests import (
    ImageToVideoRequest,
    ReferenceToVideoRequest,
    StartEndToVideoRequest,
    SubjectsToVideoRequest,
    TextToVideoRequest,
)
from vidu_async.requests._base import RequestBase
from vidu_async.testing.answers import SimError

__all__ = ["ROUTES", "CreateBody", "parse_create_body", "too_large"]

ROUTES: dict[str, tuple[type[RequestBase], ...]] = {
    "text2video": (TextToVideoRequest,),
    "img2video": (ImageToVideoRequest,),
    "start-end2video": (StartEndToVideoRequest,),
    "reference2video": (ReferenceToVideoRequest, SubjectsToVideoRequest),
}
"""The create routes (the path after ``/ent/v2/``) and the request classes that check them:
the first, or for reference2video the subject form when the body has ``subjects``."""
_MEDIA_PREFIXES = ("http://", "https://", "data:")
_UPLOAD_PREFIX = "ssupload:"


@attrs.frozen
class CreateBody:
    """A create body the server accepts: the JSON as sent, which call it is, the model's row."""

    body: dict[str, Any]
    kind: str
    """The route (``text2video``...), ``subjects`` for reference2video's subject form."""
    model: ModelCapabilities


def parse_create_body(
    raw: bytes, route: str = "reference2video", uploads: Container[str] = ()
) -> CreateBody:
    """The create body for ``route`` if the server accepts it; ``SimError`` (400) naming the
    problem. ``uploads`` are the ``ssupload:`` URIs the calling account may use.

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
    classes = ROUTES[route]
    cls = classes[-1] if "subjects" in body else classes[0]
    unknown = [key for key in body if key not in cls.FIELDS]
    if unknown:
        raise SimError(400, "FieldUnwanted", f"unknown field(s): {', '.join(unknown)}")
    lacking = [key for key in cls.REQUIRED if key not in body]
    if lacking:
        raise SimError(400, "FieldLacking", f"missing field(s): {', '.join(lacking)}")
    problems = _raw_problems(body, uploads)
    if problems:
        raise SimError(400, "FieldInvalid", "; ".join(problems))
    try:
        request = cls.from_dict(body)
    except ValidationError as exc:
        raise SimError(400, "FieldInvalid", "; ".join(map(str, exc.problems))) from None
    errors = request.check(strict=True, sent=True).errors
    model = request.capabilities()
    if errors or model is None:  # strict: an unknown model is among the errors
        raise SimError(400, "FieldInvalid", "; ".join(map(str, errors)))
    kind = "subjects" if cls is SubjectsToVideoRequest else route
    return CreateBody(body, kind, model)


def too_large(size: int | None) -> SimError:
    """The refusal of a body over the limit (of ``size`` bytes when known)."""
    what = "the body" if size is None else f"the body of {size} bytes"
    return SimError(400, "BadRequest", f"{what} is over the {BODY_MAX_BYTES // 1_048_576} MB limit")


def _media_lists(body: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Every media list of a body, top-level or inside subjects, with its field name."""
    for key in ("images", "videos"):
        if key in body:
            yield key, body[key]
    subjects = body.get("subjects")
    if isinstance(subjects, list):
        for index, subject in enumerate(subjects):
            if isinstance(subject, dict):
                for key in ("images", "videos"):
                    if subject.get(key) is not None:
                        yield f"subjects[{index}].{key}", subject[key]


def _raw_problems(body: dict[str, Any], uploads: Container[str]) -> list[str]:
    """What only a server sees in raw JSON: ``null`` values, media that are not URLs, data URIs
    or uploads it issued."""
    problems = [f"{key}: must not be null" for key, value in body.items() if value is None]
    for key, items in _media_lists(body):
        if items is None:
            continue
        if not isinstance(items, list):
            problems.append(f"{key}: must be an array of strings")
            continue
        for index, item in enumerate(items):
            if isinstance(item, str) and item.startswith(_UPLOAD_PREFIX):
                if item not in uploads:
                    problems.append(
                        f"{key}[{index}]: {item} names no finished upload of this account"
                    )
            elif not (isinstance(item, str) and item.lower().startswith(_MEDIA_PREFIXES)):
                problems.append(f"{key}[{index}]: must be an http(s) URL or a data URI")
    return problems
