"""The simulator's bookkeeping, without HTTP: accounts, tasks and the clock-driven state machine.

A task is ``created``, then ``queueing`` after ``Timeline.created`` seconds, then ``processing``
once one of its account's ``concurrency_limit`` slots is free (queued tasks start in submission
order), then ``success`` or ``failed`` after ``Timeline.processing`` seconds. ``tick()`` applies
every transition due by the clock's current reading, in time order, so a clock that jumps ahead
gives the same history as one that creeps.

A cancelled task (cancel is allowed only while ``created`` or ``queueing``) reads ``state``
``failed`` with ``err_code`` ``TaskCanceled``, and its credits are refunded (``credits`` 0).
A create may be held (``hold``): it is committed by the tick that reaches its due time, in
time order with the other transitions, whoever still waits for it.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import math
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

import attrs

from vidu_async.testing.answers import SimError
from vidu_async.testing.config import Account, Timeline
from vidu_async.testing.pricing import task_cost
from vidu_async.testing.stats import SimStats
from vidu_async.testing.validation import CreateBody

__all__ = [
    "CANCELED",
    "CANCEL_REFUSED",
    "CREATED",
    "FAILED",
    "PROCESSING",
    "QUEUEING",
    "STATES",
    "SUCCESS",
    "AccountState",
    "Clock",
    "ListQuery",
    "ManualClock",
    "SimTask",
    "Simulation",
    "Upload",
    "parse_page_token",
]

CREATED, QUEUEING, PROCESSING, SUCCESS, FAILED = (
    "created",
    "queueing",
    "processing",
    "success",
    "failed",
)
STATES = (CREATED, QUEUEING, PROCESSING, SUCCESS, FAILED)
CANCELED = "TaskCanceled"
"""The ``err_code`` of a task cancelled before it started."""
CANCEL_REFUSED = "task state is scheduled, can not cancel"
"""The spec's message when a task has already started (section 3)."""

Clock = Callable[[], float]
"""Monotonic seconds; the simulator reads it, tests can drive it (``ManualClock``)."""


@attrs.define
class ManualClock:
    """A clock that moves only when told to: ``advance(seconds)``. Pass it as ``clock=``.

    ``sleep`` is a matching virtual sleep: it records the wait in ``waits`` and moves the clock
    to the end of the wait instead of waiting, so ``RetryPolicy(sleep=clock.sleep, clock=clock)``
    retries instantly while every wait stays checkable. Sleeps that overlap end together: the
    clock goes to the latest end, never to the sum of concurrent waits.
    """

    now: float = 0.0
    waits: list[float] = attrs.field(factory=list)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a clock cannot go back ({seconds} s)")
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        end = self.now + seconds
        await asyncio.sleep(0)  # let the other sleepers of this instant start theirs
        self.now = max(self.now, end)


@attrs.define
class SimTask:
    """One simulated task; read its fields, do not modify them.

    ``request`` is the create body as received; the other fields are what the server decided
    (defaults applied, seed drawn, cost charged) and where the task is in its life.
    """

    task_id: str
    api_key: str = attrs.field(repr=False)
    request: dict[str, Any] = attrs.field(repr=False)
    kind: str
    """Which call created it: ``text2video``, ``img2video``, ``start-end2video``,
    ``reference2video`` or ``subjects`` (reference2video's subject form)."""
    model: str
    duration: int
    resolution: str
    aspect_ratio: str
    seed: int
    credits: int
    created_ns: int
    """Wall-clock creation time, nanoseconds since the Unix epoch."""
    created_at: float
    """Creation time on the simulator's clock; the ``*_at`` below are on it too."""
    state: str = CREATED
    err_code: str = ""
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def payload(self) -> str:
        value: str = self.request.get("payload", "")
        return value


@attrs.define
class AccountState:
    """One account's balance and tasks; ``tasks`` in submission order."""

    config: Account
    balance: int
    tasks: dict[str, SimTask] = attrs.field(factory=dict)
    listed: list[tuple[int, str]] = attrs.field(factory=list)
    """``_list_order`` of every task, ascending: a page is read from it, not from a sort."""
    created: deque[SimTask] = attrs.field(factory=deque)
    queue: deque[SimTask] = attrs.field(factory=deque)
    processing: list[SimTask] = attrs.field(factory=list)
    uploads: dict[str, Upload] = attrs.field(factory=dict)


