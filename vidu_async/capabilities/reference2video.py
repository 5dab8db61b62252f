"""reference2video, the non-subject call (top-level ``images``): the seed's table."""

from __future__ import annotations

from vidu_async.capabilities.limits import LISTED_ASPECT_RATIOS
from vidu_async.capabilities.model import ModelCapabilities, RouteTable

__all__ = ["TABLE"]

_SEED = "seed (reference2video.seed.txt)"
_Q2_BGM = frozenset({9, 10})

TABLE = RouteTable(
    "reference2video",
    [
        ModelCapabilities(
            "viduq3-mix", _SEED, range(1, 17), 5, ("720p", "1080p"), "720p",
            aspect_ratios=LISTED_ASPECT_RATIOS, free_aspect_ratio=True, audio=True,
            audio_default=True, bgm_ignored=True,
        ),
        ModelCapabilities(
            "viduq3", _SEED, range(3, 17), 5, ("540p", "720p", "1080p"), "720p",
            aspect_ratios=LISTED_ASPECT_RATIOS, free_aspect_ratio=True, audio=True,
            audio_default=True, bgm_ignored=True,
        ),
        ModelCapabilities(
            "viduq2-pro", _SEED, range(1, 11), 5, ("540p", "720p", "1080p"), "720p",
            aspect_ratios=LISTED_ASPECT_RATIOS, free_aspect_ratio=True,
            max_images_with_videos=4, max_videos=2, bgm_ignored_durations=_Q2_BGM,
        ),
        ModelCapabilities(
            "viduq2", _SEED, range(1, 11), 5, ("540p", "720p", "1080p"), "720p",
            aspect_ratios=LISTED_ASPECT_RATIOS, free_aspect_ratio=True,
            bgm_ignored_durations=_Q2_BGM,
        ),
        ModelCapabilities(
            "viduq1", _SEED, range(5, 6), 5, ("1080p",), "1080p",
            aspect_ratios=LISTED_ASPECT_RATIOS, movement_amplitude=True,
        ),
        ModelCapabilities(
            "vidu2.0", _SEED, range(4, 5), 4, ("360p", "720p"), "360p",
            aspect_ratios=LISTED_ASPECT_RATIOS, movement_amplitude=True,
        ),
    ],
)
