"""What one model accepts on one route, and a route's table of models.

A ``RouteTable`` is data: a model missing from it is not an error by itself (new models ship
faster than this library); ``unsupported`` lists models known to be refused on the route.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import attrs

__all__ = ["ModelCapabilities", "RouteTable"]


def _durations(value: Iterable[int]) -> tuple[int, ...]:
    return tuple(sorted(set(value)))


@attrs.frozen
class ModelCapabilities:
    """What one model accepts on one route; ``source`` says where the entry comes from.

    "No effect" fields (``bgm_ignored``, ``bgm_ignored_durations``, ``style_ignored``) are
    warnings; "not supported" fields (``audio``, ``bgm``, ``voice_id``...) are errors.
    """

    name: str
    source: str
    durations: tuple[int, ...] = attrs.field(converter=_durations)
    default_duration: int
    resolutions: tuple[str, ...]
    default_resolution: str
    resolutions_at: Mapping[int, tuple[str, ...]] = attrs.field(factory=dict, kw_only=True)
    """Durations that allow fewer resolutions than ``resolutions`` (vidu2.0 at 8 s: 720p)."""
    aspect_ratios: tuple[str, ...] = attrs.field(default=(), kw_only=True)
    """The listed ``aspect_ratio`` values; empty on routes without the field."""
    free_aspect_ratio: bool = attrs.field(default=False, kw_only=True)
    """True: also any positive ``W:H`` or ``auto``."""
    max_images: int = attrs.field(default=7, kw_only=True)
    max_images_with_videos: int = attrs.field(default=0, kw_only=True)
    max_videos: int = attrs.field(default=0, kw_only=True)
    max_image_subjects: int = attrs.field(default=7, kw_only=True)
    max_video_subjects: int = attrs.field(default=0, kw_only=True)
    audio: bool = attrs.field(default=False, kw_only=True)
    """Whether the ``audio`` field is accepted."""
    audio_default: bool = attrs.field(default=False, kw_only=True)
    """Whether the model makes audio when ``audio`` is left out (the sources: true on q3 models,
    false elsewhere); ``audio_type`` and ``voice_id`` need audio, so they need ``audio=true``."""
    voice_id: bool = attrs.field(default=False, kw_only=True)
    movement_amplitude: bool = attrs.field(default=False, kw_only=True)
    movement_amplitude_ignored: bool = attrs.field(default=False, kw_only=True)
    """Accepted and ignored: any value is a warning and is left out of the body."""
    bgm: bool = attrs.field(default=True, kw_only=True)
    bgm_ignored: bool = attrs.field(default=False, kw_only=True)
    bgm_ignored_durations: frozenset[int] = attrs.field(default=frozenset(), kw_only=True)
    style_ignored: bool = attrs.field(default=False, kw_only=True)

    @property
    def duration_text(self) -> str:
        """The allowed durations as a person reads them: ``3..16``, ``5`` or ``4 or 8``."""
        lo, hi = self.durations[0], self.durations[-1]
        if lo == hi:
            return str(lo)
        if len(self.durations) == hi - lo + 1:
            return f"{lo}..{hi}"
        return ", ".join(map(str, self.durations[:-1])) + f" or {hi}"

    @property
    def supports_videos(self) -> bool:
        return self.max_videos > 0

    def resolutions_for(self, duration: int) -> tuple[str, ...]:
        """The resolutions allowed at ``duration`` seconds."""
        return self.resolutions_at.get(duration, self.resolutions)


def _by_name(models: Iterable[ModelCapabilities]) -> dict[str, ModelCapabilities]:
    return {m.name: m for m in models}


@attrs.frozen
class RouteTable:
    """The models of one route (``title`` names it in messages), each entry with its source."""

    title: str
    models: Mapping[str, ModelCapabilities] = attrs.field(converter=_by_name)
    unsupported: Mapping[str, str] = attrs.field(factory=dict, kw_only=True)
    """Models known NOT to work on this route, each with the reason (always an error)."""

    def get(self, name: str) -> ModelCapabilities | None:
        """The capabilities of ``name``, or None for a model this table does not know."""
        return self.models.get(name)

    @property
    def known(self) -> str:
        return ", ".join(self.models)

    def where(self, predicate: Callable[[ModelCapabilities], bool]) -> str:
        """The names of the models for which ``predicate`` holds, for messages."""
        return ", ".join(name for name, m in self.models.items() if predicate(m))
