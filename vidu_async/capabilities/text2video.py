"""text2video (``POST /text2video``): no media; style and bgm rules differ by model.

``movement_amplitude`` "has no effect" on q2/q3 here (the seed says "not supported" on its own
route): a warning, and it is left out of the body, which is right under either reading.
"""

from __future__ import annotations

from vidu_async.capabilities.model import ModelCapabilities, RouteTable

__all__ = ["TABLE"]

_PAGE = "text2video page (stored platform copy / third-party transcription 2026-08-13)"
_RATIOS = ("16:9", "9:16", "1:1")
_RATIOS_Q = (*_RATIOS, "3:4", "4:3")
_HD = ("540p", "720p", "1080p")

TABLE = RouteTable(
    "text2video",
    [
        ModelCapabilities(
            "viduq3-pro", _PAGE, range(1, 17), 5, _HD, "720p", aspect_ratios=_RATIOS_Q,
            audio=True, audio_default=True, bgm=False, style_ignored=True,
            movement_amplitude_ignored=True,
        ),
        ModelCapabilities(
            "viduq3-turbo", _PAGE, range(1, 17), 5, _HD, "720p", aspect_ratios=_RATIOS_Q,
            audio=True, audio_default=True, bgm=False, style_ignored=True,
            movement_amplitude_ignored=True,
        ),
        ModelCapabilities(
            "viduq2", _PAGE, range(1, 11), 5, _HD, "720p", aspect_ratios=_RATIOS_Q,
            bgm_ignored_durations=frozenset({9, 10}), style_ignored=True,
            movement_amplitude_ignored=True,
        ),
        ModelCapabilities(
            "viduq1", _PAGE, range(5, 6), 5, ("1080p",), "1080p", aspect_ratios=_RATIOS,
            movement_amplitude=True,
        ),
    ],
)
