"""A batch seen through its journal: where each job is, what to ask the API, what to report.

Pure functions over what ``journal.read_journal`` found and the tasks read back from the API;
``vidu-async batch`` (``cli/batch.py``) does the I/O around them. A job the journal never saw
(a line no run reached) is not part of the view: the journal knows jobs, not the jobs file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from vidu_async.journal import JobRecord
from vidu_async.outcome import ErrorInfo, Outcome
from vidu_async.tasks import TaskResult

__all__ = [
    "JobView",
    "counts",
    "result_records",
    "to_read",
    "view",
]

UNCONFIRMED = "unconfirmed"
"""A create may have been sent but its answer was never recorded: a rerun of ``submit`` looks
for its task before sending again."""
NOT_SUBMITTED = "not_submitted"
UNKNOWN = "unknown"


@attrs.frozen
class JobView:
    """One job of the batch: its task, and its state (a task state while it runs, the job's
    end status once it ended, ``unconfirmed``, ``not_submitted``, or ``unknown`` when the task
    could not be read)."""

    custom_id: str
    state: str
    task_id: str | None = None
    account: str | None = None
    credits: int | None = None
    line: int | None = None
    final: Mapping[str, Any] | None = None
    running: bool = False
    """Its task was read and has not ended."""

    def to_dict(self) -> dict[str, Any]:
        return {"custom_id": self.custom_id, "state": self.state, "task_id": self.task_id,
                "credits": self.credits, "line": self.line}


def to_read(records: Iterable[JobRecord]) -> list[JobRecord]:
    """The jobs whose task must be asked about: a task exists and its end is not recorded."""
    return [r for r in records if r.task_id is not None and r.final is None]


def view(record: JobRecord, read: Mapping[str, TaskResult]) -> JobView:
    """Where ``record``'s job is, given the tasks ``read`` back from the API (by task id)."""
    if record.final is not None:
        final = record.final
        return JobView(record.job_id, str(final.get("status")), record.task_id, record.account,
                       record.credits, final.get("line"), final)
    if record.task_id is None:
        state = UNCONFIRMED if record.needs_reconcile else NOT_SUBMITTED
        return JobView(record.job_id, state, account=record.account)
    task = read.get(record.task_id)
    if task is None or not task.state:
        return JobView(record.job_id, UNKNOWN, record.task_id, record.account, record.credits)
    credits = record.credits if task.credits is None else task.credits
    return JobView(record.job_id, _job_state(task), record.task_id, record.account, credits,
                   running=not task.is_terminal)


def _job_state(task: TaskResult) -> str:
    """A task's state as the view counts it: its end as the job's status, else its state."""
    if task.is_terminal:
        return "succeeded" if task.succeeded else "failed"
    return str(task.state)


def counts(jobs: Iterable[JobView]) -> dict[str, int]:
    """How many jobs are in each state, most first."""
    return dict(Counter(job.state for job in jobs).most_common())


def result_records(jobs: Iterable[JobView]) -> list[dict[str, Any]]:
    """The results file the journal implies: each ended job's recorded result; a job whose task
    runs (or whose end was not recorded) as ``submitted``; an unconfirmed create as
    ``ambiguous``; a job whose task was cancelled unpaid as ``not_submitted``."""
    records = []
    for job in jobs:
        if job.final is not None:
            records.append(Outcome.from_dict(job.final).to_dict())
        elif job.task_id is not None:
            records.append(Outcome(job.custom_id, "submitted", task_id=job.task_id,
                                   credits=job.credits).to_dict())
        elif job.state == UNCONFIRMED:
            error = ErrorInfo("Unconfirmed", "a create may have been sent; rerun submit with "
                              "this journal: it looks for the task before sending again")
            records.append(Outcome(job.custom_id, "ambiguous", error=error).to_dict())
        else:
            error = ErrorInfo("NotSubmitted", "its task was cancelled before it started and "
                              "cost nothing; rerun submit to send it again")
            records.append(Outcome(job.custom_id, "not_submitted", error=error).to_dict())
    return records
