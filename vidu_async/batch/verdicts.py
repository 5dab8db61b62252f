"""What a create's error means, for the job and for the whole batch.

Pure: ``verdict()`` maps the exception a create raised (after the client's own retries and
reconciliation) to one of:

- ``Retry``: nothing was created; send it again after the pacing says so. ``throttle``: the
  429 may be a rate limit (the shared pacing hears of it); ``quota``: the account's concurrency
  is full (wait for one of our tasks to finish). ``retry_after`` is the server's demand.
- ``AccountDown``: this account can take no more creates (out of credits, key rejected, not
  reachable after every retry); the job tries another account, and the batch stops when none
  is left.
- ``Halt``: no create can go anywhere for now (the server asks for a wait longer than we accept).
- ``End``: the job's end in this run, with its status.
"""

from __future__ import annotations

import attrs

from vidu_async.errors import (
    AmbiguousCreateError,
    APIConnectionError,
    AuthenticationError,
    InsufficientCreditsError,
    InvalidRequestError,
    ModerationError,
    RateLimitError,
    ValidationError,
)
from vidu_async.outcome import ErrorInfo, Status

__all__ = ["AccountDown", "End", "Halt", "Retry", "Verdict", "verdict"]


@attrs.frozen
class Retry:
    pace: str
    """``throttle`` or ``quota``."""
    retry_after: float | None = None


@attrs.frozen
class AccountDown:
    error: ErrorInfo


@attrs.frozen
class Halt:
    error: ErrorInfo


@attrs.frozen
class End:
    status: Status
    error: ErrorInfo


Verdict = Retry | AccountDown | Halt | End


def verdict(error: BaseException, *, retry_after_cap: float) -> Verdict:
    """What ``error`` (raised by a create) means; see the module docstring."""
    info = ErrorInfo.from_exception(error)
    if isinstance(error, RateLimitError):
        wait = error.retry_after
        if wait is not None and wait > retry_after_cap:
            return Halt(ErrorInfo(
                "RetryAfterTooLong",
                f"the server asked to wait {_duration(wait)} before the next create "
                f"({info.reason}), more than the {retry_after_cap:g} s this batch accepts; "
                "rerun later",
            ))
        return Retry("quota" if error.reason == "QuotaExceeded" else "throttle", wait)
    if isinstance(error, AuthenticationError | InsufficientCreditsError):
        return AccountDown(info)
    if isinstance(error, APIConnectionError) and not error.sent:
        # Retried already and never once connected: this account cannot be reached now.
        return AccountDown(ErrorInfo("Unreachable", str(error)))
    if isinstance(error, ValidationError):
        return End("invalid", info)
    if isinstance(error, InvalidRequestError | ModerationError):
        return End("failed", info)
    if isinstance(error, AmbiguousCreateError):
        return End("ambiguous", ErrorInfo(
            "AmbiguousCreate",
            f"{error} Nothing was resent. Rerun with the same journal to look it up again "
            f"(correlation key {error.correlation_key})",
        ))
    # The client looks up every lost answer and raises AmbiguousCreateError when it cannot
    # prove absence; any other error after its retries means no task was created.
    return End("not_submitted", info)


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:g} s"
