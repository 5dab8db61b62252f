"""The reference2video request: an attrs class that validates itself offline and builds its body.

``check()`` collects *every* problem (wrong type, out of range for the model, unreadable media, a
body over 20 MB) against the capability table, without touching the network; ``validate()`` raises
them together as one ``ValidationError``. ``to_payload()`` builds the body the API documents: only
known fields, no ``None``, booleans and integers as JSON booleans and integers, local media inlined.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import attrs

from vidu_async import capabilities as caps
from vidu_async.capabilities import ModelCapabilities
from vidu_async.errors import FieldProblem, ValidationError, ViduWarning
from vidu_async.media import (
    MediaInfo,
    MediaKind,
    MediaSource,
    encode_media,
    inspect_media,
    is_local,
)

__all__ = [
    "KNOWN_FIELDS",
    "REQUIRED_FIELDS",
    "ReferenceToVideoRequest",
    "ValidationResult",
    "dumps_body",
]

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

_BOOL_FIELDS: Final = ("bgm", "audio", "off_peak", "watermark")
_URL_FIELDS: Final = ("wm_url", "callback_url")


def dumps_body(body: Mapping[str, Any]) -> bytes:
    """Serialize a request body exactly as it is sent (compact UTF-8 JSON), so sizes agree."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _as_tuple(value: Any) -> Any:
    """Accept any list or tuple for a media field; leave other values for ``check()`` to report."""
    if isinstance(value, list | tuple):
        return tuple(value)
    return value


@attrs.frozen
class ValidationResult:
    """What ``check()`` found: ``errors`` make the request unsendable, ``warnings`` do not.

    ``body_bytes`` is the size the serialized body will have, local media included.
    """

    errors: tuple[FieldProblem, ...]
    warnings: tuple[FieldProblem, ...]
    body_bytes: int

    @property
    def ok(self) -> bool:
        return not self.errors


@attrs.frozen
class ReferenceToVideoRequest:
    """One ``POST /ent/v2/reference2video`` call (the non-subject reference-to-video request).

    ``images`` and ``videos`` take http(s) URLs, ``data:`` URIs, local paths or raw bytes; local
    files are read and inlined only by ``to_payload()``. Fields left as ``None`` are not sent, so
    the server applies the model's defaults. Values are not checked on construction: call
    ``check()`` or ``validate()`` (the client always does before sending).
    """

    model: str
    prompt: str
    images: tuple[MediaSource, ...] = attrs.field(default=(), converter=_as_tuple, kw_only=True)
    videos: tuple[MediaSource, ...] = attrs.field(default=(), converter=_as_tuple, kw_only=True)
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

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, base_dir: Path | None = None
    ) -> ReferenceToVideoRequest:
        """Build a request from a JSON-like mapping (a jobs-file line, a server body).

        Unknown keys are refused (the API rejects them too); values are kept as given so that
        ``check()`` can report each wrong one by name. Relative local media paths resolve against
        ``base_dir`` when given.
        """
        if not isinstance(data, Mapping):
            raise ValidationError(
                [FieldProblem("(request)", f"must be a JSON object, got {_type_name(data)}")]
            )
        unknown = [k for k in data if k not in KNOWN_FIELDS]
        problems = [
            FieldProblem(str(k), f"unknown field; the API accepts {', '.join(KNOWN_FIELDS)}")
            for k in unknown
        ]
        problems += [FieldProblem(k, "is required") for k in REQUIRED_FIELDS if k not in data]
        if problems:
            raise ValidationError(problems, model=_str_or_none(data.get("model")))
        values = dict(data)
        if base_dir is not None:
            for key in ("images", "videos"):
                if isinstance(values.get(key), list | tuple):
                    values[key] = [_resolve(v, base_dir) for v in values[key]]
        return cls(**values)

    def check(self) -> ValidationResult:
        """Every problem with this request, without raising and without the network.

        Local media are probed by their headers (a few KB read per file); nothing is decoded.
        """
        checker = _Checker(self)
        checker.run()
        return ValidationResult(tuple(checker.errors), tuple(checker.warnings), checker.body_bytes)

    def validate(self) -> ValidationResult:
        """Raise ``ValidationError`` listing every problem; emit a ``ViduWarning`` per warning."""
        result = self.check()
        if result.errors:
            raise ValidationError(result.errors, model=_str_or_none(self.model))
        for warning in result.warnings:
            warnings.warn(str(warning), ViduWarning, stacklevel=2)
        return result

    def to_payload(self) -> dict[str, Any]:
        """The JSON body to send: documented fields only, no ``None``, local media inlined.

        Reads and base64-encodes local files, so async code calls it via ``asyncio.to_thread``.
        It does not validate: call ``validate()`` first.
        """
        return self.body_with(encode_media)

    def body_with(self, media: Callable[[MediaSource, MediaKind], str]) -> dict[str, Any]:
        """The body ``to_payload()`` builds, with each media entry as ``media(entry, kind)``
        makes it (``to_payload`` inlines local files; a fingerprint stands in their digest)."""
        body: dict[str, Any] = {}
        for name in KNOWN_FIELDS:
            value = getattr(self, name)
            if name == "sounds" or value is None:
                continue
            if name in ("images", "videos"):
                if value:
                    kind: MediaKind = "image" if name == "images" else "video"
                    body[name] = [media(item, kind) for item in value]
            elif name in ("duration", "seed", "wm_position"):
                body[name] = int(value)
            elif name in _BOOL_FIELDS:
                body[name] = bool(value)
            else:
                body[name] = value
        return body


