"""``BatchSubmitter``: submit many jobs, pay for each exactly once, follow and download them.

The pipeline runs in one ``asyncio.TaskGroup`` inside a task of its own; ``run()`` only reads
its outcomes, so the caller's code never runs inside the group (a failing worker cannot cancel
it mid-statement) and leaving the loop, or cancelling the reader, stops and awaits everything::

    jobs --feeder--> bounded inbox --N submit workers--> follower --M downloaders--> outbox

* The input is consumed lazily through a bounded queue: memory stays flat whatever its size.
* Every create is journalled first (``ledger.py``): an intent with the job's correlation key is
  on disk before the request leaves, so a crash at any instant is reconciled on the next run.
* Pacing is shared (``throttle.py``): a 429 slows every worker at once; ``QuotaExceeded`` waits
  for one of our running tasks to finish.
* Failures of one job are outcomes; failures that doom every further job (no credits left on
  any account, a rejected key, the budget spent) stop new submissions and the rest are reported
  ``not_submitted``.
* Followed tasks are refreshed in bulk, 100 ids per list request, falling back to per-task
  queries; finished ones are downloaded (bounded) and named from the ``custom_id``.
* With a ``CallbackReceiver``, Vidu's callbacks finish the tasks: a claimed end is read back
  (in bulk, a burst at a time) before it counts, and a slow full refresh is kept as a safety net
  for deliveries that never arrive.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import hashlib
import logging
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Sequence,
)
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import attrs

from vidu_async.client import LOOKUP_SLACK, MAX_PAGE_SIZE, ViduClient
from vidu_async.errors import (
    AmbiguousCreateError,
    APIError,
    AuthenticationError,
    InsufficientCreditsError,
    InvalidRequestError,
    ModerationError,
    NotFoundError,
    RateLimitError,
    ValidationError,
    ViduError,
)
from vidu_async.jobs import Job, JobLine
from vidu_async.ledger import JobRecord, Ledger
from vidu_async.outcome import ErrorInfo, Outcome
from vidu_async.receiver import CallbackEvent, CallbackReceiver
from vidu_async.requests import ReferenceToVideoRequest
from vidu_async.tasks import Task, TaskResult, new_correlation_key
from vidu_async.throttle import Throttle

__all__ = ["BatchObserver", "BatchOptions", "BatchSubmitter", "account_label"]

logger = logging.getLogger("vidu_async.batch")

JobInput = Iterable[Job | JobLine] | AsyncIterable[Job | JobLine]

_EARLY_CLAIMS = 1000
"""How many callbacks about tasks not (yet) followed are kept: a callback can overtake the
answer to the create that made its task; older ones are dropped (the safety net covers them)."""


class BatchObserver(Protocol):
    """Receives progress events (the CLI's progress display is one)."""

    def job_created(self, task_id: str, credits: int | None) -> None: ...

    def task_state(self, task_id: str, state: str) -> None: ...


def _optional_rate(_: object, attribute: attrs.Attribute[float | None], value: float | None
                   ) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value}")


def _optional_http_url(_: object, attribute: attrs.Attribute[str | None], value: str | None
                       ) -> None:
    if value is None:
        return
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{attribute.name} must be an http(s) URL, got {value!r}")


