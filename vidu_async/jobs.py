"""Jobs files: JSONL, CSV or plain text, read lazily line by line into validated jobs.

A job is a request plus the caller's ``custom_id`` (the OpenAI Batch habit): results are matched
back by it, and a rerun recognises finished work by it. Every line yields a ``JobLine``, valid or
not, carrying its 1-based line number, so one bad line is reported and the rest still run: a line
that is not UTF-8, longer than ``MAX_LINE_BYTES``, nested too deeply or otherwise unreadable is
that line's error, never the file's.

A line's ``type`` (``text2video``, ``img2video``, ``start-end2video``, ``reference2video``) picks
its endpoint; without one, its ``subjects`` pick reference2video's subject form, else a ``type``
in the defaults (the CLI's ``--type``) does, else the media present, the line's or else the
defaults' (``request_from_dict``: no media at all is text2video, an empty list being none).
Defaults (the CLI's ``--model``, ``--image``...) fill only fields that endpoint takes, so one
file may mix endpoints; a field the line gives, an empty list included, overrides its default.
``subjects`` (a list of objects) can only be given in JSONL.

A line without a ``custom_id`` is identified by what it asks, not by where it stands: its id is
``auto-`` and 16 hex digits of the SHA-256 of its fields as canonical JSON (defaults applied,
media paths as written, keys sorted, no whitespace), with ``-2``, ``-3``... on the
second, third... line of the file asking exactly the same. Inserting, deleting or reordering other
lines never changes an id, so a rerun of an edited file neither pays twice nor attaches a video to
the wrong prompt. An explicit ``custom_id`` is not special: every id in a file must be unique.

A line's request is checked as a batch would send it: with ``uploads`` (the batch's default
``upload_images``), each local image the upload API takes counts as its short ``ssupload:`` URI
in the body's size, not as inline base64.

Files are UTF-8 (a BOM is allowed), lines end with ``\n`` or ``\r\n``; a UTF-16 or UTF-32 file
(its BOM, or the NUL bytes of its first two characters) is refused whole (``JobsFileError``),
since every line of it would be garbled; so is a JSON Lines file (``.json`` too) that starts
with a JSON array, one object per line being what it must hold. A CSV file starts with a header
of field names, matched case-insensitively (``Model``, `` prompt ``, ``Aspect Ratio`` all work);
a first row naming no known field is taken as a missing header and fails the whole file
(``JobsFileError``), since reading it as one would silently drop the first job. A quoted cell
may hold line breaks: its record is numbered by its first line, and every message about it names
the lines it spans. Quoting that breaks across lines (a stray quote) makes the record its first
line's error, naming the lines the quote swallowed, which are then read again, each on its own
(the broken record is not run, so no line runs twice). A value under a column the header leaves
unnamed is its line's error.
"""

from __future__ import annotations

import codecs
import collections
import csv
import hashlib
import itertools
import json
import os
import re
import unicodedata
from collections.abc import Container, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Literal

import attrs

from vidu_async._packed import IdLines
from vidu_async.errors import FieldProblem, ValidationError, ViduError
from vidu_async.media import MediaKind, MediaSource, is_local
from vidu_async.requests import (
    KINDS,
    ImageToVideoRequest,
    ReferenceToVideoRequest,
    Request,
    StartEndToVideoRequest,
    SubjectsToVideoRequest,
    TextToVideoRequest,
    request_from_dict,
)
from vidu_async.requests._common import BOOL_FIELDS, INT_FIELDS
from vidu_async.requests.dispatch import expect_request
from vidu_async.upload import UPLOAD_MAX_BYTES

__all__ = [
    "FORMATS",
    "MAX_LINE_BYTES",
    "Job",
    "JobFormat",
    "JobLine",
    "JobsFileError",
    "JsonArrayError",
    "auto_id",
    "check_jobs_file",
    "count_jobs",
    "defaults_not_taken",
    "detect_format",
    "line_fields",
    "read_jobs",
    "sniff_format",
    "with_defaults",
]

