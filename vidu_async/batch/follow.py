"""Which followed tasks are due for a refresh now: the follower's schedule, without I/O.

Every followed task has a due time. A task polled for its end is due every ``poll_interval``
seconds; one whose end a callback will announce only every ``callback_poll_interval`` (the
safety net for a lost delivery). A callback that claims an end makes its task due
``gather`` seconds later, so a burst of ends is read back in one request. Tasks due within
``slack`` of the earliest are refreshed with it: tasks created at scattered moments fall into
shared rounds, 100 ids to a list request, instead of one request each.

A followed task exists (this batch made or adopted it), so a 404 on reading it is "not known
now": it is asked again each interval. It is given up (``missed`` says so) only after long,
repeated proof: every read for ``GONE_AFTER`` seconds and at least ``GONE_QUERIES`` of its own
queries answered 404, the list not showing it either; one good read starts the count over.
"""

from __future__ import annotations

import collections

import attrs

__all__ = ["GONE_AFTER", "GONE_QUERIES", "Schedule", "Watch"]

GONE_AFTER = 600.0
"""Seconds a followed task must stay not found (404 on every read) before it is given up: far
longer than a gateway's hiccup or a read path's lag behind a create."""
GONE_QUERIES = 5
"""And at least this many of its own queries answered 404 in that time (a slow poll interval
must not give up on two answers)."""

_EARLY_CLAIMS = 1000
"""How many claims about tasks not (yet) followed are kept: a callback can overtake the answer
to the create that made its task; older ones are dropped (the safety net covers them)."""


@attrs.frozen
class Watch:
    task_id: str
    account: str
    by_callback: bool
    """A callback will announce its end (created with our callback URL while we listen)."""
    due: float
    missing_since: float | None = None
    """When the first of its unbroken run of 404s came (None: last read fine)."""
    misses: int = 0
    """Its 404s since ``missing_since``."""


@attrs.define
class Schedule:
    """The followed tasks and when each is next due (times on the caller's clock)."""

    poll_interval: float
    callback_poll_interval: float
    gather: float = 1.0
    slack_share: float = 0.25
    _watches: dict[str, Watch] = attrs.field(init=False, factory=dict)
    _early: collections.OrderedDict[str, None] = attrs.field(
        init=False, factory=collections.OrderedDict
    )

    def __len__(self) -> int:
        return len(self._watches)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._watches

    def interval(self, by_callback: bool) -> float:
        return self.callback_poll_interval if by_callback else self.poll_interval

    def add(self, task_id: str, account: str, *, by_callback: bool, now: float) -> None:
        """Follow ``task_id`` from ``now``; a claim that came before it counts now."""
        due = now + self.interval(by_callback)
        if self._early.pop(task_id, False) is None:
            due = now + self.gather
        self._watches[task_id] = Watch(task_id, account, by_callback, due)

    def remove(self, task_id: str) -> None:
        self._watches.pop(task_id, None)

    def claim(self, task_id: str, now: float) -> bool:
        """A callback says ``task_id`` ended: read it back soon. False if it is not followed
        (remembered for a while: its create's answer may still be on its way)."""
        watch = self._watches.get(task_id)
        if watch is None:
            self._early[task_id] = None
            if len(self._early) > _EARLY_CLAIMS:
                self._early.popitem(last=False)
            return False
        self._watches[task_id] = attrs.evolve(watch, due=min(watch.due, now + self.gather))
        return True

    def found(self, task_id: str) -> None:
        """``task_id`` was read: any run of 404s is over."""
        watch = self._watches.get(task_id)
        if watch is not None and watch.misses:
            self._watches[task_id] = attrs.evolve(watch, missing_since=None, misses=0)

    def missed(self, task_id: str, now: float) -> bool:
        """A read of ``task_id`` at ``now`` answered 404 (its query; the list did not show it):
        True once that is the long proof of the module docstring, the task to be given up."""
        watch = self._watches.get(task_id)
        if watch is None:
            return False
        since = now if watch.missing_since is None else watch.missing_since
        watch = attrs.evolve(watch, missing_since=since, misses=watch.misses + 1)
        self._watches[task_id] = watch
        return watch.misses >= GONE_QUERIES and now - since >= GONE_AFTER

    def next_due(self) -> float | None:
        """When the earliest task is due (None: nothing is followed)."""
        return min((w.due for w in self._watches.values()), default=None)

    def due(self, now: float) -> list[Watch]:
        """The tasks to refresh in the round starting ``now``: those due, and those due within
        the slack of the shortest interval among them."""
        first = self.next_due()
        if first is None or first > now:
            return []
        ready = [w for w in self._watches.values() if w.due <= now]
        slack = self.slack_share * min(self.interval(w.by_callback) for w in ready)
        return [w for w in self._watches.values() if w.due <= now + slack]

    def refreshed(self, task_ids: list[str], now: float) -> None:
        """``task_ids`` were read and have not ended: due again one interval from ``now``."""
        for task_id in task_ids:
            watch = self._watches.get(task_id)
            if watch is not None:
                self._watches[task_id] = attrs.evolve(
                    watch, due=now + self.interval(watch.by_callback)
                )
