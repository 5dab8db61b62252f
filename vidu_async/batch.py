"""``BatchSubmitter``: submit many jobs, pay for each exactly once, follow and download them.

The pipeline, all inside one ``asyncio.TaskGroup`` (cancelling the run leaves nothing behind):

    jobs --feeder--> bounded inbox --N submit workers--> follower --M downloaders--> outcomes

* The input is consumed lazily through a bounded queue: memory stays flat whatever its size.
* Every create is journalled first (``ledger.py``): an intent with the job's correlation key is
  on disk before the request leaves, so a crash at any instant is reconciled on the next run.
* Pacing is shared (``throttle.py``): a 429 slows every worker at once; ``QuotaExceeded`` waits
  for one of our running tasks to finish.
* Failures of one job are outcomes; failures that doom every further job (no credits left, a
  rejected key) stop new submissions and the rest are reported ``not_submitted``.
* Followed tasks are refreshed in bulk, 100 ids per list request, falling back to per-task
  queries; finished ones are downloaded (bounded) and named from the ``custom_id``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

import attrs

from vidu_async.client import ViduClient
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
from vidu_async.tasks import Task, TaskResult, new_correlation_key
from vidu_async.throttle import Throttle

__all__ = ["BatchObserver", "BatchOptions", "BatchSubmitter"]

logger = logging.getLogger("vidu_async.batch")

LIST_IDS_PER_REQUEST = 100
_RECONCILE_SLACK = dt.timedelta(minutes=10)


class BatchObserver(Protocol):
    """Receives progress events (the CLI's progress display is one)."""

    def job_created(self, task_id: str, credits: int | None) -> None: ...

    def task_state(self, task_id: str, state: str) -> None: ...


@attrs.frozen
class BatchOptions:
    """How a batch runs. ``rate`` is creates per second (None: as fast as the API allows).

    ``max_pending`` bounds the tasks followed at once (and so the server-side queue we build);
    ``sleep`` and ``clock`` are injectable so tests never wait for real.
    """

    concurrency: int = attrs.field(default=8, validator=attrs.validators.ge(1))
    rate: float | None = attrs.field(default=None)
    wait: bool = False
    download: Path | None = None
    max_credits: int | None = None
    journal: Path | None = None
    poll_interval: float = 5.0
    max_pending: int = 500
    download_concurrency: int = 4
    quota_wait: float = 30.0
    """Longest wait after ``QuotaExceeded`` before trying again, if no task of ours finishes."""
    clock: Callable[[], float] | None = attrs.field(default=None, eq=False, repr=False)
    sleep: Callable[[float], Awaitable[None]] = attrs.field(default=asyncio.sleep, eq=False,
                                                            repr=False)

    @rate.validator
    def _check_rate(self, _: object, value: float | None) -> None:
        if value is not None and value <= 0:
            raise ValueError(f"rate must be positive, got {value}")


@attrs.define
class _Account:
    """One account's client and what we know of its capacity."""

    client: ViduClient
    label: str
    limit: int = 5
    busy_elsewhere: int = 0
    in_flight: int = 0
    """Our tasks on this account that have not finished (as far as we follow them)."""
    created: int = 0
    out_of_credits: bool = False

    @property
    def free(self) -> int:
        return self.limit - self.busy_elsewhere - self.in_flight


@attrs.define
class _Followed:
    custom_id: str
    line: int | None
    task_id: str
    account: _Account


def account_label(client: ViduClient) -> str:
    """A stable name for an account that reveals nothing of its key (journals are shared)."""
    account = client.account
    digest = hashlib.sha256(f"{account.base_url}\0{account.api_key}".encode()).hexdigest()
    return f"acct-{digest[:12]}"


class BatchSubmitter:
    """Submit jobs through one or more clients (accounts) and yield one ``Outcome`` per job.

    ``async for outcome in BatchSubmitter(client, options).run(jobs)``: ``jobs`` is an iterable
    or async iterable of ``Job`` (or ``JobLine``, whose invalid lines become ``invalid``
    outcomes). Outcomes come as jobs settle, not in input order.
    """

    def __init__(
        self,
        clients: ViduClient | Sequence[ViduClient],
        options: BatchOptions | None = None,
        *,
        observer: BatchObserver | None = None,
    ) -> None:
        self.options = options or BatchOptions()
        group = [clients] if isinstance(clients, ViduClient) else list(clients)
        if not group:
            raise ValueError("BatchSubmitter needs at least one client")
        self._accounts = [_Account(c, account_label(c)) for c in group]
        self._by_label = {a.label: a for a in self._accounts}
        self._observer = observer
        loop_clock = self.options.clock
        self._clock: Callable[[], float] = loop_clock or (lambda: asyncio.get_running_loop().time())
        self._throttle = Throttle(self.options.rate, self._clock_now)
        self._stop: ErrorInfo | None = None
        self._spent = 0
        self._largest_cost = 0
        self._creates_in_flight = 0
        self._followed: dict[str, _Followed] = {}
        self._follow_wakeup = asyncio.Event()
        self._changed = asyncio.Event()
        self._ledger: Ledger | None = None
        self._downloads: asyncio.Queue[tuple[_Followed, TaskResult]] = asyncio.Queue(
            maxsize=max(1, self.options.download_concurrency) * 2
        )

    def _clock_now(self) -> float:
        return self._clock()

    @property
    def stop_reason(self) -> ErrorInfo | None:
        """Why submission stopped early (credits, key, budget), or None."""
        return self._stop

    @property
    def credits_spent(self) -> int:
        """Credits of the tasks created in this run."""
        return self._spent

    async def run(self, jobs: Iterable[Job | JobLine] | AsyncIterable[Job | JobLine]
                  ) -> AsyncIterator[Outcome]:
        """Yield one ``Outcome`` per job as it settles; see the class docstring."""
        opts = self.options
        self._ledger = Ledger.open(opts.journal) if opts.journal else None
        await self._probe_accounts()
        inbox: asyncio.Queue[Job | JobLine | None] = asyncio.Queue(maxsize=opts.concurrency * 2)
        outbox: asyncio.Queue[Outcome | None] = asyncio.Queue(maxsize=opts.concurrency * 2)
        counts = _Counts()
        try:
            async with asyncio.TaskGroup() as group:
                workers = [
                    group.create_task(self._submit_worker(inbox, outbox)) for _ in
                    range(opts.concurrency)
                ]
                helpers = [group.create_task(self._feed(jobs, inbox, counts, opts.concurrency))]
                if opts.wait:
                    helpers.append(group.create_task(self._follow(outbox)))
                    helpers += [
                        group.create_task(self._download_worker(outbox))
                        for _ in range(max(1, opts.download_concurrency))
                    ]
                try:
                    while not (counts.fed_all and counts.emitted == counts.accepted):
                        outcome = await outbox.get()
                        if outcome is None:
                            continue
                        counts.emitted += 1
                        yield outcome
                finally:
                    for task in workers + helpers:
                        task.cancel()
        finally:
            if self._ledger is not None:
                self._ledger.close()

    # --- feeding ----------------------------------------------------------------------------

    async def _feed(
        self,
        jobs: Iterable[Job | JobLine] | AsyncIterable[Job | JobLine],
        inbox: asyncio.Queue[Job | JobLine | None],
        counts: _Counts,
        workers: int,
    ) -> None:
        async for job in _aiter(jobs):
            counts.accepted += 1
            await inbox.put(job)
        counts.fed_all = True
        for _ in range(workers):
            await inbox.put(None)

    # --- submitting -------------------------------------------------------------------------

    async def _submit_worker(
        self,
        inbox: asyncio.Queue[Job | JobLine | None],
        outbox: asyncio.Queue[Outcome | None],
    ) -> None:
        while (item := await inbox.get()) is not None:
            outcome = await self._handle(item)
            if outcome is not None:
                await self._emit(outbox, outcome)
        await outbox.put(None)  # wakes the consumer so it sees the end

    async def _emit(self, outbox: asyncio.Queue[Outcome | None], outcome: Outcome) -> None:
        # Only the end of a task that exists is final: refusals and unsent jobs cost nothing,
        # so a rerun (perhaps with the line fixed) tries them again.
        if self._ledger is not None and outcome.task_id is not None and outcome.status in (
            "succeeded", "failed"
        ):
            await self._ledger.final(outcome.custom_id, outcome.to_dict())
        await outbox.put(outcome)

    async def _handle(self, item: Job | JobLine) -> Outcome | None:
        """Take one job as far as this worker goes; None when the follower takes it on."""
        if isinstance(item, JobLine):
            if item.job is None:
                return Outcome(
                    item.custom_id or f"line-{item.line}",
                    "invalid",
                    item.line,
                    error=ErrorInfo.from_problems(item.errors),
                )
            item = item.job
        record = self._ledger.get(item.custom_id) if self._ledger else None
        if record is not None and record.final is not None:
            return Outcome.from_dict(record.final)
        if record is not None and record.task_id is not None:
            account = self._by_label.get(record.account or "", self._accounts[0])
            return await self._created(item, record.task_id, record.credits, account)
        return await self._submit(item, record)

    async def _submit(self, job: Job, record: JobRecord | None) -> Outcome | None:
        key = new_correlation_key()
        if record is not None and record.needs_reconcile and record.correlation_key:
            key = record.correlation_key
            found = await self._reconcile(job, record)
            if isinstance(found, Outcome):
                return found
            if found is not None:
                owner = self._by_label.get(record.account or "", self._accounts[0])
                return await self._created(job, found.id, found.credits, owner)
        while True:
            if self._stop is not None:
                return Outcome(job.custom_id, "not_submitted", job.line, error=self._stop)
            account = await self._pick_account()
            if account is None:
                return Outcome(job.custom_id, "not_submitted", job.line, error=self._stop)
            if not await self._reserve_budget():
                continue
            await self.options.sleep(self._throttle.reserve())
            if self._stop is not None:
                self._release_budget(None)
                continue
            result = await self._create_once(job, key, account)
            if result is None:
                continue  # throttled: the 429 proves nothing was created; same key again
            if isinstance(result, Outcome):
                return result
            account.created += 1
            return await self._created(job, result.task_id, result.credits, account)

    async def _create_once(self, job: Job, key: str, account: _Account) -> Task | Outcome | None:
        """One create: the task, the outcome of a refusal, or None when throttled (retry)."""
        if self._ledger is not None:
            await self._ledger.intent(job.custom_id, key, account=account.label)
        try:
            task = await account.client.create_reference2video(
                job.request, correlation_key=key, retry_rate_limits=False
            )
        except RateLimitError as error:
            self._release_budget(None)
            await self._on_rate_limit(error, account)
            return None
        except BaseException as error:
            self._release_budget(None)
            if not isinstance(error, ViduError):
                raise
            return self._refused(job, error, account)
        self._throttle.succeeded()
        self._release_budget(task.credits)
        if self._observer is not None:
            self._observer.job_created(task.task_id, task.credits)
        if self._ledger is not None:
            await self._ledger.created(job.custom_id, task.task_id, task.credits)
        return task

    def _refused(self, job: Job, error: ViduError, account: _Account) -> Outcome:
        """The outcome of a create that raised (other than a 429)."""
        info = ErrorInfo.from_exception(error)
        if isinstance(error, ValidationError):
            return Outcome(job.custom_id, "invalid", job.line, error=info)
        if isinstance(error, AuthenticationError):
            self._halt(info)
            return Outcome(job.custom_id, "not_submitted", job.line, error=info)
        if isinstance(error, InsufficientCreditsError):
            account.out_of_credits = True
            if all(a.out_of_credits for a in self._accounts):
                self._halt(info)
            return Outcome(job.custom_id, "not_submitted", job.line, error=info)
        if isinstance(error, InvalidRequestError | ModerationError):
            return Outcome(job.custom_id, "failed", job.line, error=info)
        if isinstance(error, AmbiguousCreateError):
            info = ErrorInfo(
                "AmbiguousCreate",
                f"{error}; rerun with the same journal to reconcile (correlation key "
                f"{error.correlation_key})",
            )
            return Outcome(job.custom_id, "failed", job.line, error=info)
        # Retries exhausted on an error that proves nothing was created (or never sent).
        return Outcome(job.custom_id, "not_submitted", job.line, error=info)

    async def _on_rate_limit(self, error: RateLimitError, account: _Account) -> None:
        if error.reason == "QuotaExceeded":
            logger.info("%s: QuotaExceeded; waiting for a running task to finish", account.label)
            await self._wait_change(self.options.quota_wait)
            return
        pause = self._throttle.throttled(error.retry_after)
        logger.info(
            "%s: %s; every worker pauses %.1fs, rate now %s/s",
            account.label, error.reason, pause, _rate_text(self._throttle.rate),
        )

    async def _reconcile(self, job: Job, record: JobRecord) -> TaskResult | Outcome | None:
        """An earlier run may have created this job's task: find it before sending again."""
        account = self._by_label.get(record.account or "", self._accounts[0])
        started = dt.datetime.fromtimestamp(record.intent_at or 0, dt.UTC)
        try:
            found = await account.client.find_task_by_correlation_key(
                record.correlation_key or "",
                created_after=started - _RECONCILE_SLACK,
                created_before=dt.datetime.now(dt.UTC) + _RECONCILE_SLACK,
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

    async def _pick_account(self) -> _Account | None:
        """The account with the most free capacity; waits while we follow too many tasks."""
        while len(self._followed) >= self.options.max_pending and self._stop is None:
            await self._wait_change()
        alive = [a for a in self._accounts if not a.out_of_credits]
        if not alive or self._stop is not None:
            return None
        return max(alive, key=lambda a: (a.free, -a.created))

    async def _reserve_budget(self) -> bool:
        """With ``max_credits``, never start a create that could take spending past it.

        A task's cost is known only from its create answer, so a create in flight counts at the
        largest cost seen so far, and until one cost is known creates go one at a time.
        """
        budget = self.options.max_credits
        while budget is not None:
            if self._stop is not None:
                return False
            cost_known = self._largest_cost > 0 or not self._creates_in_flight
            at_most = self._spent + (self._creates_in_flight + 1) * self._largest_cost
            if cost_known and at_most <= budget:
                break
            if not self._creates_in_flight:
                self._halt(ErrorInfo(
                    "BudgetReached", f"max_credits {budget} reached ({self._spent} spent)"
                ))
                return False
            await self._wait_change()  # a create in flight will settle the numbers
        self._creates_in_flight += 1
        return True

    def _release_budget(self, cost: int | None) -> None:
        self._creates_in_flight -= 1
        if cost:
            self._spent += cost
            self._largest_cost = max(self._largest_cost, cost)
        self._signal()

    def _signal(self) -> None:
        """Wake everyone waiting for a change (a create settled, a task finished)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_change(self, timeout: float | None = None) -> None:
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            pass

    def _halt(self, info: ErrorInfo) -> None:
        if self._stop is None:
            logger.warning("stopping new submissions: %s: %s", info.reason, info.message)
            self._stop = info

    # --- following and downloading ----------------------------------------------------------

    async def _created(
        self,
        job: Job,
        task_id: str,
        credits: int | None,
        account: _Account,
    ) -> Outcome | None:
        """A task exists for ``job``: report it submitted, or hand it to the follower."""
        if not self.options.wait:
            return Outcome(job.custom_id, "submitted", job.line, task_id=task_id, credits=credits)
        account.in_flight += 1
        self._followed[task_id] = _Followed(job.custom_id, job.line, task_id, account)
        self._follow_wakeup.set()
        return None

    async def _follow(self, outbox: asyncio.Queue[Outcome | None]) -> None:
        """Refresh every followed task in bulk until none is left, forever (cancelled at end)."""
        while True:
            if not self._followed:
                self._follow_wakeup.clear()
                await self._follow_wakeup.wait()
                continue
            await self.options.sleep(self.options.poll_interval)
            for followed, result in await self._refresh():
                del self._followed[followed.task_id]
                followed.account.in_flight -= 1
                self._signal()
                if result.succeeded and self.options.download is not None:
                    await self._downloads.put((followed, result))
                else:
                    await self._emit(outbox, Outcome.from_result(followed.custom_id,
                                                                 followed.line, result))

    async def _refresh(self) -> list[tuple[_Followed, TaskResult]]:
        """The followed tasks that reached an end state, 100 ids per list request."""
        finished: list[tuple[_Followed, TaskResult]] = []
        by_account: dict[str, list[_Followed]] = {}
        for followed in self._followed.values():
            by_account.setdefault(followed.account.label, []).append(followed)
        for group in by_account.values():
            client = group[0].account.client
            for start in range(0, len(group), LIST_IDS_PER_REQUEST):
                chunk = group[start:start + LIST_IDS_PER_REQUEST]
                seen = await self._list_states(client, [f.task_id for f in chunk])
                for followed in chunk:
                    result = seen.get(followed.task_id)
                    if result is None:
                        result = await self._query_one(client, followed)
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

    async def _download_worker(self, outbox: asyncio.Queue[Outcome | None]) -> None:
        dest = self.options.download
        while True:
            followed, result = await self._downloads.get()
            files: tuple[str, ...] = ()
            error: ErrorInfo | None = None
            if dest is not None:
                try:
                    paths = await followed.account.client.download(
                        result, dest, stem=followed.custom_id
                    )
                    files = tuple(str(p) for p in paths)
                except ViduError as exc:
                    error = ErrorInfo("DownloadFailed", str(exc))
            await self._emit(outbox, Outcome.from_result(
                followed.custom_id, followed.line, result, files=files, error=error
            ))


@attrs.define
class _Counts:
    accepted: int = 0
    emitted: int = 0
    fed_all: bool = False


async def _aiter(
    jobs: Iterable[Job | JobLine] | AsyncIterable[Job | JobLine],
) -> AsyncIterator[Job | JobLine]:
    if isinstance(jobs, AsyncIterable):
        async for job in jobs:
            yield job
    else:
        for job in jobs:
            yield job


def _rate_text(rate: float | None) -> str:
    return "unlimited" if rate is None else f"{rate:.2f}"