@attrs.define
class Upload:
    """One image upload (API.md section 8): started, its bytes stored, then finished."""

    upload_id: str
    api_key: str = attrs.field(repr=False)
    expires_at: float
    """When its ``put_url`` stops working, on the simulator's clock."""
    data: bytes | None = attrs.field(default=None, repr=False)
    content_type: str | None = None
    etag: str | None = None
    finished: bool = False

    @property
    def uri(self) -> str:
        return f"ssupload:?id={self.upload_id}"


@attrs.frozen
class ListQuery:
    """A ``GET /ent/v2/tasks`` request, parsed: the filters and which page.

    ``after`` is the (created_ns, task_id) of the last task of the previous page, from a
    ``pager.page_token``; without it, the page is the ``page``-th of ``pagesz`` tasks.
    """

    since_ns: int
    until_ns: int
    task_ids: frozenset[str] = frozenset()
    states: frozenset[str] = frozenset()
    page: int = 0
    pagesz: int = 10
    after: tuple[int, str] | None = None


@attrs.frozen(order=True)
class _Held:
    """A create received and not yet committed: due at ``due`` (simulator clock)."""

    due: float
    order: int
    api_key: str = attrs.field(repr=False, order=False)
    created: CreateBody = attrs.field(repr=False, order=False)
    task: asyncio.Future[SimTask] = attrs.field(repr=False, order=False)


