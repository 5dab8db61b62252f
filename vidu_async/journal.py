"""The batch journal: an append-only JSONL file that makes a batch crash-safe and single-run.

For each job (keyed by an opaque job id the batch computes) it records, in order: an **intent**
(the correlation key the create will carry, the request's fingerprint, the account label, the
cost class, local and server time), on disk before the create is sent; the **created** task id
and its credits once the API answers; and the **final** outcome. A **refunded** (its task
cancelled unpaid) or **retry** (its failed task sent again on purpose) record makes the job
unsent again, its next task under the next attempt's key. A rerun with the same journal
therefore knows, for every job, whether it is done, whether a task exists to follow, or whether
a create may have been sent whose answer was lost (an intent without a task id).

One run at a time: ``Journal.open`` takes an exclusive ``flock`` on ``<journal>.lock`` (released
by the kernel when the process dies, even by ``kill -9``), and a second open fails at once naming
the holder. Writes are **group-committed**: one writer coroutine writes every waiting record with
one ``write`` and at most one ``fsync``, so concurrent creates share a sync instead of paying one
each. Opening and reading run in a thread; a group is written in a thread too, unless the
journal's recent syncs were quick (``INLINE_SYNC``): then on the event loop, since on a busy
loop the hand-over to a thread and back costs the waiting creates more than the sync itself. A
torn last line (the process died mid-write) is dropped on open: it was never synced, so what it
recorded had not happened yet.

Format: one JSON object per line with ``"v": 2``; the first record is a header
``{"kind": "batch", "batch_id": ...}``. Version 1 journals (``ledger.py``) are read too: their
records carry ``custom_id`` where version 2 has ``job``, so a v1 record's job id is its custom_id,
and its fingerprint, cost class and server time are None (unknown). The API key is never written
here: records hold ids, account labels, keys of our own making, and results.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import json
import os
import socket
import stat
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import attrs

from vidu_async._packed import Keys
from vidu_async.errors import JournalError, JournalLockedError

__all__ = [
    "JobRecord",
    "Journal",
    "JournalContents",
    "is_in_use",
    "lock_path",
    "read_journal",
    "remove_journal",
]

_VERSION = 2
_JOB_KINDS = ("intent", "withdrawn", "created", "refunded", "retry", "final")
_BATCH_KINDS = ("batch", "uploaded")
_MAX_LINE = 1 << 20
"""No record comes near 1 MiB: a longer line means this is not a journal (memory stays bounded)."""
LINGER = 0.2
"""Seconds a record that need not be durable (a task created or ended) may wait to ride a
group of intents before it is written anyway."""
_encode = json.JSONEncoder(ensure_ascii=False).encode
"""``json.dumps(..., ensure_ascii=False)`` without building an encoder per record."""
INLINE_SYNC = 0.002
"""Seconds under which the median of the last ``SYNCS_JUDGED`` syncs must be for a group to be
written and synced on the event loop. A thread's hand-over costs a busy loop milliseconds (the
thread waits for the GIL to start, and again to hand its result back), more than a quick disk's
sync blocks it; a slower disk sends the groups back to a thread within a few syncs. The median,
because a sync timed in a thread includes its wait for the GIL after it."""
SYNCS_JUDGED = 8
"""How many of the latest syncs decide where the next group is written."""
HOLDER_WAIT = 1.0
"""Seconds a run refused the lock waits for the holder to write who it is (it does so at once
after taking the lock) before naming it only "another process"."""
_HOLDER_POLL = 0.01


@attrs.frozen
class JobRecord:
    """What earlier runs recorded of one job: the latest intent, its task, its end state."""

    job_id: str
    correlation_key: str | None = None
    fingerprint: str | None = None
    """What the job asked for when its create was sent (None in a version 1 journal)."""
    account: str | None = None
    cost_class: str | None = None
    intent_at: float | None = None
    """Local wall-clock time (epoch seconds) the create was about to be sent."""
    server_at: float | None = None
    """The server's clock (epoch seconds) at the intent, for reconcile windows."""
    task_id: str | None = None
    credits: int | None = None
    final: Mapping[str, Any] | None = None
    """The job's result record once it reached an end state."""
    attempts: int = 0
    """Tasks of this job cancelled unpaid (``refunded``) or failed and retried on purpose
    (``retry``): its next correlation key's number."""
    retried: tuple[str, ...] = ()
    """Failed tasks of this job an earlier run retried: billed, counted in ``spent`` already."""

    @property
    def is_final(self) -> bool:
        return self.final is not None

    @property
    def needs_reconcile(self) -> bool:
        """A create may have been sent, but its answer was never recorded."""
        return self.correlation_key is not None and self.task_id is None and self.final is None


