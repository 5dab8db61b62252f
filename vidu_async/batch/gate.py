"""Whether a create may go now: the budget, the followed-task bound and the accounts.

Pure: ``gate()`` returns ``Go`` (with the account to use), ``Wait`` (something in flight will
change the answer: ask again when it settles) or ``Stop`` (this job cannot be sent in this run;
``batch=True`` when no further job can either).

The budget is a hard cap across reruns: ``spent`` counts every credit the journal recorded,
and a create goes only if the worst case still fits: the credits already ``reserved`` by
creates in flight plus this job's cost. A task's cost is known only from its create answer, so
a job of a cost class not seen yet goes alone (nothing else in flight, and nothing else starts
until its cost is known). Even that one can cost more than what is left: the submitter cancels
such a task at once (before it starts, cancelling is free) and reports the job unsent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from vidu_async.outcome import ErrorInfo

__all__ = ["AccountView", "Budget", "Go", "Stop", "Wait", "gate"]


@attrs.frozen
class AccountView:
    """One account as the gate sees it."""

    label: str
    free: int
    """Slots free: its concurrency limit less what runs there (ours and others')."""
    down: ErrorInfo | None = None
    """Why no create can go there any more (out of credits, key rejected), or None."""


@attrs.frozen
class Budget:
    """``cap`` (None: no budget), what was spent, and what creates in flight may still cost."""

    cap: int | None
    spent: int = 0
    reserved: int = 0
    """The known costs of the creates in flight."""
    unknown_in_flight: bool = False
    """A create whose cost class has no known price is in flight."""
    costs: Mapping[str, int] = attrs.field(factory=dict)
    """What one task of each cost class cost, as learned."""
    unpriced_maybe: int = 0
    """Creates that may have made a task (their answer lost, not found nor proven absent) of a
    price not known yet: ``spent`` cannot hold their worst case."""

    @property
    def idle(self) -> bool:
        return self.reserved == 0 and not self.unknown_in_flight


@attrs.frozen
class Go:
    account: str
    reserve: int | None
    """The credits to reserve until the create settles (None: the cost is not known yet)."""


@attrs.frozen
class Wait:
    reason: str


@attrs.frozen
class Stop:
    error: ErrorInfo
    batch: bool = False
    """No further job can be sent either."""


def gate(
    cost_class: str,
    budget: Budget,
    accounts: Sequence[AccountView],
    *,
    account: str | None = None,
    followed: int = 0,
    max_pending: int | None = None,
    stopped: ErrorInfo | None = None,
) -> Go | Wait | Stop:
    """May a create of ``cost_class`` go now, and where? ``account`` pins the job to one
    account (a create resent under its journalled key goes where the first one went)."""
    if stopped is not None:
        return Stop(stopped, batch=True)
    alive = [a for a in accounts if a.down is None]
    if not alive:
        downs = [a.down for a in accounts if a.down is not None]
        return Stop(downs[-1] if downs else ErrorInfo("NoAccount", "no account given"),
                    batch=True)
    if account is not None:
        pinned = [a for a in accounts if a.label == account]
        if not pinned or pinned[0].down is not None:
            why = pinned[0].down if pinned and pinned[0].down else None
            return Stop(ErrorInfo(
                "AccountUnavailable",
                f"this job belongs to account {account}, which cannot take creates now"
                + (f" ({why.reason}: {why.message})" if why else ""),
            ))
        alive = pinned
    if max_pending is not None and followed >= max_pending:
        return Wait(f"{followed} tasks followed, the most at once")
    cost = budget.costs.get(cost_class)
    if budget.cap is not None:
        if budget.unpriced_maybe:
            return Stop(ErrorInfo("BudgetUnknown", (
                f"max_credits {budget.cap} cannot be kept: {budget.unpriced_maybe} create(s) "
                "may have made a task of a price not known yet (the answer was lost and the "
                "task neither found nor proven absent); nothing more is sent. A rerun looks "
                "them up first; or rerun without --max-credits")), batch=True)
        if budget.unknown_in_flight:
            return Wait("a create of a price not known yet is in flight")
        left = budget.cap - budget.spent - budget.reserved
        needed = 1 if cost is None else cost
        if cost is None and not budget.idle:
            return Wait("a price not known yet goes alone")
        if needed > left:
            if not budget.idle:
                return Wait("the budget is reserved by creates in flight")
            spent = f"{budget.spent} spent" + (f", this task costs {cost}" if cost else "")
            # The batch stops once no price known can fit (a job of an unknown price could
            # be cheaper, but would then go alone with what is left; not worth the wait).
            cheapest = min(budget.costs.values(), default=1)
            return Stop(ErrorInfo("BudgetReached", f"max_credits {budget.cap} reached ({spent})"),
                        batch=left < max(cheapest, 1))
    best = max(alive, key=lambda a: a.free)
    return Go(best.label, cost)
