"""What every request class shares: building from a dict, checking, and building the body.

A request class is a frozen attrs class that names its ``route``, ``kind``, capability
``table`` and ``FIELDS`` (in body order), and adds its endpoint's own rules in ``check_endpoint``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

from vidu_async import capabilities as caps
from vidu_async.capabilities import ModelCapabilities, RouteTable
from vidu_async.errors import FieldProblem, ValidationError, ViduWarning
from vidu_async.media import MediaKind, MediaSource, encode_media, is_local
from vidu_async.requests._checker import Checker
from vidu_async.requests._common import (
    BOOL_FIELDS,
    INT_FIELDS,
    MEDIA_FIELDS,
    RESERVED_FIELDS,
    ValidationResult,
    dumps_body_spliced,
    resolve,
    str_or_none,
    type_name,
)

__all__ = ["MediaMaker", "RequestBase", "omits_movement_amplitude"]

MediaMaker = Callable[[MediaSource, MediaKind], str]
"""Turns one media entry into the string sent for it (``encode_media``, or a fingerprint)."""


def omits_movement_amplitude(m: ModelCapabilities | None, value: object) -> bool:
    """Whether a valid ``movement_amplitude`` stays out of the body: the model ignores it, or
    it is the default ``auto`` on a model that does not support the field (API.md section 7)."""
    if m is None or m.movement_amplitude:
        return False
    return m.movement_amplitude_ignored or value == "auto"


class RequestBase:
    """The shared interface of every generation request (see the module docstring)."""

    route: ClassVar[str]
    """The path under ``/ent/v2``, e.g. ``"/text2video"``."""
    kind: ClassVar[str]
    """A short name: ``text2video``, ``img2video``, ``start-end2video``, ``reference2video``."""
    table: ClassVar[RouteTable]
    FIELDS: ClassVar[tuple[str, ...]]
    REQUIRED: ClassVar[tuple[str, ...]]
    PROMPT_MAX: ClassVar[int] = caps.PROMPT_MAX_CHARS
    HINTS: ClassVar[Mapping[str, str]] = {}
    """Why a field another route takes is refused here, for ``from_dict``'s message."""

    model: str
    prompt: str | None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, base_dir: Path | None = None) -> Self:
        """Build a request from a JSON-like mapping (a jobs-file line, a server body).

        Unknown keys are refused (the API rejects them too); values are kept as given so that
        ``check()`` can report each wrong one by name. Relative local media paths resolve against
        ``base_dir`` when given.
        """
        if not isinstance(data, Mapping):
            raise ValidationError(
                [FieldProblem("(request)", f"must be a JSON object, got {type_name(data)}")]
            )
        accepted = ", ".join(name for name in cls.FIELDS if name not in RESERVED_FIELDS)
        unknown = f"unknown field; the API accepts {accepted}"
        problems = [
            FieldProblem(str(k), cls.HINTS.get(str(k), unknown))
            for k in data
            if k not in cls.FIELDS
        ]
        problems += [FieldProblem(k, "is required") for k in cls.REQUIRED if k not in data]
        values = dict(data)
        if not problems:
            problems = cls.convert(values, base_dir)
        if problems:
            raise ValidationError(problems, model=str_or_none(data.get("model")))
        return cls(**values)

    @classmethod
    def convert(cls, values: dict[str, Any], base_dir: Path | None) -> list[FieldProblem]:
        """Turn JSON values into field values in place; the problems that prevent it."""
        if base_dir is not None:
            for key in MEDIA_FIELDS:
                if isinstance(values.get(key), list | tuple):
                    values[key] = [resolve(v, base_dir) for v in values[key]]
        return []

    def media(self) -> tuple[MediaSource, ...]:
        """Every media entry of the request (e.g. to ask "is anything local?")."""
        return tuple(item for item, _ in self.media_entries())

    def media_entries(self) -> tuple[tuple[MediaSource, MediaKind], ...]:
        """Every media entry with its kind, nested ones (subjects) included, in body order."""
        return tuple(
            (item, kind)
            for name, kind in MEDIA_FIELDS.items()
            if isinstance(entries := getattr(self, name, ()), tuple)
            for item in entries
        )

    def capabilities(self) -> ModelCapabilities | None:
        """This model's row in the route's table, or None for a model the table lacks."""
        return self.table.get(self.model) if isinstance(self.model, str) else None

    def check(self, *, strict: bool = False, sent: bool = False) -> ValidationResult:
        """Every problem with this request, without raising and without the network.

        A model missing from the route's table is a warning and gets every model-independent
        check; ``strict=True`` makes it an error. Local media are probed by their headers only.
        ``payload`` must leave room for the correlation key the client adds in front of it;
        ``sent=True`` checks a body as the API receives it (the simulator), the key included.
        """
        checker = Checker(self, strict=strict, sent=sent)
        checker.run()
        return ValidationResult(tuple(checker.errors), tuple(checker.warnings), checker.body_bytes)

    def validate(self, *, strict: bool = False) -> ValidationResult:
        """Raise ``ValidationError`` listing every problem; emit a ``ViduWarning`` per warning."""
        result = self.check(strict=strict)
        if result.errors:
            raise ValidationError(result.errors, model=str_or_none(self.model))
        for warning in result.warnings:
            warnings.warn(str(warning), ViduWarning, stacklevel=2)
        return result

    def check_endpoint(self, checker: Checker, m: ModelCapabilities | None) -> None:
        """The rules of this endpoint alone (counts, ratios...); ``m`` is None if unknown."""

    def to_payload(self) -> dict[str, Any]:
        """The JSON body to send: documented fields only, no ``None``, local media inlined.

        Reads and base64-encodes local files, so async code calls it via ``asyncio.to_thread``.
        It does not validate: call ``validate()`` first.
        """
        return self.body_with(encode_media)

    def to_body(self, **fields: Any) -> bytes:
        """The serialized body to send (``dumps_body`` of ``to_payload()`` with ``fields`` set,
        e.g. ``payload``), byte for byte, each local file's base64 copied in rather than escaped
        again (see ``dumps_body_spliced``). Blocking like ``to_payload``; it does not validate.
        """

        def build(mark: Callable[[str], str]) -> dict[str, Any]:
            def media(item: MediaSource, kind: MediaKind) -> str:
                sent = encode_media(item, kind)
                return mark(sent) if is_local(item) else sent  # ours: base64, nothing to escape

            return self.body_with(media) | fields

        return dumps_body_spliced(build)

    def body_with(self, media: MediaMaker) -> dict[str, Any]:
        """The body ``to_payload()`` builds, with each media entry as ``media(entry, kind)``
        makes it (``to_payload`` inlines local files; a fingerprint stands in their digest)."""
        m = self.capabilities()
        body: dict[str, Any] = {}
        for name in self.FIELDS:
            value = getattr(self, name)
            if name in RESERVED_FIELDS or value is None:
                continue
            if name in MEDIA_FIELDS:
                if value:
                    body[name] = [media(item, MEDIA_FIELDS[name]) for item in value]
            elif name == "movement_amplitude" and omits_movement_amplitude(m, value):
                continue
            elif name in INT_FIELDS:
                body[name] = int(value)
            elif name in BOOL_FIELDS:
                body[name] = bool(value)
            else:
                body[name] = self.body_value(name, value, media)
        return body

    def body_value(self, name: str, value: Any, media: MediaMaker) -> Any:
        """How a field without a generic rule is sent (``subjects`` overrides it)."""
        return value
