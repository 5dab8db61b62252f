"""One reconciler per account: did a create whose answer was lost make a task?

A lost create is looked up by the correlation key in its ``payload`` (see ``tasks``). The rules
(API.md section 7), each a plain function tested by table:

- windows and times are on the *server's* clock (``ServerClock``), never the local one; a key's
  window runs from its first attempt, less ``window_slack`` (the clock's uncertainty), to the
  server's now (``lookup_window``): a lookup never sends ``created_at.to``, since a server may
  commit (and stamp) a create well after the client stopped waiting for it (a ``sweep`` of
  every task since a time cuts its range into slices, the last open-ended);
- the list may lag creates: absence is proven only by a scan that started at least
  ``RetryPolicy.visibility_lag`` after the create could last have committed (``proof_time``),
  plus twice the clock's uncertainty for times from elsewhere (an earlier run's journal, a
  caller), or only ``SERVER_SKEW`` for this client's own readings, compared as a duration on this
  machine's monotonic clock; an earlier miss means wait and scan again. Meanwhile the
  caller's places (its concurrency slot) are given back (``slots_given_back``);
- the list may omit ``payload``: then a miss proves nothing; items with the same model and
  prompt are confirmed with ``GET /tasks/{id}/creations``, and failing that the answer is
  ``Unknown`` (the caller must not resend).

Every key waiting at a moment is served by one scan of the account (their windows merged into
one, from the earliest start); keys arriving while ``SCANS_AT_ONCE`` scans run join the next
one. Scans are bounded by ``ScanLimits``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import logging
import math
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)

import attrs

from vidu_async._keys import Recent
from vidu_async._loops import PerLoop
from vidu_async.errors import ViduError
from vidu_async.retry import RetryPolicy
from vidu_async.server_clock import MIN_UNCERTAINTY, ServerClock
from vidu_async.tasks import MAX_PAGE_SIZE, TaskPage, TaskResult

__all__ = [
    "LIST_WINDOW",
    "SCANS_AT_ONCE",
    "SERVER_SKEW",
    "SLICE_MIN",
    "SLICE_OVERLAP",
    "SLICE_PAGES",
    "SWEEP_AT_ONCE",
    "WINDOW_SLACK",
    "Absent",
    "Found",
    "Reconciler",
    "Rescan",
    "ScanLimitError",
    "ScanLimits",
    "TaskIndex",
    "Unknown",
    "Window",
    "judge",
    "lookup_window",
    "merge_windows",
    "proof_time",
    "slots_given_back",
    "sweep_slices",
    "window_slack",
]

logger = logging.getLogger("vidu_async.reconcile")

LIST_WINDOW = dt.timedelta(days=7)
"""The list's default window: without ``created_at.from`` it lists the last 7 days."""

WINDOW_SLACK = dt.timedelta(seconds=60)
"""How far before a first attempt timed by someone else (an earlier run's journal, a caller's
guess) a lookup window starts: absorbs their clocks' errors many times over."""

SERVER_SKEW = MIN_UNCERTAINTY
"""Seconds the server's machines' clocks may disagree (what NTP leaves): the one stamping a
task's ``created_at`` may be ahead of the one listing tasks up to its own now."""

SCANS_AT_ONCE = 1
"""Scans of one account that may run at once: a page retried after its backoff holds up only
the keys of its own scan; the next one's keys are served meanwhile."""

SWEEP_AT_ONCE = 8
"""Time slices of one sweep listed at once: a batch's closing check reads every task it made,
a page per 100, and a page after another at a real server's round trip takes minutes for a
hundred thousand jobs."""

SLICE_PAGES = 4
"""Pages a sweep expects per slice, at least: each slice ends in a page of its own, part full,
so more slices cost more requests (of a rate limit the batch's creates share)."""

SLICE_OVERLAP = dt.timedelta(seconds=1)
"""How far past the next slice's start a sweep's slice reaches: a server that reads
``created_at.to`` as exclusive, or to the second, still lists a task at the boundary (maybe
twice)."""

SLICE_MIN = dt.timedelta(seconds=10)
"""A sweep's slices span this much at least: their overlaps list a tenth more at most."""

