"""Collects every problem of one request: the rules shared by all routes, in one place.

Rules read the request's fields by name and do nothing for a field its class lacks; those that
depend on the model take its table row, or ``None`` for a model the table does not know (then
only the model-independent part of the rule applies). Endpoint rules call back in here.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from vidu_async import capabilities as caps
from vidu_async.capabilities import ModelCapabilities
from vidu_async.errors import FieldProblem, ValidationError
from vidu_async.media import MediaInfo, MediaKind, inspect_media
from vidu_async.requests._common import (
    BOOL_FIELDS,
    MEDIA_FIELDS,
    RESERVED_FIELDS,
    dumps_body,
    num,
    seconds_over,
    short,
    type_name,
)
from vidu_async.tasks import CORRELATION_OVERHEAD, wrap_payload

if TYPE_CHECKING:
    from vidu_async.requests._base import RequestBase

__all__ = ["Checker", "is_ratio"]

_URL_FIELDS = ("wm_url", "callback_url")
_META_DATA = "a JSON object serialized as a string"


def is_ratio(value: str) -> bool:
    """``W:H`` with positive whole numbers."""
    width, sep, height = value.partition(":")
    return bool(sep) and all(p.isdigit() and p.isascii() and int(p) > 0 for p in (width, height))


class Checker:
    """Walks one request and collects its problems (``errors``, ``warnings``, ``media`` info)."""

    def __init__(self, request: RequestBase, *, strict: bool, sent: bool = False) -> None:
        self.r = request
        self.strict = strict
        self.sent = sent
        """The request is a body as sent (a server's view): its payload is already wrapped."""
        self.table = request.table
        self.m: ModelCapabilities | None = None
        """The model's table row, once ``run`` has found it (None: a model the table lacks)."""
        self.errors: list[FieldProblem] = []
        self.warnings: list[FieldProblem] = []
        self.media: dict[str, MediaInfo] = {}
        """What probing found, by entry field (``images[0]``, ``subjects[1].videos[0]``)."""
        self.body_bytes = 0

    def error(self, field: str, message: str) -> None:
        self.errors.append(FieldProblem(field, message))

    def warn(self, field: str, message: str) -> None:
        self.warnings.append(FieldProblem(field, message))

    def value(self, name: str) -> Any:
        return getattr(self.r, name, None)

    def accepts(self, allowed: str) -> str:
        """A rule's message in the house form, to which the caller adds ", got <value>":
        "viduq2 accepts <allowed>" when the table knows the model, else "must be <allowed>"."""
        return f"{self.m.name} accepts {allowed}" if self.m else f"must be {allowed}"

    def run(self) -> None:
        m = self.m = self.check_model()
        self.check_prompt()
        for name in BOOL_FIELDS:
            self.check_type(name, bool)
        for name in RESERVED_FIELDS:
            if self.value(name) is not None:
                on = f" on {m.name}" if m else ""
                why = "reserved by the API, no model takes it yet"
                self.error(name, f"not supported{on} ({why}); remove it")
        self.check_seed()
        self.check_payload()
        self.check_wm_position()
        self.check_meta_data()
        for name in _URL_FIELDS:
            self.check_url(name)
        for name, kind in MEDIA_FIELDS.items():
            if name in self.r.FIELDS:
                self.check_media(name, self.value(name), kind)
        self.check_duration(m)
        self.check_resolution(m)
        self.check_aspect_ratio(m)
        self.check_movement_amplitude(m)
        self.check_audio(m)
        self.check_off_peak(m)
        self.check_bgm(m)
        self.r.check_endpoint(self, m)
        self.check_body_size()

    # --- generic rules -------------------------------------------------------------------

    def check_type(self, name: str, kind: type) -> bool:
        """Whether the field is set and of the JSON type ``kind``; an error if set otherwise."""
        value = self.value(name)
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
            self.error(name, f"{self.accepts(wanted)}, got {type_name(value)} {value!r}")
        return ok

    def check_choice(self, name: str, allowed: tuple[str, ...]) -> bool:
        """Whether the field is set to one of ``allowed`` (a model-independent value list)."""
        if not self.check_type(name, str):
            return False
        if self.value(name) not in allowed:
            listed = "one of " + ", ".join(allowed)
            self.error(name, f"{self.accepts(listed)}, got {self.value(name)!r}")
            return False
        return True

    def check_model(self) -> ModelCapabilities | None:
        model = self.r.model
        if not isinstance(model, str):
            self.error("model", f"must be a string naming a model, got {type_name(model)}")
            return None
        if not model.strip():
            self.error("model", f"must not be empty; one of {self.table.known}")
            return None
        if model in self.table.unsupported:
            self.error("model", self.table.unsupported[model])
            return None
        found = self.table.get(model)
        if found is None and self.strict:
            self.error("model", f"unknown model {model!r}; choose one of {self.table.known}")
        elif found is None:
            self.warn(
                "model",
                f"{model} is not in this version's table for {self.table.title} "
                f"(known: {self.table.known}); sent as is",
            )
        return found

    def check_prompt(self) -> None:
        prompt = self.r.prompt
        required = "prompt" in self.r.REQUIRED
        if prompt is None and not required:
            return
        if not isinstance(prompt, str):
            self.error("prompt", f"{self.accepts('a string')}, got {type_name(prompt)}")
        elif required and not prompt.strip():
            self.error("prompt", f"{self.accepts('a non-blank string')}, got {short(repr(prompt))}")
        elif len(prompt) > self.r.PROMPT_MAX:
            self.error(
                "prompt",
                f"{self.accepts(f'at most {self.r.PROMPT_MAX} characters')}, got {len(prompt)}",
            )

    def check_seed(self) -> None:
        if self.check_type("seed", int):
            seed = int(self.value("seed") or 0)
            if not 0 <= seed <= caps.SEED_MAX:
                self.error(
                    "seed",
                    f"{self.accepts(f'0..{caps.SEED_MAX} (0 or absent means random)')}, "
                    f"got {seed}",
                )

    def check_payload(self) -> None:
        """The API's limit holds for the payload as sent: through this client the caller's own
        payload leaves room for the correlation envelope in front of it (``tasks``)."""
        if not self.check_type("payload", str):
            return
        length = len(str(self.value("payload")))
        limit = caps.PAYLOAD_MAX_CHARS - (0 if self.sent else CORRELATION_OVERHEAD)
        if length > limit:
            why = "" if self.sent else (
                f" through this client (the API's {caps.PAYLOAD_MAX_CHARS} less "
                f"{CORRELATION_OVERHEAD} for the correlation key every create carries in payload)"
            )
            allowed = f"at most {limit} characters{why}"
            self.error("payload", f"{self.accepts(allowed)}, got {length}")

    def check_wm_position(self) -> None:
        position = self.value("wm_position")
        if self.check_type("wm_position", int) and int(position) not in caps.WM_POSITIONS:
            self.error(
                "wm_position",
                self.accepts(
                    "1 (top left), 2 (top right), 3 (bottom right) or 4 (bottom left)"
                ) + f", got {position!r}",
            )

    def check_meta_data(self) -> None:
        if not self.check_type("meta_data", str):
            return
        try:
            parsed = json.loads(str(self.value("meta_data")))
        except ValueError as exc:
            self.error("meta_data", f"{self.accepts(_META_DATA)}, got invalid JSON ({exc})")
            return
        if not isinstance(parsed, dict):
            self.error("meta_data", f"{self.accepts(_META_DATA)}, got a JSON {type_name(parsed)}")

    def check_url(self, name: str) -> None:
        if not self.check_type(name, str):
            return
        value = str(self.value(name))
        parts = urlsplit(value)
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            self.error(name, f"{self.accepts('an http(s) URL')}, got {short(value)!r}")

    def check_media(self, name: str, items: Any, kind: MediaKind) -> None:
        """Probe each entry of the list field ``name``; keep what is learned in ``media``."""
        if not isinstance(items, tuple):
            self.error(
                name,
                f"{self.accepts('a list of URLs, data URIs, paths or bytes')}, "
                f"got {type_name(items)}",
            )
            return
        for index, item in enumerate(items):
            field = f"{name}[{index}]"
            if not isinstance(item, str | bytes | os.PathLike):
                allowed = "a URL, data URI, path or bytes"
                self.error(field, f"{self.accepts(allowed)}, got {type_name(item)}")
                continue
            try:
                info = inspect_media(item, kind, field=field)
            except ValidationError as exc:
                self.errors.extend(exc.problems)
                continue
            self.media[field] = info
            self.warnings.extend(FieldProblem(field, w) for w in info.warnings)

    def check_count(self, field: str, count: int, low: int, high: int, what: str) -> None:
        """``count`` within ``low..high``; ``what`` completes "accepts 1..7 ..."."""
        if not low <= count <= high:
            allowed = str(low) if low == high else f"{low}..{high}"
            self.error(field, f"{what.format(allowed=allowed)}, got {count}")

    def check_video_durations(self, m: ModelCapabilities, fields: list[str]) -> None:
        """At most one 8 s video or two 5 s videos, judged from the probed headers; over by less
        than the tolerance is a warning (the API's own rounding is unknown)."""
        longest = caps.VIDEO_MAX_SECONDS.get(len(fields))
        for field in fields:
            info = self.media.get(field)
            if not (longest and info is not None and info.duration and info.duration > longest):
                continue
            message = (
                f"{m.name} accepts at most one 8 s video or two 5 s videos; "
                f"with {len(fields)} video{'s' if len(fields) > 1 else ''} each may last "
                f"{longest:g} s, {info.label} lasts {seconds_over(info.duration, longest)} s"
            )
            tolerance = caps.VIDEO_SECONDS_TOLERANCE
            if round(info.duration - longest, 6) < tolerance:
                self.warn(field, f"{message}, under {tolerance:g} s over: the API may refuse it")
            else:
                self.error(field, message)

    # --- rules that depend on the model (None: a model the table does not know) -------------

    def check_duration(self, m: ModelCapabilities | None) -> None:
        duration = self.value("duration")
        if not self.check_type("duration", int):
            return
        if m is None:
            if int(duration) < 1:
                self.error("duration", f"must be a positive number of seconds, got {num(duration)}")
        elif int(duration) not in m.durations:
            self.error(
                "duration", f"{m.name} accepts {m.duration_text} seconds, got {num(duration)}"
            )

    def check_resolution(self, m: ModelCapabilities | None) -> None:
        resolution = self.value("resolution")
        if not self.check_type("resolution", str) or m is None:
            return
        if resolution not in m.resolutions:
            self.error(
                "resolution", f"{m.name} accepts {', '.join(m.resolutions)}, got {resolution!r}"
            )
            return
        duration = self.value("duration")
        duration = int(duration) if isinstance(duration, int | float) else m.default_duration
        allowed = m.resolutions_for(duration)
        if resolution not in allowed:
            self.error(
                "resolution",
                f"{m.name} accepts {', '.join(allowed)} at {duration} seconds, got {resolution!r}",
            )

    def check_aspect_ratio(self, m: ModelCapabilities | None) -> None:
        value = self.value("aspect_ratio")
        if not self.check_type("aspect_ratio", str):
            return
        if m is None or m.free_aspect_ratio:
            if value != "auto" and not is_ratio(str(value)):
                who = f"{m.name} accepts" if m else "must be"
                self.error(
                    "aspect_ratio",
                    f"{who} any W:H with positive whole numbers (e.g. 21:9) or auto, got {value!r}",
                )
        elif value not in m.aspect_ratios:
            self.error(
                "aspect_ratio", f"{m.name} accepts {', '.join(m.aspect_ratios)}, got {value!r}"
            )

    def check_movement_amplitude(self, m: ModelCapabilities | None) -> None:
        value = self.value("movement_amplitude")
        if not self.check_type("movement_amplitude", str):
            return
        if m is not None and not m.movement_amplitude and not m.movement_amplitude_ignored:
            if value == "auto":
                self.warn(
                    "movement_amplitude",
                    f"{m.name} does not support movement_amplitude; 'auto' (the default) "
                    "is left out of the body",
                )
            else:
                self.error(
                    "movement_amplitude",
                    f"not supported on {m.name} "
                    f"(only {self.table.where(lambda c: c.movement_amplitude)} accept it)",
                )
        elif value not in caps.MOVEMENT_AMPLITUDES:
            allowed = "one of " + ", ".join(caps.MOVEMENT_AMPLITUDES)
            self.error("movement_amplitude", f"{self.accepts(allowed)}, got {value!r}")
        elif m is not None and m.movement_amplitude_ignored:
            self.warn(
                "movement_amplitude",
                f"{m.name} ignores movement_amplitude here; it is left out of the body",
            )

    def check_audio(self, m: ModelCapabilities | None) -> None:
        if self.value("audio") is not None and m is not None and not m.audio:
            self.error(
                "audio",
                f"not supported on {m.name} (only {self.table.where(lambda c: c.audio)} accept it)",
            )
        no_audio = self.no_audio(m)
        if self.check_choice("audio_type", caps.AUDIO_TYPES) and no_audio:
            self.error("audio_type", f"only with audio; {no_audio}")
        if self.check_type("voice_id", str) and no_audio:
            self.error("voice_id", f"only with audio; {no_audio}")
        if self.value("voice_id") is not None and m is not None and not m.voice_id:
            self.error(
                "voice_id",
                f"not supported on {m.name} "
                f"(only {self.table.where(lambda c: c.voice_id)} accept it)",
            )

    def no_audio(self, m: ModelCapabilities | None) -> str | None:
        """Why the request makes no audio (for fields that need it), or None if it does or may
        (``audio`` true, or left out on a model the table lacks or that has it on by default)."""
        audio = self.value("audio")
        if audio is False:
            return f"this {m.name} request sets audio=false" if m else "audio is false"
        if audio is None and m is not None and not m.audio_default:
            return f"audio is off by default on {m.name}: set audio=true"
        return None

    def check_off_peak(self, m: ModelCapabilities | None) -> None:
        """A warning, not an error: only one copy of the docs forbids off-peak with audio."""
        audio = self.value("audio")
        if self.value("off_peak") is not True:
            return
        if audio is True:
            how = f"audio=true on {m.name if m else self.r.model}"
        elif audio is None and m is not None and m.audio_default:
            how = f"audio, which is on by default on {m.name}"
        else:
            return
        self.warn(
            "off_peak",
            f"combined with {how}: one copy of the API docs says audio-video output cannot be "
            "made off-peak, so the API may refuse it (set audio=false or drop off_peak)",
        )

    def check_bgm(self, m: ModelCapabilities | None) -> None:
        bgm = self.value("bgm")
        if bgm is None or m is None:
            return
        duration = self.value("duration")
        duration = duration if isinstance(duration, int) else m.default_duration
        if not m.bgm:
            self.error(
                "bgm",
                f"not supported on {m.name} (only {self.table.where(lambda c: c.bgm)} accept it)",
            )
        elif bgm is not True:
            return
        elif m.bgm_ignored:
            self.warn("bgm", f"{m.name} ignores bgm; no background music will be added")
        elif duration in m.bgm_ignored_durations:
            self.warn(
                "bgm",
                f"{m.name} ignores bgm at {duration} seconds "
                f"(it has no effect at {', '.join(map(str, sorted(m.bgm_ignored_durations)))} s)",
            )

    def check_body_size(self) -> None:
        """The body as sent within the API's limit, each entry counted as it travels (a local
        file as base64, a URL or ``ssupload:`` URI as itself); over it, naming what is inlined."""
        if self.errors:
            return
        # Serialize with each media entry replaced by "" and add the entries' real lengths:
        # the size of the body that will be sent, without reading or encoding any file.
        body = self.r.body_with(lambda _item, _kind: "")
        if not self.sent:  # the correlation envelope the client puts in front of ``payload``
            body["payload"] = wrap_payload("0" * 32, str(body.get("payload") or ""))
        skeleton = dumps_body(body)
        self.body_bytes = len(skeleton) + sum(i.encoded_length for i in self.media.values())
        if self.body_bytes <= caps.BODY_MAX_BYTES:
            return
        # Name the largest inlined entries: after a batch's uploads, the images whose upload
        # failed or was refused.
        inlined = sorted(((field, info.encoded_length) for field, info in self.media.items()
                          if info.origin not in ("url", "upload")), key=lambda item: -item[1])
        named = ", ".join(f"{field} {length / 1_048_576:.1f} MB" for field, length in inlined[:3])
        more = f" and {len(inlined) - 3} more" if len(inlined) > 3 else ""
        self.error(
            "body",
            f"the request body would be {self.body_bytes / 1_048_576:.1f} MB, over the API's "
            f"{caps.BODY_MAX_BYTES // 1_048_576} MB limit"
            + (f", inlining {named}{more}" if inlined else "")
            + "; pass large images or videos as http(s) URLs, or images as ssupload: URIs "
            "(ViduClient.upload_image), instead of inlining files (a batch inlines a local "
            "image only when the upload API refuses it or its upload fails)",
        )
