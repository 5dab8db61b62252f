"""The jobs of a run that did not succeed: what became of each and what to do about it, listed
for people at the end of a run and written as a jobs file that can be submitted as is.

``failure_of`` (pure) turns an outcome into a ``Failure`` with its advice and whether sending
the job again in a new batch is safe: an invalid line, a create Vidu refused (no task), a task
that failed on Vidu, a job never sent. Never an ``ambiguous`` job (its task may exist: a new
batch would pay twice), a job whose task is on an account not given now, a made video whose
download failed, a task given up after long 404s (``TaskNotFound``: it was made), or a
``duplicate``.
The errors file holds each such line's own fields (as the jobs file wrote them, the command
line's defaults filled in, local media paths made absolute) and its ``custom_id``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from vidu_async._files import replaced_whole
from vidu_async.batch.plan import CANCELLED_CODES, retryable
from vidu_async.errors import FieldProblem
from vidu_async.jobs import JobFormat, line_fields, with_defaults
from vidu_async.media import is_local
from vidu_async.outcome import TASK_NOT_FOUND, Outcome

__all__ = [
    "SHOWN", "ErrorsFile", "Failure", "failure_of", "render", "shown_id", "write_errors_file",
]

SHOWN = 20
"""Failures listed on screen; the rest are counted (``--errors`` writes them all)."""
_MEDIA_FIELDS = ("images", "videos", "sounds")
_MESSAGE_CHARS = 160


@attrs.frozen
class Failure:
    """One job that did not succeed: who, where, what became of it and what to do."""

    custom_id: str | None
    """None for a line whose id could not be read (its ``line`` names it)."""
    line: int | None
    status: str
    reason: str
    advice: str
    resubmit: bool
    """Whether the errors file holds it: sending it again in a new batch pays at most once."""


def failure_of(outcome: Outcome, *, retry_failed: bool = False) -> Failure | None:
    """The failure an outcome is, or None when the job succeeded (or was submitted).
    ``retry_failed``: the run retried each job whose task failed (once), so a task still
    failed is that retry."""
    if outcome.ok:
        return None
    error = outcome.error
    reason = error.reason if error else outcome.err_code or outcome.status
    message = _short(error.message if error else "")
    advice, resubmit = _advice(outcome, reason, message, retry_failed)
    return Failure(outcome.custom_id, outcome.line, outcome.status, reason, advice, resubmit)


def _advice(outcome: Outcome, reason: str, message: str,
            retry_failed: bool) -> tuple[str, bool]:
    """What to do about a job that did not succeed, and whether a new batch may send it."""
    status, line, task = outcome.status, outcome.line, outcome.task_id
    if status == "invalid":
        if reason == "ValidationError":
            return f"fix line {line}: {message}; then rerun", True
        return message, reason != "AccountNotGiven"
    if status == "failed" and task is None:  # the create's answer was a refusal: no task
        return (f"Vidu refused the create, no task was made ({reason}: {message}): fix the "
                "line, then submit it in a new batch (--errors writes it)"), True
    if status == "failed" and reason == TASK_NOT_FOUND:
        return (f"{message}; it was not sent again (it was made: a new task would be paid "
                f"again): rerun with the same journal to follow it, or ask `vidu-async status "
                f"{task}`"), False
    if status == "failed" and outcome.state == "success":
        return f"the video was made but not saved ({message}): rerun to download it", False
    if status == "failed" and outcome.err_code in CANCELLED_CODES:
        return (f"task {task} was cancelled before it started: to make it after all, "
                "submit it again in a new batch (--errors)"), True
    if status == "failed" and retryable(outcome.to_dict()):
        if retry_failed:
            return (f"task {task} failed on Vidu ({reason}), and was this run's retry of the "
                    "job (one a run): rerun with --retry-failed to send it once more as a new "
                    "task (billed again)"), True
        return (f"task {task} failed on Vidu ({reason}): rerun with --retry-failed "
                "to make a new task (billed again)"), True
    if status == "not_submitted":
        return f"not sent ({message}): rerun once that is fixed to send it", True
    if status == "ambiguous":
        return ("its create may have made a task; nothing was sent again: rerun with the same "
                "journal to look it up"), False
    return message, False


def render(failures: Sequence[Failure], *, shown: int = SHOWN,
           errors: Path | None = None) -> list[str]:
    """The end-of-run list for people: the first ``shown`` failures, then how many more."""
    if not failures:
        return []
    count = len(failures)
    lines = [f"{count} job{'s' if count != 1 else ''} did not succeed:"]
    for failure in failures[:shown]:
        where = "" if failure.line is None else f" (line {failure.line})"
        lines.append(f"  {shown_id(failure.custom_id)}{where}: {failure.status}: "
                     f"{failure.advice}")
    if count > shown:
        see = f"see {errors}" if errors else "--errors PATH writes them all as a jobs file"
        lines.append(f"  and {count - shown} more: {see}")
    return lines


def shown_id(custom_id: str | None) -> str:
    """A ``custom_id`` for people: quoted when it is blank or has spaces around it, which
    would not show on a line; ``(id not read)`` for a line whose id could not be read."""
    if custom_id is None:
        return "(id not read)"
    return repr(custom_id) if not custom_id.strip() or custom_id != custom_id.strip() else custom_id


@attrs.frozen
class ErrorsFile:
    """What ``write_errors_file`` wrote: how many jobs, and the failures left out and why."""

    written: int
    left_out: tuple[tuple[Failure, str], ...]


def write_errors_file(
    out: Path,
    jobs: Path,
    failures: Iterable[Failure],
    *,
    defaults: Mapping[str, Any],
    fmt: JobFormat | None = None,
    base_dir: Path | None = None,
) -> ErrorsFile:
    """Write the failures that may be sent again as a JSONL jobs file ``out`` (replaced whole),
    one line each in the order of ``jobs``, read once more for their fields. Raises
    ``OSError``."""
    wanted: dict[int, Failure] = {}
    left_out: list[tuple[Failure, str]] = []
    for failure in failures:
        if failure.resubmit and failure.line is not None:
            wanted[failure.line] = failure
        else:
            left_out.append((failure, "sending it again may pay twice"))
    folder = base_dir or jobs.parent
    fill = {k: v for k, v in defaults.items() if k != "strict"}
    written = 0
    with replaced_whole(out) as handle:  # whole or not at all: it is submitted as is
        for number, fields in line_fields(jobs, wanted, fmt):
            failure = wanted[number]
            if isinstance(fields, FieldProblem):
                left_out.append((failure, f"line {number}: {fields.message}; fix it and rerun"))
                continue
            record = {"custom_id": failure.custom_id,
                      **_absolute_media(with_defaults(fields, fill), folder)}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            written += 1
    return ErrorsFile(written, tuple(left_out))


def _absolute_media(fields: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """The fields with relative local media paths made absolute (against the jobs file's
    folder): the errors file may live elsewhere."""
    found = dict(fields)
    for key in _MEDIA_FIELDS:
        if isinstance(found.get(key), list):
            found[key] = [_absolute(item, folder) for item in found[key]]
    if isinstance(found.get("subjects"), list):
        found["subjects"] = [_absolute_media(s, folder) if isinstance(s, Mapping) else s
                             for s in found["subjects"]]
    return found


def _absolute(item: Any, folder: Path) -> Any:
    if not (isinstance(item, str) and is_local(item)):
        return item
    path = Path(item).expanduser()
    return str(path if path.is_absolute() else (folder / path).resolve())


def _short(text: str) -> str:
    return text if len(text) <= _MESSAGE_CHARS else text[:_MESSAGE_CHARS] + "..."