PageSource = Callable[[dt.datetime | None, dt.datetime | None], AsyncGenerator[TaskPage, None]]
"""The account's task list from a ``created_at.from`` (None: the list's default window) to a
``created_at.to`` (None: the server's now, none sent)."""

_slots: contextvars.ContextVar[tuple[asyncio.Semaphore, ...]] = contextvars.ContextVar(
    "vidu_async_reconcile_slots", default=()
)


_retaking: set[asyncio.Task[None]] = set()
"""Slots being taken back (referenced until done)."""


async def _take(slot: asyncio.Semaphore) -> None:
    await slot.acquire()


@contextlib.contextmanager
def slots_given_back(*slots: asyncio.Semaphore) -> Iterator[None]:
    """Within the block, a lookup (of this asyncio task) gives ``slots``, which the caller holds,
    back while it scans and waits, and takes them again as soon as they are free: a create that
    sends nothing (for seconds, when absence must be proven) holds no place that other jobs
    could use. Until they are free again, a resend may exceed the slots by one."""
    token = _slots.set(slots)
    try:
        yield
    finally:
        _slots.reset(token)


@contextlib.asynccontextmanager
async def _slots_released() -> AsyncIterator[None]:
    slots = _slots.get()
    for slot in slots:
        slot.release()
    try:
        yield
    finally:
        for slot in slots:
            # Taken back as soon as one is free, without waiting here: the caller may hold what
            # the holders of the slots wait for (a batch's budget reservation); its own release
            # later keeps the count right.
            retaking = asyncio.create_task(_take(slot))
            _retaking.add(retaking)
            retaking.add_done_callback(_retaking.discard)


@attrs.frozen
class Window:
    """The server's ``created_at`` from ``start`` (None: the list's default window) to the
    server's now: a create may be committed, and stamped, any time after it was sent."""

    start: dt.datetime | None


def window_slack(uncertainty: float) -> dt.timedelta:
    """How far a window reaches before its create's first moment: its reading of the server's
    clock may be off by ``uncertainty`` (``created_at`` is the server's own)."""
    return dt.timedelta(seconds=uncertainty)


def lookup_window(sent_at: dt.datetime | None, uncertainty: float, *, trusted: bool) -> Window:
    """Where a create first sent at ``sent_at`` (None: the list's default window) can be listed:
    from just before it to the server's now. Untrusted times (not readings the server clock's
    bounds were learned with) reach ``WINDOW_SLACK`` back instead of the clock's uncertainty."""
    if sent_at is None:
        return Window(None)
    return Window(sent_at - (window_slack(uncertainty) if trusted else WINDOW_SLACK))


