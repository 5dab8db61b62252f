"""The batch's pure decisions, table-driven: plan, gate, verdicts, the follow schedule, identity.

No sockets, no event loop: each is a function over plain data (see ``vidu_async/batch``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest

from vidu_async.batch.follow import Schedule
from vidu_async.batch.gate import AccountView, Budget, Go, Stop, Wait, gate
from vidu_async.batch.identity import (
    batch_tag,
    belongs_to,
    cost_class,
    fingerprint,
    job_key,
)
from vidu_async.batch.plan import (
    Create,
    Follow,
    JobFacts,
    Reconcile,
    Refuse,
    Replay,
    other_batch,
    plan,
    retryable,
)
from vidu_async.batch.verdicts import AccountDown, End, Halt, Retry, verdict
from vidu_async.errors import (
    AmbiguousCreateError,
    APIConnectionError,
    AuthenticationError,
    FieldProblem,
    InsufficientCreditsError,
    InvalidRequestError,
    ModerationError,
    RateLimitError,
    ServerError,
    ValidationError,
)
from vidu_async.journal import JobRecord
from vidu_async.outcome import ErrorInfo
from vidu_async.requests import ReferenceToVideoRequest

# --- plan ---------------------------------------------------------------------------------------


def rec(
    correlation_key: str | None = None, fingerprint: str | None = None,
    account: str | None = None, task_id: str | None = None, credits: int | None = None,
    *, server_at: float | None = None, final: Mapping[str, Any] | None = None,
) -> JobRecord:
    """A journal record of job "cat", fields in the order ``plan`` weighs them."""
    return JobRecord("cat", correlation_key=correlation_key, fingerprint=fingerprint,
                     account=account, task_id=task_id, credits=credits, server_at=server_at,
                     final=final)


FACTS = JobFacts("cat", "fp-1", "k" * 32)
ACCOUNTS = frozenset({"acct-a", "acct-b"})
DONE = {"custom_id": "cat", "status": "succeeded", "task_id": "t1"}

PLAN_CASES = [
    ("nothing recorded", None, Create("k" * 32)),
    ("a record without intent or end", rec(), Create("k" * 32)),
    ("intent, answer lost", rec("q" * 32, "fp-1", "acct-a", server_at=5.0),
     Reconcile("q" * 32, "acct-a", 5.0)),
    ("task recorded", rec("q" * 32, "fp-1", "acct-b", "t1", 40), Follow("t1", "acct-b", 40)),
    ("end recorded", rec("q" * 32, "fp-1", "acct-a", "t1", 40, final=DONE), Replay(DONE)),
    ("end recorded, account gone: still replayed (no request needed)",
     rec("q" * 32, "fp-1", "acct-x", "t1", 40, final=DONE), Replay(DONE)),
    ("a v1 record without fingerprint is trusted",
     rec("q" * 32, None, "acct-a", "t1", 40), Follow("t1", "acct-a", 40)),
]


@pytest.mark.parametrize(("name", "record", "expected"), PLAN_CASES, ids=[c[0] for c in PLAN_CASES])
def test_plan(name: str, record: JobRecord | None, expected: object) -> None:
    assert plan(FACTS, record, ACCOUNTS) == expected


FAILED = {"custom_id": "cat", "status": "failed", "task_id": "t1", "state": "failed"}
NOT_SAVED_HERE = {**DONE, "credits": 40, "files": ["elsewhere/cat.mp4"]}

KEPT = rec("q" * 32, "fp-1", "acct-a", "t1", 40, final=NOT_SAVED_HERE)
FETCH_CASES = [
    # name, record, unsaved, retry_failed, expected (an action, or its kind)
    ("a success not in the folder: its task followed for fresh links, no create",
     KEPT, True, False, Follow("t1", "acct-a", 40)),
    ("one in the folder: replayed", KEPT, False, False, Replay(NOT_SAVED_HERE)),
    ("a failed end has nothing to fetch",
     rec("q" * 32, "fp-1", "acct-a", "t1", 40, final=FAILED), True, False, Replay(FAILED)),
    ("a failed end with --retry-failed is retried still",
     rec("q" * 32, "fp-1", "acct-a", "t1", 40, final=FAILED), True, True, "RetryFailed"),
    ("on an account not given: replayed as made but not saved",
     attrs.evolve(KEPT, account="acct-x"), True, False,
     Replay({**NOT_SAVED_HERE, "status": "failed", "error": {
         "reason": "AccountNotGiven",
         "message": "'cat' was made on account acct-x, whose key is not among the keys given "
                    "now; give that key again to download its video"}})),
    ("a changed line is refused first", attrs.evolve(KEPT, fingerprint="fp-OLD"), True, False,
     "Refuse"),
]


@pytest.mark.parametrize(("name", "record", "unsaved", "retry", "expected"), FETCH_CASES,
                         ids=[c[0] for c in FETCH_CASES])
def test_plan_fetches_a_success_whose_video_is_not_in_the_download_folder(
    name: str, record: JobRecord, unsaved: bool, retry: bool, expected: object
) -> None:
    action = plan(FACTS, record, ACCOUNTS, retry_failed=retry, unsaved=unsaved)
    if isinstance(expected, str):
        assert type(action).__name__ == expected
    else:
        assert action == expected



@pytest.mark.parametrize(("end", "expected"), [
    (FAILED, True),
    ({**FAILED, "err_code": "UserCancelled"}, False),
    ({**FAILED, "state": "success"}, False),  # made, its download failed
    ({**FAILED, "task_id": None}, False),  # no task to name as retried: never sent again
    ({**DONE, "state": "success"}, False),
])
def test_retryable_is_a_task_that_failed_on_vidu(end: Mapping[str, Any], expected: bool
                                                 ) -> None:
    assert retryable(end) is expected

@pytest.mark.parametrize("record", [
    rec("q" * 32, "fp-OLD", "acct-a", server_at=1.0),
    rec("q" * 32, "fp-OLD", "acct-a", "t1", 40),
    rec("q" * 32, "fp-OLD", "acct-a", "t1", 40, final=DONE),
])
def test_plan_refuses_a_job_whose_request_changed_under_the_same_id(record: JobRecord) -> None:
    action = plan(FACTS, record, ACCOUNTS)
    assert isinstance(action, Refuse)
    assert action.error.reason == "RequestChanged"
    assert "'cat'" in action.error.message and "new custom_id" in action.error.message
    assert "journal" not in action.error.message
    other = plan(FACTS, record, ACCOUNTS, other_batch="a.jsonl")
    assert isinstance(other, Refuse)
    assert other.error.message.endswith(
        "(the journal is batch 'a.jsonl''s: if that is another jobs file, give this one its own "
        "journal with --journal)")


@pytest.mark.parametrize(("journal_batch", "given", "expected"), [
    ("a.jsonl", "b.jsonl", "a.jsonl"),
    ("a.jsonl", "a.jsonl", None),
    ("a.jsonl", None, None),  # the library without a batch id: the journal's is the batch's
    (None, "b.jsonl", None),
])
def test_other_batch_is_the_journals_when_the_run_names_another(
    journal_batch: str | None, given: str | None, expected: str | None
) -> None:
    assert other_batch(journal_batch, given) == expected


@pytest.mark.parametrize("record", [
    rec("q" * 32, "fp-1", "acct-x", server_at=1.0),
    rec("q" * 32, "fp-1", "acct-x", "t1", 40),
])
def test_plan_refuses_by_name_a_job_whose_account_is_not_given(record: JobRecord) -> None:
    action = plan(FACTS, record, ACCOUNTS)
    assert isinstance(action, Refuse)
    assert action.error.reason == "AccountNotGiven"
    assert "acct-x" in action.error.message


# --- gate ---------------------------------------------------------------------------------------

A = AccountView("acct-a", free=3)
B = AccountView("acct-b", free=5)
DOWN = ErrorInfo("CreditInsufficient", "no credits")
COSTS = {"c40": 40}


def budget(cap: int | None, spent: int = 0, reserved: int = 0, unknown: bool = False
           ) -> Budget:
    return Budget(cap, spent, reserved, unknown, COSTS)


GATE_CASES: list[tuple[str, str, Budget, list[AccountView], dict[str, Any], object]] = [
    ("no budget: the freest account", "c40", budget(None), [A, B], {}, Go("acct-b", 40)),
    ("no budget, unknown price", "new", budget(None), [A, B], {}, Go("acct-b", None)),
    ("fits exactly", "c40", budget(100, spent=20, reserved=40), [A], {}, Go("acct-a", 40)),
    ("would pass the cap while creates are in flight", "c40",
     budget(100, spent=20, reserved=41), [A], {},
     Wait("the budget is reserved by creates in flight")),
    ("an unknown price waits for creates in flight", "new", budget(100, reserved=40), [A], {},
     Wait("a price not known yet goes alone")),
    ("nothing starts while an unknown price is in flight", "c40", budget(1000, unknown=True),
     [A], {}, Wait("a create of a price not known yet is in flight")),
    ("an unknown price goes alone", "new", budget(100, spent=10), [A], {}, Go("acct-a", None)),
    ("pinned to its account", "c40", budget(None), [A, B], {"account": "acct-a"},
     Go("acct-a", 40)),
    ("followed tasks at the bound", "c40", budget(None), [A], {"followed": 5, "max_pending": 5},
     Wait("5 tasks followed, the most at once")),
    ("a down account is skipped", "c40", budget(None), [A, attrs.evolve(B, down=DOWN)], {},
     Go("acct-a", 40)),
]


@pytest.mark.parametrize(("name", "price", "money", "accounts", "kw", "expected"), GATE_CASES,
                         ids=[c[0] for c in GATE_CASES])
def test_gate(name: str, price: str, money: Budget, accounts: list[AccountView],
              kw: dict[str, Any], expected: object) -> None:
    assert gate(price, money, accounts, **kw) == expected


def test_gate_stops_the_job_when_its_price_no_longer_fits_and_nothing_is_in_flight() -> None:
    money = Budget(100, 70, costs={"c40": 40, "c20": 20})
    decision = gate("c40", money, [A])
    assert isinstance(decision, Stop) and not decision.batch  # a c20 job still fits
    assert decision.error.reason == "BudgetReached"
    assert decision.error.message == "max_credits 100 reached (70 spent, this task costs 40)"
    assert gate("c20", money, [A]) == Go("acct-a", 20)
    only_dear = gate("c40", budget(100, spent=70), [A])  # no price known fits: the batch stops
    assert isinstance(only_dear, Stop) and only_dear.batch



def test_gate_goes_on_while_the_cheapest_price_fits_exactly_what_is_left() -> None:
    money = Budget(100, 60, costs={"c45": 45, "c40": 40})
    decision = gate("c45", money, [A])
    assert isinstance(decision, Stop) and not decision.batch  # a c40 job uses the last 40
    assert gate("c40", money, [A]) == Go("acct-a", 40)

def test_a_capped_gate_stops_the_batch_while_a_task_of_unknown_price_may_exist() -> None:
    unpriced = Budget(1000, 0, costs=COSTS, unpriced_maybe=1)
    for price in ("c40", "new"):
        decision = gate(price, unpriced, [A])
        assert isinstance(decision, Stop) and decision.batch
        assert decision.error.reason == "BudgetUnknown"
    assert gate("c40", attrs.evolve(unpriced, cap=None), [A]) == Go("acct-a", 40)


@pytest.mark.parametrize("spent", [100, 150])
def test_gate_stops_the_batch_when_nothing_is_left(spent: int) -> None:
    for price in ("c40", "new"):
        decision = gate(price, budget(100, spent=spent), [A])
        assert isinstance(decision, Stop) and decision.batch


def test_a_cap_of_zero_sends_nothing() -> None:
    for price in ("c40", "new"):
        decision = gate(price, budget(0), [A, B])
        assert isinstance(decision, Stop) and decision.batch


def test_gate_stops_the_batch_when_every_account_is_down() -> None:
    decision = gate("c40", budget(None), [attrs.evolve(A, down=DOWN), attrs.evolve(B, down=DOWN)])
    assert decision == Stop(DOWN, batch=True)


def test_gate_never_moves_a_pinned_job_to_another_account() -> None:
    decision = gate("c40", budget(None), [attrs.evolve(A, down=DOWN), B], account="acct-a")
    assert isinstance(decision, Stop) and not decision.batch
    assert "acct-a" in decision.error.message and "CreditInsufficient" in decision.error.message


def test_a_stopped_batch_stops_every_job() -> None:
    info = ErrorInfo("Unauthorized", "bad key")
    assert gate("c40", budget(None), [A], stopped=info) == Stop(info, batch=True)


# --- verdicts -----------------------------------------------------------------------------------


def status(cls: type, status: int, reason: str, **kw: Any) -> Any:
    return cls(status=status, reason=reason, message=f"{reason} happened", **kw)


VERDICT_CASES: list[tuple[str, BaseException, type]] = [
    ("QuotaExceeded waits for a finish", status(RateLimitError, 429, "QuotaExceeded"), Retry),
    ("TooManyRequests is paced", status(RateLimitError, 429, "TooManyRequests"), Retry),
    ("out of credits: the account is down", status(InsufficientCreditsError, 400,
                                                   "CreditInsufficient"), AccountDown),
    ("a rejected key: the account is down", status(AuthenticationError, 401, "Unauthorized"),
     AccountDown),
    ("a wrong request is invalid", ValidationError([FieldProblem("duration", "bad")]), End),
    ("a refusal fails the job", status(InvalidRequestError, 400, "FieldInvalid"), End),
    ("moderation fails the job", status(ModerationError, 400, "TaskPromptPolicyViolation"), End),
    ("ambiguous stays ambiguous",
     AmbiguousCreateError("lost", correlation_key="k" * 32, cause=None), End),
    ("retries exhausted, nothing made", status(ServerError, 500, "InternalServiceFailure"), End),
    ("never connected, after every retry", APIConnectionError("refused", call="POST x",
                                                              sent=False), AccountDown),
    ("an answer lost, and absence proven", APIConnectionError("reset", call="POST x"), End),
]


@pytest.mark.parametrize(("name", "error", "kind"), VERDICT_CASES,
                         ids=[c[0] for c in VERDICT_CASES])
def test_verdict_kinds(name: str, error: BaseException, kind: type) -> None:
    assert isinstance(verdict(error, retry_after_cap=120), kind)


@pytest.mark.parametrize(("error", "expected"), [
    (status(RateLimitError, 429, "QuotaExceeded"), Retry("quota")),
    (status(RateLimitError, 429, "SystemThrottling", retry_after=3.0), Retry("throttle", 3.0)),
    (ValidationError([FieldProblem("duration", "bad")]),
     End("invalid", ErrorInfo("ValidationError", "duration: bad"))),
    (status(ServerError, 500, "InternalServiceFailure"),
     End("not_submitted", ErrorInfo("InternalServiceFailure", "InternalServiceFailure happened"))),
    (status(ModerationError, 400, "TaskPromptPolicyViolation"),
     End("failed", ErrorInfo("TaskPromptPolicyViolation", "TaskPromptPolicyViolation happened"))),
])
def test_verdict_values(error: BaseException, expected: object) -> None:
    assert verdict(error, retry_after_cap=120) == expected


def test_an_ambiguous_create_keeps_its_key_and_says_nothing_was_resent() -> None:
    meaning = verdict(AmbiguousCreateError("lost", correlation_key="ab" * 16, cause=None),
                      retry_after_cap=120)
    assert isinstance(meaning, End) and meaning.status == "ambiguous"
    assert "ab" * 16 in meaning.error.message and "Nothing was resent" in meaning.error.message


def test_a_retry_after_beyond_the_cap_halts_submission_with_the_wait_named() -> None:
    meaning = verdict(status(RateLimitError, 429, "TooManyRequests", retry_after=99999.0),
                      retry_after_cap=120)
    assert isinstance(meaning, Halt)
    assert "27.8 h" in meaning.error.message and "120 s" in meaning.error.message
    assert isinstance(verdict(status(RateLimitError, 429, "TooManyRequests", retry_after=120.0),
                              retry_after_cap=120), Retry)


# --- the follow schedule ------------------------------------------------------------------------


def test_polled_tasks_are_due_every_poll_interval_and_near_ones_join_the_round() -> None:
    s = Schedule(poll_interval=10, callback_poll_interval=120)
    s.add("t1", "a", by_callback=False, now=0)
    s.add("t2", "a", by_callback=False, now=2)   # due at 12: within 25% of 10 after 10
    s.add("t3", "a", by_callback=False, now=5)   # due at 15: not
    assert s.next_due() == 10
    assert s.due(9.9) == []
    assert [w.task_id for w in s.due(10)] == ["t1", "t2"]
    s.refreshed(["t1", "t2"], now=10)
    assert s.next_due() == 15
    assert [w.task_id for w in s.due(15)] == ["t3"]


def test_callback_tasks_wait_for_the_safety_net_unless_a_claim_comes() -> None:
    s = Schedule(poll_interval=5, callback_poll_interval=120, gather=1)
    s.add("t1", "a", by_callback=True, now=0)
    assert s.next_due() == 120
    assert s.claim("t1", now=30)
    assert s.next_due() == 31
    assert [w.task_id for w in s.due(31)] == ["t1"]


def test_a_claim_before_the_task_is_followed_counts_when_it_is() -> None:
    s = Schedule(poll_interval=5, callback_poll_interval=120, gather=1)
    assert not s.claim("t9", now=3)
    s.add("t9", "a", by_callback=True, now=4)
    assert s.next_due() == 5
    s.add("t8", "a", by_callback=True, now=4)
    assert len(s) == 2 and s.next_due() == 5


def test_removed_tasks_are_never_due() -> None:
    s = Schedule(poll_interval=5, callback_poll_interval=120)
    s.add("t1", "a", by_callback=False, now=0)
    s.remove("t1")
    assert s.next_due() is None and s.due(100) == [] and "t1" not in s


# --- identity -----------------------------------------------------------------------------------


def test_keys_are_stable_tagged_by_batch_and_differ_by_every_input() -> None:
    key = job_key("jobs.txt", "cat", "fp")
    assert key == job_key("jobs.txt", "cat", "fp") and len(key) == 32
    assert key.startswith(batch_tag("jobs.txt")) and belongs_to(key, "jobs.txt")
    assert not belongs_to(key, "other.txt") and not belongs_to(None, "jobs.txt")
    others = {job_key("other.txt", "cat", "fp"), job_key("jobs.txt", "dog", "fp"),
              job_key("jobs.txt", "cat", "fp2"), job_key("jobs.txt", "cat", "fp", attempt=1)}
    assert key not in others and len(others) == 4


def test_the_fingerprint_is_what_is_asked_without_payload_and_with_file_contents(
    tmp_path: Path,
) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(b"one")
    base = ReferenceToVideoRequest("viduq2", "p", images=[image, "https://e.com/x.png"])
    fp = fingerprint(base)
    assert fingerprint(attrs.evolve(base, payload="mine")) == fp
    assert fingerprint(attrs.evolve(base, prompt="q")) != fp
    assert fingerprint(attrs.evolve(base, duration=5)) != fp
    image.write_bytes(b"two!")  # edited: another size, so read again
    assert fingerprint(base) != fp
    copy = tmp_path / "b.png"
    copy.write_bytes(b"two!")
    moved = attrs.evolve(base, images=[copy, "https://e.com/x.png"])
    assert fingerprint(moved) == fingerprint(base)  # by content, not path


def test_cost_classes_separate_what_prices_depend_on() -> None:
    base = ReferenceToVideoRequest("viduq2", "p", duration=5)
    assert cost_class(base) == cost_class(attrs.evolve(base, prompt="other"))
    variants = [attrs.evolve(base, duration=8), attrs.evolve(base, model="viduq3"),
                attrs.evolve(base, resolution="1080p"), attrs.evolve(base, off_peak=True)]
    assert len({cost_class(v) for v in variants} | {cost_class(base)}) == 5