@attrs.define
class _Loaded:
    """What reading a journal found: the jobs, the batch identity, what was spent and learned."""

    jobs: dict[str, JobRecord] = attrs.field(factory=dict)
    batch_id: str | None = None
    spent: int = 0
    costs: dict[str, int] = attrs.field(factory=dict)
    end: int = 0
    """Bytes of complete lines: where appends continue (a torn tail is cut there)."""
    used_before: bool = False
    """An earlier run held this journal (its lock file names it), or left records in it."""
    uploads: dict[str, tuple[str, float]] = attrs.field(factory=dict)
    """Images uploaded by earlier runs: ``account/sha256:...`` -> (``ssupload:`` URI, when)."""
    intent_keys: Keys = attrs.field(factory=Keys)
    """The correlation key of every intent recorded (a retried job's earlier keys too)."""

    def apply(self, record: Mapping[str, Any]) -> None:
        """Fold one parsed record into the state."""
        kind = record["kind"]
        if kind == "batch":
            if self.batch_id is None:
                self.batch_id = record.get("batch_id")
            return
        if kind == "uploaded":
            uri, at = record.get("uri"), record.get("at")
            if isinstance(uri, str) and isinstance(at, int | float):
                self.uploads[str(record.get("media"))] = (uri, float(at))
            return
        job_id = record.get("job", record.get("custom_id"))
        current = self.jobs.get(job_id) or JobRecord(job_id)
        if kind == "intent":
            if isinstance(key := record.get("key"), str):
                self.intent_keys.add(key)
            current = JobRecord(
                job_id,
                correlation_key=record.get("key"),
                fingerprint=record.get("fingerprint"),
                account=record.get("account"),
                cost_class=record.get("cost_class"),
                intent_at=record.get("at"),
                server_at=record.get("server_at"),
                attempts=current.attempts,
                retried=current.retried,
            )
        elif kind == "withdrawn":  # the intent's create never left: as if never sent
            current = JobRecord(job_id, attempts=current.attempts, retried=current.retried)
        elif kind == "refunded":  # its task was cancelled unpaid: the job starts afresh
            credits = record.get("credits")
            if isinstance(credits, int):
                self.spent -= credits
            current = JobRecord(job_id, attempts=current.attempts + 1, retried=current.retried)
        elif kind == "retry":  # its task failed and is sent again, on purpose, under a new key
            current = JobRecord(job_id, attempts=current.attempts + 1,
                                retried=(*current.retried, str(record.get("task_id"))))
        elif kind == "created":
            task_id, credits = record.get("task_id"), record.get("credits")
            if task_id != current.task_id and isinstance(credits, int):
                self.spent += credits
                if current.cost_class is not None:
                    self.costs[current.cost_class] = credits
            current = attrs.evolve(current, task_id=task_id, credits=credits)
        else:
            current = attrs.evolve(current, final=record.get("result"))
        self.jobs[job_id] = current