JobFormat = Literal["jsonl", "csv", "txt"]
FORMATS: dict[str, JobFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".txt": "txt",
}
"""File extensions and the format each one means."""

MAX_LINE_BYTES = 32 * 1024 * 1024
"""The longest line read (its line ending included); a longer one is that line's error. Room for
the largest legal inline media: a video under 20 MB is about 27 MB as a base64 data URI."""

_BY_KIND: dict[str, type[Request]] = {
    "text2video": TextToVideoRequest,
    "img2video": ImageToVideoRequest,
    "start-end2video": StartEndToVideoRequest,
    "reference2video": ReferenceToVideoRequest,
}
_CLASSES = (*_BY_KIND.values(), SubjectsToVideoRequest)
_MEDIA_KEYS = ("images", "videos", "subjects")
_LIST_FIELDS = frozenset({"images", "videos", "sounds"})
_JSONL_ONLY = frozenset({"subjects"})
"""Fields a CSV cell cannot hold: a list of objects."""
_TRUE = frozenset({"true", "1", "yes", "y", "on"})
_FALSE = frozenset({"false", "0", "no", "n", "off"})
_HEADER_NAMES = frozenset(
    {"custom_id", "type", *(name for cls in _CLASSES for name in cls.FIELDS)} - _JSONL_ONLY
)
"""Every field any endpoint takes, the ``type`` choosing the endpoint, and ``custom_id``."""
_ALLOWED_CONTROLS = frozenset("\t\n\r")
"""Control characters a prompt may hold: tab and line breaks (a CSV cell keeps its CRLF)."""
_FLAGS = {"images": "--image", "videos": "--video"}
"""The CLI flags giving a default for a field, where not ``--`` and the field's name."""
_SKIP_CHUNK = 1024 * 1024
"""Block size for skipping the rest of a line that is too long."""
_WIDE = (  # UTF-32 first: its little-endian BOM starts with UTF-16's
    ("UTF-32", (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE),
     re.compile(rb"([^\0]\0\0\0){2}|(\0\0\0[^\0]){2}")),
    ("UTF-16", (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE),
     re.compile(rb"([^\0]\0){2}|(\0[^\0]){2}")),
)
"""Encodings a jobs file is refused in: their BOMs, and the bytes of two ASCII characters."""
_UPLOADED = "ssupload:?id=" + "0" * 32
"""What an uploaded image is sent as, for sizing a body offline (ids are shorter)."""


class JobsFileError(ViduError, ValueError):
    """The jobs file as a whole cannot be read: unknown type, missing, a directory, a CSV file
    without a header, or no job in it. One bad line is never this: it is that line's error."""


class JsonArrayError(JobsFileError):
    """The jobs file holds a JSON array, not JSON Lines: refused whole, saying how to convert
    it with jq into a file beside it, or (``piped``, for jobs that came on stdin) in the pipe."""

    def __init__(self, path: Path) -> None:
        converted = path.with_suffix(".jsonl")
        if converted == path:
            converted = path.with_name(f"{path.stem}.lines.jsonl")
        super().__init__(_array_refusal(str(path), f"jq -c '.[]' {path} > {converted}"))

    @staticmethod
    def piped(name: str) -> str:
        """The refusal for jobs read from a pipe, ``name`` (``<stdin>``): no file to convert."""
        return _array_refusal(name, "... | jq -c '.[]' | vidu-async ... -")


def _array_refusal(name: str, conversion: str) -> str:
    return (f"{name} holds a JSON array, but jobs are read as JSON Lines, one object per line: "
            f"convert it first, e.g. {conversion}")


@attrs.frozen
class Job:
    """One request to submit, with the caller's id for it (unique within a batch: a repeated
    id is refused, ``invalid``; a request object is checked here, ``TypeError``)."""

    custom_id: str = attrs.field(validator=attrs.validators.instance_of(str))
    request: Request = attrs.field(validator=lambda _job, _field, value: expect_request(
        value, "Job.request"))
    """Any endpoint's request; ``request.kind`` names the endpoint."""
    line: int | None = None