class _Checker:
    """Walks one request and collects its problems; the rules, in one place."""

    def __init__(self, request: ReferenceToVideoRequest) -> None:
        self.r = request
        self.errors: list[FieldProblem] = []
        self.warnings: list[FieldProblem] = []
        self.media: dict[tuple[str, int], MediaInfo] = {}
        self.body_bytes = 0

    def error(self, field: str, message: str) -> None:
        self.errors.append(FieldProblem(field, message))

    def warn(self, field: str, message: str) -> None:
        self.warnings.append(FieldProblem(field, message))

    def run(self) -> None:
        r = self.r
        model = self.check_model()
        self.check_prompt()
        for name in _BOOL_FIELDS:
            self.check_type(name, bool)
        if r.sounds is not None:
            self.error("sounds", "reserved by the API and not supported yet; remove it")
        self.check_seed()
        self.check_payload()
        self.check_wm_position()
        self.check_meta_data()
        for name in _URL_FIELDS:
            self.check_url(name)
        self.check_media("images", "image")
        self.check_media("videos", "video")
        if model is not None:
            self.check_for_model(model)
        self.check_body_size()

    # --- generic rules -------------------------------------------------------------------

    def check_type(self, name: str, kind: type) -> bool:
        value = getattr(self.r, name)
        if value is None:
            return False
        if kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
            ok = ok or (isinstance(value, float) and value.is_integer())
            wanted = "an integer"
        else:
            ok = isinstance(value, kind)
            wanted = {bool: "true or false", str: "a string"}.get(kind, kind.__name__)
        if not ok:
            self.error(name, f"must be {wanted}, got {_type_name(value)} {value!r}")
        return ok

    def check_model(self) -> ModelCapabilities | None:
        model = self.r.model
        if not isinstance(model, str):
            self.error("model", f"must be a string naming a model, got {_type_name(model)}")
            return None
        found = caps.get_model(model)
        if found is None:
            self.error("model", f"unknown model {model!r}; choose one of {', '.join(caps.MODELS)}")
        return found

    def check_prompt(self) -> None:
        prompt = self.r.prompt
        if not isinstance(prompt, str):
            self.error("prompt", f"must be a string, got {_type_name(prompt)}")
        elif not prompt.strip():
            self.error("prompt", "must not be empty")
        elif len(prompt) > caps.PROMPT_MAX_CHARS:
            self.error(
                "prompt",
                f"at most {caps.PROMPT_MAX_CHARS} characters, got {len(prompt)}",
            )

    def check_seed(self) -> None:
        if self.check_type("seed", int):
            seed = int(self.r.seed or 0)
            if not 0 <= seed <= caps.SEED_MAX:
                self.error(
                    "seed",
                    f"must be 0..{caps.SEED_MAX} (0 or absent means random), got {seed}",
                )

    def check_payload(self) -> None:
        payload = self.r.payload
        if self.check_type("payload", str) and len(str(payload)) > caps.PAYLOAD_MAX_CHARS:
            self.error(
                "payload",
                f"at most {caps.PAYLOAD_MAX_CHARS} characters, got {len(str(payload))}",
            )

    def check_wm_position(self) -> None:
        if self.check_type("wm_position", int) and int(self.r.wm_position or 0) not in (
            caps.WM_POSITIONS
        ):
            self.error(
                "wm_position",
                "must be 1 (top left), 2 (top right), 3 (bottom right) or 4 (bottom left), "
                f"got {self.r.wm_position!r}",
            )

    def check_meta_data(self) -> None:
        if not self.check_type("meta_data", str):
            return
        try:
            parsed = json.loads(str(self.r.meta_data))
        except ValueError as exc:
            self.error("meta_data", f"must be a JSON object serialized as a string: {exc}")
            return
        if not isinstance(parsed, dict):
            self.error(
                "meta_data",
                f"must be a JSON object serialized as a string, got a JSON {_type_name(parsed)}",
            )

    def check_url(self, name: str) -> None:
        if not self.check_type(name, str):
            return
        value = str(getattr(self.r, name))
        parts = urlsplit(value)
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            self.error(name, f"must be an http(s) URL, got {_short(value)!r}")

    def check_media(self, name: str, kind: MediaKind) -> None:
        items = getattr(self.r, name)
        if not isinstance(items, tuple):
            self.error(
                name,
                f"must be a list of URLs, data URIs, paths or bytes, got {_type_name(items)}",
            )
            return
        for index, item in enumerate(items):
            field = f"{name}[{index}]"
            if not isinstance(item, str | bytes | os.PathLike):
                self.error(
                    field,
                    f"must be a URL, data URI, path or bytes, got {_type_name(item)}",
                )
                continue
            try:
                info = inspect_media(item, kind, field=field)
            except ValidationError as exc:
                self.errors.extend(exc.problems)
                continue
            self.media[(name, index)] = info
            self.warnings.extend(FieldProblem(field, w) for w in info.warnings)

    # --- rules that depend on the model -----------------------------------------------------

    def check_for_model(self, m: ModelCapabilities) -> None:
        r = self.r
        if self.check_type("duration", int) and int(r.duration or 0) not in m.durations:
            self.error(
                "duration",
                f"{m.name} accepts {m.duration_text} seconds, got {_num(r.duration)}",
            )
        if self.check_type("resolution", str) and r.resolution not in m.resolutions:
            self.error(
                "resolution",
                f"{m.name} accepts {', '.join(m.resolutions)}, got {r.resolution!r}",
            )
        self.check_aspect_ratio(m)
        self.check_movement_amplitude(m)
        if r.audio is not None and not m.audio:
            self.error(
                "audio",
                f"not supported on {m.name} (only {_models_where(lambda c: c.audio)} accept it)",
            )
        self.check_counts(m)
        self.check_bgm(m)

    def check_aspect_ratio(self, m: ModelCapabilities) -> None:
        value = self.r.aspect_ratio
        if not self.check_type("aspect_ratio", str):
            return
        if m.free_aspect_ratio:
            if value != "auto" and not _is_ratio(str(value)):
                self.error(
                    "aspect_ratio",
                    f"{m.name} accepts any W:H with positive whole numbers (e.g. 21:9) "
                    f"or auto, got {value!r}",
                )
        elif value not in caps.LISTED_ASPECT_RATIOS:
            self.error(
                "aspect_ratio",
                f"{m.name} accepts {', '.join(caps.LISTED_ASPECT_RATIOS)}, got {value!r}",
            )

    def check_movement_amplitude(self, m: ModelCapabilities) -> None:
        value = self.r.movement_amplitude
        if not self.check_type("movement_amplitude", str):
            return
        if not m.movement_amplitude:
            self.error(
                "movement_amplitude",
                f"not supported on {m.name} "
                f"(only {_models_where(lambda c: c.movement_amplitude)} accept it)",
            )
        elif value not in caps.MOVEMENT_AMPLITUDES:
            self.error(
                "movement_amplitude",
                f"{m.name} accepts {', '.join(caps.MOVEMENT_AMPLITUDES)}, got {value!r}",
            )

    def check_counts(self, m: ModelCapabilities) -> None:
        images, videos = self.r.images, self.r.videos
        if isinstance(videos, tuple) and videos:
            if not m.supports_videos:
                self.error(
                    "videos",
                    f"not supported on {m.name} "
                    f"(only {_models_where(lambda c: c.supports_videos)} accept reference videos)",
                )
            elif len(videos) > m.max_videos:
                self.error(
                    "videos",
                    f"{m.name} accepts 1..{m.max_videos} videos, got {len(videos)}",
                )
            else:
                self.check_video_durations(m, len(videos))
        if not isinstance(images, tuple):
            return
        with_videos = isinstance(videos, tuple) and bool(videos) and m.supports_videos
        limit = m.max_images_with_videos if with_videos else m.max_images
        if not 1 <= len(images) <= limit:
            context = " with reference videos" if with_videos else ""
            self.error(
                "images",
                f"{m.name} accepts 1..{limit} images{context}, got {len(images)}",
            )

    def check_video_durations(self, m: ModelCapabilities, count: int) -> None:
        longest = caps.VIDEO_MAX_SECONDS[count]
        for index in range(count):
            info = self.media.get(("videos", index))
            if info is not None and info.duration is not None and info.duration > longest:
                self.error(
                    f"videos[{index}]",
                    f"{m.name} accepts at most one 8 s video or two 5 s videos; "
                    f"with {count} video{'s' if count > 1 else ''} each may last {longest:g} s, "
                    f"{info.label} lasts {info.duration:.1f} s",
                )

    def check_bgm(self, m: ModelCapabilities) -> None:
        if self.r.bgm is not True:
            return
        duration = self.r.duration if isinstance(self.r.duration, int) else m.default_duration
        if m.bgm_ignored:
            self.warn("bgm", f"{m.name} ignores bgm; no background music will be added")
        elif duration in m.bgm_ignored_durations:
            self.warn(
                "bgm",
                f"{m.name} ignores bgm at {duration} seconds "
                f"(it has no effect at {', '.join(map(str, sorted(m.bgm_ignored_durations)))} s)",
            )

    def check_body_size(self) -> None:
        if self.errors:
            return
        # Serialize with each media entry replaced by "" and add the entries' real lengths:
        # the size of the body that will be sent, without reading or encoding any file.
        skeleton = dumps_body(self.r._body(lambda _item, _kind: ""))
        self.body_bytes = len(skeleton) + sum(i.encoded_length for i in self.media.values())
        if self.body_bytes > caps.BODY_MAX_BYTES:
            self.error(
                "body",
                f"the request body would be {self.body_bytes / 1_048_576:.1f} MB, over the API's "
                f"{caps.BODY_MAX_BYTES // 1_048_576} MB limit; pass large images or videos as "
                "http(s) URLs instead of inlining files",
            )


def _is_ratio(value: str) -> bool:
    width, sep, height = value.partition(":")
    return bool(sep) and all(p.isdigit() and p.isascii() and int(p) > 0 for p in (width, height))


def _models_where(predicate: Callable[[ModelCapabilities], bool]) -> str:
    return ", ".join(name for name, m in caps.MODELS.items() if predicate(m))


def _resolve(item: Any, base_dir: Path) -> Any:
    if isinstance(item, str) and is_local(item):
        path = Path(item).expanduser()
        return path if path.is_absolute() else base_dir / path
    return item


def _type_name(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _num(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and math.isfinite(value) else str(value)


def _short(value: str, limit: int = 80) -> str:
    return value if len(value) <= limit else value[:limit] + "..."


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None

