"""img2video and start-end2video: a video from its first frame, or its first and last frames.

Neither takes ``aspect_ratio``: the images decide it. Both may let Vidu write the prompt
(``is_rec``), which then ignores the one given.
"""

from __future__ import annotations

from fractions import Fraction
from typing import ClassVar

import attrs

from vidu_async import capabilities as caps
from vidu_async.capabilities import ModelCapabilities
from vidu_async.media import MediaSource
from vidu_async.requests._base import RequestBase
from vidu_async.requests._checker import Checker
from vidu_async.requests._common import COMMON_FIELDS, as_tuple

__all__ = ["ImageToVideoRequest", "StartEndToVideoRequest"]

_NO_RATIO = "{kind} takes no aspect_ratio: the image{s} decide{verb} it"


def _check_frames(
    request: RequestBase, checker: Checker, m: ModelCapabilities | None, count: int, what: str
) -> None:
    """Exactly ``count`` images; a warning when ``is_rec`` makes the prompt ignored."""
    images = getattr(request, "images", ())
    who = f"{m.name} on {request.kind}" if m else request.kind
    if isinstance(images, tuple):
        checker.check_count("images", len(images), count, count, f"{who} takes {what}")
    if getattr(request, "is_rec", None) is True and request.prompt:
        checker.warn("prompt", "is ignored: is_rec is true, so Vidu writes the prompt")


@attrs.frozen
class ImageToVideoRequest(RequestBase):
    """One ``POST /ent/v2/img2video`` call: ``images`` holds exactly one image, the first frame."""

    route: ClassVar[str] = "/img2video"
    kind: ClassVar[str] = "img2video"
    table: ClassVar[caps.RouteTable] = caps.IMG2VIDEO
    FIELDS: ClassVar[tuple[str, ...]] = (
        "model",
        "images",
        "prompt",
        "is_rec",
        "duration",
        "resolution",
        "movement_amplitude",
        "bgm",
        "audio",
        "audio_type",
        "voice_id",
        *COMMON_FIELDS,
    )
    REQUIRED: ClassVar[tuple[str, ...]] = ("model", "images")
    HINTS: ClassVar[dict[str, str]] = {
        "aspect_ratio": _NO_RATIO.format(kind="img2video", s="", verb="s")
    }

    model: str
    images: tuple[MediaSource, ...] = attrs.field(converter=as_tuple)
    prompt: str | None = attrs.field(default=None, kw_only=True)
    is_rec: bool | None = attrs.field(default=None, kw_only=True)
    duration: int | None = attrs.field(default=None, kw_only=True)
    resolution: str | None = attrs.field(default=None, kw_only=True)
    movement_amplitude: str | None = attrs.field(default=None, kw_only=True)
    bgm: bool | None = attrs.field(default=None, kw_only=True)
    audio: bool | None = attrs.field(default=None, kw_only=True)
    audio_type: str | None = attrs.field(default=None, kw_only=True)
    voice_id: str | None = attrs.field(default=None, kw_only=True)
    seed: int | None = attrs.field(default=None, kw_only=True)
    payload: str | None = attrs.field(default=None, kw_only=True)
    off_peak: bool | None = attrs.field(default=None, kw_only=True)
    watermark: bool | None = attrs.field(default=None, kw_only=True)
    wm_position: int | None = attrs.field(default=None, kw_only=True)
    wm_url: str | None = attrs.field(default=None, kw_only=True)
    meta_data: str | None = attrs.field(default=None, kw_only=True)
    callback_url: str | None = attrs.field(default=None, kw_only=True)

    def check_endpoint(self, checker: Checker, m: ModelCapabilities | None) -> None:
        _check_frames(self, checker, m, 1, "exactly {allowed} image (the first frame)")


@attrs.frozen
class StartEndToVideoRequest(RequestBase):
    """One ``POST /ent/v2/start-end2video`` call: ``images`` holds the first, then the last frame.

    Their width/height ratios must be close (start over end within 0.8..1.25); that is checked
    where both images are probed (local files, bytes, data URIs), never for URLs.
    """

    route: ClassVar[str] = "/start-end2video"
    kind: ClassVar[str] = "start-end2video"
    table: ClassVar[caps.RouteTable] = caps.START_END2VIDEO
    FIELDS: ClassVar[tuple[str, ...]] = (
        "model",
        "images",
        "prompt",
        "is_rec",
        "duration",
        "resolution",
        "movement_amplitude",
        "bgm",
        *COMMON_FIELDS,
    )
    REQUIRED: ClassVar[tuple[str, ...]] = ("model", "images")
    HINTS: ClassVar[dict[str, str]] = {
        "aspect_ratio": _NO_RATIO.format(kind="start-end2video", s="s", verb="")
    }

    model: str
    images: tuple[MediaSource, ...] = attrs.field(converter=as_tuple)
    prompt: str | None = attrs.field(default=None, kw_only=True)
    is_rec: bool | None = attrs.field(default=None, kw_only=True)
    duration: int | None = attrs.field(default=None, kw_only=True)
    resolution: str | None = attrs.field(default=None, kw_only=True)
    movement_amplitude: str | None = attrs.field(default=None, kw_only=True)
    bgm: bool | None = attrs.field(default=None, kw_only=True)
    seed: int | None = attrs.field(default=None, kw_only=True)
    payload: str | None = attrs.field(default=None, kw_only=True)
    off_peak: bool | None = attrs.field(default=None, kw_only=True)
    watermark: bool | None = attrs.field(default=None, kw_only=True)
    wm_position: int | None = attrs.field(default=None, kw_only=True)
    wm_url: str | None = attrs.field(default=None, kw_only=True)
    meta_data: str | None = attrs.field(default=None, kw_only=True)
    callback_url: str | None = attrs.field(default=None, kw_only=True)

    def check_endpoint(self, checker: Checker, m: ModelCapabilities | None) -> None:
        _check_frames(self, checker, m, 2, "exactly {allowed} images (the first and last frames)")
        start, end = checker.media.get("images[0]"), checker.media.get("images[1]")
        if not (start and end and start.width and start.height and end.width and end.height):
            return
        ratio = Fraction(start.width, start.height) / Fraction(end.width, end.height)
        low, high = caps.START_END_RATIO
        if not low <= ratio <= high:
            bounds = f"{float(low):g}..{float(high):g}"
            checker.error(
                "images",
                f"{checker.accepts(f'a start ratio / end ratio within {bounds}')}, got a "
                f"{start.width}x{start.height} start frame and a {end.width}x{end.height} end "
                f"frame: {float(ratio):.2f}, outside {bounds}",
            )
