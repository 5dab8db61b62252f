"""The model rules of every generation route, as data: the only place that knows models.

One table per route (``reference2video``, its subject form, ``text2video``, ``img2video``,
``start-end2video``), each entry naming its source; ``limits`` holds the rules every model of a
route shares. Adding a model is one entry plus tests. It imports nothing of ours outside itself.
"""

from __future__ import annotations

from vidu_async.capabilities import (
    img2video,
    reference2video,
    start_end2video,
    subjects,
    text2video,
)
from vidu_async.capabilities.limits import (
    AUDIO_TYPES,
    BODY_MAX_BYTES,
    CONTENT_TYPE_ALIASES,
    IMAGE_CONTENT_TYPES,
    IMAGE_MIN_SIDE,
    LISTED_ASPECT_RATIOS,
    MEDIA_MAX_RATIO,
    MOVEMENT_AMPLITUDES,
    PAYLOAD_MAX_CHARS,
    PROMPT_MAX_CHARS,
    REFERENCE_IMAGES_MAX,
    SEED_MAX,
    START_END_RATIO,
    SUBJECT_IMAGES_MAX,
    SUBJECT_PROMPT_MAX_CHARS,
    SUBJECTS_MAX,
    TEXT2VIDEO_STYLES,
    VIDEO_CONTENT_TYPES,
    VIDEO_DECODED_MAX_BYTES,
    VIDEO_FILE_MAX_BYTES,
    VIDEO_MAX_SECONDS,
    VIDEO_SECONDS_TOLERANCE,
    WM_POSITIONS,
)
from vidu_async.capabilities.model import ModelCapabilities, RouteTable

__all__ = [
    "AUDIO_TYPES",
    "BODY_MAX_BYTES",
    "CONTENT_TYPE_ALIASES",
    "IMAGE_CONTENT_TYPES",
    "IMAGE_MIN_SIDE",
    "IMG2VIDEO",
    "LISTED_ASPECT_RATIOS",
    "MEDIA_MAX_RATIO",
    "MODELS",
    "MOVEMENT_AMPLITUDES",
    "PAYLOAD_MAX_CHARS",
    "PROMPT_MAX_CHARS",
    "REFERENCE2VIDEO",
    "REFERENCE_IMAGES_MAX",
    "SEED_MAX",
    "START_END2VIDEO",
    "START_END_RATIO",
    "SUBJECTS",
    "SUBJECTS_MAX",
    "SUBJECT_IMAGES_MAX",
    "SUBJECT_PROMPT_MAX_CHARS",
    "TABLES",
    "TEXT2VIDEO",
    "TEXT2VIDEO_STYLES",
    "VIDEO_CONTENT_TYPES",
    "VIDEO_DECODED_MAX_BYTES",
    "VIDEO_FILE_MAX_BYTES",
    "VIDEO_MAX_SECONDS",
    "VIDEO_SECONDS_TOLERANCE",
    "WM_POSITIONS",
    "ModelCapabilities",
    "RouteTable",
    "get_model",
]

REFERENCE2VIDEO = reference2video.TABLE
SUBJECTS = subjects.TABLE
TEXT2VIDEO = text2video.TABLE
IMG2VIDEO = img2video.TABLE
START_END2VIDEO = start_end2video.TABLE
TABLES: dict[str, RouteTable] = {
    t.title: t for t in (REFERENCE2VIDEO, SUBJECTS, TEXT2VIDEO, IMG2VIDEO, START_END2VIDEO)
}
"""Every table by its title."""

MODELS = REFERENCE2VIDEO.models
"""The seed's route (reference2video without subjects), as before the other routes came."""


def get_model(name: str) -> ModelCapabilities | None:
    """The reference2video capabilities of ``name``, or None for a model that table lacks."""
    return REFERENCE2VIDEO.get(name)
