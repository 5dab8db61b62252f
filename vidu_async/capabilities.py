"""The per-model capability table of reference2video (non-subject call): the spec as data.

This is the only module that knows which models exist and what each accepts. Validation
(``requests.py``), the simulator (``testing/``) and the CLI read it; adding a model is one entry
in ``MODELS`` plus tests. It imports nothing of ours.
"""

from __future__ import annotations

import attrs

__all__ = [
    "BODY_MAX_BYTES",
    "IMAGE_CONTENT_TYPES",
    "IMAGE_MIN_SIDE",
    "LISTED_ASPECT_RATIOS",
    "MEDIA_MAX_RATIO",
    "MODELS",
    "MOVEMENT_AMPLITUDES",
    "PAYLOAD_MAX_CHARS",
    "PROMPT_MAX_CHARS",
    "SEED_MAX",
    "VIDEO_CONTENT_TYPES",
    "VIDEO_DECODED_MAX_BYTES",
    "VIDEO_FILE_MAX_BYTES",
    "VIDEO_MAX_SECONDS",
    "WM_POSITIONS",
    "ModelCapabilities",
    "get_model",
]

PROMPT_MAX_CHARS = 5000
PAYLOAD_MAX_CHARS = 1_048_576
SEED_MAX = 2**32 - 1
BODY_MAX_BYTES = 20 * 1024 * 1024
"""The whole HTTP POST body must not exceed 20 MB."""

LISTED_ASPECT_RATIOS = ("1:1", "9:16", "16:9", "3:4", "4:3")
MOVEMENT_AMPLITUDES = ("auto", "small", "medium", "large")
WM_POSITIONS = (1, 2, 3, 4)
"""1 top-left, 2 top-right, 3 bottom-right (the default), 4 bottom-left."""

IMAGE_MIN_SIDE = 128
MEDIA_MAX_RATIO = 4
"""Images and videos must have an aspect ratio strictly between 1:4 and 4:1."""
IMAGE_CONTENT_TYPES = ("image/png", "image/jpeg", "image/webp")
VIDEO_CONTENT_TYPES = ("video/mp4", "video/quicktime", "video/x-msvideo")
VIDEO_FILE_MAX_BYTES = 100 * 1024 * 1024
VIDEO_DECODED_MAX_BYTES = 20 * 1024 * 1024
"""A video's base64-decoded length must be under this."""
VIDEO_MAX_SECONDS = {1: 8.0, 2: 5.0}
"""With one reference video it may last 8 s; with two, 5 s each."""


@attrs.frozen
class ModelCapabilities:
    """What one model accepts in a reference2video call.

    ``bgm_ignored_durations`` lists durations at which ``bgm`` is accepted but has no effect;
    ``bgm_ignored`` says it never has an effect. Both are warnings, never errors.
    """

    name: str
    durations: range
    default_duration: int
    resolutions: tuple[str, ...]
    default_resolution: str
    free_aspect_ratio: bool
    """True: any positive ``W:H`` or ``auto``; False: only ``LISTED_ASPECT_RATIOS``."""
    max_images: int = 7
    max_images_with_videos: int = 0
    max_videos: int = 0
    audio: bool = False
    """Whether the ``audio`` field is accepted (and defaults to true)."""
    movement_amplitude: bool = False
    bgm_ignored: bool = False
    bgm_ignored_durations: frozenset[int] = frozenset()

    @property
    def duration_text(self) -> str:
        """The allowed durations as a person reads them: ``3..16`` or ``5``."""
        lo, hi = self.durations[0], self.durations[-1]
        return str(lo) if lo == hi else f"{lo}..{hi}"

    @property
    def supports_videos(self) -> bool:
        return self.max_videos > 0


_Q2_BGM = frozenset({9, 10})

MODELS: dict[str, ModelCapabilities] = {
    m.name: m
    for m in (
        ModelCapabilities(
            name="viduq3-mix",
            durations=range(1, 17),
            default_duration=5,
            resolutions=("720p", "1080p"),
            default_resolution="720p",
            free_aspect_ratio=True,
            audio=True,
            bgm_ignored=True,
        ),
        ModelCapabilities(
            name="viduq3",
            durations=range(3, 17),
            default_duration=5,
            resolutions=("540p", "720p", "1080p"),
            default_resolution="720p",
            free_aspect_ratio=True,
            audio=True,
            bgm_ignored=True,
        ),
        ModelCapabilities(
            name="viduq2-pro",
            durations=range(1, 11),
            default_duration=5,
            resolutions=("540p", "720p", "1080p"),
            default_resolution="720p",
            free_aspect_ratio=True,
            max_images_with_videos=4,
            max_videos=2,
            bgm_ignored_durations=_Q2_BGM,
        ),
        ModelCapabilities(
            name="viduq2",
            durations=range(1, 11),
            default_duration=5,
            resolutions=("540p", "720p", "1080p"),
            default_resolution="720p",
            free_aspect_ratio=True,
            bgm_ignored_durations=_Q2_BGM,
        ),
        ModelCapabilities(
            name="viduq1",
            durations=range(5, 6),
            default_duration=5,
            resolutions=("1080p",),
            default_resolution="1080p",
            free_aspect_ratio=False,
            movement_amplitude=True,
        ),
        ModelCapabilities(
            name="vidu2.0",
            durations=range(4, 5),
            default_duration=4,
            resolutions=("360p", "720p"),
            default_resolution="360p",
            free_aspect_ratio=False,
            movement_amplitude=True,
        ),
    )
}


def get_model(name: str) -> ModelCapabilities | None:
    """The capabilities of ``name``, or None for a model this table does not know."""
    return MODELS.get(name)