class Journal:
    """An open, locked journal; ``await Journal.open(path, batch_id=...)``, then ``close()``.

    Memory holds only what earlier runs recorded, and ``take`` drops each record as its job is
    handled; this run's writes live on disk only. ``writes`` and ``syncs`` count the writer's
    ``write`` and ``fsync`` calls (one of each per group at most).
    """

    def __init__(self, path: Path, fd: int, lock_fd: int, loaded: _Loaded, batch_id: str) -> None:
        self.path = path
        self.batch_id = batch_id
        self.is_new = not loaded.jobs
        self.used_before = loaded.used_before
        """An earlier run used this journal (even if its records are gone: the lock file
        beside it outlives a deleted journal)."""
        self.recorded_keys = loaded.intent_keys
        """The correlation keys of every create earlier runs recorded an intent for here (a
        retried job's earlier attempts too), packed: ``in`` and ``len``."""
        self.uploads: Mapping[str, tuple[str, float]] = loaded.uploads
        """Images earlier runs uploaded: ``media`` key -> (``ssupload:`` URI, epoch seconds)."""
        self.spent = loaded.spent
        self.spent_this_run = 0
        self.writes = 0
        self.syncs = 0
        self.inline_writes = 0
        """Groups written on the event loop (``INLINE_SYNC``), of ``writes``."""
        self._sync_times = _SyncTimes()
        self._costs = loaded.costs
        self._jobs = loaded.jobs
        self._fd = fd
        self._lock_fd = lock_fd
        self._end = loaded.end
        self._open_intents: dict[str, str] = {}
        """This run's intents without a task yet: job id -> cost class (to learn its cost)."""
        self._lines: list[bytes] = []
        self._sync_wanted = False
        self._waiting: list[asyncio.Future[JournalError | None]] = []  # for the next group
        self._wake = asyncio.Event()
        self._linger: asyncio.TimerHandle | None = None
        """Wakes the writer for records that need not be durable, if nothing else does."""
        self._closing = False
        self._failure: JournalError | None = None
        self._failure_seen = False
        self._writer = asyncio.create_task(self._write_groups(), name=f"journal {path}")

    @classmethod
    async def open(cls, path: Path, *, batch_id: str) -> Journal:
        """Lock and read the journal at ``path`` (creating it, and its folder, if missing).

        ``batch_id`` is recorded in the header of a journal that has none; an existing journal
        keeps its own (``.batch_id``). Raises ``JournalLockedError`` if another run holds it,
        ``JournalError`` if it cannot be used.
        """
        opening = asyncio.ensure_future(asyncio.to_thread(_open, path, batch_id))
        try:
            fd, lock_fd, loaded, header = await asyncio.shield(opening)
        except asyncio.CancelledError:
            await asyncio.wait([opening])  # the thread opens on: close what it opened
            if not opening.exception():
                for opened in opening.result()[:2]:
                    os.close(opened)
            raise
        return cls(path, fd, lock_fd, loaded, header)

    @property
    def costs(self) -> Mapping[str, int]:
        """Cost class -> credits one task of it cost, as learned from earlier runs and this one."""
        return self._costs

    def take(self, job_id: str) -> JobRecord | None:
        """What earlier runs recorded of ``job_id``, forgotten here: memory shrinks as jobs go."""
        return self._jobs.pop(job_id, None)

    def peek(self, job_id: str) -> JobRecord | None:
        """What earlier runs recorded of ``job_id``, kept for a later ``take``."""
        return self._jobs.get(job_id)

    def pending(self) -> list[JobRecord]:
        """Records not taken (e.g. of jobs no longer in the jobs file), in the order first seen."""
        return list(self._jobs.values())

    async def intent(
        self,
        job_id: str,
        *,
        key: str,
        account: str,
        fingerprint: str,
        cost_class: str,
        server_at: float | None,
    ) -> None:
        """Record that a create carrying ``key`` is about to be sent; on disk when this returns."""
        self._open_intents[job_id] = cost_class
        await self._commit(
            {"kind": "intent", "job": job_id, "key": key, "account": account,
             "fingerprint": fingerprint, "cost_class": cost_class,
             "at": round(time.time(), 3), "server_at": server_at},
            durable=True,
        )

    async def created(
        self, job_id: str, *, task_id: str, credits: int | None, durable: bool = True
    ) -> None:
        """Record the task a create made (and its credits); on disk when this returns, unless
        not ``durable`` (then with the next group: losing it in a crash only means the next
        run looks the intent's key up and finds the task)."""
        cost_class = self._open_intents.pop(job_id, None)
        if credits is not None:
            self.spent += credits
            self.spent_this_run += credits
            if cost_class is not None:
                self._costs[cost_class] = credits
        await self._commit(
            {"kind": "created", "job": job_id, "task_id": task_id, "credits": credits},
            durable=durable,
        )

    def withdrawn(self, job_id: str) -> None:
        """Record that the create of the job's last intent never left (the run was stopped
        before sending it), so a rerun sends it as new instead of proving it absent first (a
        list without payloads can never prove that). Queued with the next group; nothing to
        wait for, so a cancelled job can record it on its way out."""
        self._open_intents.pop(job_id, None)
        self._queue({"kind": "withdrawn", "job": job_id}, durable=False)

    async def refunded(self, job_id: str, *, task_id: str, credits: int | None) -> None:
        """Record that the job's task was cancelled before it started and cost nothing: its
        credits leave ``spent``, and the job is unsent again, its next task under a new key
        (``JobRecord.attempts`` counts such tasks). On disk when this returns."""
        if credits is not None:
            self.spent -= credits
            self.spent_this_run -= credits
        await self._commit(
            {"kind": "refunded", "job": job_id, "task_id": task_id, "credits": credits},
            durable=True,
        )

    async def retry(self, job_id: str, *, task_id: str) -> None:
        """Record that the job's failed task ``task_id`` is sent again as a new task: the job is
        unsent again, its next create under the next attempt's key. On disk when this returns,
        so a crash before that create leaves a rerun the same new key (pay once)."""
        await self._commit({"kind": "retry", "job": job_id, "task_id": task_id}, durable=True)

    async def uploaded(self, media: str, uri: str) -> None:
        """Remember that the image ``media`` (an account and content key) was uploaded as
        ``uri``, so a rerun within the URI's lifetime sends it again without uploading."""
        await self._commit(
            {"kind": "uploaded", "media": media, "uri": uri, "at": round(time.time(), 3)},
            durable=False,
        )

    async def final(self, job_id: str, result: Mapping[str, Any]) -> None:
        """Record the job's end state; written with the next group, without waiting for it."""
        self._open_intents.pop(job_id, None)
        await self._commit({"kind": "final", "job": job_id, "result": dict(result)}, durable=False)

    async def close(self) -> None:
        """Write everything pending, release the lock. Raises a write failure no caller saw."""
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        try:
            await asyncio.shield(self._writer)
        except asyncio.CancelledError:
            await asyncio.wait([self._writer])  # the last group is on its way: let it land
            raise
        finally:
            os.close(self._fd)
            os.close(self._lock_fd)  # releases the flock
        if self._failure is not None and not self._failure_seen:
            raise JournalError(str(self._failure))

    async def __aenter__(self) -> Journal:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _commit(self, record: dict[str, Any], *, durable: bool) -> None:
        """Queue one record for the next group; ``durable``: wait until that group is synced.

        A record that need not be durable does not start a group of its own: it rides the next
        durable one, or is written ``LINGER`` seconds later at most, so a busy batch pays one
        hand-over to the writer's thread per group of intents.
        A cancelled caller stops waiting, but its record stays queued and the group is written
        whole: cancellation never tears a write nor drops another caller's record.
        """
        self._queue(record, durable=durable)
        if durable:
            # A future per caller, not one shared (cancelling its waiter would cancel it).
            waiter: asyncio.Future[JournalError | None] = (
                asyncio.get_running_loop().create_future()
            )
            self._waiting.append(waiter)
            self._raise(await waiter)

    def _queue(self, record: dict[str, Any], *, durable: bool) -> None:
        """Add one record to the next group, and make sure a group will be written."""
        if self._closing:
            raise JournalError(f"journal {self.path} is closed")
        self._raise(self._failure)
        self._lines.append(_encode({"v": _VERSION, **record}).encode()
                           + b"\n")
        if durable:
            self._sync_wanted = True
            self._wake.set()
        elif self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(LINGER, self._wake.set)

    def _raise(self, failure: JournalError | None) -> None:
        """Raise a write failure to a caller (a fresh one each time: tracebacks do not pile up)."""
        if failure is not None:
            self._failure_seen = True
            raise JournalError(str(failure))

    async def _write_groups(self) -> None:
        """The one writer: each group is every record queued meanwhile, one write, one fsync."""
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._lines:
                    await self._write_group()
                if self._closing:
                    return
        finally:  # closed, or cancelled with the loop: nobody may wait forever
            _settle(self._waiting, JournalError(f"journal {self.path} is closed"))

    async def _write_group(self) -> None:
        data, sync, group = b"".join(self._lines), self._sync_wanted, self._waiting
        self._lines, self._sync_wanted, self._waiting = [], False, []
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        try:
            if self._failure is None:
                if self._sync_times.quick():  # nothing to hand over to a thread
                    try:
                        took = _append(self._fd, data, sync)
                    except Exception as error:  # as from the thread: a failed write
                        self._fail(error)
                    else:
                        self._written(len(data), sync, took)
                        self.inline_writes += 1
                else:
                    await self._write_in_thread(data, sync)
        finally:
            _settle(group, self._failure)

    async def _write_in_thread(self, data: bytes, sync: bool) -> None:
        write = asyncio.ensure_future(asyncio.to_thread(_append, self._fd, data, sync))
        try:
            await asyncio.wait([write])
        finally:
            if not write.done():  # cancelled: the thread writes on, let it end first
                await asyncio.wait([write])
            if (error := write.exception()) is not None:
                self._fail(error)
            else:
                self._written(len(data), sync, write.result())

    def _written(self, size: int, synced: bool, took: float) -> None:
        self._end += size
        self.writes += 1
        self.syncs += synced
        if synced:
            self._sync_times.append(took)

    def _fail(self, error: BaseException) -> None:
        """Remember a failed write (later writes would follow a torn line) and cut it off."""
        reason = getattr(error, "strerror", None) or str(error)
        self._failure = JournalError(f"cannot write journal {self.path}: {reason}")
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, self._end)