@attrs.frozen
class JobLine:
    """What one input line became: a ``job`` when valid, else its ``errors``, and any warnings."""

    line: int
    custom_id: str | None
    job: Job | None
    errors: tuple[FieldProblem, ...] = ()
    warnings: tuple[FieldProblem, ...] = ()
    kind: str | None = None
    """The endpoint (``text2video``...): the request's, or the ``type`` an invalid line named."""

    @property
    def ok(self) -> bool:
        return self.job is not None

    def to_dict(self) -> dict[str, Any]:
        """The ``validate --json`` record of this line."""
        return {
            "line": self.line,
            "custom_id": self.custom_id,
            "type": self.kind,
            "ok": self.ok,
            "errors": [p.to_dict() for p in self.errors],
            "warnings": [p.to_dict() for p in self.warnings],
        }


def detect_format(path: Path) -> JobFormat:
    """The format a jobs file's extension names; ``JobsFileError`` for one we do not read."""
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        known = ", ".join(FORMATS)
        raise JobsFileError(
            f"{path}: unknown jobs file type {path.suffix!r}; use {known}, or name the "
            "format (the CLI's --format)"
        ) from None


def sniff_format(head: bytes) -> tuple[JobFormat, str]:
    """The format of jobs that came without a file name (stdin), from their first bytes, and
    why: ``{`` first is JSONL (``[`` too: a JSON array, which reading refuses, saying how to
    convert it, where reading it as text would send each of its lines as a prompt); a first
    line whose every cell is a known field name is a CSV header; anything else is one prompt a
    line."""
    text = head.removeprefix(codecs.BOM_UTF8).decode("utf-8", "replace").lstrip()
    if text.startswith(("{", "[")):
        return "jsonl", f"it starts with {text[0]}"
    first = text.splitlines()[0] if text else ""
    names = [name for cell in next(csv.reader([first]), []) if (name := _field_name(cell))]
    if names and all(name in _HEADER_NAMES for name in names):
        return "csv", "its first line is a header of field names"
    return "txt", "it is neither JSON objects nor a CSV header"


def read_jobs(
    path: Path,
    *,
    defaults: Mapping[str, Any] | None = None,
    fmt: JobFormat | None = None,
    strict: bool = False,
    base_dir: Path | None = None,
    uploads: bool = True,
) -> Iterator[JobLine]:
    """Yield one ``JobLine`` per job line of ``path``, lazily, each one checked offline.

    ``defaults`` fill fields a line leaves out that its endpoint takes (``with_defaults``: the
    CLI's ``--model``, ``--image``...), a ``type`` among them choosing the endpoint of lines
    that name none. ``strict`` (or ``defaults["strict"]``, the way the CLI's ``--strict``
    arrives) refuses a model the capability tables lack; otherwise it is a warning.
    ``uploads``: the jobs go to a batch that uploads local images (``upload_images``, its
    default), so each one the upload API takes counts as its URI in the body's 20 MB, not
    inline; False counts every local file inline, as ``Request.check`` does.
    Relative media paths in the file resolve against ``base_dir``, by default the file's folder
    (jobs spooled from stdin resolve against the working directory). A line without
    ``custom_id`` gets ``auto_id`` of its fields; a repeated id is an error on the later line. A
    CSV file without a header raises ``JobsFileError`` when iteration starts; an empty file
    yields nothing.
    """
    fmt = fmt or detect_format(path)
    defaults = dict(defaults or {})
    strict = bool(defaults.pop("strict", False)) or strict
    seen = IdLines()
    repeats: dict[str, int] = {}
    for number, end, record in _records(path, fmt):
        try:
            item = _job_line(number, record, defaults, base_dir or path.parent, seen, repeats,
                             strict, uploads)
        except Exception as exc:  # one line's surprise must never stop the rest of the file
            problem = FieldProblem("(line)", f"cannot be read: {type(exc).__name__}: {exc}")
            item = JobLine(number, None, None, (problem,))
        yield _spanning(item, end)


