"""The retry decisions (pure functions) and the tenacity glue, without sockets."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from email.utils import format_datetime

import pytest

from vidu_async.errors import (
    AmbiguousCreateError,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    InsufficientCreditsError,
    InvalidRequestError,
    NotFoundError,
    RateLimitError,
    ResponseFormatError,
    RetryLaterError,
    ServerError,
)
from vidu_async.loglimit import LogLimiter
from vidu_async.retry import (
    CallKind,
    RetryPolicy,
    Verdict,
    backoff_wait,
    decide,
    parse_retry_after,
    poll_wait,
    retried,
    retrying,
    stop_reason,
    wait_before_retry,
)
from vidu_async.testing import ManualClock

NOW = dt.datetime(2026, 1, 20, 6, 0, 0, tzinfo=dt.UTC)
QUERY, CREATE, CANCEL = CallKind.QUERY, CallKind.CREATE, CallKind.CANCEL
RETRY, LOOKUP, RAISE = Verdict.RETRY, Verdict.LOOKUP, Verdict.RAISE


def status(cls: type[APIStatusError], code: int, reason: str, **headers: str) -> APIStatusError:
    return cls(status=code, reason=reason, message="", headers=headers)


RATE = status(RateLimitError, 429, "TooManyRequests")
BUSY = status(RetryLaterError, 400, "OperationInProcess")
SERVER = status(ServerError, 500, "InternalServiceFailure")
REFUSED = APIConnectionError("refused", call="POST /x", sent=False)
CONNECT_TIMEOUT = APITimeoutError("connect timeout", call="POST /x", sent=False)
RESET = APIConnectionError("reset", call="POST /x", sent=True)
READ_TIMEOUT = APITimeoutError("read timeout", call="POST /x", sent=True)
UNREADABLE = ResponseFormatError("not JSON", field="(body)")


@pytest.mark.parametrize(
    ("error", "query", "create", "cancel"),
    [
        (RATE, RETRY, RETRY, RETRY),
        (BUSY, RETRY, RETRY, RETRY),
        (REFUSED, RETRY, RETRY, RETRY),
        (CONNECT_TIMEOUT, RETRY, RETRY, RETRY),
        (SERVER, RETRY, LOOKUP, RAISE),
        (RESET, RETRY, LOOKUP, RAISE),
        (READ_TIMEOUT, RETRY, LOOKUP, RAISE),
        (UNREADABLE, RAISE, LOOKUP, RAISE),
        (status(AuthenticationError, 401, "Unauthorized"), RAISE, RAISE, RAISE),
        (status(AuthenticationError, 403, "Forbidden"), RAISE, RAISE, RAISE),
        (status(InvalidRequestError, 400, "FieldInvalid"), RAISE, RAISE, RAISE),
        (status(InsufficientCreditsError, 400, "CreditInsufficient"), RAISE, RAISE, RAISE),
        (status(NotFoundError, 404, "TaskNotFound"), RAISE, RAISE, RAISE),
        (status(InvalidRequestError, 409, "Conflict"), RAISE, LOOKUP, RAISE),
        (status(APIStatusError, 302, "Redirect"), RAISE, RAISE, RAISE),
        (AmbiguousCreateError("x", correlation_key="k", cause=None), RAISE, RAISE, RAISE),
        (ValueError("a bug"), RAISE, RAISE, RAISE),
    ],
)
def test_decide(error: BaseException, query: Verdict, create: Verdict, cancel: Verdict) -> None:
    assert (decide(error, QUERY), decide(error, CREATE), decide(error, CANCEL)) == (
        query,
        create,
        cancel,
    )


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"RETRY-AFTER": " 7 "}, 7.0),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),
        ({"retry-after-ms": "soon", "Retry-After": "9"}, 9.0),
        ({"Retry-After": format_datetime(NOW + dt.timedelta(seconds=30), usegmt=True)}, 30.0),
        ({"Retry-After": format_datetime(NOW - dt.timedelta(seconds=30), usegmt=True)}, 0.0),
        ({"Retry-After": "Tue, 20 Jan 2026 06:00:45 -0000"}, 45.0),
        ({"Retry-After": "-5"}, None),
        ({"Retry-After": "nan"}, None),
        ({"Retry-After": "inf"}, None),
        ({"Retry-After": "next tuesday"}, None),
        ({"Retry-After": ""}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers, NOW) == expected


def test_backoff_is_exponential_full_jitter_and_capped() -> None:
    top = RetryPolicy(initial_wait=1.0, max_wait=10.0, random=lambda: 1.0)
    assert [backoff_wait(n, top) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    half = RetryPolicy(initial_wait=1.0, max_wait=10.0, random=lambda: 0.5)
    assert backoff_wait(3, half) == 2.0
    assert backoff_wait(10_000, top) == 10.0  # no overflow for a silly attempt number


def test_wait_before_retry_prefers_the_servers_demand() -> None:
    policy = RetryPolicy(random=lambda: 1.0)
    assert (
        wait_before_retry(status(RateLimitError, 429, "x", **{"Retry-After": "42"}), 1, policy, NOW)
        == 42.0
    )
    assert (
        wait_before_retry(status(ServerError, 503, "x", **{"Retry-After": "2"}), 1, policy, NOW)
        == 2.0
    )
    assert wait_before_retry(RATE, 3, policy, NOW) == 4.0
    assert wait_before_retry(RESET, 1, policy, NOW) == 1.0


def test_stop_reason() -> None:
    policy = RetryPolicy(max_attempts=3, budget=60.0, retry_after_cap=120.0)
    assert stop_reason(1, 0.0, 10.0, policy) is None
    assert "3 attempts" in str(stop_reason(3, 0.0, 1.0, policy))
    assert "cap" in str(stop_reason(1, 0.0, 121.0, policy))
    assert "budget" in str(stop_reason(2, 55.0, 6.0, policy))
    assert stop_reason(2, 55.0, 5.0, policy) is None


def test_poll_wait_grows_to_the_cap_with_jitter() -> None:
    top = RetryPolicy(random=lambda: 1.0)
    low = RetryPolicy(random=lambda: 0.0)
    assert [poll_wait(n, 2.0, 30.0, top) for n in (1, 2, 3)] == [2.0, 3.0, 4.5]
    assert poll_wait(50, 2.0, 30.0, top) == 30.0
    assert poll_wait(50, 2.0, 30.0, low) == 15.0


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="budget"):
        RetryPolicy(budget=0)


class Script:
    """An operation that raises the scripted errors in turn, then returns "done"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


