"""reference2video without subjects (the seed's call): top-level reference images and videos."""

from __future__ import annotations

from typing import Any, ClassVar, Final

import attrs

from vidu_async import capabilities as caps
from vidu_async.capabilities import ModelCapabilities
from vidu_async.media import MediaSource
from vidu_async.requests._base import RequestBase
from vidu_async.requests._checker import Checker
from vidu_async.requests._common import as_tuple

__all__ = ["KNOWN_FIELDS", "REQUIRED_FIELDS", "ReferenceToVideoRequest"]

KNOWN_FIELDS: Final = (
    "model",
    "prompt",
    "images",
    "videos",
    "sounds",
    "bgm",
    "audio",
    "duration",
    "seed",
    "aspect_ratio",
    "resolution",
    "movement_amplitude",
    "payload",
    "off_peak",
    "watermark",
    "wm_position",
    "wm_url",
    "meta_data",
    "callback_url",
)
"""Every field the API documents for this call, in the seed's order (``sounds`` is refused)."""
REQUIRED_FIELDS: Final = ("model", "prompt")


@attrs.frozen
class ReferenceToVideoRequest(RequestBase):
    """One ``POST /ent/v2/reference2video`` call (the non-subject reference-to-video request).

    ``images`` and ``videos`` take http(s) URLs, ``ssupload:`` URIs (images), ``data:`` URIs,
    local paths or raw bytes; local files are read and inlined only by ``to_payload()``. Fields
    left as ``None`` are not sent, so the server applies the model's defaults. Values are not
    checked on construction: call ``check()`` or ``validate()`` (the client does before sending).
    """

    route: ClassVar[str] = "/reference2video"
    kind: ClassVar[str] = "reference2video"
    table: ClassVar[caps.RouteTable] = caps.REFERENCE2VIDEO
    FIELDS: ClassVar[tuple[str, ...]] = KNOWN_FIELDS
    REQUIRED: ClassVar[tuple[str, ...]] = REQUIRED_FIELDS
    HINTS: ClassVar[dict[str, str]] = {
        "subjects": "a subject call is a SubjectsToVideoRequest (request_from_dict picks it)",
    }

    model: str
    prompt: str
    images: tuple[MediaSource, ...] = attrs.field(default=(), converter=as_tuple, kw_only=True)
    videos: tuple[MediaSource, ...] = attrs.field(default=(), converter=as_tuple, kw_only=True)
    sounds: Any = attrs.field(default=None, kw_only=True)
    """Reserved by the API ("not supported yet"): any value is refused by ``check()``."""
    bgm: bool | None = attrs.field(default=None, kw_only=True)
    audio: bool | None = attrs.field(default=None, kw_only=True)
    duration: int | None = attrs.field(default=None, kw_only=True)
    seed: int | None = attrs.field(default=None, kw_only=True)
    aspect_ratio: str | None = attrs.field(default=None, kw_only=True)
    resolution: str | None = attrs.field(default=None, kw_only=True)
    movement_amplitude: str | None = attrs.field(default=None, kw_only=True)
    payload: str | None = attrs.field(default=None, kw_only=True)
    off_peak: bool | None = attrs.field(default=None, kw_only=True)
    watermark: bool | None = attrs.field(default=None, kw_only=True)
    wm_position: int | None = attrs.field(default=None, kw_only=True)
    wm_url: str | None = attrs.field(default=None, kw_only=True)
    meta_data: str | None = attrs.field(default=None, kw_only=True)
    callback_url: str | None = attrs.field(default=None, kw_only=True)

    def check_endpoint(self, checker: Checker, m: ModelCapabilities | None) -> None:
        images, videos = self.images, self.videos
        has_videos = isinstance(videos, tuple) and bool(videos)
        if m is not None and has_videos:
            if not m.supports_videos:
                checker.error(
                    "videos",
                    f"not supported on {m.name} (only "
                    f"{self.table.where(lambda c: c.supports_videos)} accept reference videos)",
                )
            elif len(videos) > m.max_videos:
                checker.error(
                    "videos", f"{m.name} accepts 1..{m.max_videos} videos, got {len(videos)}"
                )
            else:
                checker.check_video_durations(m, [f"videos[{i}]" for i in range(len(videos))])
        if not isinstance(images, tuple):
            return
        if m is None:
            checker.check_count(
                "images",
                len(images),
                1,
                caps.REFERENCE_IMAGES_MAX,
                f"{self.kind} accepts {{allowed}} images",
            )
            return
        with_videos = has_videos and m.supports_videos
        limit = m.max_images_with_videos if with_videos else m.max_images
        context = " with reference videos" if with_videos else ""
        checker.check_count(
            "images", len(images), 1, limit, f"{m.name} accepts {{allowed}} images{context}"
        )
