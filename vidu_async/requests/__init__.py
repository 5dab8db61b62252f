"""Generation requests: attrs classes that validate themselves offline and build their bodies.

One class per call (``ReferenceToVideoRequest``, ``SubjectsToVideoRequest``,
``TextToVideoRequest``, ``ImageToVideoRequest``, ``StartEndToVideoRequest``), all with one
interface: ``route``, ``kind``, ``model``, ``prompt``, ``media()`` (and ``media_entries()``, each
with its kind), ``check(strict=)`` (every problem, against the route's capability table),
``validate(strict=)``, ``to_payload()``, ``body_with(media)`` and ``from_dict``.
``request_from_dict`` picks the class for a JSON object.
"""

from vidu_async.requests._common import ValidationResult, dumps_body
from vidu_async.requests.dispatch import KINDS, Request, request_from_dict
from vidu_async.requests.frames import ImageToVideoRequest, StartEndToVideoRequest
from vidu_async.requests.reference import (
    KNOWN_FIELDS,
    REQUIRED_FIELDS,
    ReferenceToVideoRequest,
)
from vidu_async.requests.subjects import Subject, SubjectsToVideoRequest
from vidu_async.requests.text import TextToVideoRequest

__all__ = [
    "KINDS",
    "KNOWN_FIELDS",
    "REQUIRED_FIELDS",
    "ImageToVideoRequest",
    "ReferenceToVideoRequest",
    "Request",
    "StartEndToVideoRequest",
    "Subject",
    "SubjectsToVideoRequest",
    "TextToVideoRequest",
    "ValidationResult",
    "dumps_body",
    "request_from_dict",
]
