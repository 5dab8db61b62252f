"""The batch journal: an append-only JSONL file that makes a batch crash-safe.

For each job it records, in order: an **intent** (the job's ``custom_id`` and the correlation key
the create will carry), written and fsynced *before* the create is sent; the **created** task id
once the API answers; and the **final** outcome. Rerunning with the same journal after any
interruption (Ctrl-C, ``kill -9``, a power cut) therefore knows, for every job, whether it is done,
whether a task exists to follow, or whether a create may have been sent whose answer was lost
(an intent without a task id), which is reconciled through the correlation key before resending.

A torn last line (the process died mid-write) is dropped on open: it was never fsynced, so what
it recorded had not happened yet (an intent is synced before its create is sent). The API key
is never written here: records hold ids, keys of our own making, and results.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

__all__ = ["JobRecord", "Ledger", "LedgerError"]

Kind = Literal["intent", "created", "final"]
_VERSION = 1


class LedgerError(Exception):
    """The journal cannot be used: unreadable, or corrupt before its last line."""


@attrs.frozen
class JobRecord:
    """What the journal knows of one job: the latest of each kind of record."""

    custom_id: str
    correlation_key: str | None = None
    intent_at: float | None = None
    """Wall-clock time (epoch seconds) the create was about to be sent."""
    account: str | None = None
    task_id: str | None = None
    credits: int | None = None
    final: Mapping[str, Any] | None = None
    """The job's result record once it reached an end state."""

    @property
    def is_final(self) -> bool:
        return self.final is not None

    @property
    def needs_reconcile(self) -> bool:
        """A create may have been sent, but its answer was never recorded."""
        return self.correlation_key is not None and self.task_id is None and self.final is None


class Ledger:
    """An open journal. ``Ledger.open(path)`` reads what earlier runs recorded.

    Writes go through one lock, in a worker thread, so the event loop never waits on the disk
    and records never interleave; a write runs to its end even when its caller is cancelled, so
    closing the journal after a cancelled batch never races a write. ``intent`` and ``created``
    records are fsynced; ``final`` records are flushed (losing one only means the task is
    queried again on resume). Memory holds only what earlier runs recorded, and ``take`` drops
    each record as its job is handled: a 100k-job batch does not keep 100k records alive.
    """

    def __init__(self, path: Path, fd: int, jobs: dict[str, JobRecord]) -> None:
        self.path = path
        self._fd = fd
        self._jobs = jobs
        self._lock = asyncio.Lock()

    @classmethod
    def open(cls, path: Path) -> Ledger:
        """Open (creating) the journal at ``path`` and load it, dropping a torn last line."""
        path.parent.mkdir(parents=True, exist_ok=True)
        jobs: dict[str, JobRecord] = {}
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            raise LedgerError(f"cannot open journal {path}: {exc.strerror}") from exc
        with open(fd, "rb", closefd=False) as handle:
            data = handle.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            os.truncate(path, end)  # a torn last line: its record never took effect
        for number, raw in enumerate(data[:end].splitlines(), start=1):
            if raw.strip():
                _apply(jobs, _parse(raw, path, number))
        return cls(path, fd, jobs)

    def get(self, custom_id: str) -> JobRecord | None:
        """What earlier runs recorded of ``custom_id`` (this run's writes are on disk only)."""
        return self._jobs.get(custom_id)

    def take(self, custom_id: str) -> JobRecord | None:
        """``get``, and forget the record: a batch takes each job's past once, so the memory
        held for a resumed run shrinks as it goes instead of staying at one record per job."""
        return self._jobs.pop(custom_id, None)

    def __len__(self) -> int:
        return len(self._jobs)

    def records(self) -> list[JobRecord]:
        """Every job earlier runs recorded (and not yet taken), in the order first seen."""
        return list(self._jobs.values())

    async def intent(self, custom_id: str, correlation_key: str, *, account: str) -> None:
        """Record, durably, that a create carrying ``correlation_key`` is about to be sent."""
        await self._write(
            {"kind": "intent", "custom_id": custom_id, "key": correlation_key,
             "account": account, "at": round(time.time(), 3)},
            sync=True,
        )

    async def created(self, custom_id: str, task_id: str, credits: int | None) -> None:
        """Record, durably, the task a create made."""
        await self._write(
            {"kind": "created", "custom_id": custom_id, "task_id": task_id, "credits": credits},
            sync=True,
        )

    async def final(self, custom_id: str, result: Mapping[str, Any]) -> None:
        """Record the job's end state (its results-file record)."""
        await self._write({"kind": "final", "custom_id": custom_id, "result": dict(result)})

    async def _write(self, record: dict[str, Any], *, sync: bool = False) -> None:
        line = json.dumps({"v": _VERSION, **record}, ensure_ascii=False) + "\n"
        async with self._lock:
            write = asyncio.ensure_future(asyncio.to_thread(_append, self._fd, line.encode(), sync))
            try:
                await asyncio.shield(write)
            except asyncio.CancelledError:
                # The thread writes on regardless: let it end before anyone can close the file.
                await asyncio.wait([write])
                raise

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _append(fd: int, data: bytes, sync: bool) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    if sync:
        os.fsync(fd)


def _parse(raw: bytes, path: Path, number: int) -> dict[str, Any]:
    try:
        record = json.loads(raw)
    except ValueError as exc:
        raise LedgerError(f"{path}:{number}: not a journal record ({exc})") from None
    if not isinstance(record, dict) or not isinstance(record.get("custom_id"), str):
        raise LedgerError(f"{path}:{number}: not a journal record")
    return record


def _apply(jobs: dict[str, JobRecord], record: Mapping[str, Any]) -> None:
    custom_id = record["custom_id"]
    current = jobs.get(custom_id) or JobRecord(custom_id)
    kind = record.get("kind")
    if kind == "intent":
        current = attrs.evolve(
            current,
            correlation_key=record.get("key"),
            intent_at=record.get("at"),
            account=record.get("account"),
            task_id=None,
            final=None,
        )
    elif kind == "created":
        current = attrs.evolve(
            current, task_id=record.get("task_id"), credits=record.get("credits")
        )
    elif kind == "final":
        current = attrs.evolve(current, final=record.get("result"))
    jobs[custom_id] = current
