"""What to do with a job, given what the journal knows of it: the first decision of its life.

Pure: ``plan()`` takes plain data and returns one action. The order of the rules is the point:

1. nothing recorded: ``Create`` it (under the key derived for it);
2. recorded for a different request (the line was edited but kept its ``custom_id``):
   ``Refuse``: replaying the old result, or following the old task, would hand this job
   someone else's video, and sending the new request silently would pay for it under an id
   whose old task still exists;
3. its end was recorded: ``Replay`` it (no request at all);
4. its task, or a create whose answer was lost, is on an account that is not given now:
   ``Refuse`` by name; never move it to another account (that would pay again);
5. its task is known: ``Follow`` it;
6. a create may have been sent and its answer never recorded: ``Reconcile`` (look the key up;
   absent is proven by the server's clock, never guessed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from vidu_async.journal import JobRecord
from vidu_async.outcome import ErrorInfo

__all__ = ["Action", "Create", "Follow", "JobFacts", "Reconcile", "Refuse", "Replay", "plan"]


@attrs.frozen
class JobFacts:
    """What this run knows of a job before any request: who it is and what it asks."""

    job_id: str
    fingerprint: str
    key: str
    """The correlation key derived for its first task (``identity.job_key``)."""


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


Action = Create | Replay | Follow | Reconcile | Refuse


def plan(facts: JobFacts, record: JobRecord | None, accounts: frozenset[str]) -> Action:
    """The job's first step; see the module docstring for the rules, in order."""
    if record is None or (record.correlation_key is None and record.final is None):
        return Create(facts.key)
    if record.fingerprint is not None and record.fingerprint != facts.fingerprint:
        return Refuse(ErrorInfo(
            "RequestChanged",
            f"{facts.job_id!r} was sent earlier with a different request; its old task "
            f"{'(' + record.task_id + ') ' if record.task_id else ''}is not this line's. Give "
            "the changed line a new custom_id, or restore the line as it was",
        ))
    if record.final is not None:
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