Call = Callable[..., Awaitable[str]]


@pytest.fixture(params=["retrying", "retried"])
def call(request: pytest.FixtureRequest) -> Call:
    """Both ways to make a retried call, ``call(op, policy, kind, name, **options)``: the tenacity
    retrier as built, and ``retried`` (the client's: the retrier built only after a first
    failure). Every rule must hold for both."""
    if request.param == "retrying":
        return lambda op, *args, **options: retrying(*args, **options)(op)
    return lambda op, *args, **options: retried(op, *args, **options)


def policy_for(time: ManualClock, **changes: object) -> RetryPolicy:
    return RetryPolicy(sleep=time.sleep, clock=time, random=lambda: 1.0, **changes)  # type: ignore[arg-type]


async def test_retrying_retries_then_succeeds_and_logs_each_retry(
    call: Call,
    caplog: pytest.LogCaptureFixture,
) -> None:
    time = ManualClock()
    op = Script(SERVER, READ_TIMEOUT)
    caplog.set_level(logging.INFO, logger="vidu_async")
    assert await call(op, policy_for(time), QUERY, "GET /ent/v2/credits") == "done"
    assert op.calls == 3
    assert time.waits == [1.0, 2.0]
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) == 2
    assert "GET /ent/v2/credits" in retries[0]
    assert "HTTP 500 InternalServiceFailure" in retries[0]
    assert "1.00s" in retries[0]
    assert all(r.levelno == logging.INFO for r in caplog.records)


async def test_retrying_never_retries_a_permanent_error(call: Call) -> None:
    time = ManualClock()
    op = Script(status(AuthenticationError, 401, "Unauthorized"))
    with pytest.raises(AuthenticationError):
        await call(op, policy_for(time), QUERY, "GET /x")
    assert op.calls == 1
    assert time.waits == []