@attrs.frozen
class JournalContents:
    """A journal as read without its lock: the batch, each job's record, the credits spent."""

    batch_id: str | None
    jobs: tuple[JobRecord, ...]
    spent: int


def read_journal(path: Path) -> JournalContents:
    """Read the journal at ``path`` without taking its lock, so a run in progress goes on: what
    it appends meanwhile is not seen, and a line it is writing (torn) is skipped. Blocking:
    call it through ``asyncio.to_thread`` from a running event loop. Raises ``JournalError``."""
    try:
        _refuse_special(path, os.stat(path).st_mode)
        with path.open("rb") as handle:
            loaded = _read(handle, path)
    except OSError as error:
        raise _os_error(path, error) from None
    return JournalContents(loaded.batch_id, tuple(loaded.jobs.values()), loaded.spent)


def is_in_use(path: Path) -> bool:
    """Whether a run holds the journal's lock now. Probed with a shared lock released at once:
    a run starting in that instant would be refused (and says so), never a running one."""
    try:
        fd = os.open(lock_path(path), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the probe's lock
    return False


def _settle(waiting: list[asyncio.Future[JournalError | None]],
            result: JournalError | None) -> None:
    """Tell every caller still waiting for a group how it went."""
    for waiter in waiting:
        if not waiter.done():  # not cancelled
            waiter.set_result(result)


class _SyncTimes(collections.deque[float]):
    """How long the journal's last ``SYNCS_JUDGED`` syncs took (seconds)."""

    def __init__(self) -> None:
        super().__init__(maxlen=SYNCS_JUDGED)

    def quick(self) -> bool:
        """The last ``SYNCS_JUDGED`` syncs took under ``INLINE_SYNC`` (their median): the next
        group is written on the event loop (a new journal's first groups go to a thread)."""
        return len(self) == SYNCS_JUDGED and statistics.median(self) < INLINE_SYNC


def _append(fd: int, data: bytes, sync: bool) -> float:
    """Write ``data`` whole, then ``fsync`` if ``sync``; the seconds the sync took."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    if not sync:
        return 0.0
    started = time.perf_counter()
    os.fsync(fd)
    return time.perf_counter() - started


def _open(path: Path, batch_id: str) -> tuple[int, int, _Loaded, str]:
    """Lock, open and read the journal (in a thread): its fds, what it holds, its batch id."""
    try:
        with contextlib.suppress(FileNotFoundError):
            _refuse_special(path, os.stat(path).st_mode)  # before a lock file lands beside it
        path.parent.mkdir(parents=True, exist_ok=True)
        held_before = lock_path(path).exists() and lock_path(path).stat().st_size > 0
        lock_fd = _lock(path)
        try:
            fd, loaded = _open_locked(path, batch_id)
        except BaseException:
            os.close(lock_fd)
            raise
        loaded.used_before = held_before or bool(loaded.jobs)
    except OSError as error:
        raise _os_error(path, error) from None
    return fd, lock_fd, loaded, loaded.batch_id or batch_id


def _open_locked(path: Path, batch_id: str) -> tuple[int, _Loaded]:
    """Open and read the locked journal; cut a torn tail; write the header if it has none."""
    fd, created = _open_file(path)
    try:
        _refuse_special(path, os.fstat(fd).st_mode)
        if created:
            _sync_folder(path.parent)
        with open(fd, "rb", closefd=False) as handle:
            loaded = _read(handle, path)
        if loaded.end < os.fstat(fd).st_size:
            os.ftruncate(fd, loaded.end)  # a torn last line: its record never took effect
        if loaded.batch_id is None:
            header = {"v": _VERSION, "kind": "batch", "batch_id": batch_id,
                      "at": round(time.time(), 3)}
            data = _encode(header).encode() + b"\n"
            _append(fd, data, sync=True)
            loaded.end += len(data)
    except BaseException:
        os.close(fd)
        raise
    return fd, loaded


def _refuse_special(path: Path, mode: int) -> None:
    """A journal must be a regular file: a pipe or a device would be read forever."""
    if not stat.S_ISREG(mode):
        kind = ("a folder" if stat.S_ISDIR(mode) else "a named pipe" if stat.S_ISFIFO(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a file")
        raise JournalError(
            f"journal {path} is {kind}, not a regular file: give the path of a journal file"
        )


def remove_journal(path: Path) -> None:
    """Delete the journal at ``path`` while holding its lock, without reading it (a damaged one
    too): a run using it is refused (``JournalLockedError``), never robbed of it. Blocking:
    call it through ``asyncio.to_thread``. Raises ``JournalError``."""
    try:
        fd = _lock(path)
        try:
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    except OSError as error:
        raise _os_error(path, error) from None


def lock_path(path: Path) -> Path:
    """The lock file of the journal at ``path``, beside it (``submit`` keeps other files off it)."""
    return path.with_name(path.name + ".lock")


def _lock(path: Path, pause: Callable[[float], None] = time.sleep) -> int:
    """Take the exclusive lock beside the journal and say who holds it; or name the holder
    (``pause`` waits between reads of a holder that has not said so yet)."""
    since = time.strftime("%Y-%m-%d %H:%M:%S %z")
    holder = f"process {os.getpid()} on {socket.gethostname()} since {since}\n"
    fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            named = _read_holder(fd, pause)
        finally:
            os.close(fd)
        raise JournalLockedError(
            f"journal {path} is in use by {named or 'another process'}; "
            "wait for that run to end (or stop it), or use another journal"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, holder.encode(), 0)
    return fd


def _read_holder(fd: int, pause: Callable[[float], None]) -> str | None:
    """The holder's line in the lock file, or None if it does not say within ``HOLDER_WAIT``.

    The holder writes its line just after taking the lock, so a run refused in that instant
    reads nothing, half a line, or the line of a run that has ended: it reads again.
    """
    waited = 0.0
    while True:
        text = os.pread(fd, 4096, 0).decode(errors="replace")
        if _names_holder(text, socket.gethostname(), _running):
            return text.strip()
        if waited >= HOLDER_WAIT:
            return None
        pause(_HOLDER_POLL)
        waited += _HOLDER_POLL


def _names_holder(text: str, host: str, running: Callable[[int], bool]) -> bool:
    """Whether a lock file's ``text`` may name the run holding the lock now: a whole line, and
    not one of a process on this ``host`` that has ended (``running`` says)."""
    if not text.endswith("\n") or not text.strip():
        return False
    words = text.split()
    ours = len(words) >= 4 and words[0] == "process" and words[1].isdigit() and words[2] == "on"
    return not (ours and words[3] == host) or running(int(words[1]))


def _running(pid: int) -> bool:
    """Whether process ``pid`` (on this machine) still runs."""
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _open_file(path: Path) -> tuple[int, bool]:
    """Open (or create) the journal for appending: the fd, and whether it was just created.

    ``O_NONBLOCK`` keeps a named pipe swapped in since the check from blocking the open.
    """
    flags = os.O_RDWR | os.O_APPEND | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        return os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600), True
    except FileExistsError:
        return os.open(path, flags), False


def _sync_folder(folder: Path) -> None:
    """Make a new journal's directory entry durable (the file's own fsync does not)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read(handle: BinaryIO, path: Path) -> _Loaded:
    """Fold every complete line; stop before a torn last line. Memory: the records only."""
    loaded = _Loaded()
    number = 0
    while raw := handle.readline(_MAX_LINE):
        number += 1
        if not raw.endswith(b"\n"):
            if len(raw) < _MAX_LINE:
                break  # torn: the last line, never synced
            raise JournalError(
                f"{path}:{number}: a line over 1 MiB, which no journal writes: "
                "is this the right file?"
            )
        loaded.end += len(raw)
        if raw.strip():
            loaded.apply(_parse(raw, path, number))
    return loaded


def _parse(raw: bytes, path: Path, number: int) -> dict[str, Any]:
    """One line as a record of a kind this version knows, or a one-line ``JournalError``."""
    where = f"{path}:{number}"
    try:
        record = json.loads(raw)
    except ValueError as error:
        record, reason = None, f"not JSON ({error})"
    else:
        reason = "not a journal record"
    if isinstance(record, dict):
        version = record.get("v")
        if isinstance(version, int) and version > _VERSION:
            raise JournalError(
                f"{where}: written by a newer vidu-async (format v{version}); upgrade to resume it"
            )
        kind = record.get("kind")
        job_id = record.get("job", record.get("custom_id"))
        if kind in _BATCH_KINDS or (kind in _JOB_KINDS and isinstance(job_id, str)):
            return record
    raise JournalError(
        f"{where}: {reason}; the journal is damaged: repair or delete that line, "
        "or move the journal aside to start afresh"
    )


def _os_error(path: Path, error: OSError) -> JournalError:
    """An OS failure as one line: the journal, the file concerned and the system's reason."""
    other = error.filename is not None and str(error.filename) != str(path)
    concerned = f" ({error.filename})" if other else ""
    return JournalError(f"cannot use journal {path}{concerned}: {error.strerror or error}")
