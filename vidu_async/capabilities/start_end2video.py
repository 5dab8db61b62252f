"""start-end2video (``POST /start-end2video``): two images, the first and the last frame.

As on img2video, every row accepts ``movement_amplitude`` and the defaults are the same
generation's text2video ones.
"""

from __future__ import annotations

from functools import partial

from vidu_async.capabilities.model import ModelCapabilities, RouteTable

__all__ = ["TABLE"]

_PAGE = "start-end2video page (third-party transcription 2026-08-13)"
_HD = ("540p", "720p", "1080p")
_row = partial(ModelCapabilities, source=_PAGE, movement_amplitude=True)

TABLE = RouteTable(
    "start-end2video",
    [
        _row("viduq3-pro", durations=range(1, 17), default_duration=5, resolutions=_HD,
             default_resolution="720p"),
        _row("viduq3-turbo", durations=range(1, 17), default_duration=5, resolutions=_HD,
             default_resolution="720p"),
        _row("viduq2-pro", durations=range(1, 9), default_duration=5, resolutions=_HD,
             default_resolution="720p"),
        _row("viduq2-turbo", durations=range(1, 9), default_duration=5, resolutions=_HD,
             default_resolution="720p"),
        _row("viduq1", durations=(5,), default_duration=5, resolutions=("1080p",),
             default_resolution="1080p"),
        _row("vidu2.0", durations=(4, 8), default_duration=4, resolutions=("360p", "720p"),
             default_resolution="360p", resolutions_at={8: ("720p",)}),
    ],
)
