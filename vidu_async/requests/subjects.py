"""reference2video with ``subjects``: named subjects (1..3 images each) the prompt calls ``@name``.

Same path as the seed's call, another body and another table (no ``viduq3-mix``; videos only on
``viduq2-pro``). A subject the prompt never mentions, or an ``@name`` with no subject, is a
warning: the server accepts both, but the result is rarely what was meant.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs

from vidu_async import capabilities as caps
from vidu_async.capabilities import ModelCapabilities
from vidu_async.errors import FieldProblem
from vidu_async.media import MediaKind, MediaSource
from vidu_async.requests._base import MediaMaker, RequestBase
from vidu_async.requests._checker import Checker
from vidu_async.requests._common import COMMON_FIELDS, as_tuple, resolve, type_name

__all__ = ["Subject", "SubjectsToVideoRequest"]

_SUBJECT_FIELDS = ("name", "images", "videos", "voice_id")
_MENTION = re.compile(r"(?<!\w)@\w+")


@attrs.frozen
class Subject:
    """One subject: its ``name`` (``@name`` in the prompt), 1..3 images, videos (viduq2-pro)."""

    name: str
    images: tuple[MediaSource, ...] = attrs.field(default=(), converter=as_tuple)
    videos: tuple[MediaSource, ...] = attrs.field(default=(), converter=as_tuple, kw_only=True)
    voice_id: str | None = attrs.field(default=None, kw_only=True)

    def body_with(self, media: MediaMaker) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.name}
        body["images"] = [media(item, "image") for item in self.images]
        if self.videos:
            body["videos"] = [media(item, "video") for item in self.videos]
        if self.voice_id is not None:
            body["voice_id"] = self.voice_id
        return body


def _subject_from(
    data: Any, index: int, base_dir: Path | None
) -> tuple[Subject | None, list[FieldProblem]]:
    field = f"subjects[{index}]"
    if not isinstance(data, Mapping):
        return None, [FieldProblem(field, f"must be a JSON object, got {type_name(data)}")]
    problems = [
        FieldProblem(f"{field}.{k}", f"unknown field; a subject has {', '.join(_SUBJECT_FIELDS)}")
        for k in data
        if k not in _SUBJECT_FIELDS
    ]
    if "name" not in data:
        problems.append(FieldProblem(f"{field}.name", "is required"))
    if problems:
        return None, problems
    values = dict(data)
    if base_dir is not None:
        for key in ("images", "videos"):
            if isinstance(values.get(key), list | tuple):
                values[key] = [resolve(v, base_dir) for v in values[key]]
    return Subject(**values), []


@attrs.frozen
class SubjectsToVideoRequest(RequestBase):
    """One ``POST /ent/v2/reference2video`` call in its subject form (``subjects``)."""

    route: ClassVar[str] = "/reference2video"
    kind: ClassVar[str] = "reference2video"
    table: ClassVar[caps.RouteTable] = caps.SUBJECTS
    FIELDS: ClassVar[tuple[str, ...]] = (
        "model",
        "prompt",
        "subjects",
        "bgm",
        "audio",
        "audio_type",
        "duration",
        "aspect_ratio",
        "resolution",
        "movement_amplitude",
        *COMMON_FIELDS,
    )
    REQUIRED: ClassVar[tuple[str, ...]] = ("model", "prompt", "subjects")
    PROMPT_MAX: ClassVar[int] = caps.SUBJECT_PROMPT_MAX_CHARS
    HINTS: ClassVar[dict[str, str]] = {
        "images": "a subject call takes images inside each subject, not at the top level",
        "videos": "a subject call takes videos inside each subject, not at the top level",
    }

    model: str
    prompt: str
    subjects: tuple[Subject, ...] = attrs.field(converter=as_tuple)
    bgm: bool | None = attrs.field(default=None, kw_only=True)
    audio: bool | None = attrs.field(default=None, kw_only=True)
    audio_type: str | None = attrs.field(default=None, kw_only=True)
    duration: int | None = attrs.field(default=None, kw_only=True)
    aspect_ratio: str | None = attrs.field(default=None, kw_only=True)
    resolution: str | None = attrs.field(default=None, kw_only=True)
    movement_amplitude: str | None = attrs.field(default=None, kw_only=True)
    seed: int | None = attrs.field(default=None, kw_only=True)
    payload: str | None = attrs.field(default=None, kw_only=True)
    off_peak: bool | None = attrs.field(default=None, kw_only=True)
    watermark: bool | None = attrs.field(default=None, kw_only=True)
    wm_position: int | None = attrs.field(default=None, kw_only=True)
    wm_url: str | None = attrs.field(default=None, kw_only=True)
    meta_data: str | None = attrs.field(default=None, kw_only=True)
    callback_url: str | None = attrs.field(default=None, kw_only=True)

    @classmethod
    def convert(cls, values: dict[str, Any], base_dir: Path | None) -> list[FieldProblem]:
        subjects = values["subjects"]
        if not isinstance(subjects, list | tuple):
            return []  # check() reports the wrong type
        converted, problems = [], []
        for index, item in enumerate(subjects):
            subject, found = _subject_from(item, index, base_dir)
            converted.append(subject)
            problems += found
        values["subjects"] = converted
        return problems

    def media_entries(self) -> tuple[tuple[MediaSource, MediaKind], ...]:
        subjects = self.subjects if isinstance(self.subjects, tuple) else ()
        image: MediaKind = "image"
        video: MediaKind = "video"
        return tuple(
            (item, kind)
            for s in subjects
            if isinstance(s, Subject)
            for kind, entries in ((image, s.images), (video, s.videos))
            if isinstance(entries, tuple)
            for item in entries
        )

    def body_value(self, name: str, value: Any, media: MediaMaker) -> Any:
        if name == "subjects":
            return [subject.body_with(media) for subject in value]
        return value

    def check_endpoint(self, checker: Checker, m: ModelCapabilities | None) -> None:
        subjects = self.subjects
        if not isinstance(subjects, tuple):
            checker.error(
                "subjects", f"{checker.accepts('a list of subjects')}, got {type_name(subjects)}"
            )
            return
        who = m.name if m else self.kind
        checker.check_count(
            "subjects", len(subjects), 1, caps.SUBJECTS_MAX, f"{who} accepts {{allowed}} subjects"
        )
        video_fields: list[str] = []
        names: list[str] = []
        for index, subject in enumerate(subjects):
            field = f"subjects[{index}]"
            if not isinstance(subject, Subject):
                checker.error(field, f"{checker.accepts('a Subject')}, got {type_name(subject)}")
                continue
            names += self._check_subject(checker, m, subject, field)
            if isinstance(subject.videos, tuple):
                video_fields += [f"{field}.videos[{i}]" for i in range(len(subject.videos))]
        if m is not None:
            self._check_subject_counts(checker, m, subjects, video_fields)
        self._check_mentions(checker, names)

    def _check_subject(
        self, checker: Checker, m: ModelCapabilities | None, subject: Subject, field: str
    ) -> list[str]:
        """Check one subject's own fields; its name, when it has a usable one.

        A voice needing audio is img2video's rule; the subject call's page does not say, so a
        voice without audio is only a warning here.
        """
        checker.check_media(f"{field}.images", subject.images, "image")
        checker.check_media(f"{field}.videos", subject.videos, "video")
        if isinstance(subject.images, tuple):
            who = f"{m.name} accepts" if m else "a subject takes"
            checker.check_count(
                f"{field}.images", len(subject.images), 1, caps.SUBJECT_IMAGES_MAX,
                f"{who} {{allowed}} images per subject",
            )
        if subject.voice_id is not None and not isinstance(subject.voice_id, str):
            checker.error(
                f"{field}.voice_id",
                f"{checker.accepts('a string')}, got {type_name(subject.voice_id)}",
            )
        elif subject.voice_id is not None and (no_audio := checker.no_audio(m)):
            checker.warn(
                f"{field}.voice_id",
                f"a voice likely needs audio (as on img2video); {no_audio}, or the API may "
                "refuse it or make no voice",
            )
        if not isinstance(subject.name, str) or not subject.name.strip():
            checker.error(f"{field}.name", f"{checker.accepts('a non-empty string')}, got "
                          f"{type_name(subject.name)} {subject.name!r}")
            return []
        return [subject.name]

    def _check_subject_counts(
        self,
        checker: Checker,
        m: ModelCapabilities,
        subjects: tuple[Subject, ...],
        video_fields: list[str],
    ) -> None:
        with_videos = sum(1 for s in subjects if isinstance(s, Subject) and s.videos)
        if with_videos and not m.max_video_subjects:
            checker.error(
                "subjects",
                f"subjects with videos are not supported on {m.name} "
                f"(only {self.table.where(lambda c: c.max_video_subjects > 0)} accept them)",
            )
            return
        image_only = len(subjects) - with_videos
        if len(subjects) <= caps.SUBJECTS_MAX:
            checker.check_count(
                "subjects", image_only, 0, m.max_image_subjects,
                f"{m.name} accepts {{allowed}} subjects without videos",
            )
        if with_videos > m.max_video_subjects:
            checker.check_count(
                "subjects", with_videos, 0, m.max_video_subjects,
                f"{m.name} accepts {{allowed}} subjects with videos",
            )
        elif len(video_fields) > m.max_videos:
            checker.error(
                "subjects", f"{m.name} accepts 1..{m.max_videos} videos, got {len(video_fields)}"
            )
        else:
            checker.check_video_durations(m, video_fields)

    def _check_mentions(self, checker: Checker, names: list[str]) -> None:
        prompt = self.prompt
        if not isinstance(prompt, str):
            return
        for name in names:
            if f"@{name}" not in prompt:
                checker.warn("prompt", f"never mentions subject {name!r} (as @{name})")
        for match in _MENTION.finditer(prompt):
            at = match.start()
            if not any(prompt.startswith(f"@{name}", at) for name in names):
                checker.warn("prompt", f"{match.group()} names no subject")
