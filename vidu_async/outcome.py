"""What became of one job: the record a batch yields, writes to the results file and journals.

One JSON object per job, matched back to the input by ``custom_id`` (the OpenAI Batch habit;
``null``, with the ``line``, for a line whose id could not be read).
``status`` is the job's end for this run: ``succeeded`` / ``failed`` (the task ended), ``submitted``
(created, not followed), ``invalid`` (refused before sending), ``not_submitted`` (never sent,
e.g. credits ran out; a rerun sends it), ``ambiguous`` (a create may have made a task and it
could not be proven either way: nothing was resent; a rerun looks again). A ``failed`` job
whose error is ``TaskNotFound`` had a task that answered 404 for a long time: given up in this
run, never sent again (its task exists; a rerun follows it). One more record
kind follows the jobs' own when something went wrong that should never happen: ``duplicate``
names an extra task found under a job's correlation key (cancelled if it had not started).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import attrs

from vidu_async.errors import APIStatusError, FieldProblem, ValidationError
from vidu_async.tasks import TaskResult

__all__ = ["STATUSES", "TASK_NOT_FOUND", "ErrorInfo", "Outcome", "Status"]

Status = Literal[
    "succeeded", "failed", "submitted", "invalid", "not_submitted", "ambiguous", "duplicate"
]
STATUSES: tuple[Status, ...] = (
    "succeeded", "failed", "submitted", "invalid", "not_submitted", "ambiguous", "duplicate"
)
TASK_NOT_FOUND = "TaskNotFound"
"""The ``reason`` of a ``failed`` job whose task (made by the batch) answered 404 to every read
for a long time: given up in this run, not ended on Vidu; never sent again (it may exist)."""


@attrs.frozen
class ErrorInfo:
    """Why a job did not succeed: a Vidu ``reason`` (or one of ours) and a message for people."""

    reason: str
    message: str

    @classmethod
    def from_exception(cls, error: BaseException) -> ErrorInfo:
        if isinstance(error, APIStatusError):
            return cls(error.reason or f"HTTP{error.status}", error.message or str(error))
        if isinstance(error, ValidationError):
            return cls("ValidationError", "; ".join(str(p) for p in error.problems))
        return cls(type(error).__name__, str(error))

    @classmethod
    def from_problems(cls, problems: tuple[FieldProblem, ...]) -> ErrorInfo:
        return cls("ValidationError", "; ".join(str(p) for p in problems))

    def to_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message}


def _error(value: Any) -> ErrorInfo | None:
    if isinstance(value, Mapping):
        return ErrorInfo(str(value.get("reason", "")), str(value.get("message", "")))
    return None


@attrs.frozen
class Outcome:
    """The end of one job in this run (see the module docstring for ``status``)."""

    custom_id: str | None
    """None for a line whose id could not be read (not JSON, not CSV): its ``line`` names it.
    A stand-in id could be another line's real one."""
    status: Status
    line: int | None = None
    task_id: str | None = None
    state: str | None = None
    credits: int | None = None
    err_code: str | None = None
    error: ErrorInfo | None = None
    creations: tuple[dict[str, str], ...] = ()
    """Each creation's ``id``, ``url``, ``cover_url`` (and ``watermarked_url`` when present)."""
    files: tuple[str, ...] = ()
    kind: str | None = None
    """The job's endpoint as jobs files name it (``text2video``...; the subject form is
    ``reference2video``); None where unknown (an invalid line naming none, a ``duplicate``)."""

    @property
    def ok(self) -> bool:
        return self.status in ("succeeded", "submitted")

    @classmethod
    def from_result(
        cls,
        custom_id: str,
        line: int | None,
        result: TaskResult,
        *,
        files: tuple[str, ...] = (),
        error: ErrorInfo | None = None,
    ) -> Outcome:
        """The outcome of a task that reached an end state."""
        creations = tuple(
            {k: v for k, v in (("id", c.id), ("url", c.url), ("cover_url", c.cover_url),
                               ("watermarked_url", c.watermarked_url)) if v}
            for c in result.creations
        )
        failed = not result.succeeded
        return cls(
            custom_id,
            "failed" if failed or error is not None else "succeeded",
            line,
            task_id=result.id,
            state=str(result.state),
            credits=result.credits,
            err_code=result.err_code or None,
            error=error or (ErrorInfo(result.err_code or "TaskFailed", "the task failed")
                            if failed else None),
            creations=creations,
            files=files,
        )

    def to_dict(self) -> dict[str, Any]:
        """The results-file record: every key present, ``None`` where there is no value."""
        return {
            "custom_id": self.custom_id,
            "line": self.line,
            "status": self.status,
            "task_id": self.task_id,
            "state": self.state,
            "credits": self.credits,
            "err_code": self.err_code,
            "error": self.error.to_dict() if self.error else None,
            "creations": [dict(c) for c in self.creations],
            "files": list(self.files),
            "type": self.kind,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Outcome:
        """Read back a record written by ``to_dict`` (from the journal; a record written
        before results named the endpoint reads with ``kind`` None)."""
        status = data.get("status")
        if status not in STATUSES:
            raise ValueError(f"not an outcome record: status {status!r}")
        custom_id = data.get("custom_id")
        return cls(
            None if custom_id is None else str(custom_id),
            status,
            data.get("line"),
            task_id=data.get("task_id"),
            state=data.get("state"),
            credits=data.get("credits"),
            err_code=data.get("err_code"),
            error=_error(data.get("error")),
            creations=tuple(dict(c) for c in data.get("creations") or ()),
            files=tuple(data.get("files") or ()),
            kind=data.get("type"),
        )
