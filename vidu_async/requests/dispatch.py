"""Which request class a JSON object is: the ``Request`` union and ``request_from_dict``.

Only an explicit ``type`` (or ``kind``) can choose img2video or start-end2video: ``images``
alone is ambiguous (reference images, a first frame, or first and last frames are all lists of
images), and guessing would bill for the wrong kind of video.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

from vidu_async.errors import FieldProblem, ValidationError
from vidu_async.requests._common import str_or_none, type_name
from vidu_async.requests.frames import ImageToVideoRequest, StartEndToVideoRequest
from vidu_async.requests.reference import ReferenceToVideoRequest
from vidu_async.requests.subjects import SubjectsToVideoRequest
from vidu_async.requests.text import TextToVideoRequest

__all__ = ["KINDS", "Request", "expect_request", "request_from_dict"]

Request = (
    ReferenceToVideoRequest
    | SubjectsToVideoRequest
    | TextToVideoRequest
    | ImageToVideoRequest
    | StartEndToVideoRequest
)
"""Any generation request; each has ``route``, ``kind``, ``check``, ``to_payload``..."""


def expect_request(value: object, what: str) -> None:
    """``TypeError`` naming ``what`` when ``value`` is not a request object (a dict, say):
    caught where it is handed over, not as an ``AttributeError`` deep in a paid batch."""
    if not isinstance(value, Request):
        raise TypeError(
            f"{what} must be a request object ({', '.join(c.__name__ for c in get_args(Request))}"
            f"), not {type(value).__name__}; request_from_dict() builds one from a dict"
        )


KINDS = ("text2video", "img2video", "start-end2video", "reference2video")
_CLASSES: dict[str, type[Request]] = {
    "text2video": TextToVideoRequest,
    "img2video": ImageToVideoRequest,
    "start-end2video": StartEndToVideoRequest,
}
_MEDIA_KEYS = ("images", "videos", "subjects")


def request_from_dict(
    data: Mapping[str, Any], *, kind: str | None = None, base_dir: Path | None = None
) -> Request:
    """Build the request ``data`` describes; raises ``ValidationError`` like ``from_dict``.

    The class: ``data["type"]`` if present (it is not sent), else ``kind`` (a default for a
    whole file); else ``subjects`` means the subject form, no media means text2video, and any
    other media reference2video. ``reference2video`` covers both of its forms.
    """
    if not isinstance(data, Mapping):
        raise ValidationError(
            [FieldProblem("(request)", f"must be a JSON object, got {type_name(data)}")]
        )
    fields = dict(data)
    chosen = fields.pop("type", None) or kind
    if chosen is not None and chosen not in KINDS:
        raise ValidationError(
            [FieldProblem("type", f"must be one of {', '.join(KINDS)}, got {chosen!r}")],
            model=str_or_none(fields.get("model")),
        )
    cls: type[Request]
    if chosen in _CLASSES:
        cls = _CLASSES[chosen]
    elif "subjects" in fields:
        cls = SubjectsToVideoRequest
    elif chosen is None and not any(key in fields for key in _MEDIA_KEYS):
        cls = TextToVideoRequest
    else:
        cls = ReferenceToVideoRequest
    return cls.from_dict(fields, base_dir=base_dir)
