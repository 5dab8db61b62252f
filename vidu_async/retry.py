"""When to retry a failed call and how long to wait: plain decisions, plus the tenacity glue.

Everything that decides is a pure function over plain data (an exception, an attempt number,
headers, the time), so it is tested without sockets. ``retrying()`` turns a ``RetryPolicy`` into
a tenacity ``AsyncRetrying`` for one call; ``retried()`` makes a call through it, building it only
once the first attempt has failed (a call that succeeds at once pays nothing for tenacity).

The rules, by kind of call:

- a query (GET) is retried on connection errors, timeouts, 429, 5xx and ``OperationInProcess``;
- a create is *resent* only when the server cannot have created a task: 429,
  ``OperationInProcess``, or a failure before the request left this machine. Any other lost answer
  (read timeout, reset after sending, 5xx, an unreadable answer, 409 ``Conflict``: "this already
  exists") is ``Verdict.LOOKUP``: the client must find out whether the task exists before
  anything else (see ``reconcile``);
- a cancel is resent only when it cannot have reached the server (a cancel that did reach it and
  is sent again fails with a confusing ``BadRequest``): the caller can query the task instead;
- 401, 403, 400 (``CreditInsufficient`` included) and 404 are never retried.

Waits: a ``Retry-After`` (seconds or HTTP date) or ``retry-after-ms`` header is honoured up to
``retry_after_cap``; a longer demand is raised to the caller rather than slept. Otherwise
exponential backoff with full jitter. A call stops after ``max_attempts`` or when the next wait
would overrun its time ``budget``. ``RetryPolicy(sleep=no_wait)`` makes every wait instant
(tests).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import TypeVar

import attrs
from tenacity import AsyncRetrying, RetryCallState

from vidu_async.errors import (
    APIConnectionError,
    APIStatusError,
    RateLimitError,
    ResponseFormatError,
    RetryLaterError,
    ServerError,
)
from vidu_async.loglimit import LogLimiter

T = TypeVar("T")

__all__ = [
    "CallKind",
    "RetryPolicy",
    "Verdict",
    "backoff_wait",
    "decide",
    "no_wait",
    "parse_retry_after",
    "poll_wait",
    "requested_wait",
    "retrying",
    "stop_reason",
    "wait_before_retry",
]

logger = logging.getLogger("vidu_async.retry")

CONFLICT = 409
"""``Conflict`` ("resource key conflict"): on a create it may mean the task already exists."""


class CallKind(enum.StrEnum):
    """What a call does to the server, which decides what may be repeated."""

    QUERY = "query"
    """Reads only (GET): repeating it is harmless."""
    CREATE = "create"
    """Starts a billed task: repeating it may pay twice."""
    CANCEL = "cancel"
    """Changes a task once: repeating it after it took effect gives a misleading error."""


class Verdict(enum.StrEnum):
    """What to do about one failed attempt."""

    RETRY = "retry"
    """Send the call again (after a wait)."""
    LOOKUP = "lookup"
    """A create whose outcome is unknown: find the task by its correlation key first."""
    RAISE = "raise"
    """Give the error to the caller."""


def decide(error: BaseException, kind: CallKind) -> Verdict:
    """The verdict for ``error`` raised by a call of ``kind`` (see the module docstring)."""
    if isinstance(error, RateLimitError | RetryLaterError):
        return Verdict.RETRY
    if isinstance(error, APIConnectionError) and not error.sent:
        return Verdict.RETRY
    ambiguous = isinstance(error, ServerError | APIConnectionError)
    if kind is CallKind.QUERY:
        return Verdict.RETRY if ambiguous else Verdict.RAISE
    conflict = isinstance(error, APIStatusError) and error.status == CONFLICT
    if kind is CallKind.CREATE and (
        ambiguous or conflict or isinstance(error, ResponseFormatError)
    ):
        return Verdict.LOOKUP
    return Verdict.RAISE


def parse_retry_after(headers: Mapping[str, str], now: dt.datetime) -> float | None:
    """Seconds the server asks us to wait, from ``retry-after-ms`` or ``Retry-After``; else None.

    ``Retry-After`` may be a number of seconds or an HTTP date (relative to the aware ``now``;
    a date in the past means 0). Header names are matched case-insensitively; unreadable or
    negative values are ignored.
    """
    lowered = {name.lower(): value.strip() for name, value in headers.items()}
    millis = _non_negative(lowered.get("retry-after-ms", ""))
    if millis is not None:
        return millis / 1000
    value = lowered.get("retry-after", "")
    seconds = _non_negative(value)
    if seconds is not None or not value:
        return seconds
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())


def _non_negative(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def requested_wait(error: BaseException, now: dt.datetime) -> float | None:
    """The wait an API error answer asked for (``Retry-After``), if any."""
    if isinstance(error, APIStatusError):
        return parse_retry_after(error.headers, now)
    return None


@attrs.frozen
class RetryPolicy:
    """How hard one call tries: attempts, waits, the time budget, and the clock to measure them.

    ``initial_wait`` and ``max_wait`` bound the exponential backoff (full jitter: a uniformly
    random wait up to ``min(max_wait, initial_wait * 2 ** (attempt - 1))``). ``budget`` is the
    total time in seconds one call may take, waits included. ``visibility_lag`` is the longest
    a created task may take to appear in the task list (seconds), counted from when the client
    stopped sending its create (answered, timed out or cancelled), so it covers the server
    still processing a request the client gave up on as well as the list's own lag: a lost
    create counts as proven absent only by a list scan that started that long after it could
    last have committed.
    ``sleep``, ``clock`` and ``random`` are injectable so tests control time.
    """

    max_attempts: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    budget: float = attrs.field(default=300.0, validator=attrs.validators.gt(0))
    initial_wait: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))
    max_wait: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))
    retry_after_cap: float = attrs.field(default=120.0, validator=attrs.validators.ge(0))
    visibility_lag: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))
    sleep: Callable[[float], Awaitable[None]] = attrs.field(default=asyncio.sleep, eq=False)
    clock: Callable[[], float] = attrs.field(default=time.monotonic, eq=False)
    random: Callable[[], float] = attrs.field(default=random.random, eq=False)


async def no_wait(seconds: float) -> None:
    """A ``sleep`` that only yields to the event loop: ``RetryPolicy(sleep=no_wait)`` in tests."""
    await asyncio.sleep(0)


def backoff_wait(attempt: int, policy: RetryPolicy) -> float:
    """Exponential backoff with full jitter: the wait after failed attempt ``attempt`` (1-based)."""
    ceiling = min(policy.max_wait, policy.initial_wait * 2.0 ** min(attempt - 1, 30))
    return policy.random() * ceiling


def poll_wait(attempt: int, first: float, cap: float, policy: RetryPolicy) -> float:
    """The pause after status poll ``attempt`` (1-based) of a task: growing by half each time
    from ``first`` to ``cap``, then jittered down by up to half so many waiters spread out."""
    interval = min(cap, first * 1.5 ** min(attempt - 1, 60))
    return interval * (0.5 + policy.random() / 2)


def wait_before_retry(
    error: BaseException, attempt: int, policy: RetryPolicy, now: dt.datetime
) -> float:
    """How long to wait before the next attempt: the server's ``Retry-After`` if any, else backoff.

    The server's demand is returned uncapped; ``stop_reason`` refuses one above the cap.
    """
    requested = requested_wait(error, now)
    return backoff_wait(attempt, policy) if requested is None else requested


def stop_reason(attempt: int, elapsed: float, wait: float, policy: RetryPolicy) -> str | None:
    """Why not to retry after attempt ``attempt`` (1-based), or None to go ahead and wait ``wait``.

    ``elapsed`` is the time the call has taken so far, in seconds.
    """
    if attempt >= policy.max_attempts:
        return f"{attempt} attempts made (max_attempts={policy.max_attempts})"
    if wait > policy.retry_after_cap:
        return f"the server asks to wait {wait:.0f}s, over the {policy.retry_after_cap:g}s cap"
    if elapsed + wait > policy.budget:
        return f"waiting {wait:.1f}s more would overrun the {policy.budget:g}s budget"
    return None


def _describe(error: BaseException | None) -> str:
    if isinstance(error, APIStatusError):
        return f"HTTP {error.status} {error.reason}"
    return f"{type(error).__name__}: {error}"


def retrying(
    policy: RetryPolicy,
    kind: CallKind,
    call: str,
    *,
    retry_rate_limits: bool = True,
    no_answer: LogLimiter | None = None,
    started: float | None = None,
) -> AsyncRetrying:
    """A tenacity retrier for one call (``call`` names it in logs, e.g. ``GET /ent/v2/credits``).

    Errors it gives up on are re-raised as they are. For a create, an error with
    ``Verdict.LOOKUP`` reaching the retrier means the lookup proved the task absent, so it may be
    resent like a ``Verdict.RETRY`` one. ``retry_rate_limits=False`` raises a 429 at once, for
    callers that pace themselves (the batch submitter's shared throttle). With ``no_answer``, a
    call that got no answer at all is logged as a warning (what is slow, and why) as often as
    that limiter allows; other retries are logged at INFO. ``started`` (the policy's clock) is
    when the call's first attempt began, for its time budget; default now.
    """
    if started is None:
        started = policy.clock()

    def should_retry(state: RetryCallState) -> bool:
        error = state.outcome.exception() if state.outcome else None
        if error is None or (isinstance(error, RateLimitError) and not retry_rate_limits):
            return False
        return decide(error, kind) is not Verdict.RAISE

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        assert error is not None  # only called after should_retry said yes
        pause = wait_before_retry(error, state.attempt_number, policy, dt.datetime.now(dt.UTC))
        if kind is CallKind.CREATE and decide(error, kind) is Verdict.LOOKUP:
            # Proven absent: proving it took visibility_lag since the failure, a wait already.
            pause = max(0.0, pause - policy.visibility_lag)
        return pause

    def stop(state: RetryCallState) -> bool:
        elapsed = policy.clock() - started
        reason = stop_reason(state.attempt_number, elapsed, state.upcoming_sleep, policy)
        if reason is not None:
            logger.info("%s: not retrying: %s", call, reason)
        return reason is not None

    def log_retry(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        level, more = logging.INFO, ""
        if no_answer is not None and isinstance(error, APIConnectionError):
            held = no_answer.allow(f"{kind}:{type(error).__name__}")
            if held is not None:
                level = logging.WARNING
                more = f" ({held} more like it since the last such line)" if held else ""
        logger.log(
            level,
            "%s failed (%s); retrying in %.2fs (attempt %d of %d)%s",
            call,
            _describe(error),
            state.upcoming_sleep,
            state.attempt_number + 1,
            policy.max_attempts,
            more,
        )

    return AsyncRetrying(
        sleep=policy.sleep,
        retry=should_retry,
        wait=wait,
        stop=stop,
        before_sleep=log_retry,
        reraise=True,
    )


async def retried(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    kind: CallKind,
    call: str,
    *,
    retry_rate_limits: bool = True,
    no_answer: LogLimiter | None = None,
) -> T:
    """``attempt()`` retried as ``retrying()`` says, the retrier built only if the first attempt
    fails: the first failure is handed to it as attempt 1's outcome, so waits, stops and logs
    are exactly those of ``retrying(...)(attempt)``, and a success costs one plain await."""
    started = policy.clock()
    try:
        return await attempt()
    except Exception as error:
        first: Exception | None = error

    async def again() -> T:
        nonlocal first
        if first is not None:
            error, first = first, None
            raise error
        return await attempt()

    retrier = retrying(policy, kind, call, retry_rate_limits=retry_rate_limits,
                       no_answer=no_answer, started=started)
    result: T = await retrier(again)
    return result
