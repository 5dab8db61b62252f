"""text2video: a video from a prompt alone (no media)."""

from __future__ import annotations

from typing import ClassVar

import attrs

from vidu_async import capabilities as caps
from vidu_async.capabilities import ModelCapabilities
from vidu_async.requests._base import RequestBase
from vidu_async.requests._checker import Checker
from vidu_async.requests._common import COMMON_FIELDS

__all__ = ["TextToVideoRequest"]


@attrs.frozen
class TextToVideoRequest(RequestBase):
    """One ``POST /ent/v2/text2video`` call. ``None`` fields are not sent (server defaults)."""

    route: ClassVar[str] = "/text2video"
    kind: ClassVar[str] = "text2video"
    table: ClassVar[caps.RouteTable] = caps.TEXT2VIDEO
    FIELDS: ClassVar[tuple[str, ...]] = (
        "model",
        "prompt",
        "style",
        "duration",
        "aspect_ratio",
        "resolution",
        "movement_amplitude",
        "bgm",
        "audio",
        *COMMON_FIELDS,
    )
    REQUIRED: ClassVar[tuple[str, ...]] = ("model", "prompt")
    HINTS: ClassVar[dict[str, str]] = {
        "images": "text2video takes no images (img2video, start-end2video and reference2video do)"
    }

    model: str
    prompt: str
    style: str | None = attrs.field(default=None, kw_only=True)
    duration: int | None = attrs.field(default=None, kw_only=True)
    aspect_ratio: str | None = attrs.field(default=None, kw_only=True)
    resolution: str | None = attrs.field(default=None, kw_only=True)
    movement_amplitude: str | None = attrs.field(default=None, kw_only=True)
    bgm: bool | None = attrs.field(default=None, kw_only=True)
    audio: bool | None = attrs.field(default=None, kw_only=True)
    seed: int | None = attrs.field(default=None, kw_only=True)
    payload: str | None = attrs.field(default=None, kw_only=True)
    off_peak: bool | None = attrs.field(default=None, kw_only=True)
    watermark: bool | None = attrs.field(default=None, kw_only=True)
    wm_position: int | None = attrs.field(default=None, kw_only=True)
    wm_url: str | None = attrs.field(default=None, kw_only=True)
    meta_data: str | None = attrs.field(default=None, kw_only=True)
    callback_url: str | None = attrs.field(default=None, kw_only=True)

    def check_endpoint(self, checker: Checker, m: ModelCapabilities | None) -> None:
        if checker.check_choice("style", caps.TEXT2VIDEO_STYLES) and m and m.style_ignored:
            checker.warn("style", f"{m.name} ignores style")
