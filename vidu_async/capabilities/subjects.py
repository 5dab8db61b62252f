"""reference2video, the subject call (``subjects``): same path as the seed's, other models.

Durations, resolutions and ratios follow the seed's rows for the same model ("the seed's
fields"); ``viduq3-turbo`` has no seed row, so it takes its text2video/img2video row. Every
model takes ``audio``: on by default on ``viduq3`` and ``viduq3-turbo``, off elsewhere.
"""

from __future__ import annotations

from vidu_async.capabilities.limits import LISTED_ASPECT_RATIOS
from vidu_async.capabilities.model import ModelCapabilities, RouteTable
from vidu_async.capabilities.reference2video import TABLE as SEED_TABLE

__all__ = ["TABLE"]

_PAGE = "subject-call page (third-party transcription 2026-08-13); limits as the seed's row"


def _as_seed(name: str, **changes: object) -> ModelCapabilities:
    """The seed's row for ``name`` with the subject call's differences: audio for every model."""
    seed = SEED_TABLE.models[name]
    return ModelCapabilities(
        name, _PAGE, seed.durations, seed.default_duration, seed.resolutions,
        seed.default_resolution, aspect_ratios=seed.aspect_ratios,
        free_aspect_ratio=seed.free_aspect_ratio, audio=True, audio_default=seed.audio_default,
        movement_amplitude=seed.movement_amplitude, bgm_ignored=seed.bgm_ignored,
        bgm_ignored_durations=seed.bgm_ignored_durations, **changes,  # type: ignore[arg-type]
    )


TABLE = RouteTable(
    "reference2video with subjects",
    [
        _as_seed("viduq3"),
        ModelCapabilities(
            "viduq3-turbo",
            "subject-call page names it; limits from its text2video/img2video rows (assumed)",
            range(1, 17), 5, ("540p", "720p", "1080p"), "720p",
            aspect_ratios=LISTED_ASPECT_RATIOS, free_aspect_ratio=True, audio=True,
            audio_default=True, bgm_ignored=True,
        ),
        _as_seed("viduq2-pro", max_image_subjects=4, max_video_subjects=2, max_videos=2),
        _as_seed("viduq2"),
        _as_seed("viduq1"),
        _as_seed("vidu2.0"),
    ],
    unsupported={"viduq3-mix": "viduq3-mix does not support subjects (use top-level images)"},
)