@attrs.frozen
class BatchOptions:
    """How a batch runs. ``rate`` is creates per second (None: as fast as the API allows).

    ``max_credits`` stops submitting before the credits of the tasks created in this run could
    pass it (a task's cost is known only from its create answer, so a budget smaller than the
    first task's cost is passed by that one task). ``max_pending`` bounds the tasks followed at
    once (and so the server-side queue we build); ``quota_wait`` is the longest wait after
    ``QuotaExceeded`` when none of our tasks finishes first. ``sleep`` (every wait: pacing,
    polling, quota) and ``clock`` (the pacing clock, default the event loop's) are injectable
    so tests never wait for real.

    ``callback_url`` is the public URL put on every request that names none of its own, so that
    Vidu calls back there. With a receiver given to ``BatchSubmitter(callbacks=...)``, a task
    created with it is finished by its callbacks: a claimed end is read back (in bulk) after
    ``callback_gather`` seconds, which lets a burst of ends share one request, and every task is
    refreshed only every ``callback_poll_interval`` seconds, the safety net for lost deliveries.
    Tasks without that URL (a job's own, or created by an earlier run) keep ``poll_interval``.
    """

    concurrency: int = attrs.field(default=8, validator=attrs.validators.ge(1))
    rate: float | None = attrs.field(default=None, validator=_optional_rate)
    wait: bool = False
    download: Path | None = None
    max_credits: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0))
    )
    journal: Path | None = None
    poll_interval: float = attrs.field(default=5.0, validator=attrs.validators.ge(0))
    max_pending: int = attrs.field(default=500, validator=attrs.validators.ge(1))
    download_concurrency: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    quota_wait: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))
    callback_url: str | None = attrs.field(default=None, validator=_optional_http_url)
    callback_poll_interval: float = attrs.field(default=120.0, validator=attrs.validators.ge(0))
    callback_gather: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))
    clock: Callable[[], float] | None = attrs.field(default=None, eq=False, repr=False)
    sleep: Callable[[float], Awaitable[None]] = attrs.field(
        default=asyncio.sleep, eq=False, repr=False
    )

    def __attrs_post_init__(self) -> None:
        if self.download is not None and not self.wait:
            raise ValueError("download needs wait=True: only followed tasks are downloaded")


def account_label(client: ViduClient) -> str:
    """A stable name for an account that reveals nothing of its key (journals are shared)."""
    account = client.account
    digest = hashlib.sha256(f"{account.base_url}\0{account.api_key}".encode()).hexdigest()
    return f"acct-{digest[:12]}"


@attrs.define
class _Account:
    """One account's client and what we know of its capacity."""

    client: ViduClient
    label: str
    limit: int = 5
    busy_elsewhere: int = 0
    """Tasks processing when the run started (from ``get_credits``), not ours."""
    in_flight: int = 0
    """Our creates in flight plus our followed tasks that have not finished."""
    created: int = 0
    out_of_credits: bool = False

    @property
    def free(self) -> int:
        return self.limit - self.busy_elsewhere - self.in_flight


@attrs.frozen
class _Followed:
    custom_id: str
    line: int | None
    task_id: str
    account: _Account = attrs.field(eq=False)
    called_back: bool = False
    """Created with our callback URL while a receiver listens: its end comes by callback."""


@attrs.frozen
class _Failure:
    """What the pipeline sends the reader when it died of ``error``."""

    error: BaseException