class Simulation:
    """Accounts and their tasks, advanced by ``tick()`` against an injectable clock.

    ``on_change`` is called with a task each time it changes state (in the event loop's thread).
    """

    def __init__(
        self,
        accounts: Mapping[str, Account],
        *,
        timeline: Timeline,
        clock: Clock,
        seed: int,
        stats: SimStats,
        on_change: Callable[[SimTask], None] = lambda task: None,
        clock_skew: float = 0.0,
        list_lag: float = 0.0,
    ) -> None:
        self.timeline = timeline
        self.stats = stats
        self._clock = clock
        self._on_change = on_change
        self._accounts = {key: AccountState(acc, acc.credits) for key, acc in accounts.items()}
        self._tasks: dict[str, SimTask] = {}
        self._uploads: dict[str, Upload] = {}
        self._outcomes = random.Random(f"{seed}:outcomes")
        self._ids = random.Random(f"{seed}:ids")
        self._upload_ids = random.Random(f"{seed}:uploads")
        self._next_id = self._ids.randrange(9 * 10**17, 91 * 10**16)
        self._clock_origin = clock()
        self._wall_origin_ns = time.time_ns() + round(clock_skew * 1e9)
        self._list_lag = list_lag
        self._cursor = -math.inf
        self._held: list[_Held] = []
        self._held_order = itertools.count()

    # --- reading -----------------------------------------------------------------------------

    @property
    def tasks(self) -> Mapping[str, SimTask]:
        return self._tasks

    def now(self) -> float:
        return self._clock()

    def now_ns(self) -> int:
        """Wall-clock time (skewed by ``clock_skew``), nanoseconds since the epoch, moving with
        the simulator's clock."""
        return self._wall_ns(self._clock())

    def _wall_ns(self, at: float) -> int:
        """The wall-clock nanoseconds of ``at`` on the simulator's clock."""
        return self._wall_origin_ns + round((at - self._clock_origin) * 1e9)

    def account(self, api_key: str) -> AccountState | None:
        return self._accounts.get(api_key)

    def balance(self, api_key: str) -> int:
        return self._account(api_key).balance

    def _account(self, api_key: str) -> AccountState:
        account = self._accounts.get(api_key)
        if account is None:
            raise KeyError(f"no account for that API key (known: {len(self._accounts)} keys)")
        return account

    def task(self, api_key: str, task_id: str) -> SimTask:
        """The task ``task_id`` of this account, or 404 ``TaskNotFound``."""
        task = self._account(api_key).tasks.get(task_id)
        if task is None:
            raise SimError(404, "TaskNotFound", f"task {task_id} not found")
        return task

    def list_tasks(self, api_key: str, query: ListQuery) -> tuple[list[SimTask], str | None]:
        """One page of this account's tasks, newest first, and the key of the page's last task
        when more follow (for ``next_page_token``). Tasks younger than ``list_lag`` are left out.

        Walks the account's tasks in list order from the newest the query allows, so a page
        costs what it skips and returns, not a sort of every task."""
        account = self._account(api_key)
        listed_by = self.now() - self._list_lag
        end = bisect.bisect_right(account.listed, query.until_ns, key=lambda k: k[0])
        skip = 0
        if query.after is not None:
            end = min(end, bisect.bisect_left(account.listed, query.after))
        else:
            skip = query.page * query.pagesz
        page: list[SimTask] = []
        for created_ns, task_id in reversed(account.listed[:end]):
            if created_ns < query.since_ns:
                break
            task = account.tasks[task_id]
            if (
                task.created_at > listed_by
                or (query.task_ids and task_id not in query.task_ids)
                or (query.states and task.state not in query.states)
            ):
                continue
            if skip:
                skip -= 1
            elif len(page) == query.pagesz:
                return page, _page_token(_list_order(page[-1]))  # more follow
            else:
                page.append(task)
        return page, None

    # --- changing ----------------------------------------------------------------------------

    def top_up(self, api_key: str, credits: int) -> None:
        self._account(api_key).balance += credits

    def create(self, api_key: str, created: CreateBody) -> SimTask:
        """Create and bill a task from a validated body; 400 ``CreditInsufficient`` if unpaid."""
        self.tick()
        return self._commit(api_key, created, self.now())

    def hold(self, api_key: str, created: CreateBody, seconds: float) -> asyncio.Future[SimTask]:
        """Create the task ``seconds`` from now, as ``create`` would then; the future is its
        task or its refusal. It is committed even if nobody awaits the future any more."""
        self.tick()
        task: asyncio.Future[SimTask] = asyncio.get_running_loop().create_future()
        held = _Held(self.now() + seconds, next(self._held_order), api_key, created, task)
        heapq.heappush(self._held, held)
        return task

    @property
    def held(self) -> int:
        """How many creates are held: received and not committed yet."""
        return len(self._held)

    def drop_held(self) -> None:
        """Forget the creates still held (the simulator is closing); their waiters are
        cancelled."""
        for held in self._held:
            held.task.cancel()
        self._held.clear()

    def _commit(self, api_key: str, created: CreateBody, at: float) -> SimTask:
        """Create and bill the task at ``at`` (simulator clock, not later than now)."""
        account = self._account(api_key)
        body, model = created.body, created.model
        duration = int(body.get("duration", model.default_duration))
        cost = task_cost(
            model.name,
            duration,
            off_peak=bool(body.get("off_peak", False)),
            route=created.kind,
            is_rec=bool(body.get("is_rec", False)),
        )
        if cost > account.balance:
            raise SimError(
                400,
                "CreditInsufficient",
                f"the task costs {cost} credits and the account has {account.balance}",
            )
        account.balance -= cost
        task = SimTask(
            task_id=self._new_task_id(),
            api_key=api_key,
            request=dict(body),
            kind=created.kind,
            model=model.name,
            duration=duration,
            resolution=body.get("resolution", model.default_resolution),
            aspect_ratio=body.get("aspect_ratio", "16:9"),
            seed=int(body.get("seed") or self._outcomes.randrange(1, 2**31)),
            credits=cost,
            created_ns=self._wall_ns(at),
            created_at=at,
        )
        self._tasks[task.task_id] = account.tasks[task.task_id] = task
        bisect.insort(account.listed, _list_order(task))
        account.created.append(task)
        self.stats.tasks_created += 1
        if task.payload:
            self.stats.payloads[task.payload] += 1
        return task

    def uploaded(self, api_key: str) -> frozenset[str]:
        """The ``ssupload:`` URIs this account's creates may name (its finished uploads)."""
        return frozenset(u.uri for u in self._account(api_key).uploads.values() if u.finished)

    def start_upload(self, api_key: str, ttl: float) -> Upload:
        """A new upload whose ``put_url`` works for ``ttl`` seconds."""
        upload_id = f"{self._upload_ids.getrandbits(64):016x}"
        upload = Upload(upload_id, api_key, self.now() + ttl)
        self._account(api_key).uploads[upload.upload_id] = upload
        self._uploads[upload.upload_id] = upload
        return upload

    def upload(self, upload_id: str) -> Upload | None:
        """Any account's upload ``upload_id`` (the storage host knows no accounts)."""
        return self._uploads.get(upload_id)

    def cancel(self, api_key: str, task_id: str) -> None:
        """Cancel a task that has not started, refunding it; 400 ``BadRequest`` otherwise."""
        self.tick()
        task = self.task(api_key, task_id)
        account = self._account(api_key)
        if task.state == CREATED:
            account.created.remove(task)
        elif task.state == QUEUEING:
            account.queue.remove(task)
        else:
            raise SimError(400, "BadRequest", CANCEL_REFUSED)
        account.balance += task.credits
        task.credits = 0
        self._finish(task, self.now(), FAILED, CANCELED)

    def tick(self) -> None:
        """Apply every transition due by now, earliest first."""
        now = self._clock()
        while (event := self._next_event()) is not None and event[0] <= now:
            at, apply = event
            self._cursor = max(self._cursor, at)
            apply(at)

    # --- the state machine -------------------------------------------------------------------

    def _next_event(self) -> tuple[float, Callable[[float], None]] | None:
        best: tuple[float, Callable[[float], None]] | None = None
        if self._held:
            best = (self._held[0].due, self._commit_held)
        for account in self._accounts.values():
            for at, apply in self._account_events(account):
                if best is None or at < best[0]:
                    best = (at, apply)
        return best

    def _account_events(
        self, account: AccountState
    ) -> Iterable[tuple[float, Callable[[float], None]]]:
        timeline = self.timeline
        if account.created:
            first = account.created[0]
            yield first.created_at + timeline.created, partial(self._enqueue, account)
        if account.processing:
            done = min(account.processing, key=_started)
            yield _started(done) + timeline.processing, partial(self._complete, account, done)
        if account.queue and len(account.processing) < account.config.concurrency_limit:
            head = account.queue[0]
            assert head.queued_at is not None
            yield max(head.queued_at, self._cursor), partial(self._start, account)

    def _commit_held(self, at: float) -> None:
        held = heapq.heappop(self._held)
        try:
            task = self._commit(held.api_key, held.created, at)
        except SimError as refused:
            if not held.task.done():
                held.task.set_exception(refused)
        else:
            if not held.task.done():
                held.task.set_result(task)

    def _enqueue(self, account: AccountState, at: float) -> None:
        task = account.created.popleft()
        task.queued_at = at
        account.queue.append(task)
        self._set_state(task, QUEUEING)

    def _start(self, account: AccountState, at: float) -> None:
        task = account.queue.popleft()
        task.started_at = at
        account.processing.append(task)
        self.stats.max_processing = max(self.stats.max_processing, len(account.processing))
        self._set_state(task, PROCESSING)

    def _complete(self, account: AccountState, task: SimTask, at: float) -> None:
        account.processing.remove(task)
        if self._outcomes.random() < self.timeline.failure_rate:
            self._finish(task, at, FAILED, self._outcomes.choice(self.timeline.failure_codes))
        else:
            self._finish(task, at, SUCCESS, "")

    def _finish(self, task: SimTask, at: float, state: str, err_code: str) -> None:
        task.finished_at = at
        task.err_code = err_code
        self._set_state(task, state)

    def _set_state(self, task: SimTask, state: str) -> None:
        task.state = state
        self._on_change(task)

    def _new_task_id(self) -> str:
        self._next_id += self._ids.randrange(1, 4096)
        return str(self._next_id)


def _started(task: SimTask) -> float:
    assert task.started_at is not None
    return task.started_at


def _list_order(task: SimTask) -> tuple[int, str]:
    return (task.created_ns, task.task_id)


def _page_token(key: tuple[int, str]) -> str:
    return f"{key[0]}-{key[1]}"


def parse_page_token(token: str) -> tuple[int, str]:
    """The (created_ns, task_id) a ``next_page_token`` stands for; ``ValueError`` if malformed."""
    created, sep, task_id = token.partition("-")
    if not (sep and created.isdigit() and task_id.isdigit()):
        raise ValueError(f"not a page token: {token!r}")
    return int(created), task_id