async def test_retrying_a_cancel_only_when_it_never_arrived(call: Call) -> None:
    time = ManualClock()
    op = Script(REFUSED, RESET)
    with pytest.raises(APIConnectionError, match="reset"):
        await call(op, policy_for(time), CANCEL, "POST /x")
    assert op.calls == 2


async def test_retrying_honours_retry_after_both_forms(call: Call) -> None:
    time = ManualClock()
    later = format_datetime(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60), usegmt=True)
    op = Script(
        status(RateLimitError, 429, "QuotaExceeded", **{"Retry-After": "7"}),
        status(RateLimitError, 429, "QuotaExceeded", **{"Retry-After": later}),
        status(RateLimitError, 429, "QuotaExceeded", **{"retry-after-ms": "1500"}),
    )
    assert await call(op, policy_for(time), CREATE, "POST /x") == "done"
    assert time.waits[0] == 7.0
    assert 57.0 < time.waits[1] <= 60.0
    assert time.waits[2] == 1.5


async def test_retrying_raises_a_demand_over_the_cap_instead_of_sleeping(call: Call) -> None:
    time = ManualClock()
    op = Script(status(RateLimitError, 429, "SystemThrottling", **{"Retry-After": "600"}))
    with pytest.raises(RateLimitError):
        await call(op, policy_for(time, retry_after_cap=120.0), QUERY, "GET /x")
    assert op.calls == 1
    assert time.waits == []


async def test_retrying_stops_at_max_attempts_with_the_last_error(call: Call) -> None:
    time = ManualClock()
    op = Script(*[SERVER] * 10)
    with pytest.raises(ServerError):
        await call(op, policy_for(time, max_attempts=4), QUERY, "GET /x")
    assert op.calls == 4
    assert time.waits == [1.0, 2.0, 4.0]


async def test_retrying_stops_before_overrunning_the_budget(call: Call) -> None:
    time = ManualClock()
    op = Script(*[SERVER] * 10)
    # waits would be 1, 2, 4, 8: after 1 + 2 = 3 s, waiting 4 more overruns a 6 s budget
    with pytest.raises(ServerError):
        await call(op, policy_for(time, max_attempts=10, budget=6.0), QUERY, "GET /x")
    assert time.waits == [1.0, 2.0]
    assert op.calls == 3


async def test_retried_counts_the_first_attempts_time_against_the_budget() -> None:
    time = ManualClock()

    async def slow_failure() -> str:
        time.advance(5.5)  # the first attempt alone takes 5.5 s of a 6 s budget
        raise SERVER

    with pytest.raises(ServerError):
        await retried(slow_failure, policy_for(time, budget=6.0), QUERY, "GET /x")
    assert time.waits == []  # waiting 1 s more would end past 6 s


async def test_retried_returns_a_first_success_without_waiting() -> None:
    time = ManualClock()
    op = Script()
    assert await retried(op, policy_for(time), CREATE, "POST /x") == "done"
    assert (op.calls, time.waits) == (1, [])


async def test_retrying_lets_cancellation_through(call: Call) -> None:
    import asyncio

    op = Script(asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await call(op, policy_for(ManualClock()), QUERY, "GET /x")
    assert op.calls == 1


async def test_no_answer_is_a_warning_at_a_bounded_rate_other_retries_stay_info(
    call: Call,
    caplog: pytest.LogCaptureFixture,
) -> None:
    time = ManualClock()
    limiter = LogLimiter(interval=10.0, clock=time)
    caplog.set_level(logging.INFO, logger="vidu_async")
    for _ in range(2):  # the second call's no-answer retry comes within the interval
        op = Script(SERVER, READ_TIMEOUT)
        await call(op, policy_for(time), QUERY, "GET /ent/v2/credits", no_answer=limiter)
    levels = [(r.levelno, "read timeout" in r.getMessage()) for r in caplog.records
              if "retrying in" in r.getMessage()]
    assert levels == [(logging.INFO, False), (logging.WARNING, True),
                      (logging.INFO, False), (logging.INFO, True)]
    time.advance(10)
    op = Script(READ_TIMEOUT)
    await call(op, policy_for(time), QUERY, "GET /ent/v2/credits", no_answer=limiter)
    assert caplog.records[-1].levelno == logging.WARNING
    assert "(1 more like it since the last such line)" in caplog.records[-1].getMessage()
