"""img2video (``POST /img2video``): one image, the first frame; no ``aspect_ratio``.

The page restricts ``movement_amplitude`` on no model, so every row accepts it. Audio is on by
default on q3 only ("default false; true on q3"). It gives no duration or resolution defaults:
those below are the same generation's text2video ones (used only when a request leaves them out).
"""

from __future__ import annotations

from functools import partial

from vidu_async.capabilities.model import ModelCapabilities, RouteTable

__all__ = ["TABLE"]

_PAGE = "img2video page (third-party transcription 2026-08-13)"
_HD = ("540p", "720p", "1080p")
_row = partial(ModelCapabilities, source=_PAGE, audio=True, movement_amplitude=True)

TABLE = RouteTable(
    "img2video",
    [
        _row("viduq3-pro", durations=range(1, 17), default_duration=5, resolutions=_HD,
             default_resolution="720p", audio_default=True),
        _row("viduq3-turbo", durations=range(1, 17), default_duration=5, resolutions=_HD,
             default_resolution="720p", audio_default=True),
        _row("viduq2-pro", durations=range(1, 11), default_duration=5, resolutions=_HD,
             default_resolution="720p", voice_id=True),
        _row("viduq2-turbo", durations=range(1, 11), default_duration=5, resolutions=_HD,
             default_resolution="720p", voice_id=True),
        _row("viduq1", durations=(5,), default_duration=5, resolutions=("1080p",),
             default_resolution="1080p", voice_id=True),
        _row("vidu2.0", durations=(4, 8), default_duration=4,
             resolutions=("360p", "720p", "1080p"), default_resolution="360p",
             resolutions_at={8: ("720p",)}, voice_id=True),
    ],
)