def count_jobs(path: Path, fmt: JobFormat | None = None) -> int:
    """How many ``JobLine``s ``read_jobs`` yields for ``path`` (a progress total), without
    checking any line: blank lines and the CSV header do not count, bad lines do."""
    return sum(1 for _ in _records(path, fmt or detect_format(path)))


def line_fields(
    path: Path, numbers: Container[int], fmt: JobFormat | None = None
) -> Iterator[tuple[int, dict[str, Any] | FieldProblem]]:
    """The fields of the job lines numbered ``numbers``, as written (no defaults, no checks),
    or why a line has none; one pass over the file, for writing chosen lines elsewhere."""
    for number, _end, record in _records(path, fmt or detect_format(path)):
        if number in numbers:
            yield number, _json_fields(record) if isinstance(record, str) else record


def check_jobs_file(path: Path, fmt: JobFormat | None = None) -> None:
    """Raise ``JobsFileError`` saying why ``path`` cannot be run as a jobs file at all.

    Reads only up to the first job: enough to find a missing file, a directory, an unknown
    type, a CSV file without a header, or a file with no job line.
    """
    fmt = fmt or detect_format(path)
    if path.is_dir():
        raise JobsFileError(f"{path}: is a directory, not a jobs file")
    if not path.exists():
        raise JobsFileError(f"{path}: no such file")
    if not path.is_file():
        raise JobsFileError(f"{path}: not a regular file")
    try:
        first = next(_records(path, fmt), None)
    except OSError as exc:
        raise JobsFileError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if first is None:
        after = " (after the CSV header)" if fmt == "csv" else ""
        raise JobsFileError(f"{path}: no jobs in it: every line{after} is blank")


