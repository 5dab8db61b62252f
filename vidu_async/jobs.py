"""Jobs files: JSONL, CSV or plain text, read lazily line by line into validated jobs.

A job is a request plus the caller's ``custom_id`` (the OpenAI Batch habit): results are matched
back by it, and a rerun recognises finished work by it. Every line yields a ``JobLine``, valid or
not, carrying its 1-based line number, so one bad line is reported and the rest still run.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from vidu_async.errors import FieldProblem, ValidationError
from vidu_async.requests import ReferenceToVideoRequest

__all__ = ["FORMATS", "Job", "JobFormat", "JobLine", "detect_format", "read_jobs"]

JobFormat = Literal["jsonl", "csv", "txt"]
FORMATS: dict[str, JobFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".txt": "txt",
}
"""File extensions and the format each one means."""

_INT_FIELDS = frozenset({"duration", "seed", "wm_position"})
_BOOL_FIELDS = frozenset({"bgm", "audio", "off_peak", "watermark"})
_LIST_FIELDS = frozenset({"images", "videos", "sounds"})
_TRUE = frozenset({"true", "1", "yes", "y", "on"})
_FALSE = frozenset({"false", "0", "no", "n", "off"})


@attrs.frozen
class Job:
    """One request to submit, with the caller's id for it (unique within a jobs file)."""

    custom_id: str
    request: ReferenceToVideoRequest
    line: int | None = None


@attrs.frozen
class JobLine:
    """What one input line became: a ``job`` when valid, else its ``errors``, and any warnings."""

    line: int
    custom_id: str | None
    job: Job | None
    errors: tuple[FieldProblem, ...] = ()
    warnings: tuple[FieldProblem, ...] = ()

    @property
    def ok(self) -> bool:
        return self.job is not None

    def to_dict(self) -> dict[str, Any]:
        """The ``validate --json`` record of this line."""
        return {
            "line": self.line,
            "custom_id": self.custom_id,
            "ok": self.ok,
            "errors": [p.to_dict() for p in self.errors],
            "warnings": [p.to_dict() for p in self.warnings],
        }


def detect_format(path: Path) -> JobFormat:
    """The format a jobs file's extension names; ``ValueError`` for one we do not read."""
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        known = ", ".join(FORMATS)
        raise ValueError(f"{path}: unknown jobs file type {path.suffix!r}; use {known}") from None


def read_jobs(
    path: Path,
    *,
    defaults: Mapping[str, Any] | None = None,
    fmt: JobFormat | None = None,
) -> Iterator[JobLine]:
    """Yield one ``JobLine`` per non-blank line of ``path``, lazily, each one checked offline.

    ``defaults`` fill fields a line leaves out (the CLI's ``--model``, ``--image``...). Relative
    media paths in the file resolve against the file's folder. A ``custom_id`` defaults to
    ``line-N``; a repeated one is an error on the later line.
    """
    fmt = fmt or detect_format(path)
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8-sig", newline="") as handle:
        for number, record in _records(handle, fmt):
            yield _job_line(number, record, defaults or {}, path.parent, seen)


def _records(handle: Any, fmt: JobFormat) -> Iterator[tuple[int, dict[str, Any] | FieldProblem]]:
    """The raw records of a file, as (line number, fields or the problem reading them)."""
    if fmt == "csv":
        yield from _csv_records(handle)
        return
    for number, text in enumerate(handle, start=1):
        text = text.strip()
        if not text:
            continue
        if fmt == "txt":
            yield number, {"prompt": text}
            continue
        try:
            value = json.loads(text)
        except ValueError as exc:
            yield number, FieldProblem("(line)", f"not valid JSON: {exc}")
            continue
        if isinstance(value, dict):
            yield number, value
        else:
            yield number, FieldProblem("(line)", "must be a JSON object of request fields")


def _csv_records(handle: Any) -> Iterator[tuple[int, dict[str, Any] | FieldProblem]]:
    reader = csv.DictReader(handle, strict=True)
    rows = iter(reader)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as exc:
            yield reader.line_num, FieldProblem("(line)", f"not valid CSV: {exc}")
            continue
        if None in row or any(v is None for v in row.values()):
            cells = len(reader.fieldnames or [])
            yield reader.line_num, FieldProblem(
                "(line)", f"has a different number of cells than the header's {cells}"
            )
            continue
        if not any(v.strip() for v in row.values()):
            continue
        yield reader.line_num, {
            k.strip(): _csv_value(k.strip(), v) for k, v in row.items() if v.strip()
        }


def _csv_value(field: str, text: str) -> Any:
    """A CSV cell as its field's JSON type; text that does not parse is kept for check() to name."""
    text = text.strip()
    if field in _LIST_FIELDS:
        if text.startswith("["):
            try:
                return json.loads(text)
            except ValueError:
                return text
        return [part.strip() for part in text.split("|") if part.strip()]
    if field in _INT_FIELDS:
        try:
            return int(text)
        except ValueError:
            return text
    if field in _BOOL_FIELDS:
        lowered = text.lower()
        return True if lowered in _TRUE else False if lowered in _FALSE else text
    return text


def _job_line(
    number: int,
    record: dict[str, Any] | FieldProblem,
    defaults: Mapping[str, Any],
    base_dir: Path,
    seen: dict[str, int],
) -> JobLine:
    if isinstance(record, FieldProblem):
        return JobLine(number, None, None, (record,))
    fields = dict(record)
    raw_id = fields.pop("custom_id", None)
    usable = isinstance(raw_id, str | int) and not isinstance(raw_id, bool)
    custom_id = str(raw_id) if usable else None
    problems: list[FieldProblem] = []
    if raw_id is not None and (custom_id is None or not custom_id.strip()):
        problems.append(FieldProblem("custom_id", f"must be a non-empty string, got {raw_id!r}"))
    custom_id = custom_id or f"line-{number}"
    if custom_id in seen:
        problems.append(
            FieldProblem("custom_id", f"{custom_id!r} is already used on line {seen[custom_id]}")
        )
    else:
        seen[custom_id] = number
    merged = {**defaults, **fields}
    try:
        request = ReferenceToVideoRequest.from_dict(merged, base_dir=base_dir)
    except ValidationError as exc:
        return JobLine(number, custom_id, None, (*problems, *exc.problems))
    result = request.check()
    problems.extend(result.errors)
    if problems:
        return JobLine(number, custom_id, None, tuple(problems), result.warnings)
    return JobLine(number, custom_id, Job(custom_id, request, number), (), result.warnings)
