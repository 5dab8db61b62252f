"""``BatchSubmitter``: the I/O around the batch's decisions, one coroutine per job's life.

``_life`` reads as a job's whole story, input line to outcome: take its fingerprint and derive
its key; ask the journal what an earlier run did (``plan``); replay, refuse, reconcile, follow
or create it; follow its task to its end; download it. Every "what now?" on the way is a pure
function of the package (``plan``, ``gate``, ``verdicts``, ``follow``); this module only waits,
sends and records.

Concurrency is bounded twice: at most ``concurrency`` creates in flight (the ``_creating``
``Slots``: a job waiting for its intent's fsync lends its slot and takes it back first, so at
most ``2 * concurrency - 1`` intents wait for their create) and at most ``max_pending`` +
``concurrency`` jobs alive at once (the feeder waits for a slot before reading the next job),
so memory stays flat whatever the input's size. All of it runs in one ``asyncio.TaskGroup``
inside a task of its own; ``run()`` only reads its outcomes, so leaving the loop or cancelling
stops and awaits everything.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import hashlib
import logging
import math
import secrets
import tempfile
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
    Sequence,
)
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import attrs

from vidu_async._packed import IdLines, Kept, KeptTasks, Keys
from vidu_async.batch.follow import GONE_AFTER, Schedule
from vidu_async.batch.gate import AccountView, Budget, Go, Stop, Wait, gate
from vidu_async.batch.identity import belongs_to, cost_class, job_facts, job_key
from vidu_async.batch.plan import (
    Action,
    Follow,
    JobFacts,
    Reconcile,
    Refuse,
    Replay,
    RetryFailed,
    other_batch,
    plan,
    retryable,
)
from vidu_async.batch.punctual import punctual_sleep
from vidu_async.batch.refresh import NotFound, list_states, query_one
from vidu_async.batch.slots import InFlight, Slots
from vidu_async.batch.uploads import Uploads
from vidu_async.batch.verdicts import AccountDown, End, Halt, Retry, verdict
from vidu_async.client import MAX_PAGE_SIZE, ViduClient
from vidu_async.download import DownloadNames, remove_partial_files
from vidu_async.errors import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    ConfigurationError,
    FieldProblem,
    JournalError,
    NotFoundError,
    ViduError,
)
from vidu_async.jobs import Job, JobLine
from vidu_async.journal import Journal
from vidu_async.outcome import TASK_NOT_FOUND, ErrorInfo, Outcome
from vidu_async.receiver import CallbackEvent, CallbackReceiver
from vidu_async.reconcile import (
    WINDOW_SLACK,
    Absent,
    Found,
    ScanLimitError,
    TaskIndex,
    proof_time,
    slots_given_back,
)
from vidu_async.requests import Request
from vidu_async.tasks import Task, TaskResult, TaskState, is_cancellable
from vidu_async.throttle import Throttle

__all__ = ["BatchObserver", "BatchOptions", "BatchSubmitter", "account_label"]

logger = logging.getLogger("vidu_async.batch")

JobInput = Iterable[Job | JobLine] | AsyncIterable[Job | JobLine]


class BatchObserver(Protocol):
    """Receives progress events (the CLI's progress display is one)."""

    def job_created(self, task_id: str, credits: int | None) -> None: ...

    def task_state(self, task_id: str, state: str) -> None: ...


_positive_or_none = attrs.validators.optional(attrs.validators.gt(0.0))


def _optional_http_url(_: object, attribute: attrs.Attribute[str | None], value: str | None
                       ) -> None:
    if value is None:
        return
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{attribute.name} must be an http(s) URL, got {value!r}")


START_RATE: float | None = None
"""Creates per second an untold batch starts at (``BatchOptions.start_rate``): None by
default (a window of requests in flight instead, doubling per round trip), since Vidu documents
no request-rate limit (measured: a paced slow start cost a 2,000-job run more than a third of
its speed); give a rate when an account has a limit."""
WINDOW_STALL = 2.0
"""Seconds an untold batch's start window may stay full without an answer before one more
create goes (``Throttle.stalled``): a create the server holds, until the client's read timeout
(a minute), must not stop the batch."""
LOUD_PAUSE = 5.0
"""A wait this long (seconds) or longer is logged as a warning, with its reason: a person
watching the batch should know why it stands still."""
MIN_POLL_INTERVAL = 0.01
"""The shortest allowed ``poll_interval`` (0 would poll in a busy loop; the simulator's tests
poll every few hundredths of a second, a real batch every few seconds)."""


@attrs.frozen
class BatchOptions:
    """How a batch runs. ``rate`` is creates per second (None: as fast as the API allows).
    Without a ``rate``, creates start with one request in flight, one more per success (TCP's
    slow start, unpaced once past the workers), or at ``start_rate`` a second speeding up with
    every success, until a limit shows (then found without a burst of every worker at once;
    measured in ``benchmarks/``).

    ``batch_id`` names the batch: every job's correlation key derives from it, the job's id
    and its request, so a rerun of the same batch finds the tasks an earlier run made even
    without its journal (the CLI uses the jobs file's name). A journal keeps the id it was
    started with. None: the journal's, else a fresh random one (no rerun can recognise it).

    ``max_credits`` is a hard cap on the credits of the tasks this batch creates, across every
    run of the same journal (see ``gate``); 0 sends nothing. ``max_pending`` bounds the tasks
    followed at once; ``quota_wait`` is the longest wait after ``QuotaExceeded`` when none of
    our tasks finishes first; ``retry_after_cap`` is the longest ``Retry-After`` obeyed (a
    longer demand stops submitting, and a rerun goes on later). ``sleep`` (every wait) and
    ``clock`` (pacing and polling, default the event loop's) are injectable so tests never wait
    for real.

    ``upload_images``: each distinct local image is uploaded once (per account; remembered in
    the journal for reruns) and sent as its ``ssupload:`` URI instead of megabytes of base64 in
    every create that uses it (see ``uploads``).

    ``callback_url`` is the public URL put on every request that names none of its own, so that
    Vidu calls back there. With a receiver given to ``BatchSubmitter(callbacks=...)``, a task
    created with it is finished by its callbacks: a claimed end is read back (in bulk) after
    ``callback_gather`` seconds, and every task is refreshed only every
    ``callback_poll_interval`` seconds, the safety net for lost deliveries. Tasks without that
    URL keep ``poll_interval``.
    """

    concurrency: int = attrs.field(default=8, validator=attrs.validators.ge(1))
    rate: float | None = attrs.field(default=None, validator=_positive_or_none)
    start_rate: float | None = attrs.field(default=START_RATE, validator=_positive_or_none)
    wait: bool = False
    download: Path | None = None
    names: DownloadNames = attrs.field(factory=DownloadNames)
    """How downloaded files are named, and whether covers and watermarked videos come too."""
    max_credits: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0))
    )
    journal: Path | None = None
    batch_id: str | None = None
    poll_interval: float = attrs.field(
        default=5.0, validator=attrs.validators.ge(MIN_POLL_INTERVAL)
    )
    max_pending: int = attrs.field(default=500, validator=attrs.validators.ge(1))
    download_concurrency: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    quota_wait: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))
    retry_after_cap: float = attrs.field(default=120.0, validator=attrs.validators.ge(0))
    upload_images: bool = True
    callback_url: str | None = attrs.field(default=None, validator=_optional_http_url)
    callback_poll_interval: float = attrs.field(
        default=120.0, validator=attrs.validators.ge(MIN_POLL_INTERVAL)
    )
    callback_gather: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))
    retry_failed: bool = False
    """Send each job whose task failed on Vidu (journalled) again, as a new task on purpose."""
    clock: Callable[[], float] | None = attrs.field(default=None, eq=False, repr=False)
    sleep: Callable[[float], Awaitable[None]] = attrs.field(
        default=punctual_sleep, eq=False, repr=False
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
    down: ErrorInfo | None = None

    def view(self) -> AccountView:
        return AccountView(self.label, self.limit - self.busy_elsewhere - self.in_flight,
                           self.down)


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


class _Stage:
    """Counts one job in ``stage`` of ``states`` while a ``with`` block runs (a plain class:
    every job enters four of these, a generator-based context manager costs several times more).
    """

    __slots__ = ("_stage", "_states")

    def __init__(self, states: collections.Counter[str], stage: str) -> None:
        self._states, self._stage = states, stage

    def __enter__(self) -> None:
        self._states[self._stage] += 1

    def __exit__(self, *exc_info: object) -> None:
        self._states[self._stage] -= 1


class BatchSubmitter:
    """Submit jobs through one or more clients (accounts) and yield one ``Outcome`` per job.

    ``async for outcome in BatchSubmitter(client, options).run(jobs)``: ``jobs`` is an iterable
    or async iterable of ``Job`` (or ``JobLine``, whose invalid lines become ``invalid``
    outcomes), each ``custom_id`` unique. Outcomes come as jobs settle, not in input order;
    after the last job, one ``duplicate`` outcome per extra task found under a job's key (this
    should never happen; the extras not started yet are cancelled). A rejected key raises
    ``AuthenticationError`` from the first iteration, before any job is read; an error that is
    no job's fault (the journal's disk, a bug) is raised from the iteration after it happened,
    everything stopped. To stop early, leave the loop inside
    ``contextlib.aclosing(submitter.run(jobs))`` (or cancel the task iterating): the pipeline is
    cancelled and awaited, the journal left consistent for a rerun. One ``run`` at a time.

    ``callbacks``: a receiver of this batch's callbacks (for the keys of ``clients``), served by
    the caller while the batch runs at the public ``options.callback_url``; the batch is its one
    consumer of ``events()``. Make it with ``ReceiverOptions(confirm=False)``: the batch reads
    claimed ends back itself, 100 per request.
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
        self._accounts = {a.label: a for a in (_Account(c, account_label(c)) for c in group)}
        self._observer = observer
        self._clock = self.options.clock or time.monotonic  # the clock asyncio's loop sleeps by
        self._running = False
        self._reset()

    def _reset(self) -> None:
        """Fresh state for one run."""
        opts = self.options
        self._throttle = Throttle(opts.rate, self._clock, start_rate=opts.start_rate)
        self._journal: Journal | None = None
        self._batch_id = opts.batch_id or ""
        self._stop: ErrorInfo | None = None
        self._spent_before = 0
        self._spent = 0
        self._spent_found = 0
        self._counted: set[str] = set()
        """Task ids whose credits ``credits_total`` holds already (journalled or found)."""
        self._costs: dict[str, int] = {}
        self._reserved = 0
        self._unknown_in_flight = 0
        self._maybe: dict[str, str | None] = {}
        """Creates whose task may exist (an earlier run's unanswered intents, this run's
        ambiguous ends): job -> cost class. Their price, once known, counts against the
        budget; while a price is not known, a capped batch sends nothing more."""
        self._states: collections.Counter[str] = collections.Counter()
        self._kept = KeptTasks()
        """The task this run made or found for each key, and its job (the duplicate check's)."""
        self._kept_on: collections.Counter[str] = collections.Counter()
        """How many of them each account holds."""
        self._given_ids = IdLines()
        """The ``custom_id`` (and line) of each ``Job`` given as such: a jobs file's reader
        refuses a repeated id itself, a caller's list or generator is checked here."""
        self._adoptable: dict[str, tuple[TaskResult, str]] = {}
        """Tasks of this batch an earlier run made, by key (a new journal's start-up scan)."""
        self._unproven: dict[str, TaskIndex] = {}
        """Accounts whose start-up scan could not show payloads: their tasks by prompt."""
        self._earlier_known: asyncio.Event | None = None
        """Set once a start-up scan proved which earlier tasks exist (None: no such scan)."""
        self._earlier_wanted = asyncio.Event()
        """Set when a job waits for that proof: until then nothing is waited for, nor said."""
        self._task_states: dict[str, str] = {}
        self._changed = _Signal()
        """Fires when a create settles, a task finishes or submission stops."""
        self._sending = InFlight(self._changed.fire)
        """Creates on their way (an untold batch's start window counts them; a lookup gives
        its create's place back while it waits)."""
        self._task_finished = _Signal()
        self._wake = _Signal()
        """Wakes the follower: a task to follow, or a claimed end."""
        self._schedule = Schedule(
            opts.poll_interval, opts.callback_poll_interval, gather=opts.callback_gather
        )
        self._waiters: dict[str, asyncio.Future[TaskResult | NotFound]] = {}
        self._slept_until = -math.inf
        self._run_started: dict[str, dt.datetime] = {}
        self._creates_sent = False
        self._creating = Slots(opts.concurrency)
        self._turnstile = asyncio.Lock()
        """Held by the one worker waiting for the pacing's next slot."""
        self._alive = asyncio.Semaphore(
            2 * opts.concurrency + (opts.max_pending if opts.wait else 0)
        )
        """Jobs alive: creating, plus the ones read ahead; and the followed ones."""
        self._downloading = asyncio.Semaphore(opts.download_concurrency)
        self._uploads: Uploads | None = None
        for account in self._accounts.values():
            account.in_flight = 0
            account.down = None

    # --- what a caller can ask ---------------------------------------------------------------

    @property
    def stop_reason(self) -> ErrorInfo | None:
        """Why submission stopped early (credits, key, budget), or None."""
        return self._stop

    @property
    def credits_spent(self) -> int:
        """Credits of the tasks created in this run."""
        return self._spent

    @property
    def credits_total(self) -> int:
        """Credits of every task of this batch known to this run: those the journal recorded,
        those this run created, and those it found an earlier run made."""
        return self._spent_before + self._spent + self._spent_found

    @property
    def batch_id(self) -> str:
        """The batch's identity (known once ``run`` started)."""
        return self._batch_id

    def snapshot(self) -> Mapping[str, int]:
        """Where every job read so far is: jobs alive by stage (``preparing``,
        ``reconciling``, ``waiting``, ``creating``, the task states ``created`` / ``queueing``
        / ``processing``, ``downloading``) and settled jobs by their outcome's status."""
        return {state: n for state, n in self._states.items() if n > 0}

    def _move(self, old: str | None, new: str | None) -> None:
        if old is not None:
            self._states[old] -= 1
        if new is not None:
            self._states[new] += 1

    # --- the run -----------------------------------------------------------------------------

    async def run(self, jobs: JobInput) -> AsyncGenerator[Outcome, None]:
        """Yield one ``Outcome`` per job as it settles; see the class docstring."""
        if self._running:
            raise RuntimeError("this BatchSubmitter is already running a batch")
        self._running = True
        self._reset()
        opts = self.options
        paced = contextlib.ExitStack()
        for account in self._accounts.values():
            paced.enter_context(account.client.paced(
                self._pace, self._paced_refused, self._paced_answered))
        try:
            if opts.journal is not None:
                self._journal = await Journal.open(
                    opts.journal, batch_id=opts.batch_id or _fresh_batch_id()
                )
                self._batch_id = self._journal.batch_id
                self._spent_before = self._journal.spent
                self._costs.update(self._journal.costs)
                for record in self._journal.pending():
                    if record.needs_reconcile:  # maybe billed: counted until looked up
                        self._maybe[record.job_id] = record.cost_class
                    if record.task_id is not None:  # its credits are in journal.spent
                        self._counted.add(record.task_id)
                    self._counted.update(record.retried)
            elif not self._batch_id:
                self._batch_id = _fresh_batch_id()
            if opts.upload_images:
                journal = self._journal
                self._uploads = Uploads(
                    journal.uploads if journal else {},
                    journal.uploaded if journal else None,
                )
            if opts.download is not None:
                await asyncio.to_thread(_ready_download_folder, opts.download)
            await self._probe_accounts()
            self._run_started = {a.label: a.client.server_clock.now()
                                 for a in self._accounts.values()}
            if opts.batch_id is not None:
                # Every run of a named batch: a job its journal does not know may still have a
                # task (a journal lost, then a run that never reached the job).
                await self._index_earlier_tasks()
                self._earlier_known = asyncio.Event()
                if not self._earlier_run_possible():
                    self._earlier_known.set()
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
            paced.close()
            if self._journal is not None:
                await self._journal.close()
            self._running = False

    async def _pipeline(
        self, jobs: JobInput, outbox: asyncio.Queue[Outcome | _Failure | None]
    ) -> None:
        """Run every job's life, the follower and the callback reader; then the duplicate
        check."""
        opts = self.options
        try:
            async with asyncio.TaskGroup() as group:
                helpers = []
                if opts.wait:
                    helpers.append(group.create_task(self._follow()))
                if self._earlier_known is not None:
                    helpers.append(group.create_task(
                        self._index_earlier_tasks_proven(self._earlier_known)
                    ))
                if self._callbacks is not None:
                    helpers.append(group.create_task(self._take_callbacks(self._callbacks)))
                async with asyncio.TaskGroup() as lives:
                    alive = self._alive
                    async for item in _aiter(jobs):
                        await alive.acquire()
                        lives.create_task(self._life(item, outbox, alive))
                for helper in helpers:
                    helper.cancel()  # idle by now: they wait for work that will not come
            for outcome in await self._check_duplicates():
                await outbox.put(outcome)
        except asyncio.CancelledError:
            raise
        except BaseException as failure:  # handed to the reader, raised there
            error = failure
            while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
                error = error.exceptions[0]
            await outbox.put(_Failure(error))
            return
        await outbox.put(None)

    async def _life(
        self, item: Job | JobLine, outbox: asyncio.Queue[Outcome | _Failure | None],
        alive: asyncio.Semaphore,
    ) -> None:
        try:
            outcome, final = await self._job(item)
            if not outcome.kind:  # results say the type
                kind = item.kind if isinstance(item, JobLine) else item.request.kind
                outcome = attrs.evolve(outcome, kind=kind)
            if final and self._journal is not None:
                assert outcome.custom_id is not None  # an end of a task: a job with its id
                await self._journal.final(outcome.custom_id, outcome.to_dict())
            self._move(None, outcome.status)
            await outbox.put(outcome)
        finally:
            alive.release()

    # --- one job's life ----------------------------------------------------------------------

    async def _job(self, item: Job | JobLine) -> tuple[Outcome, bool]:
        """One job, from its input line to its outcome; True when the outcome is final (its
        task ended: journalled, so a rerun replays it instead of asking again)."""
        if isinstance(item, JobLine):
            if item.job is None:
                return self._invalid(item), False
            item = item.job
        elif item.custom_id in self._given_ids:
            return self._repeated_id(item, self._given_ids[item.custom_id]), False
        else:
            self._given_ids[item.custom_id] = item.line
        job = item
        with self._at("preparing"):
            record = self._journal.take(job.custom_id) if self._journal else None
            attempt = record.attempts if record else 0
            facts = await job_facts(job, self._batch_id, attempt)
            folder = self.options.download
            action = plan(facts, record, frozenset(self._accounts),
                          retry_failed=self.options.retry_failed,
                          unsaved=bool(folder and record and record.final
                                       and not _saved_in(record.final, folder)),
                          other_batch=other_batch(self._batch_id, self.options.batch_id))
            if isinstance(action, RetryFailed):
                facts = await self._retry_as_new(job, facts, action.task_id, action.attempt)
        ended = await self._first_end(job, facts, action)
        outcome, final = ended
        if (final and self.options.retry_failed and not isinstance(action, RetryFailed)
                and outcome.task_id is not None and retryable(outcome.to_dict())):
            # Its task failed while this run followed it: sent again now, once, as a rerun
            # with --retry-failed would (one retry per job per run: a task that always fails
            # is not paid for over and over), an earlier run's task under the new key found
            # first (a lost journal's retry).
            retry = RetryFailed(outcome.task_id, attempt + 1)
            facts = await self._retry_as_new(job, facts, retry.task_id, retry.attempt)
            return await self._first_end(job, facts, retry)
        return ended

    async def _retry_as_new(
        self, job: Job, facts: JobFacts, failed_task: str, attempt: int
    ) -> JobFacts:
        """Journal that the job's failed task is sent again on purpose (durable before the
        new key is ever sent); the job's facts with that attempt's key."""
        logger.info("%s: retrying failed task %s", job.custom_id, failed_task)
        if self._journal is not None:
            await self._journal.retry(job.custom_id, task_id=failed_task)
        key = job_key(self._batch_id, job.custom_id, facts.fingerprint, attempt)
        return attrs.evolve(facts, key=key)

    async def _first_end(
        self, job: Job, facts: JobFacts, action: Action
    ) -> tuple[Outcome, bool]:
        """What ``plan`` said, carried out to the job's end (or its submission)."""
        if isinstance(action, Replay):
            return attrs.evolve(Outcome.from_dict(action.result), line=job.line), False
        if isinstance(action, Refuse):
            return Outcome(job.custom_id, "invalid", job.line, error=action.error), False
        if isinstance(action, Follow):
            return await self._follow_task(job, facts.key, action.task_id, action.account,
                                           action.credits)
        pinned: str | None = None
        with self._at("reconciling"):
            if isinstance(action, Reconcile):
                found = await self._reconcile(job, action)
                pinned = action.account
                if not isinstance(found, Outcome):  # resolved: counted as spent, or not at all
                    self._maybe.pop(job.custom_id, None)
            else:
                found = await self._earlier_task(job, facts.key)
        if isinstance(found, Outcome):
            return found, False
        if found is not None:
            task, label = found
            logger.info("%s: found task %s made earlier for it", job.custom_id, task.id)
            price_class = cost_class(job.request)
            self._count_found(task, price_class)
            if self._journal is not None:
                if not isinstance(action, Reconcile):  # found by the start-up search
                    # Journalled as if this run had sent it (its key recorded): a later rerun
                    # knows the journal records this task and waits out no list lag for it.
                    # Its time is when the task was made, never later (a rerun cut off before
                    # the next record looks from there); unknown, None: from the beginning.
                    born = task.created_at
                    await self._journal.intent(
                        job.custom_id, key=facts.key, account=label,
                        fingerprint=facts.fingerprint, cost_class=price_class,
                        server_at=None if born is None else born.timestamp(),
                    )
                await self._journal.created(job.custom_id, task_id=task.id, credits=task.credits)
            return await self._follow_task(job, facts.key, task.id, label, task.credits)
        made = await self._create(job, facts, pinned)
        if isinstance(made, Outcome):
            return made, False
        created, label = made
        return await self._follow_task(job, facts.key, created.task_id, label, created.credits,
                                       by_callback=self._by_callback(job))

    def _invalid(self, line: JobLine) -> Outcome:
        """An invalid line's outcome. A line can become invalid after its job was sent (its
        local image deleted once the video was made): a job whose end an earlier run recorded
        is then replayed from the journal, and one sent but not ended says so (its record is
        kept for the run that gets the line fixed: it follows that task, never sends again)."""
        info = ErrorInfo.from_problems(line.errors)
        journal, job_id = self._journal, line.custom_id
        record = journal.peek(job_id) if journal is not None and job_id is not None else None
        if record is not None and record.final is not None:
            assert journal is not None and job_id is not None
            journal.take(job_id)
            logger.warning("%s (line %d) is invalid now (%s), but an earlier run recorded its "
                           "end: reported from the journal", job_id, line.line, info.message)
            return attrs.evolve(Outcome.from_dict(record.final), line=line.line)
        if record is not None and record.correlation_key is not None:
            sent = f"task {record.task_id}" if record.task_id else "its create may exist"
            info = ErrorInfo(info.reason, f"{info.message}; an earlier run sent this job "
                             f"({sent}): fix the line and rerun with this journal to follow "
                             "it; do not send it anywhere else")
        return Outcome(job_id, "invalid", line.line, error=info)

    @staticmethod
    def _repeated_id(job: Job, earlier: int | None) -> Outcome:
        """A job whose ``custom_id`` an earlier job of this run has: not sent (its results,
        journal record and video file would be taken for the other's)."""
        where = "" if earlier is None else f" (line {earlier})"
        problem = FieldProblem("custom_id", f"{job.custom_id!r} is already used by another job "
                                            f"of this batch{where}; give each job its own id")
        return Outcome(job.custom_id, "invalid", job.line,
                       error=ErrorInfo.from_problems((problem,)))

    def _at(self, stage: str) -> _Stage:
        """The job is in ``stage`` (for ``snapshot``) while the ``with`` block runs."""
        return _Stage(self._states, stage)

    # --- finding what an earlier run made ----------------------------------------------------

    async def _index_earlier_tasks(self) -> None:
        """A named batch: note the tasks an earlier run (with a lost journal, or from another
        checkout) made under this batch's keys, so they are not paid again."""
        for account in self._accounts.values():
            try:
                unproven = await self._earlier_tasks_on(account)
            except ScanLimitError as error:
                if self._journal is not None and not self._journal.used_before:
                    # A first run at this journal (an account with more recent tasks than a
                    # scan reads): say so, and go on as a new batch does.
                    logger.warning("%s: cannot search all recent tasks for an earlier run of "
                                   "batch %r (%s); treating it as new", account.label,
                                   self._batch_id, error)
                    continue
                raise APIError(
                    f"cannot check {account.label} for tasks an earlier run of batch "
                    f"{self._batch_id!r} made ({error}); nothing was sent (a batch that never "
                    "ran before can skip the search: --fresh)"
                ) from error
            except ViduError as error:
                raise APIError(
                    f"cannot check {account.label} for tasks an earlier run of batch "
                    f"{self._batch_id!r} made ({error}); nothing was sent. Rerun once the API "
                    "answers (a batch that never ran before can skip the search: --fresh)"
                ) from error
            if unproven is not None:
                self._unproven[account.label] = unproven

    async def _earlier_tasks_on(self, account: _Account) -> TaskIndex | None:
        """Note the account's tasks under this batch's keys, from one pass over the list's
        default window, page by page, keeping only those: a rerun of a batch of any size reads
        its own tasks (the journal's keys give the pass room for them) in flat memory. Where
        the list shows no payloads, the bounded scan's index is returned: its items are the
        candidates to read one by one."""
        recorded = self._journal.recorded_keys if self._journal else Keys()
        reconciler = account.client.reconciler
        clock = account.client.server_clock
        started_local = clock.local_now()
        started_at = clock.to_server(started_local)
        mine: list[TaskResult] = []
        async with contextlib.aclosing(
            reconciler.sweep(None, expected=len(recorded))
        ) as listed:
            async for task in listed:
                if "payload" not in task.raw:
                    break
                if self._adoptable_key(task.correlation_key, recorded):
                    mine.append(task)
            else:
                self._adopt(TaskIndex.of(mine, started_at, started_local), account.label,
                            recorded)
                return None
        index = await reconciler.snapshot()
        self._adopt(index, account.label, recorded)
        return index

    def _adoptable_key(self, key: str | None, recorded: Keys) -> bool:
        """A key of this batch that the journal does not record: a job under a recorded key is
        planned from its record (followed or looked up), never adopted."""
        return bool(key) and key not in recorded and belongs_to(key, self._batch_id)

    def _adopt(self, index: TaskIndex, label: str, recorded: Keys) -> None:
        for key, tasks in index.by_key.items():
            if self._adoptable_key(key, recorded):
                # Counted in the budget once a job adopts it: another jobs file of the same
                # name (another folder) has this batch's tag too, not its lines.
                self._adoptable[key] = (tasks[0], label)

    def _earlier_run_possible(self) -> bool:
        """Whether a run this journal does not know of may have created tasks the list does
        not show yet. A journal records every create of the runs that used it, so: there is
        no journal; or it was deleted and begun again (used before, its lock file says, yet
        empty); or the list shows tasks under this batch's keys that it does not record (a
        lost journal's, another checkout's). Otherwise no create waits out the list's lag;
        the one case left is another checkout's run with its own journal, less than that lag
        ago."""
        journal = self._journal
        if journal is None or (journal.used_before and not journal.recorded_keys):
            return True
        return any(key not in journal.recorded_keys for key in self._adoptable)

    async def _index_earlier_tasks_proven(self, known: asyncio.Event) -> None:
        """Scan again once the list's visibility lag has passed since this run started: an
        earlier run's last creates may not have been listed yet at the first scan. Until then
        no job of the batch that was not found is created; the wait starts (and is said) once
        such a job waits for it (a rerun that only replays and follows never does)."""
        if known.is_set():  # no earlier run can have made tasks the list hides
            return
        await self._earlier_wanted.wait()
        waits = []
        for account in self._accounts.values():
            clock = account.client.server_clock
            proof = proof_time(self._run_started[account.label],
                               account.client.retry.visibility_lag, clock.uncertainty)
            waits.append((proof - clock.now()).total_seconds())
        if (wait := max(waits)) > 0:
            logger.log(
                logging.WARNING if wait >= LOUD_PAUSE else logging.INFO,
                "waiting %.0f s before creating jobs not found on the account: an earlier run "
                "of batch %r that this journal does not record may have made tasks the list "
                "does not show yet (visibility_lag)", wait, self._batch_id,
            )
            await self.options.sleep(wait)
        await self._index_earlier_tasks()
        known.set()

    async def _earlier_task(
        self, job: Job, key: str
    ) -> tuple[TaskResult, str] | Outcome | None:
        """The task (and account) an earlier run made under ``key``, from the start-up scans.

        A key not seen at once waits for the scan that proves it (see
        ``_index_earlier_tasks_proven``). Where the list shows no payloads, the account's
        tasks with the job's model and prompt are read one by one (a task's own answer carries
        its payload)."""
        found = self._adoptable.pop(key, None)
        if found is None and self._earlier_known is not None:
            self._earlier_wanted.set()
            await self._earlier_known.wait()
            found = self._adoptable.pop(key, None)
        if found is not None:
            return found
        for label, index in self._unproven.items():
            client = self._accounts[label].client
            for task_id in index.candidates(job.request.model, job.request.prompt):
                try:
                    task = await client.get_task(task_id)
                except NotFoundError:
                    continue
                except APIError as error:
                    return Outcome(job.custom_id, "ambiguous", job.line, error=ErrorInfo(
                        "AmbiguousCreate",
                        f"task {task_id} may be this job's, made by an earlier run, and "
                        f"reading it failed ({error}); nothing was sent. Rerun to look again",
                    ))
                if task.correlation_key == key:
                    return task, label
        return None

    async def _reconcile(
        self, job: Job, action: Reconcile
    ) -> tuple[TaskResult, str] | Outcome | None:
        """Find the task a create whose answer was never recorded made; None when proven
        absent (it is then sent once more, under the same key, on the same account)."""
        client = self._accounts[action.account].client
        sent = dt.datetime.fromtimestamp(action.server_at or 0, dt.UTC)
        # The run that sent it is over (this run holds the journal's lock, or that run was
        # cancelled before this one started): nothing of it was sent after this run began.
        # Compared in seconds: the horizon is infinite for a client without a total timeout.
        settled = self._run_started[action.account]
        if client.create_horizon < (settled - sent).total_seconds():
            settled = sent + dt.timedelta(seconds=client.create_horizon)
        try:
            result = await client.reconciler.lookup(
                action.key, model=job.request.model, prompt=job.request.prompt,
                sent_at=sent, settled_at=settled, own_readings=False,  # an earlier run's
            )
        except ViduError as error:  # API errors and ScanLimitError: unproven, not fatal
            reason = str(error)
        else:
            if isinstance(result, Found):
                return result.task, action.account
            if isinstance(result, Absent):
                return None
            reason = result.reason
        return Outcome(job.custom_id, "ambiguous", job.line, error=ErrorInfo(
            "AmbiguousCreate",
            f"an earlier run may have created this task and it could not be proven either way "
            f"({reason}); nothing was sent. Rerun with the same journal to look again "
            f"(correlation key {action.key})",
        ))

    # --- creating ----------------------------------------------------------------------------

    async def _create(
        self, job: Job, facts: JobFacts, pinned: str | None
    ) -> tuple[Task, str] | Outcome:
        """Send the job's create once the gate lets it go; the task and its account, or the
        job's outcome when it cannot be created in this run."""
        price_class = cost_class(job.request)
        while True:
            with self._at("waiting"):
                await self._creating.acquire()
            try:
                # From the gate's Go to the reservation in _send nothing else can pass it.
                with self._at("waiting"):
                    decision = await self._gate_open(price_class, pinned)
                if isinstance(decision, Stop):
                    if decision.batch:
                        self._halt(decision.error)
                    return Outcome(job.custom_id, "not_submitted", job.line,
                                   error=decision.error)
                made = await self._send(job, facts, decision, price_class)
            finally:
                self._creating.release()
            if made is not None:
                return made

    async def _gate_open(self, price_class: str, pinned: str | None) -> Go | Stop:
        """Wait until the gate lets a create go (or stops it), and the pacing allows."""
        while True:
            decision = self._gate(price_class, pinned)
            if isinstance(decision, Wait):
                async with self._creating.given_back():
                    await self._changed.wait()
                continue
            if isinstance(decision, Stop):
                return decision
            window = self._throttle.max_in_flight  # an untold limit's start: creates at once
            if window is not None and self._sending.count >= window:
                async with self._creating.given_back():
                    answered = await self._changed_within(WINDOW_STALL)
                if not answered and self._throttle.max_in_flight == window:
                    self._throttle.stalled()  # held unanswered: one more may go
                    self._changed.fire()
                continue
            # Ask again after each wait: a pause or a rate change applies to everyone.
            if self._throttle.next_send() <= 0:
                return decision
            async with self._creating.given_back():  # jobs whose slot is booked send meanwhile
                await self._next_slot()

    async def _changed_within(self, seconds: float) -> bool:
        """Wait until ``_changed`` fires (True) or ``seconds`` of real time pass (False): an
        answer comes over the wire, whatever the batch's clock (a test's virtual one) says.
        Not ``asyncio.wait_for``: on Python 3.11 it swallows a cancel that arrives as the signal
        fires (a stopping batch's creates fire it), and the job would go on creating."""
        try:
            async with asyncio.timeout(seconds):
                await self._changed.wait()
        except TimeoutError:
            return False
        return True

    async def _pace(self) -> float:
        """The batch's requests other than creates (lookups, status rounds, cancels) take
        their turn in the shared pacing too: an account's rate limit counts every request.
        Returns when the turn was granted, for ``_paced_answered``."""
        while self._throttle.next_send(reports=False) > 0:
            await self._next_slot(reports=False)
        return self._clock()

    def _paced_answered(self, turn: float) -> None:
        """A request other than a create, its turn granted at ``turn``, was answered: the next
        request waits one interval after it (a list page held up on its way then no longer
        meets the next page at a strict limit, as the pacing does for creates)."""
        self._throttle.answered(turn)

    def _paced_refused(self, retry_after: float | None) -> None:
        """A request other than a create was answered 429: the pacing learns of the limit as
        from a create's (a page of the closing scan sent while the pace probed above the
        limit drew a 429 each, and the pace never heard of them)."""
        self._throttle.throttled(retry_after)

    async def _next_slot(self, *, reports: bool = True) -> None:
        """Until the pacing would let the caller's request go (nothing booked: the caller asks
        again). ``reports`` as the caller asks ``next_send``: a request that reports no success
        waits out a search for the limit, and asked as one that does, it would be told it may
        go (as a probe), then refused by the caller's own question, in a loop that never waits.

        One worker at a time waits for the clock, the others for their turn (in order): the
        wait then ends on time (``punctual_sleep``) without every waiter spinning for it."""
        async with self._turnstile:
            while (pause := self._throttle.next_send(book=False, reports=reports)) > 0:
                await self.options.sleep(pause)

    def _gate(self, price_class: str, pinned: str | None) -> Go | Wait | Stop:
        maybe = [self._costs.get(c) if c is not None else None for c in self._maybe.values()]
        budget = Budget(
            self.options.max_credits, self.credits_total + sum(c or 0 for c in maybe),
            self._reserved, self._unknown_in_flight > 0, self._costs,
            unpriced_maybe=maybe.count(None),
        )
        return gate(
            price_class, budget, [a.view() for a in self._accounts.values()],
            account=pinned, followed=len(self._schedule),
            max_pending=self.options.max_pending if self.options.wait else None,
            stopped=self._stop,
        )

    async def _send(
        self, job: Job, facts: JobFacts, go: Go, price_class: str
    ) -> tuple[Task, str] | Outcome | None:
        """One create (the client retries and reconciles within it); None to try again."""
        account = self._accounts[go.account]
        sent_at = self._clock()  # when its slot was granted: the throttle needs to know
        self._reserve(go.reserve, +1)
        account.in_flight += 1
        self._sending.add()
        sending = False
        try:
            if self._journal is not None:
                # Creates gated meanwhile join this intent's fsync, their slots on the wire;
                # this one's slot is back before a job that has no intent yet gets one.
                async with self._creating.lent():
                    await self._journal.intent(
                        job.custom_id, key=facts.key, account=account.label,
                        fingerprint=facts.fingerprint, cost_class=price_class,
                        server_at=account.client.server_clock.now().timestamp(),
                    )
            self._creates_sent = True
            with self._at("creating"):
                request = self._request_of(job)
                if self._uploads is not None:
                    request = await self._uploads.applied(request, account.client, account.label,
                                                           facts.digests)
                # While a lost create is looked up (for seconds, to prove it absent), its
                # places go to other jobs: the waits do not hold up the batch.
                with slots_given_back(self._alive, self._creating, self._sending):
                    sending = True
                    task = await account.client.create(
                        request, correlation_key=facts.key, retry_rate_limits=False
                    )
        except ViduError as error:
            failure: ViduError | None = error
        except asyncio.CancelledError:
            if not sending and self._journal is not None:
                # Stopped before the create left (waiting for its intent's fsync, or for
                # its slot back): a rerun sends it as new, without proving it absent.
                with contextlib.suppress(JournalError):
                    self._journal.withdrawn(job.custom_id)
            raise
        else:
            failure = None
        finally:
            # No await until the credits are counted: nobody sees them in neither place.
            account.in_flight -= 1
            self._reserve(go.reserve, -1)
            self._sending.release()  # fires _changed: gated creates look again
        if failure is not None:
            return await self._refused(job, failure, account, sent_at)
        self._throttle.succeeded(sent_at)
        self._spent += task.credits or 0
        self._costs.setdefault(price_class, task.credits or 0)
        if self._journal is not None:  # the intent is durable: this record need not wait
            await self._journal.created(job.custom_id, task_id=task.task_id,
                                        credits=task.credits, durable=False)
        if self._observer is not None:
            self._observer.job_created(task.task_id, task.credits)
        cap = self.options.max_credits
        if cap is not None and self.credits_total > cap:
            return await self._cancel_over_budget(job, task, account, cap)
        return task, account.label

    def _count_found(self, task: TaskResult, price_class: str) -> None:
        """Count a task an earlier run made in the budget, once, unless the journal already
        does (its record names the task), and learn its class's price from it: a rerun that
        lost its journal need not send a task alone (one it may fail to cancel) to learn a
        price its own found tasks show. A price of 0 is not learned from a found task (a
        refunded task might show 0): its class's next create still goes alone."""
        if task.id not in self._counted:
            self._counted.add(task.id)
            self._spent_found += task.credits or 0
        if task.credits:
            self._costs.setdefault(price_class, task.credits)

    def _reserve(self, cost: int | None, sign: int) -> None:
        if cost is None:
            self._unknown_in_flight += sign
        else:
            self._reserved += sign * cost

    async def _cancel_over_budget(
        self, job: Job, task: Task, account: _Account, cap: int
    ) -> Outcome:
        """A task of a price not known before broke the cap: cancel it at once (free before
        it starts) and stop submitting."""
        message = (f"the task cost {task.credits} credits, more than the {cap} of max_credits "
                   f"left room for")
        try:
            await account.client.cancel_task(task.task_id)
        except ViduError as error:
            info = ErrorInfo("BudgetExceeded", f"{message}; cancelling it failed ({error})")
            self._halt(info)
            return Outcome(job.custom_id, "submitted", job.line, task_id=task.task_id,
                           credits=task.credits, error=info)
        self._spent -= task.credits or 0
        info = ErrorInfo("BudgetReached", f"{message}; it was cancelled before it started and "
                         "not paid for: a rerun with more budget sends it again")
        self._halt(info)
        if self._journal is not None:  # unsent again, its next task under a new key
            await self._journal.refunded(job.custom_id, task_id=task.task_id,
                                         credits=task.credits)
        return Outcome(job.custom_id, "not_submitted", job.line, task_id=task.task_id,
                       state="cancelled", credits=0, error=info)

    def _request_of(self, job: Job) -> Request:
        """The job's request, given our ``callback_url`` unless it names a URL of its own."""
        url = self.options.callback_url
        if url is None or job.request.callback_url is not None:
            return job.request
        return attrs.evolve(job.request, callback_url=url)

    def _by_callback(self, job: Job) -> bool:
        """Whether our receiver will hear of this job's task's end."""
        return self._callbacks is not None and job.request.callback_url in (
            None, self.options.callback_url
        )

    async def _refused(
        self, job: Job, error: ViduError, account: _Account, sent_at: float
    ) -> Outcome | None:
        """What a create's error means (``verdicts``), acted on; None to try again."""
        meaning = verdict(error, retry_after_cap=self.options.retry_after_cap)
        if isinstance(meaning, End):
            if meaning.status == "ambiguous":  # its task may exist, and cost
                self._maybe[job.custom_id] = cost_class(job.request)
            return Outcome(job.custom_id, meaning.status, job.line, error=meaning.error)
        if isinstance(meaning, Halt):
            self._halt(meaning.error)
            return None
        if isinstance(meaning, AccountDown):
            if account.down is None:
                logger.warning("%s can take no more creates: %s: %s", account.label,
                               meaning.error.reason, meaning.error.message)
            account.down = meaning.error
            return None
        assert isinstance(meaning, Retry)
        if meaning.pace == "quota":
            logger.info("%s: QuotaExceeded; waiting for a running task to finish", account.label)
            await self._wait_for_a_finish()
        else:
            pause = self._throttle.throttled(meaning.retry_after, sent_at)
            level = logging.WARNING if pause >= LOUD_PAUSE else logging.DEBUG
            logger.log(level, "%s: %s; sending again in %.1f s%s", account.label,
                       ErrorInfo.from_exception(error).reason, pause,
                       " (the server asked for it)" if meaning.retry_after else "")
            await self.options.sleep(pause)
        return None

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

    def _halt(self, info: ErrorInfo) -> None:
        if self._stop is None:
            logger.warning("stopping new submissions: %s: %s", info.reason, info.message)
            self._stop = info
            self._changed.fire()

    async def _probe_accounts(self) -> None:
        """Learn each account's concurrency; a rejected key or an API that cannot be reached
        fails here, before any job is read."""
        for account in self._accounts.values():
            try:
                credits = await account.client.get_credits()
            except (AuthenticationError, APIConnectionError):
                raise  # a rejected key, or no answer at all: nothing can be sent
            except APIError as error:
                logger.info("%s: could not read credits (%s); assuming defaults", account.label,
                            error)
                continue
            if credits.remains:
                first = credits.remains[0]
                account.limit = first.concurrency_limit or account.limit
                account.busy_elsewhere = first.current_concurrency or 0

    # --- following and downloading -----------------------------------------------------------

    async def _follow_task(
        self, job: Job, key: str, task_id: str, label: str, credits: int | None,
        *, by_callback: bool = False,
    ) -> tuple[Outcome, bool]:
        """The job's task exists: report it submitted, or follow it to its end (and download
        it)."""
        self._kept.keep(key, job.custom_id, task_id)
        self._kept_on[label] += 1
        if not self.options.wait:
            return Outcome(job.custom_id, "submitted", job.line, task_id=task_id,
                           credits=credits), False
        account = self._accounts[label]
        account.in_flight += 1
        waiter: asyncio.Future[TaskResult | NotFound] = asyncio.get_running_loop().create_future()
        self._waiters[task_id] = waiter
        self._seen(task_id, str(TaskState.CREATED))
        self._schedule.add(task_id, label, by_callback=by_callback, now=self._now())
        self._wake.fire()
        try:
            result = await waiter
        finally:
            del self._waiters[task_id]
            self._schedule.remove(task_id)
            self._move(self._task_states.pop(task_id), None)
            account.in_flight -= 1
            self._task_finished.fire()
            self._changed.fire()
        if isinstance(result, NotFound):
            return _not_found(job, result, credits), False
        if not (result.succeeded and self.options.download is not None):
            return Outcome.from_result(job.custom_id, job.line, result), True
        try:
            with self._at("downloading"):
                async with self._downloading:
                    paths = await account.client.download(
                        result, self.options.download, stem=job.custom_id,
                        names=self.options.names, line=job.line,
                    )
        except (ViduError, OSError) as exc:
            error = ErrorInfo("DownloadFailed", str(exc))
            return Outcome.from_result(job.custom_id, job.line, result, error=error), False
        files = tuple(str(p) for p in paths)
        return Outcome.from_result(job.custom_id, job.line, result, files=files), True

    async def _take_callbacks(self, receiver: CallbackReceiver) -> None:
        """Hand the follower the ends that callbacks claim (cancelled once all jobs settled)."""
        async with contextlib.aclosing(receiver.events()) as events:
            async for event in events:
                self._on_callback(event)

    def _on_callback(self, event: CallbackEvent) -> None:
        """Show the observer what a callback says; settle a confirmed end, or have a claimed
        one read back soon."""
        waiter = self._waiters.get(event.task_id)
        if waiter is not None:
            self._seen(event.task_id, str(event.result.state))
        if not event.result.is_terminal:
            return
        if event.confirmed and waiter is not None:
            if not waiter.done():
                waiter.set_result(event.result)
            return
        if self._schedule.claim(event.task_id, self._now()):
            self._wake.fire()

    def _seen(self, task_id: str, state: str) -> None:
        """A followed task was seen in ``state``: move its job in the snapshot."""
        self._move(self._task_states.get(task_id), state)
        self._task_states[task_id] = state
        if self._observer is not None:
            self._observer.task_state(task_id, state)

    def _now(self) -> float:
        """The follower's time: the clock, or later if an injected sleep said more time passed
        (a virtual sleep returns at once; the time it stood for still counts)."""
        return max(self._clock(), self._slept_until)

    async def _follow(self) -> None:
        """Refresh followed tasks when due and settle those that ended, forever (cancelled
        once all jobs settled). One timer is armed for the earliest due time; a new task or
        a claim re-arms it only when it makes that time earlier."""
        timer: asyncio.Future[None] | None = None
        armed = math.inf
        try:
            while True:
                now = self._now()
                due = self._schedule.due(now)
                if due:
                    by_account: dict[str, list[str]] = collections.defaultdict(list)
                    for watch in due:
                        by_account[watch.account].append(watch.task_id)
                    for label, task_ids in by_account.items():
                        await self._refresh(self._accounts[label].client, task_ids)
                    continue
                first = self._schedule.next_due()
                if first is not None and (timer is None or first < armed):
                    if timer is not None:
                        await _cancel(timer)
                    timer, armed = asyncio.ensure_future(self.options.sleep(first - now)), first
                woken: asyncio.Future[Any] = asyncio.ensure_future(self._wake.wait())
                either: list[asyncio.Future[Any]] = [woken] if timer is None else [woken, timer]
                try:
                    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    await _cancel(woken)
                if timer is not None and timer.done():
                    timer.result()  # raises only if the sleep itself failed
                    self._slept_until = max(self._slept_until, armed)
                    timer, armed = None, math.inf
        finally:
            if timer is not None:
                await _cancel(timer)

    async def _refresh(self, client: ViduClient, task_ids: list[str]) -> None:
        """Read ``task_ids`` (100 per list request, one by one if listing fails) and settle
        those that ended."""
        for start in range(0, len(task_ids), MAX_PAGE_SIZE):
            chunk = task_ids[start:start + MAX_PAGE_SIZE]
            seen = await list_states(client, chunk)
            unfinished = []
            for task_id in chunk:
                result = seen.get(task_id) or await query_one(client, task_id)
                waiter = self._waiters.get(task_id)
                if result is None or waiter is None:
                    unfinished.append(task_id)  # not read now: asked again next interval
                    continue
                if isinstance(result, NotFound):  # not known now: asked again, until proof
                    if self._schedule.missed(task_id, self._now()):
                        self._schedule.remove(task_id)
                        if not waiter.done():
                            waiter.set_result(result)
                    else:
                        unfinished.append(task_id)
                    continue
                self._schedule.found(task_id)
                self._seen(task_id, str(result.state))
                if result.is_terminal:
                    self._schedule.remove(task_id)
                    if not waiter.done():
                        waiter.set_result(result)
                else:
                    unfinished.append(task_id)
            self._schedule.refreshed(unfinished, self._now())

    # --- the safety net ----------------------------------------------------------------------

    async def _check_duplicates(self) -> list[Outcome]:
        """Report every task of this run's keys that is not the one the batch kept, and cancel
        those not started. The batch never sends a second create for a key, so this should find
        nothing; if it ever does, nobody pays for it silently. One pass per account over the
        tasks created since this run started, however many (page by page, none kept): a second
        task for a key would come from a create of this run (an interrupted earlier run's
        creates are not checked again)."""
        if not self._creates_sent:
            return []
        outcomes = []
        for account in self._accounts.values():
            try:
                extras = await self._extras(account)
            except ViduError as error:  # API errors and ScanLimitError: the net is best effort
                logger.warning("could not check %s for duplicate tasks: %s", account.label, error)
                continue
            if extras is None:
                logger.warning("could not check %s for duplicate tasks: its task list does "
                               "not show payloads", account.label)
                continue
            for made, extra in extras:
                outcomes.append(await self._duplicate(account, made, extra))
        return outcomes

    async def _extras(self, account: _Account) -> list[tuple[Kept, TaskResult]] | None:
        """The account's tasks since this run started that carry a key of this batch's but are
        not the task it kept for that key; None if the list shows no payloads (nothing can be
        told). By id: the sweep's slices may list a task twice."""
        since = self._run_started[account.label] - WINDOW_SLACK
        extras: dict[str, tuple[Kept, TaskResult]] = {}
        async with contextlib.aclosing(
            account.client.reconciler.sweep(since, expected=self._kept_on[account.label])
        ) as listed:
            async for task in listed:
                if "payload" not in task.raw:
                    return None
                made = self._kept.get(task.correlation_key)
                if made is not None and task.id != made.task_id:
                    extras[task.id] = (made, task)
        return list(extras.values())

    async def _duplicate(self, account: _Account, made: Kept, extra: TaskResult) -> Outcome:
        state = str(extra.state)
        note = f"a second task ({extra.id}) exists for job {made.job_id!r} (kept: {made.task_id})"
        if is_cancellable(extra.state):
            try:
                await account.client.cancel_task(extra.id)
            except ViduError as error:
                note += f"; cancelling it failed ({error})"
            else:
                note += "; it was cancelled before it started"
                state = "cancelled"
        else:
            note += f"; it is {state} and cannot be cancelled"
        logger.error("duplicate task: %s", note)
        return Outcome(made.job_id, "duplicate", None, task_id=extra.id, state=state,
                       credits=extra.credits, error=ErrorInfo("DuplicateTask", note))


def _not_found(job: Job, missing: NotFound, credits: int | None) -> Outcome:
    """The outcome of a task given up after long 404s (``follow.GONE_AFTER``): not an end on
    Vidu, so not journalled as one (a rerun follows it again) and never retried (it was made:
    a new task would be paid for again)."""
    return Outcome(job.custom_id, "failed", job.line, task_id=missing.task_id, credits=credits,
                   error=ErrorInfo(TASK_NOT_FOUND, (
                       f"task {missing.task_id} answered {missing.reason} to every read for "
                       f"{GONE_AFTER / 60:g} minutes although this batch made it"
                   )))


def _saved_in(final: Mapping[str, Any], folder: Path) -> bool:
    """Whether a recorded end's files are all in ``folder`` (none recorded: not saved)."""
    files = [Path(f) for f in final.get("files") or ()]
    inside = folder.resolve()
    return bool(files) and all(f.is_file() and f.resolve().is_relative_to(inside) for f in files)


def _ready_download_folder(folder: Path) -> None:
    """Make sure videos can be saved in ``folder`` before anything is paid for (else
    ``ConfigurationError``), and remove an interrupted run's partial files there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".vidu-write-check-"):
            pass
    except OSError as error:
        raise ConfigurationError(
            f"cannot save videos in {folder}: {error.strerror or error}"
        ) from None
    remove_partial_files(folder, before=time.time())


def _fresh_batch_id() -> str:
    return "batch-" + secrets.token_hex(8)


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