def with_defaults(fields: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """A line's ``fields`` with each of ``defaults`` its endpoint takes (see the module
    docstring): ``--image`` fills no text2video line, ``--aspect-ratio`` no img2video line.
    An empty list the endpoint does not take is left out (``"images": []`` on a text2video
    line); any other field it does not take stays, for ``request_from_dict`` to name."""
    cls = _endpoint(fields, defaults)
    if cls is None:  # a type no endpoint has: request_from_dict says so
        return {**defaults, **fields}
    taken = {k: v for k, v in defaults.items() if k in cls.FIELDS}
    if defaults.get("type") == cls.kind:
        taken["type"] = cls.kind
    own = {k: v for k, v in fields.items() if k in cls.FIELDS or k == "type" or v != []}
    return {**taken, **own}


def defaults_not_taken(defaults: Mapping[str, Any]) -> list[str]:
    """The CLI flags among ``defaults`` that their own ``type`` (``--type``) never takes:
    ``--type text2video --image x`` would fill no line with the image, silently."""
    cls = _BY_KIND.get(defaults.get("type") or "")
    if cls is None:
        return []
    taken = set(cls.FIELDS) | (set(SubjectsToVideoRequest.FIELDS)
                               if cls is ReferenceToVideoRequest else set())
    return [_flag(name) for name in defaults
            if name not in taken and name not in ("type", "strict")]


def auto_id(fields: Mapping[str, Any]) -> str:
    """The id of a line without ``custom_id``: a hash of the request fields it asks for, as
    written (defaults applied). A relative media path enters as written, so the same jobs file
    in another checkout keeps its ids (what the file then holds is the request fingerprint's
    business: a changed image is refused as a changed request, never paid twice)."""
    text = json.dumps(dict(fields), sort_keys=True, separators=(",", ":"), default=str)
    return "auto-" + hashlib.sha256(text.encode("ascii")).hexdigest()[:16]


# --- reading: bytes to lines to records ---------------------------------------------------------

_Record = dict[str, Any] | str | FieldProblem
"""A job line's fields, a JSON line's text (parsed when the line becomes a job, so that counting
stays cheap), or the problem that makes the line unreadable."""
_Line = tuple[int, str, FieldProblem | None]
"""A physical line: its number, its text with the line ending, and why it is unreadable."""


def _records(path: Path, fmt: JobFormat) -> Iterator[tuple[int, int, _Record]]:
    """The job records of a file, each with the numbers of the lines where it starts and ends
    (they differ only for a CSV record whose quoted cell holds line breaks)."""
    with path.open("rb") as handle:
        wide = _wide_encoding(handle.read(8))
        if wide is not None:
            raise JobsFileError(f"{path} is {wide}; save it as UTF-8")
        handle.seek(0)
        lines = _lines(handle)
        if fmt == "csv":
            yield from _csv_records(lines, path)
            return
        if fmt == "jsonl":
            lines = _not_an_array(lines, path)
        for number, text, problem in lines:
            if problem is not None:
                yield number, number, problem
            elif text.strip():
                record = {"prompt": text.strip()} if fmt == "txt" else text.strip()
                yield number, number, record


def _wide_encoding(head: bytes) -> str | None:
    """``UTF-16`` or ``UTF-32`` when a file starting with ``head`` (8 bytes) is in one: its
    BOM, or the NUL bytes that two ASCII characters have there; else None."""
    for name, boms, nuls in _WIDE:
        if head.startswith(boms) or nuls.match(head):
            return name
    return None


def _not_an_array(lines: Iterator[_Line], path: Path) -> Iterator[_Line]:
    """JSON Lines, refusing (``JobsFileError``) a file that starts with a JSON array: read a
    line at a time, its lines would each be an error, or a job (an object alone on its line)."""
    for line in lines:
        if line[1].lstrip().startswith("["):
            raise JsonArrayError(path)
        yield line
        if line[1].strip():
            break
    yield from lines


def _lines(handle: BinaryIO) -> Iterator[_Line]:
    """Every line of a binary file, decoded on its own so one bad byte spoils only its line."""
    for number in itertools.count(1):
        raw = handle.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        if len(raw) > MAX_LINE_BYTES:
            while raw and not raw.endswith(b"\n"):
                raw = handle.readline(_SKIP_CHUNK)
            problem = FieldProblem(
                "(line)", f"longer than {MAX_LINE_BYTES:,} bytes, the most a line may hold"
            )
            yield number, "\n", problem
            continue
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            yield number, raw.decode("utf-8"), None
        except UnicodeDecodeError as exc:
            problem = FieldProblem(
                "(line)",
                f"not UTF-8 at byte {exc.start + 1:,} of the line "
                f"(0x{raw[exc.start]:02x}): save the file as UTF-8",
            )
            yield number, raw.decode("utf-8", "replace"), problem


def _csv_records(lines: Iterable[_Line], path: Path) -> Iterator[tuple[int, int, _Record]]:
    """CSV records after the header, each with the first and last line it spans (a quoted cell
    may hold line breaks). A record whose quoting breaks across lines (a stray quote) is an
    error on its first line, and the lines it swallowed are read again, each on its own."""
    if csv.field_size_limit() < MAX_LINE_BYTES:  # process-wide: only ever raised, never lowered
        csv.field_size_limit(MAX_LINE_BYTES)
    source = _Rereadable(lines)
    reader = csv.reader(source, strict=True)  # each record parses afresh, after an error too
    header: list[str] | None = None
    while True:
        error: csv.Error | None = None
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            row, error = [], exc
        taken, cut_off = source.take()
        start, end = taken[0][0], taken[-1][0]
        if error is not None and end > start:
            source.put_back(taken[1:])  # this record is an error: no line of it runs twice
        problem = _read_problem(taken, error, cut_off)
        if problem is None and not any(cell.strip() for cell in row):
            continue
        if header is None:
            if problem is not None:
                raise JobsFileError(f"{path}:{start}: the CSV header: {problem.message}")
            header = _header(row, f"{path}:{start}")
            continue
        problem = problem or _shape_problem(header, row, start, end)
        if problem is not None:
            yield start, start, problem  # its message names the lines it spans
        else:
            cells = zip(header, row, strict=True)
            yield start, end, {name: _csv_value(name, text) for name, text in cells if text.strip()}


class _Rereadable:
    """Line texts for ``csv.reader``, keeping the lines each record takes so that those a
    broken record swallowed can be put back and read again."""

    def __init__(self, lines: Iterable[_Line]) -> None:
        self._lines = iter(lines)
        self._back: collections.deque[_Line] = collections.deque()
        self._taken: list[_Line] = []
        self._ended = False

    def __iter__(self) -> _Rereadable:
        return self

    def __next__(self) -> str:
        if self._back:
            line = self._back.popleft()
        else:
            try:
                line = next(self._lines)
            except StopIteration:
                self._ended = True
                raise
        self._taken.append(line)
        return line[1]

    def take(self) -> tuple[list[_Line], bool]:
        """The lines read since the last ``take``, and whether the reader asked for one past
        the end of the file (a record still open there was cut off by it)."""
        taken, ended = self._taken, self._ended
        self._taken, self._ended = [], False
        return taken, ended

    def put_back(self, lines: list[_Line]) -> None:
        """Read ``lines`` again, before any line not read yet."""
        self._back.extendleft(reversed(lines))


def _read_problem(
    taken: list[_Line], error: csv.Error | None, cut_off: bool
) -> FieldProblem | None:
    """Why the lines ``taken`` do not read as one CSV record: a line's own problem (not UTF-8,
    too long), or quoting ``csv`` refused (``cut_off``: by the end of the file)."""
    start, end = taken[0][0], taken[-1][0]
    first = taken[0][2]
    if error is not None:
        reason = first.message if first is not None else f"not valid CSV: {error}"
        if end == start:
            story = _quote_story(start, end, False) if cut_off else ""
            return FieldProblem("(line)", reason + story)
        story = _quote_story(start, end, not cut_off)
        return FieldProblem("(line)", f"{reason}{story}; they are read again, each on its own")
    spoiled = [(number, problem) for number, _text, problem in taken if problem is not None]
    if not spoiled:
        return None
    number, problem = spoiled[0]
    where = "" if number == start else f"line {number}: "
    return FieldProblem("(line)", f"{where}{problem.message}{_span_note(start, end)}")


def _shape_problem(header: list[str], row: list[str], start: int, end: int) -> FieldProblem | None:
    """Why a well-formed CSV record does not fit the header: its number of cells (the lines a
    quoted cell ran over named, and not read again: it may be a prompt's own line breaks), or a
    value under a column the header leaves unnamed."""
    if len(row) != len(header):
        reason = f"has {len(row)} cells, the header has {len(header)}"
        if end > start:
            reason += f"{_quote_story(start, end, True)} into this record: not run either"
        return FieldProblem("(line)", reason)
    for index, (name, text) in enumerate(zip(header, row, strict=True), start=1):
        if not name and text.strip():
            return FieldProblem(
                f"column {index}",
                f"has no name in the header, yet holds {_short(text.strip())!r} on this line; "
                "name the column in the header or leave its cells empty",
            )
    return None


def _quote_story(start: int, end: int, closed: bool) -> str:
    """How a quote made lines ``start``..``end`` one record (said after a reason)."""
    opened = f": a quote opened on line {start}"
    if end == start:
        return f"{opened} is never closed"
    closing = f"closed on line {end}" if closed else "never closed"
    swallowed = f"line {end}" if end == start + 1 else f"lines {start + 1}-{end}"
    return f"{opened} and {closing} swallowed {swallowed}"


def _span_note(start: int, end: int) -> str:
    """`` (the record spans lines 3-6)`` for a record over several lines, else nothing."""
    return f" (the record spans lines {start}-{end})" if end > start else ""


def _header(row: list[str], where: str) -> list[str]:
    """The field names of a CSV header row, normalised; ``JobsFileError`` if it is no header."""
    names = [_field_name(cell) for cell in row]
    nested = sorted(_JSONL_ONLY.intersection(names))
    if nested:
        raise JobsFileError(
            f"{where}: the CSV header names {', '.join(nested)}: a list of objects needs a "
            "JSONL jobs file (one JSON object per line)"
        )
    if not _HEADER_NAMES.intersection(names):
        raise JobsFileError(
            f"{where}: a CSV jobs file must start with a header row of field names, such "
            f"as custom_id,model,prompt,images; the first row {_short(','.join(row))!r} names "
            f"none of {', '.join(sorted(_HEADER_NAMES))}"
        )
    twice = sorted({name for name in names if name and names.count(name) > 1})
    if twice:
        raise JobsFileError(f"{where}: the CSV header names {', '.join(twice)} twice")
    return names


def _field_name(cell: str) -> str:
    """A CSV header cell as the field it names: ``Aspect Ratio`` is ``aspect_ratio``."""
    return re.sub(r"[\s-]+", "_", cell.strip()).casefold()


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _csv_value(field: str, text: str) -> Any:
    """A CSV cell as its field's JSON type; text that does not parse is kept for check() to name."""
    text = text.strip()
    if field in _LIST_FIELDS:
        if text.startswith("["):
            try:
                return json.loads(text)
            except (ValueError, RecursionError):
                return text
        return [part.strip() for part in text.split("|") if part.strip()]
    if field in INT_FIELDS:
        try:
            return int(text)
        except ValueError:
            return text
    if field in BOOL_FIELDS:
        lowered = text.lower()
        return True if lowered in _TRUE else False if lowered in _FALSE else text
    return text


def _job_line(
    number: int,
    record: _Record,
    defaults: Mapping[str, Any],
    base_dir: Path,
    seen: IdLines,
    repeats: dict[str, int],
    strict: bool,
    uploads: bool,
) -> JobLine:
    """Check one record; ``seen`` (id to line) and ``repeats`` (auto id to count) span the file;
    ``uploads`` as ``read_jobs`` takes it."""
    if isinstance(record, str):
        record = _json_fields(record)
    if isinstance(record, FieldProblem):
        return JobLine(number, None, None, (record,))
    fields = dict(record)
    raw_id = fields.pop("custom_id", None)
    usable = isinstance(raw_id, str | int) and not isinstance(raw_id, bool)
    custom_id = str(raw_id) if usable else None
    problems: list[FieldProblem] = []
    if raw_id is not None and (custom_id is None or not custom_id.strip()):
        problems.append(FieldProblem("custom_id", f"must be a non-empty string, got {raw_id!r}"))
    merged = with_defaults(fields, defaults)
    if not custom_id:
        base = auto_id(merged)
        repeats[base] = count = repeats.get(base, 0) + 1
        custom_id = base if count == 1 else f"{base}-{count}"
    if custom_id in seen:
        problems.append(
            FieldProblem("custom_id", f"{custom_id!r} is already used on line {seen[custom_id]}")
        )
    else:
        seen[custom_id] = number
    problems += _control_problems(merged.get("prompt"))
    named = merged.get("type")
    defaulted = merged.keys() - fields.keys()
    try:
        request = request_from_dict(merged, base_dir=base_dir)
    except ValidationError as exc:
        kind = named if named in KINDS else None
        errors = _from_defaults((*problems, *exc.problems), defaulted)
        return JobLine(number, custom_id, None, errors, kind=kind)
    result = request.check(strict=strict)
    checked = result.errors
    if uploads and any(problem.field == "body" for problem in checked):  # its only error if any
        checked = _as_uploaded(request).check(strict=strict).errors
    problems.extend(checked)
    job = None if problems else Job(custom_id, request, number)
    errors, warnings = (_from_defaults(found, defaulted) for found in (problems, result.warnings))
    return JobLine(number, custom_id, job, errors, warnings, request.kind)


def _endpoint(fields: Mapping[str, Any], defaults: Mapping[str, Any]) -> type[Request] | None:
    """The request class of a line, by its own fields first: its ``type``, its ``subjects``,
    then the default ``type``, then the media (the line's, else the defaults'); the class
    ``request_from_dict`` picks too. None for a ``type`` no endpoint has."""

    def given(name: str) -> bool:
        value = fields[name] if name in fields else defaults.get(name)
        return value is not None and value != []

    kind = fields.get("type") or None
    if kind is None and fields.get("subjects") not in (None, []):
        return SubjectsToVideoRequest
    kind = kind or defaults.get("type") or None
    if kind is None:
        kind = "reference2video" if any(map(given, _MEDIA_KEYS)) else "text2video"
    if kind == "reference2video" and given("subjects"):
        return SubjectsToVideoRequest
    return _BY_KIND.get(kind) if isinstance(kind, str) else None


def _as_uploaded(request: Request) -> Request:
    """``request`` as a batch that uploads images sends it (``batch.uploads``): each local
    image the upload API takes (under 10 MB) as an ``ssupload:`` URI, the rest as given."""

    def send_as(source: MediaSource, kind: MediaKind) -> Any:
        return _UPLOADED if kind == "image" and _uploadable(source) else source

    return type(request).from_dict(request.body_with(send_as))


def _uploadable(source: MediaSource) -> bool:
    """A local image the upload API takes, by size (its format and shape are checked as
    every image's are); a file that cannot be read is not."""
    if not is_local(source):
        return False
    try:
        size = len(source) if isinstance(source, bytes) else os.stat(source).st_size
    except (OSError, ValueError):  # ValueError: a NUL in the path
        return False
    return size < UPLOAD_MAX_BYTES


def _from_defaults(
    problems: Iterable[FieldProblem], defaulted: Container[str]
) -> tuple[FieldProblem, ...]:
    """``problems``, those of a field the line leaves out saying that a default (the CLI's
    flag) gave it: "text2video takes no images" puzzles on a line that names none."""
    said = []
    for problem in problems:
        name = re.split(r"[.\[]", problem.field, maxsplit=1)[0]
        if name in defaulted:
            problem = FieldProblem(
                problem.field,
                f"{problem.message} (from the default {_flag(name)}: this line gives no {name})",
            )
        said.append(problem)
    return tuple(said)


def _flag(name: str) -> str:
    """The CLI flag that gives a default for the field ``name``."""
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


def _spanning(item: JobLine, end: int) -> JobLine:
    """``item`` with each of its messages naming the lines its record spans, when several; a
    valid one also warns that it does (a stray quote that closes at the end of a cell makes
    one job of several lines, and only this says so)."""
    if end == item.line:
        return item
    note = _span_note(item.line, end)
    errors, warnings = (
        tuple(FieldProblem(p.field, p.message + note) for p in found)
        for found in (item.errors, item.warnings)
    )
    if not errors:
        warnings = (*warnings, FieldProblem(
            "(line)", f"one job of lines {item.line}-{end}: a quoted cell holds line breaks "
            "(if that is not meant, a quote is unbalanced)"))
    return attrs.evolve(item, errors=errors, warnings=warnings)


def _json_fields(text: str) -> dict[str, Any] | FieldProblem:
    """A JSONL line's fields, or why it is not a JSON object."""
    try:
        value = json.loads(text)
    except RecursionError:
        return FieldProblem("(line)", "not valid JSON: nested too deeply")
    except ValueError as exc:
        return FieldProblem("(line)", f"not valid JSON: {exc}")
    if isinstance(value, dict):
        return value
    return FieldProblem("(line)", "must be a JSON object of request fields")


def _control_problems(prompt: object) -> list[FieldProblem]:
    """The first control character in a prompt (a NUL, an escape...), other than tab and
    line breaks: never meant, and the server's answer to one is unknown."""
    if not isinstance(prompt, str):
        return []
    for index, char in enumerate(prompt, start=1):
        if unicodedata.category(char) == "Cc" and char not in _ALLOWED_CONTROLS:
            return [
                FieldProblem(
                    "prompt",
                    f"contains the control character U+{ord(char):04X} at character {index}; "
                    "only tab and line breaks are allowed",
                )
            ]
    return []