def sweep_slices(
    since: dt.datetime | None, now: dt.datetime, pages: int
) -> list[tuple[dt.datetime | None, dt.datetime | None]]:
    """The ``(from, to)`` slices a sweep from ``since`` to the server's ``now``, expected to take
    ``pages`` pages, lists at once: one per ``SLICE_PAGES`` pages, up to ``SWEEP_AT_ONCE``, of
    equal time, each but the last reaching ``SLICE_OVERLAP`` into the next, the last open
    (``to`` None: tasks stamped after ``now``, by a server clock ahead of its estimate, are
    listed too), each spanning ``SLICE_MIN`` at least. One open slice when there is nothing to
    cut (the list's default window, a few pages, a short time). Every task from ``since`` on
    falls in a slice."""
    if since is None:
        return [(None, None)]
    count = min(SWEEP_AT_ONCE, pages // SLICE_PAGES, (now - since) // SLICE_MIN)
    if count < 2:
        return [(since, None)]
    step = (now - since) / count
    starts = [since + step * i for i in range(count)]
    ends: list[dt.datetime | None] = [start + SLICE_OVERLAP for start in starts[1:]]
    return list(zip(starts, [*ends, None], strict=True))


def merge_windows(
    windows: Iterable[Window], default_start: tuple[dt.datetime, dt.datetime]
) -> Window:
    """The one window covering ``windows`` (at least one): all run to the server's now, so the
    earliest start covers the others. The list's default window (None) starts between the two
    ``default_start`` bounds (the server's clock is known that well): it covers a start no
    earlier than the later bound; otherwise the window starts at the earlier of that start and
    the earlier bound, which covers the default window too."""
    starts = [window.start for window in windows]
    if not starts:
        raise ValueError("no window to merge")
    earliest = min((start for start in starts if start is not None), default=None)
    if None not in starts:
        return Window(earliest)
    soonest, latest = default_start
    if earliest is None or earliest >= latest:
        return Window(None)
    return Window(min(earliest, soonest))


@attrs.frozen
class Found:
    """The task carrying the key; ``others``: more tasks with the same key (duplicates)."""

    task: TaskResult
    others: tuple[TaskResult, ...] = ()


@attrs.frozen
class Absent:
    """Proven: no task carries the key, and none can still appear. Resending is safe."""


@attrs.frozen
class Unknown:
    """The list cannot tell (it carries no ``payload``, no candidate matched): do not resend."""

    reason: str


@attrs.frozen
class Rescan:
    """Not proven yet: scan again once the server's clock reads ``at``."""

    at: dt.datetime


def proof_time(
    settled_at: dt.datetime, visibility_lag: float, uncertainty: float, *, one_clock: bool = False
) -> dt.datetime:
    """The earliest time a scan may start and prove a create absent that could last have
    committed at ``settled_at``.

    On the server's clock both readings may be off by ``uncertainty``, hence twice it. With
    ``one_clock`` both are readings of this machine's monotonic clock, so what is compared is a
    duration no offset error touches: only ``SERVER_SKEW`` is added (a task stamped by a server
    machine ahead of the one that lists it is listed that much later).
    """
    margin = SERVER_SKEW if one_clock else 2 * uncertainty
    return settled_at + dt.timedelta(seconds=visibility_lag + margin)


def judge(
    hits: Sequence[TaskResult],
    *,
    payload_visible: bool,
    scan_started: dt.datetime,
    proof_at: dt.datetime,
) -> Found | Absent | Unknown | Rescan:
    """What one scan says about a key: ``hits`` are the tasks seen carrying it (oldest first)."""
    if hits:
        return Found(hits[0], tuple(hits[1:]))
    if scan_started < proof_at:
        return Rescan(proof_at)
    if payload_visible:
        return Absent()
    return Unknown(
        "the task list carries no payload and no task with the same model and prompt carries "
        "the key, so absence cannot be proven"
    )


def _oldest_first(task: TaskResult) -> tuple[dt.datetime, str]:
    return (task.created_at or dt.datetime.min.replace(tzinfo=dt.UTC), task.id)


@attrs.frozen
class TaskIndex:
    """One scan of an account's tasks: ``by_key`` (correlation key -> tasks, oldest first) and
    whether the list visibly carries ``payload`` (every item has the key; an empty list does).

    ``started_at`` is the server time the scan started (no earlier than it evaluated any page),
    ``started_local`` the same moment on this machine's clock (``ServerClock.local_now``):
    lookups of this machine's own creates compare it with their own readings.
    """

    tasks: tuple[TaskResult, ...]
    started_at: dt.datetime
    by_key: Mapping[str, tuple[TaskResult, ...]]
    payload_visible: bool
    started_local: dt.datetime

    @classmethod
    def of(
        cls, tasks: Iterable[TaskResult], started_at: dt.datetime, started_local: dt.datetime
    ) -> TaskIndex:
        listed = tuple(tasks)
        grouped: dict[str, list[TaskResult]] = {}
        for task in listed:
            if task.correlation_key is not None:
                grouped.setdefault(task.correlation_key, []).append(task)
        by_key = {k: tuple(v) if len(v) == 1 else tuple(sorted(v, key=_oldest_first))
                  for k, v in grouped.items()}
        visible = all("payload" in task.raw for task in listed)
        return cls(listed, started_at, by_key, visible, started_local)

    def candidates(self, model: str | None = None, prompt: str | None = None) -> tuple[str, ...]:
        """Ids of items without ``payload`` that may still carry a key: same model and prompt
        (None matches any)."""
        return tuple(
            task.id
            for task in self.tasks
            if "payload" not in task.raw
            and model in (None, task.model)
            and prompt in (None, task.prompt)
        )


@attrs.frozen
class ScanLimits:
    """Bounds on one scan (every task from the earliest window start of the keys sharing it to
    the server's now): ``max_pages`` list pages, ``budget`` seconds, and at most
    ``max_confirmations`` candidates confirmed one by one per lookup."""

    max_pages: int = attrs.field(default=100, validator=attrs.validators.ge(1))
    budget: float = attrs.field(default=120.0, validator=attrs.validators.gt(0))
    max_confirmations: int = attrs.field(default=50, validator=attrs.validators.ge(0))


class ScanLimitError(ViduError):
    """A scan of the task list ran past its ``ScanLimits``: nothing is proven either way."""


@attrs.define
class _Allowance:
    """What a scan, or a sweep's slices together, may still spend: ``pages_left`` list pages,
    and time until ``deadline`` (the policy's clock)."""

    max_pages: int
    budget: float
    deadline: float
    where: str
    """``since <start>`` or ``in the default window``, for the error."""
    pages_left: int = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.pages_left = self.max_pages

    def check(self, now: float) -> None:
        """``ScanLimitError`` when another page would go past the allowance."""
        if self.pages_left <= 0:
            raise ScanLimitError(
                f"the task list has more than {self.max_pages} pages {self.where} "
                "(ScanLimits.max_pages)"
            )
        if now > self.deadline:
            raise ScanLimitError(
                f"scanning the task list took over {self.budget:g}s "
                f"after {self.max_pages - self.pages_left} pages (ScanLimits.budget)"
            )


@attrs.define
class _Scan:
    """One scan, to be run once and shared by every key that joined it before it started."""

    windows: list[Window]
    index: TaskIndex | None = None
    error: ViduError | None = None


class Reconciler:
    """Looks keys up in one account's task list, one shared scan at a time (see the module).

    ``pages`` lists the account's tasks from a start time; ``get_task`` confirms a candidate;
    ``clock`` is the account's server clock; ``policy`` gives ``visibility_lag``, ``sleep`` and
    the monotonic ``clock`` that times scans.
    """

    def __init__(
        self,
        *,
        pages: PageSource,
        get_task: Callable[[str], Awaitable[TaskResult]],
        clock: ServerClock,
        policy: RetryPolicy,
        limits: ScanLimits | None = None,
    ) -> None:
        self._pages = pages
        self._get_task = get_task
        self.clock = clock
        self._policy = policy
        self.limits = limits or ScanLimits()
        self.scans = 0
        """How many scans this reconciler has run."""
        self._next: _Scan | None = None
        self._running = PerLoop(lambda: asyncio.Semaphore(SCANS_AT_ONCE))
        self._confirmed: Recent[str, TaskResult] = Recent()

    async def lookup(
        self,
        key: str,
        *,
        model: str | None,
        prompt: str | None,
        sent_at: dt.datetime | None,
        settled_at: dt.datetime,
        own_readings: bool = True,
    ) -> Found | Absent | Unknown:
        """Whether a create carrying ``key`` made a task: scans (shared), waiting with the
        policy's ``sleep`` until absence can be proven. Raises ``ViduError`` when a scan fails.

        ``sent_at`` is when the first attempt was sent (None: the list's whole default
        window), ``settled_at`` when the last one ended: this clock's readings converted just
        before the call (``to_server``), so they follow the offset as it is learned; their
        window starts just before ``sent_at`` while the clock trusts them
        (``ServerClock.trusts``), and absence is proven ``visibility_lag`` plus ``SERVER_SKEW``
        after ``settled_at`` on this machine's clock. ``own_readings=False``: times from
        elsewhere (an earlier run's journal, a caller): the window starts ``WINDOW_SLACK``
        earlier, and the proof waits twice the clock's uncertainty more."""
        offset = self.clock.offset
        async with _slots_released():
            return await self._lookup(key, model, prompt, sent_at, settled_at,
                                      own_readings, offset)

    async def _lookup(
        self, key: str, model: str | None, prompt: str | None, sent_at: dt.datetime | None,
        settled_at: dt.datetime, own_readings: bool, offset: float,
    ) -> Found | Absent | Unknown:
        # This client's own readings are compared with the scan's start on this machine's clock
        # (the reading as taken, before the offset the caller converted it with): the offset's
        # error cancels out. Times from elsewhere are compared on the server's.
        own_settled = settled_at - dt.timedelta(seconds=offset) if own_readings else None
        slept_until: dt.datetime | None = None
        while True:
            moved = dt.timedelta(seconds=self.clock.offset - offset)
            sent = None if sent_at is None else sent_at + moved
            settled = settled_at + moved
            uncertainty = self.clock.uncertainty
            trusted = own_readings and self.clock.trusts(sent or settled)
            epoch = self.clock.epoch_started
            index = await self._shared_scan(lookup_window(sent, uncertainty, trusted=trusted))
            hits = index.by_key.get(key, ())
            if not hits and not index.payload_visible:
                hits = await self._confirm(key, index, index.candidates(model, prompt))
            if not hits and self.clock.epoch_started != epoch:
                continue  # the bounds started again meanwhile: the window may be off
            lag = self._policy.visibility_lag
            if own_settled is not None:
                proof_at = proof_time(own_settled, lag, uncertainty, one_clock=True)
                started, now = index.started_local, self.clock.local_now
            else:
                proof_at = proof_time(settled, lag, uncertainty)
                started, now = index.started_at, self.clock.now
            # A scan this lookup joined started after its wait ended: trust the wait as well as
            # the clock (a test's instant sleep moves no clock).
            verdict = judge(
                hits,
                payload_visible=index.payload_visible,
                scan_started=max(started, slept_until or started),
                proof_at=proof_at,
            )
            if not isinstance(verdict, Rescan):
                return verdict
            wait = (verdict.at - now()).total_seconds()
            logger.info("key %s not found yet; scanning again in %.1fs", key, max(wait, 0.0))
            if wait > 0:
                await self._policy.sleep(math.ceil(wait * 1000) / 1000)
            slept_until = verdict.at

    async def snapshot(self, since: dt.datetime | None = None) -> TaskIndex:
        """One scan of the account's tasks created since ``since`` (server clock; None: the
        list's own default window), shared with any lookups waiting at the same time."""
        return await self._shared_scan(Window(since))

    async def confirm(self, task_ids: Iterable[str]) -> tuple[TaskResult, ...]:
        """The tasks ``task_ids`` as ``GET /tasks/{id}/creations`` reports them (with
        ``payload``); an id among the reconciler's last ``REMEMBERED`` is not fetched again."""
        ids = tuple(task_ids)
        known = {task_id: self._confirmed[task_id] for task_id in ids
                 if task_id in self._confirmed}  # taken first: fetches may push these out
        for task_id in ids:
            if task_id not in known:
                known[task_id] = self._confirmed[task_id] = await self._get_task(task_id)
        return tuple(known[task_id] for task_id in ids)

    async def _confirm(
        self, key: str, index: TaskIndex, candidates: Sequence[str]
    ) -> tuple[TaskResult, ...]:
        """The candidates carrying ``key``, each the list item completed by its query."""
        fresh = [c for c in candidates if c not in self._confirmed]
        if len(fresh) > self.limits.max_confirmations:
            raise ScanLimitError(
                f"{len(fresh)} tasks without payload would need confirming one by one "
                f"(max_confirmations={self.limits.max_confirmations})"
            )
        listed = {task.id: task for task in index.tasks}
        hits = [
            TaskResult.from_dict({**listed[t.id].raw, **t.raw}) if t.id in listed else t
            for t in await self.confirm(candidates)
            if t.correlation_key == key
        ]
        return tuple(sorted(hits, key=_oldest_first))

    async def _shared_scan(self, window: Window) -> TaskIndex:
        scan = self._next
        if scan is None:
            scan = self._next = _Scan([window])
        else:
            scan.windows.append(window)
        async with self._running.get():
            if scan.index is None and scan.error is None:
                # Nobody ran it yet (or its runner was cancelled): run it for everyone.
                if self._next is scan:
                    self._next = None
                try:
                    slack = window_slack(self.clock.uncertainty)
                    default = self.clock.now() - LIST_WINDOW
                    scan.index = await self._scan(merge_windows(
                        scan.windows, (default - slack, default + slack)))
                except ViduError as error:
                    scan.error = error
        if scan.error is not None:
            raise scan.error
        assert scan.index is not None
        return scan.index

    async def sweep(
        self, since: dt.datetime | None, *, expected: int = 0
    ) -> AsyncGenerator[TaskResult, None]:
        """Every task created since ``since`` (server clock; None: the list's default window),
        page after page, none kept: memory stays flat however long the list (a batch reads
        every task it made). Bounded as a scan is (``ScanLimitError``), with room added for
        ``expected`` tasks the caller knows are listed: twice their pages, and ``budget`` per
        ``max_pages`` of them. From ``since`` to now, the pages the expected tasks take are
        read in time slices at once (``sweep_slices``): a task may come twice (at a slice's
        edge, or from a server that ignores ``created_at.to``).
        """
        pages = math.ceil(expected / MAX_PAGE_SIZE)
        allowance = self._allowance(since, extra_pages=2 * pages)
        slices = sweep_slices(since, self.clock.now(), pages)
        if len(slices) == 1:
            async with contextlib.aclosing(self._bounded_pages(since, allowance)) as listed:
                async for page in listed:
                    for task in page.tasks:
                        yield task
            return
        # Each slice's pages go to a queue the caller reads: a failed slice stops the sweep,
        # and leaving it (or an error) cancels the others. A task listed past its slice's end
        # (a server that ignores ``created_at.to``), or without a ``created_at`` to tell, stops
        # every slice: the range is then read once more, whole, by one open-ended reader.
        queue: asyncio.Queue[tuple[TaskResult, ...] | BaseException | None] = asyncio.Queue(
            maxsize=len(slices)
        )
        unsliced = False

        async def read(start: dt.datetime | None, end: dt.datetime | None, alone: bool) -> None:
            nonlocal unsliced
            try:
                async with contextlib.aclosing(
                    self._bounded_pages(start, allowance, end)
                ) as listed:
                    async for page in listed:
                        await queue.put(page.tasks)
                        if end is not None and any(
                            t.created_at is None or t.created_at > end for t in page.tasks
                        ):
                            unsliced = True
                        if unsliced and not alone:
                            break
            except Exception as error:  # raised to the caller, in its task
                await queue.put(error)
            else:
                await queue.put(None)

        readers = [asyncio.create_task(read(start, end, False)) for start, end in slices]
        try:
            ended = 0
            while ended < len(readers):
                item = await queue.get()
                if item is None:
                    ended += 1
                    if ended == len(readers) == len(slices) and unsliced:
                        readers.append(asyncio.create_task(read(since, None, True)))
                    continue
                if isinstance(item, BaseException):
                    raise item
                for task in item:
                    yield task
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)

    async def _scan(self, window: Window) -> TaskIndex:
        started_local = self.clock.local_now()
        started_at = self.clock.to_server(started_local)
        self.scans += 1
        # By id: a list that shifts as tasks are made may show one on two pages.
        tasks: dict[str, TaskResult] = {}
        async with contextlib.aclosing(
            self._bounded_pages(window.start, self._allowance(window.start))
        ) as pages:
            async for page in pages:
                tasks.update((task.id, task) for task in page.tasks)
        return TaskIndex.of(tasks.values(), started_at, started_local)

    def _allowance(self, start: dt.datetime | None, extra_pages: int = 0) -> _Allowance:
        """A scan's ``ScanLimits`` from now, with ``budget`` per ``max_pages`` added for
        ``extra_pages``."""
        limits = self.limits
        budget = limits.budget * (1 + extra_pages / limits.max_pages)
        return _Allowance(
            limits.max_pages + extra_pages, budget, self._policy.clock() + budget,
            f"since {start.isoformat()}" if start else "in the default window",
        )

    async def _bounded_pages(
        self, start: dt.datetime | None, allowance: _Allowance, end: dt.datetime | None = None
    ) -> AsyncGenerator[TaskPage, None]:
        """The list's pages from ``start`` to ``end`` (None: the server's now), spending
        ``allowance`` (shared by a sweep's slices); ``ScanLimitError`` once more pages or
        time would be needed than it has."""
        pages = 0
        async with contextlib.aclosing(self._pages(start, end)) as stream:
            async for page in stream:
                pages += 1
                allowance.pages_left -= 1
                yield page
                if page.next_page_token and page.tasks:
                    allowance.check(self._policy.clock())
        logger.debug("listed %d pages from %s to %s", pages, start or "the default window",
                     end or "now")
