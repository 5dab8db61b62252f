"""Rules every model of a route shares: lengths, counts, value lists, media limits.

These hold whatever the model, so they are checked even for a model no table knows yet.
"""

from __future__ import annotations

from fractions import Fraction

__all__ = [
    "AUDIO_TYPES",
    "BODY_MAX_BYTES",
    "CONTENT_TYPE_ALIASES",
    "IMAGE_CONTENT_TYPES",
    "IMAGE_MIN_SIDE",
    "LISTED_ASPECT_RATIOS",
    "MEDIA_MAX_RATIO",
    "MOVEMENT_AMPLITUDES",
    "PAYLOAD_MAX_CHARS",
    "PROMPT_MAX_CHARS",
    "REFERENCE_IMAGES_MAX",
    "SEED_MAX",
    "START_END_RATIO",
    "SUBJECTS_MAX",
    "SUBJECT_IMAGES_MAX",
    "SUBJECT_PROMPT_MAX_CHARS",
    "TEXT2VIDEO_STYLES",
    "VIDEO_CONTENT_TYPES",
    "VIDEO_DECODED_MAX_BYTES",
    "VIDEO_FILE_MAX_BYTES",
    "VIDEO_MAX_SECONDS",
    "VIDEO_SECONDS_TOLERANCE",
    "WM_POSITIONS",
]

PROMPT_MAX_CHARS = 5000
SUBJECT_PROMPT_MAX_CHARS = 2000
"""The subject call's page limits the prompt to 2000 characters."""
PAYLOAD_MAX_CHARS = 1_048_576
SEED_MAX = 2**32 - 1
BODY_MAX_BYTES = 20 * 1024 * 1024
"""The whole HTTP POST body must not exceed 20 MB."""

LISTED_ASPECT_RATIOS = ("1:1", "9:16", "16:9", "3:4", "4:3")
MOVEMENT_AMPLITUDES = ("auto", "small", "medium", "large")
WM_POSITIONS = (1, 2, 3, 4)
"""1 top-left, 2 top-right, 3 bottom-right (the default), 4 bottom-left."""
TEXT2VIDEO_STYLES = ("general", "anime")
AUDIO_TYPES = ("all", "speech_only", "sound_effect_only")

REFERENCE_IMAGES_MAX = 7
"""reference2video takes 1..7 images whatever the model (fewer for some, see the table)."""
SUBJECTS_MAX = 7
SUBJECT_IMAGES_MAX = 3
"""A subject call takes 1..7 subjects, each with 1..3 images."""
START_END_RATIO = (Fraction(4, 5), Fraction(5, 4))
"""start-end2video: the start image's width/height over the end image's, inclusive bounds."""

IMAGE_MIN_SIDE = 128
MEDIA_MAX_RATIO = 4
"""Images and videos must have an aspect ratio strictly between 1:4 and 4:1."""
IMAGE_CONTENT_TYPES = ("image/png", "image/jpeg", "image/webp")
CONTENT_TYPE_ALIASES = {"image/jpg": "image/jpeg"}
"""Non-standard data URI types the docs' format names invite ("jpg"): accepted with a warning."""
VIDEO_CONTENT_TYPES = ("video/mp4", "video/quicktime", "video/x-msvideo")
VIDEO_FILE_MAX_BYTES = 100 * 1024 * 1024
VIDEO_DECODED_MAX_BYTES = 20 * 1024 * 1024
"""A video's base64-decoded length must be under this."""
VIDEO_MAX_SECONDS = {1: 8.0, 2: 5.0}
"""With one reference video it may last 8 s; with two, 5 s each."""
VIDEO_SECONDS_TOLERANCE = 0.1
"""Over ``VIDEO_MAX_SECONDS`` by less than this is a warning, not an error: an "8 s" clip's header
often says 8.008 s (240 frames at 29.97 fps), and the API's own tolerance is unknown."""