class _Signal:
    """Wakes everyone waiting at the moment it fires (an ``Event`` that re-arms itself)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    def wait(self) -> Coroutine[Any, Any, bool]:
        """Await the next firing (the event is taken now, so a firing before the first await
        still counts)."""
        return self._event.wait()


class BatchSubmitter:
    """Submit jobs through one or more clients (accounts) and yield one ``Outcome`` per job.

    ``async for outcome in BatchSubmitter(client, options).run(jobs)``: ``jobs`` is an iterable
    or async iterable of ``Job`` (or ``JobLine``, whose invalid lines become ``invalid``
    outcomes), each ``custom_id`` unique. Outcomes come as jobs settle, not in input order. A
    rejected key raises ``AuthenticationError`` from the first iteration, before any job is
    read; an error that is no job's fault (the journal's disk, a bug) is raised from the
    iteration after it happened, everything stopped. To stop early, leave the loop inside
    ``contextlib.aclosing(submitter.run(jobs))`` (or cancel the task iterating): the pipeline
    is cancelled and awaited, the journal left consistent for a rerun. One ``run`` at a time.

    ``callbacks``: a receiver of this batch's callbacks (for the keys of ``clients``), served by
    the caller while the batch runs (``async with receiver.serve(...)``) at the public
    ``options.callback_url``; the batch is its one consumer of ``events()``. Make it with
    ``ReceiverOptions(confirm=False)``: the batch reads claimed ends back itself, 100 per
    request, where a confirming receiver reads each task on its own (both work).
    """

    def __init__(
        self,
        clients: ViduClient | Sequence[ViduClient],
        options: BatchOptions | None = None,
        *,
        observer: BatchObserver | None = None,
        callbacks: CallbackReceiver | None = None,
    ) -> None:
        self.options = options or BatchOptions()
        group = [clients] if isinstance(clients, ViduClient) else list(clients)
        if not group:
            raise ValueError("BatchSubmitter needs at least one client")
        if callbacks is not None and not (self.options.wait and self.options.callback_url):
            raise ValueError(
                "callbacks finish followed tasks: they need wait=True and a callback_url "
                "(the public URL that reaches the receiver)"
            )
        self._callbacks = callbacks
        self._accounts = [_Account(c, account_label(c)) for c in group]
        self._by_label = {a.label: a for a in self._accounts}
        self._observer = observer
        self._clock = self.options.clock or (lambda: asyncio.get_running_loop().time())
        self._running = False
        self._reset()

    def _reset(self) -> None:
        """Fresh state for one run."""
        self._throttle = Throttle(self.options.rate, self._clock)
        self._ledger: Ledger | None = None
        self._stop: ErrorInfo | None = None
        self._spent = 0
        self._largest_cost = 0
        self._creates_in_flight = 0
        self._accepted = 0
        self._emitted = 0
        self._fed_all = False
        self._settled = asyncio.Event()
        self._followed: dict[str, _Followed] = {}
        self._polled = 0
        """How many followed tasks only polling finishes (not ``called_back``)."""
        self._claims: dict[str, TaskResult | None] = {}
        """Followed tasks a callback says have ended: the confirmed result, or None to read."""
        self._early: collections.OrderedDict[str, TaskResult | None] = collections.OrderedDict()
        """The same, for tasks not followed (yet): see ``_EARLY_CLAIMS``."""
        self._wake = _Signal()
        """Wakes the follower: a task to follow, or a claimed end."""
        self._changed = _Signal()
        """Fires when a create settles, a task finishes or submission stops."""
        self._task_finished = _Signal()
        self._downloads: asyncio.Queue[tuple[_Followed, TaskResult]] = asyncio.Queue(
            maxsize=self.options.download_concurrency * 2
        )
        for account in self._accounts:
            account.in_flight = account.created = 0
            account.out_of_credits = False

    @property
    def stop_reason(self) -> ErrorInfo | None:
        """Why submission stopped early (credits, key, budget), or None."""
        return self._stop

    @property
    def credits_spent(self) -> int:
        """Credits of the tasks created in this run."""
        return self._spent

    async def run(self, jobs: JobInput) -> AsyncGenerator[Outcome, None]:
        """Yield one ``Outcome`` per job as it settles; see the class docstring."""
        if self._running:
            raise RuntimeError("this BatchSubmitter is already running a batch")
        self._running = True
        self._reset()
        opts = self.options
        try:
            self._ledger = Ledger.open(opts.journal) if opts.journal else None
            await self._probe_accounts()
            outbox: asyncio.Queue[Outcome | _Failure | None] = asyncio.Queue(
                maxsize=opts.concurrency * 2
            )
            pipeline = asyncio.create_task(self._pipeline(jobs, outbox), name="vidu-batch")
            try:
                while (item := await outbox.get()) is not None:
                    if isinstance(item, _Failure):
                        raise item.error
                    yield item
            finally:
                pipeline.cancel()
                await asyncio.wait([pipeline])
        finally:
            if self._ledger is not None:
                self._ledger.close()
            self._running = False

    async def _pipeline(
        self, jobs: JobInput, outbox: asyncio.Queue[Outcome | _Failure | None]
    ) -> None:
        """Run the feeder, workers, follower and downloaders until every job has settled."""
        opts = self.options
        inbox: asyncio.Queue[Job | JobLine] = asyncio.Queue(maxsize=opts.concurrency * 2)
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._feed(jobs, inbox))]
                tasks += [
                    group.create_task(self._submit_worker(inbox, outbox))
                    for _ in range(opts.concurrency)
                ]
                if opts.wait:
                    tasks.append(group.create_task(self._follow(outbox)))
                if self._callbacks is not None:
                    tasks.append(group.create_task(self._take_callbacks(self._callbacks)))
                if opts.wait and opts.download is not None:
                    tasks += [
                        group.create_task(self._download_worker(opts.download, outbox))
                        for _ in range(opts.download_concurrency)
                    ]
                await self._settled.wait()
                for task in tasks:
                    task.cancel()  # idle by now: they wait for work that will not come
        except asyncio.CancelledError:
            raise
        except BaseException as failure:  # handed to the reader, raised there
            error = failure
            if isinstance(failure, BaseExceptionGroup) and len(failure.exceptions) == 1:
                error = failure.exceptions[0]
            await outbox.put(_Failure(error))
            return
        await outbox.put(None)

    # --- feeding ----------------------------------------------------------------------------

    async def _feed(self, jobs: JobInput, inbox: asyncio.Queue[Job | JobLine]) -> None:
        async for job in _aiter(jobs):
            self._accepted += 1
            await inbox.put(job)
        self._fed_all = True
        self._check_settled()

    def _check_settled(self) -> None:
        if self._fed_all and self._emitted == self._accepted:
            self._settled.set()

    async def _emit(
        self, outbox: asyncio.Queue[Outcome | _Failure | None], outcome: Outcome, *,
        final: bool = False,
    ) -> None:
        """Hand ``outcome`` to the reader; ``final``: journal it, so a rerun skips the job.

        Only the end of a task that exists is final: refusals and unsent jobs cost nothing, so a
        rerun (perhaps with the line fixed) tries them again.
        """
        if final and self._ledger is not None:
            await self._ledger.final(outcome.custom_id, outcome.to_dict())
        await outbox.put(outcome)
        self._emitted += 1
        self._check_settled()

    # --- submitting -------------------------------------------------------------------------

    async def _submit_worker(
        self,
        inbox: asyncio.Queue[Job | JobLine],
        outbox: asyncio.Queue[Outcome | _Failure | None],
    ) -> None:
        while True:
            outcome = await self._handle(await inbox.get())
            if outcome is not None:
                await self._emit(outbox, outcome)

    async def _handle(self, item: Job | JobLine) -> Outcome | None:
        """Take one job as far as a worker goes; None when the follower takes it on."""
        if isinstance(item, JobLine):
            if item.job is None:
                return Outcome(
                    item.custom_id or f"line-{item.line}",
                    "invalid",
                    item.line,
                    error=ErrorInfo.from_problems(item.errors),
                )
            item = item.job
        record = self._ledger.take(item.custom_id) if self._ledger else None
        if record is not None and record.final is not None:
            return attrs.evolve(Outcome.from_dict(record.final), line=item.line)
        if record is not None and record.task_id is not None:
            return self._created(item, record.task_id, record.credits, self._account_of(record))
        return await self._submit(item, record)

    def _account_of(self, record: JobRecord) -> _Account:
        """The account an earlier run used for a job (the first one if it is not given now)."""
        return self._by_label.get(record.account or "", self._accounts[0])

    async def _submit(self, job: Job, record: JobRecord | None) -> Outcome | None:
        key = new_correlation_key()
        if record is not None and record.needs_reconcile and record.correlation_key:
            found = await self._reconcile(job, record)
            if isinstance(found, Outcome):
                return found
            if found is not None:
                return self._created(job, found.id, found.credits, self._account_of(record))
            key = record.correlation_key  # proven absent: resend it under the same key
        while self._stop is None:
            if not await self._room_to_submit():
                continue
            # Ask again after each wait: a pause or a rate change meanwhile applies to everyone.
            while (wait := self._throttle.next_send()) > 0:
                await self.options.sleep(wait)
            account = self._pick_account()
            if account is None:
                self._create_settled(None)
                continue
            result = await self._create_once(job, key, account)
            if isinstance(result, Task):
                called_back = self._callbacks is not None and job.request.callback_url in (
                    None, self.options.callback_url
                )
                return self._created(
                    job, result.task_id, result.credits, account, called_back=called_back
                )
            if result is not None:
                return result
            # None: throttled or out of credits there; nothing was created, so the same key
        return Outcome(job.custom_id, "not_submitted", job.line, error=self._stop)

    async def _create_once(self, job: Job, key: str, account: _Account) -> Task | Outcome | None:
        """One create: the task, the outcome of a refusal, or None to try again."""
        try:
            if self._ledger is not None:
                await self._ledger.intent(job.custom_id, key, account=account.label)
            task = await account.client.create_reference2video(
                self._request_of(job), correlation_key=key, retry_rate_limits=False
            )
        except BaseException as error:
            self._create_settled(account)
            if isinstance(error, RateLimitError):
                await self._on_rate_limit(error, account)
                return None
            if isinstance(error, ViduError):
                return self._refused(job, error, account)
            raise
        self._create_settled(account, task)
        self._throttle.succeeded()
        if self._observer is not None:
            self._observer.job_created(task.task_id, task.credits)
        if self._ledger is not None:
            await self._ledger.created(job.custom_id, task.task_id, task.credits)
        return task

    def _request_of(self, job: Job) -> ReferenceToVideoRequest:
        """The job's request, given our ``callback_url`` unless it names a URL of its own."""
        url = self.options.callback_url
        if url is None or job.request.callback_url is not None:
            return job.request
        return attrs.evolve(job.request, callback_url=url)

    def _refused(self, job: Job, error: ViduError, account: _Account) -> Outcome | None:
        """The outcome of a create that raised (other than a 429); None to try elsewhere."""
        info = ErrorInfo.from_exception(error)
        if isinstance(error, ValidationError):
            return Outcome(job.custom_id, "invalid", job.line, error=info)
        if isinstance(error, AuthenticationError):
            self._halt(info)
            return Outcome(job.custom_id, "not_submitted", job.line, error=info)
        if isinstance(error, InsufficientCreditsError):
            if not account.out_of_credits:
                logger.warning("%s is out of credits", account.label)
            account.out_of_credits = True
            if all(a.out_of_credits for a in self._accounts):
                self._halt(info)
                return Outcome(job.custom_id, "not_submitted", job.line, error=info)
            return None
        if isinstance(error, InvalidRequestError | ModerationError):
            return Outcome(job.custom_id, "failed", job.line, error=info)
        if isinstance(error, AmbiguousCreateError):
            info = ErrorInfo(
                "AmbiguousCreate",
                f"{error}; rerun with the same journal to reconcile (correlation key "
                f"{error.correlation_key})",
            )
            return Outcome(job.custom_id, "failed", job.line, error=info)
        # Retries exhausted on an error that proves nothing was created (or nothing was sent).
        return Outcome(job.custom_id, "not_submitted", job.line, error=info)

    async def _on_rate_limit(self, error: RateLimitError, account: _Account) -> None:
        if error.reason == "QuotaExceeded":
            logger.info("%s: QuotaExceeded; waiting for a running task to finish", account.label)
            await self._wait_for_a_finish()
            return
        pause = self._throttle.throttled(error.retry_after)
        logger.info(
            "%s: %s; every worker pauses %.1fs, rate now %s/s",
            account.label, error.reason, pause, _rate_text(self._throttle.rate),
        )

    async def _wait_for_a_finish(self) -> None:
        """Until one of our followed tasks finishes, or ``quota_wait`` seconds at most."""
        waiters = {
            asyncio.ensure_future(self._task_finished.wait()),
            asyncio.ensure_future(self.options.sleep(self.options.quota_wait)),
        }
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.wait(waiters)

    async def _reconcile(self, job: Job, record: JobRecord) -> TaskResult | Outcome | None:
        """An earlier run may have created this job's task: find it before sending again."""
        account = self._account_of(record)
        started = dt.datetime.fromtimestamp(record.intent_at or 0, dt.UTC)
        try:
            found = await account.client.find_task_by_correlation_key(
                record.correlation_key or "",
                created_after=started - LOOKUP_SLACK,
                created_before=dt.datetime.now(dt.UTC) + LOOKUP_SLACK,
            )
        except APIError as error:
            info = ErrorInfo(
                "AmbiguousCreate",
                f"could not check whether an earlier run created this task ({error}); "
                "rerun with the same journal to reconcile",
            )
            return Outcome(job.custom_id, "failed", job.line, error=info)
        if found is not None:
            logger.info("%s: found task %s from an earlier run", job.custom_id, found.id)
            if self._ledger is not None:
                await self._ledger.created(job.custom_id, found.id, found.credits)
        return found

    # --- accounts, budget, stopping ---------------------------------------------------------

    async def _probe_accounts(self) -> None:
        """Learn each account's concurrency; a rejected key fails here, before any job runs."""
        for account in self._accounts:
            try:
                credits = await account.client.get_credits()
            except AuthenticationError:
                raise
            except APIError as error:
                logger.info("%s: could not read credits (%s); assuming defaults", account.label,
                            error)
                continue
            if credits.remains:
                first = credits.remains[0]
                account.limit = first.concurrency_limit or account.limit
                account.busy_elsewhere = first.current_concurrency or 0

    async def _room_to_submit(self) -> bool:
        """Wait until a create may start: fewer than ``max_pending`` followed, and the budget.

        With ``max_credits``, a create in flight counts at the largest cost seen so far, and
        until one cost is known creates go one at a time. False when submission stopped.
        """
        budget = self.options.max_credits
        while self._stop is None:
            if len(self._followed) >= self.options.max_pending:
                await self._changed.wait()
                continue
            if budget is None:
                break
            if self._largest_cost == 0 and self._creates_in_flight:
                await self._changed.wait()
                continue
            if self._spent + (self._creates_in_flight + 1) * self._largest_cost <= budget:
                break
            if not self._creates_in_flight:
                self._halt(ErrorInfo(
                    "BudgetReached", f"max_credits {budget} reached ({self._spent} spent)"
                ))
                return False
            await self._changed.wait()  # a create in flight will settle the numbers
        else:
            return False
        self._creates_in_flight += 1
        return True

    def _pick_account(self) -> _Account | None:
        """The account with the most free capacity (None when none can take a create)."""
        alive = [a for a in self._accounts if not a.out_of_credits]
        if not alive or self._stop is not None:
            return None
        account = max(alive, key=lambda a: (a.free, -a.created))
        account.in_flight += 1
        return account

    def _create_settled(self, account: _Account | None, task: Task | None = None) -> None:
        """A create reserved by ``_room_to_submit`` (and ``_pick_account``) has settled,
        making ``task`` or nothing."""
        self._creates_in_flight -= 1
        if account is not None:
            account.in_flight -= 1
        if account is not None and task is not None:
            account.created += 1
            self._spent += task.credits or 0
            self._largest_cost = max(self._largest_cost, task.credits or 0)
        self._changed.fire()

    def _halt(self, info: ErrorInfo) -> None:
        if self._stop is None:
            logger.warning("stopping new submissions: %s: %s", info.reason, info.message)
            self._stop = info
            self._changed.fire()

    # --- following and downloading ----------------------------------------------------------

    def _created(
        self, job: Job, task_id: str, credits: int | None, account: _Account, *,
        called_back: bool = False,
    ) -> Outcome | None:
        """A task exists for ``job``: report it submitted, or hand it to the follower
        (``called_back``: our receiver will hear of its end)."""
        if not self.options.wait:
            return Outcome(job.custom_id, "submitted", job.line, task_id=task_id, credits=credits)
        account.in_flight += 1
        self._followed[task_id] = _Followed(job.custom_id, job.line, task_id, account, called_back)
        self._polled += not called_back
        if task_id in self._early:  # its callback overtook the create's answer
            self._claims[task_id] = self._early.pop(task_id)
        self._wake.fire()
        return None

    async def _take_callbacks(self, receiver: CallbackReceiver) -> None:
        """Hand the follower the ends that callbacks claim (cancelled once all jobs settled)."""
        async with contextlib.aclosing(receiver.events()) as events:
            async for event in events:
                self._on_callback(event)

    def _on_callback(self, event: CallbackEvent) -> None:
        """Show the observer what a callback says, and queue a claimed end for the follower."""
        followed = event.task_id in self._followed
        if followed and self._observer is not None:
            self._observer.task_state(event.task_id, str(event.result.state))
        if not event.result.is_terminal:
            return
        result = event.result if event.confirmed else None  # None: read it before it counts
        if followed:
            self._claims[event.task_id] = result
            self._wake.fire()
            return
        self._early[event.task_id] = result
        if len(self._early) > _EARLY_CLAIMS:
            self._early.popitem(last=False)

    def _poll_wait(self) -> float:
        """Seconds between full refreshes: the safety net's while callbacks end every task."""
        if self._callbacks is not None and not self._polled:
            return self.options.callback_poll_interval
        return self.options.poll_interval

    async def _follow(self, outbox: asyncio.Queue[Outcome | _Failure | None]) -> None:
        """Settle followed tasks as they end, forever (cancelled once all jobs settled).

        Every followed task is refreshed once per ``_poll_wait()``, in bulk. In between, the
        ends that callbacks claim are settled ``callback_gather`` seconds after they arrive,
        read back first unless the receiver confirmed them.
        """
        timer: asyncio.Future[None] | None = None
        armed = 0.0
        try:
            while True:
                if not self._followed:
                    await self._wake.wait()
                    continue
                wait = self._poll_wait()
                if timer is None or wait < armed:  # a task that needs polling came
                    if timer is not None:
                        await _cancel(timer)
                    timer, armed = asyncio.ensure_future(self.options.sleep(wait)), wait
                if not self._claims:
                    await self._until_woken(timer)
                if self._claims and not timer.done():
                    await self.options.sleep(self.options.callback_gather)
                if timer.done():
                    await timer  # done: raises only if the sleep failed
                    timer = None
                    self._claims.clear()
                    finished = await self._refresh(list(self._followed.values()))
                elif self._claims:
                    finished = await self._read_claims()
                else:
                    continue  # a new task: the wait may have to be shorter
                for followed, result in finished:
                    await self._settle(followed, result, outbox)
        finally:
            if timer is not None:
                await _cancel(timer)

    async def _until_woken(self, timer: asyncio.Future[None]) -> None:
        """Until ``timer`` is done or ``_wake`` fires."""
        waker = asyncio.ensure_future(self._wake.wait())
        either: set[asyncio.Future[Any]] = {timer, waker}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await _cancel(waker)

    async def _read_claims(self) -> list[tuple[_Followed, TaskResult]]:
        """The claimed ends: confirmed ones as they are, the others read back in bulk."""
        claims, self._claims = self._claims, {}
        finished: list[tuple[_Followed, TaskResult]] = []
        unread: list[_Followed] = []
        for task_id, result in claims.items():
            followed = self._followed.get(task_id)
            if followed is None:  # settled by a full refresh meanwhile
                continue
            if result is None:
                unread.append(followed)
            else:
                finished.append((followed, result))
        return finished + await self._refresh(unread)

    async def _settle(
        self, followed: _Followed, result: TaskResult,
        outbox: asyncio.Queue[Outcome | _Failure | None],
    ) -> None:
        """``followed`` ended with ``result``: stop following it, download or report it."""
        del self._followed[followed.task_id]
        self._polled -= not followed.called_back
        followed.account.in_flight -= 1
        self._task_finished.fire()
        self._changed.fire()
        if result.succeeded and self.options.download is not None:
            await self._downloads.put((followed, result))
        else:
            outcome = Outcome.from_result(followed.custom_id, followed.line, result)
            await self._emit(outbox, outcome, final=True)

    async def _refresh(self, candidates: Sequence[_Followed]) -> list[tuple[_Followed, TaskResult]]:
        """The ``candidates`` that reached an end state, 100 ids per list request."""
        finished: list[tuple[_Followed, TaskResult]] = []
        by_account: dict[str, list[_Followed]] = {}
        for followed in candidates:
            by_account.setdefault(followed.account.label, []).append(followed)
        for group in by_account.values():
            client = group[0].account.client
            for start in range(0, len(group), MAX_PAGE_SIZE):
                chunk = group[start:start + MAX_PAGE_SIZE]
                seen = await self._list_states(client, [f.task_id for f in chunk])
                for followed in chunk:
                    result = seen.get(followed.task_id) or await self._query_one(client, followed)
                    if result is None:
                        continue
                    if self._observer is not None:
                        self._observer.task_state(followed.task_id, str(result.state))
                    if result.is_terminal:
                        finished.append((followed, result))
        return finished

    async def _list_states(self, client: ViduClient, task_ids: list[str]
                           ) -> dict[str, TaskResult]:
        try:
            return {r.id: r async for r in client.list_tasks(task_ids=task_ids)}
        except APIError as error:
            logger.info("bulk refresh of %d tasks failed (%s); querying one by one",
                        len(task_ids), error)
            return {}

    async def _query_one(self, client: ViduClient, followed: _Followed) -> TaskResult | None:
        try:
            return await client.get_task(followed.task_id)
        except NotFoundError as error:
            return TaskResult(id=followed.task_id, state="failed", err_code=error.reason)
        except APIError as error:
            logger.info("refreshing %s failed (%s); will try again", followed.task_id, error)
            return None

    async def _download_worker(
        self, dest: Path, outbox: asyncio.Queue[Outcome | _Failure | None]
    ) -> None:
        """Download finished tasks; a failed download is not final, so a rerun tries again."""
        while True:
            followed, result = await self._downloads.get()
            try:
                paths = await followed.account.client.download(
                    result, dest, stem=followed.custom_id
                )
            except (ViduError, OSError) as exc:
                error = ErrorInfo("DownloadFailed", str(exc))
                outcome = Outcome.from_result(followed.custom_id, followed.line, result,
                                              error=error)
                await self._emit(outbox, outcome)
                continue
            outcome = Outcome.from_result(
                followed.custom_id, followed.line, result, files=tuple(str(p) for p in paths)
            )
            await self._emit(outbox, outcome, final=True)


async def _cancel(future: asyncio.Future[Any]) -> None:
    """Cancel ``future`` and wait until it is done."""
    future.cancel()
    await asyncio.wait([future])


async def _aiter(jobs: JobInput) -> AsyncIterator[Job | JobLine]:
    if isinstance(jobs, AsyncIterable):
        async for job in jobs:
            yield job
    else:
        for job in jobs:
            yield job


def _rate_text(rate: float | None) -> str:
    return "unlimited" if rate is None else f"{rate:.2f}"
