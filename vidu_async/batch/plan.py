"""What to do with a job, given what the journal knows of it: the first decision of its life.

Pure: ``plan()`` takes plain data and returns one action. The order of the rules is the point:

1. nothing recorded: ``Create`` it (under the key derived for it);
2. recorded for a different request (the line was edited but kept its ``custom_id``):
   ``Refuse``: replaying the old result, or following the old task, would hand this job
   someone else's video, and sending the new request silently would pay for it under an id
   whose old task still exists;
3. its task failed on Vidu and failed tasks are to be retried (``submit --retry-failed``):
   ``RetryFailed`` it, a new task on purpose under the next attempt's key (``retryable`` says
   which ends count: a task that failed, not one cancelled, nor a job never sent);
4. its end was recorded: ``Replay`` it (no request at all); but a success whose video is not
   in this run's download folder (``unsaved``: never downloaded, another folder, the file
   deleted) is fetched: ``Follow`` its task for fresh links and download it, never a create
   (on an account not given now it is replayed as made but not saved, named);
5. its task, or a create whose answer was lost, is on an account that is not given now:
   ``Refuse`` by name; never move it to another account (that would pay again);
6. its task is known: ``Follow`` it;
7. a create may have been sent and its answer never recorded: ``Reconcile`` (look the key up;
   absent is proven by the server's clock, never guessed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from vidu_async.journal import JobRecord
from vidu_async.media import MediaSource
from vidu_async.outcome import ErrorInfo

__all__ = [
    "CANCELLED_CODES",
    "Action",
    "Create",
    "Follow",
    "JobFacts",
    "Reconcile",
    "Refuse",
    "Replay",
    "RetryFailed",
    "other_batch",
    "plan",
    "retryable",
]

CANCELLED_CODES = frozenset({"UserCancelled", "TaskCanceled"})
"""A cancelled task's ``err_code`` (Vidu's, the simulator's): stopped on purpose, not failed."""


@attrs.frozen
class JobFacts:
    """What this run knows of a job before any request: who it is and what it asks."""

    job_id: str
    fingerprint: str
    key: str
    """The correlation key derived for its first task (``identity.job_key``)."""
    digests: Mapping[MediaSource, str] = attrs.field(factory=dict, eq=False, repr=False)
    """The digest of each local media entry, as the fingerprint took it (uploads reuse it)."""


@attrs.frozen
class Create:
    key: str


@attrs.frozen
class Replay:
    result: Mapping[str, Any]


@attrs.frozen
class Follow:
    task_id: str
    account: str
    credits: int | None


@attrs.frozen
class Reconcile:
    key: str
    account: str
    server_at: float | None
    """When the intent was journalled, on the server's clock (epoch seconds; None if unknown)."""


@attrs.frozen
class Refuse:
    error: ErrorInfo


@attrs.frozen
class RetryFailed:
    """Journal the retry of ``task_id``, then create under the key of ``attempt``."""

    task_id: str
    attempt: int


Action = Create | Replay | Follow | Reconcile | Refuse | RetryFailed


def retryable(result: Mapping[str, Any]) -> bool:
    """Whether a job's recorded end is a task that failed on Vidu (a results record): not a
    video that failed to download, not a cancelled task, not a job that was never sent."""
    return (result.get("status") == "failed" and result.get("state") == "failed"
            and isinstance(result.get("task_id"), str)
            and result.get("err_code") not in CANCELLED_CODES)


def other_batch(journal_batch: str | None, given: str | None) -> str | None:
    """The journal's batch when this run names another (``plan``'s ``other_batch``)."""
    return journal_batch if journal_batch and given and journal_batch != given else None


def plan(
    facts: JobFacts, record: JobRecord | None, accounts: frozenset[str],
    *, retry_failed: bool = False, unsaved: bool = False, other_batch: str | None = None,
) -> Action:
    """The job's first step; see the module docstring for the rules, in order. ``unsaved``:
    videos are downloaded in this run and the recorded end's files are not all in the folder.
    ``other_batch``: the batch the journal belongs to, when it is not the one this run names
    (a renamed jobs file, or another file's journal: said when a line does not match)."""
    if record is None or (record.correlation_key is None and record.final is None):
        return Create(facts.key)
    if record.fingerprint is not None and record.fingerprint != facts.fingerprint:
        other = (f" (the journal is batch {other_batch!r}'s: if that is another jobs file, "
                 "give this one its own journal with --journal)" if other_batch else "")
        return Refuse(ErrorInfo(
            "RequestChanged",
            f"{facts.job_id!r} was sent earlier with a different request; its old task "
            f"{'(' + record.task_id + ') ' if record.task_id else ''}is not this line's. Give "
            f"the changed line a new custom_id, or restore the line as it was{other}",
        ))
    if record.final is not None:
        if retry_failed and retryable(record.final):
            return RetryFailed(str(record.final["task_id"]), record.attempts + 1)
        if unsaved and record.final.get("status") == "succeeded":
            return _fetch(facts, record.final, record.account or "", accounts)
        return Replay(record.final)
    account = record.account or ""
    if account not in accounts:
        return Refuse(ErrorInfo(
            "AccountNotGiven",
            f"{facts.job_id!r} was sent on account {account or '(unknown)'}, whose key is not "
            "among the keys given now; give that key again to resume this job (it is never "
            "moved to another account: that would pay twice)",
        ))
    if record.task_id is not None:
        return Follow(record.task_id, account, record.credits)
    assert record.correlation_key is not None  # an intent without its task
    return Reconcile(record.correlation_key, account, record.server_at)


def _fetch(facts: JobFacts, final: Mapping[str, Any], account: str, accounts: frozenset[str]
           ) -> Follow | Replay:
    """A recorded success whose video this run's folder lacks: its task followed again (a
    query gives fresh links), or, on an account not given now, replayed as not saved."""
    task_id = final.get("task_id")
    if account in accounts and isinstance(task_id, str):
        return Follow(task_id, account, final.get("credits"))
    error = ErrorInfo(
        "AccountNotGiven",
        f"{facts.job_id!r} was made on account {account or '(unknown)'}, whose key is not "
        "among the keys given now; give that key again to download its video",
    )
    return Replay({**final, "status": "failed", "error": error.to_dict()})
