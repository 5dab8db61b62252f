"""``submit --dry-run``: every check a run makes before paying, and what it would send; no create.

``render`` is pure: a ``DryRun`` (jobs grouped by what they ask, the journal's learned prices,
the accounts' credits) to the lines people read. ``dry_run`` is the I/O around it: it reads
every line, decides each job as a run would (``batch.plan`` against the journal), checks the
journal, the results path and the download folder without leaving anything behind, and asks
every account for its credits. Prices come only from the journal (what a task of the same cost
class cost before); Vidu publishes no price table this package could quote, so others are
"unknown", never invented.
"""

from __future__ import annotations

import asyncio
import errno
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import attrs

from vidu_async.batch import BatchOptions, account_label
from vidu_async.batch.identity import cost_class, job_facts
from vidu_async.batch.plan import (
    Action,
    Create,
    Follow,
    Reconcile,
    Refuse,
    Replay,
    other_batch,
    plan,
)
from vidu_async.client import ViduClient
from vidu_async.errors import ConfigurationError
from vidu_async.jobs import Job, JobFormat, read_jobs
from vidu_async.journal import JobRecord, Journal
from vidu_async.requests import Request, SubjectsToVideoRequest
from vidu_async.submit import report_line
from vidu_async.tasks import CreditBalance

__all__ = [
    "DryRun", "Group", "dry_run", "has_records", "missing_folder", "needs_confirmation",
    "over_budget", "render", "resume_line",
]


@attrs.frozen
class Group:
    """Jobs that ask for the same thing at the same price: one row of the summary."""

    kind: str
    model: str
    duration: int | None
    resolution: str | None
    extras: tuple[str, ...]
    """What else moves the price: ``subjects``, ``off-peak``, ``audio``, ``videos``, ``is_rec``."""
    cost_class: str

    @classmethod
    def of(cls, request: Request) -> Group:
        extras = (
            ("subjects", isinstance(request, SubjectsToVideoRequest)),
            ("off-peak", bool(request.off_peak)),
            ("audio", bool(getattr(request, "audio", None))),
            ("videos", bool(getattr(request, "videos", None))),
            ("is_rec", bool(getattr(request, "is_rec", None))),
        )
        return cls(request.kind, request.model, request.duration, request.resolution,
                   tuple(name for name, present in extras if present), cost_class(request))

    def label(self) -> str:
        duration = "default duration" if self.duration is None else f"{self.duration}s"
        resolution = self.resolution or "default resolution"
        return " ".join((self.kind, self.model, duration, resolution, *self.extras))


@attrs.frozen
class DryRun:
    """What a dry run found: the lines, what would become of each job, and the accounts."""

    jobs: str
    lines: int
    invalid: int
    """Lines that are not valid jobs, plus jobs the journal refuses (``RequestChanged``...)."""
    done: int
    """Jobs the journal saw end: replayed, no request."""
    followed: int
    """Jobs whose task exists already: followed, not paid again."""
    to_send: Mapping[Group, int]
    costs: Mapping[str, int]
    """Cost class -> credits, as the journal learned them."""
    spent: int
    """Credits of this batch's tasks the journal recorded (what ``max_credits`` counts)."""
    max_credits: int | None
    balances: tuple[tuple[str, CreditBalance], ...]
    """Each account's name and balance entries."""
    looked_up: int = 0
    """Jobs whose create may have been sent, its answer never recorded (a crash, a lost
    answer): looked up by key first, followed if found, sent only once proven absent, and
    reported ``ambiguous`` when neither can be proven."""

    @property
    def ok(self) -> bool:
        """The run could go: every line is a job it would submit or replay."""
        return self.invalid == 0

    @property
    def sending(self) -> int:
        """Jobs a run would create a task for."""
        return sum(self.to_send.values())

    def estimate(self) -> tuple[int, int]:
        """The credits of the jobs to send whose price is known, and how many jobs have none."""
        known = unknown = 0
        for group, n in self.to_send.items():
            price = self.costs.get(group.cost_class)
            if price is None:
                unknown += n
            else:
                known += n * price
        return known, unknown


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def render(run: DryRun, heading: str | None = None) -> list[str]:
    """The summary a dry run prints: jobs by group with their price, the total, the budget and
    the accounts; under ``heading`` instead of the dry run's own (a run asking first)."""
    out = [heading or f"dry run of {run.jobs}: nothing is created",
           f"  {_plural(run.lines, 'line')}: {run.lines - run.invalid} valid, "
           f"{run.invalid} invalid"]
    if run.done:
        out.append(f"  done (replayed): {_plural(run.done, 'job')}, no credits")
    if run.followed:
        out.append(f"  created earlier (followed, not paid again): {_plural(run.followed, 'job')}")
    if run.looked_up:
        out.append(f"  sent earlier, answer never recorded (looked up first, sent again only "
                   f"if proven absent): {_plural(run.looked_up, 'job')}")
    out.append(f"  to send: {_plural(run.sending, 'job')}")
    for group, n in sorted(run.to_send.items(), key=lambda item: item[0].label()):
        price = run.costs.get(group.cost_class)
        if price is None:
            out.append(f"    {n} x {group.label()}: price unknown")
        else:
            out.append(f"    {n} x {group.label()}: {price} credits each, {n * price}")
    known, unknown = run.estimate()
    total = f"{known} credits"
    if unknown:
        total = f"at least {total} ({_plural(unknown, 'job')} of unknown price: prices are " \
                "learned from this journal's tasks; there is no published table to estimate by)"
    out.append(f"  estimate: {total}")
    over = over_budget(run)
    if over is not None:
        out.append(f"  {over}")
    for name, balance in run.balances:
        concurrency = f"{_count(balance.current_concurrency)}/{_count(balance.concurrency_limit)}"
        out.append(f"{name}: {_count(balance.credit_remain)} credits left"
                   f"{' (' + balance.type + ')' if balance.type else ''}, concurrency "
                   f"{concurrency}, {_count(balance.queue_count)} queued")
    remain = [b.credit_remain for _, b in run.balances]
    if remain and None not in remain and sum(r or 0 for r in remain) < known:
        out.append(f"  the credits left are fewer than the estimate's {known}: submitting "
                   "stops when they run out (a rerun after a top-up goes on)")
    return out


def over_budget(run: DryRun) -> str | None:
    """What a run would do about ``--max-credits`` when the estimate exceeds it (the batch's
    hard cap sends what fits, then stops), or None."""
    known, _ = run.estimate()
    if run.max_credits is None or run.spent + known <= run.max_credits:
        return None
    return (f"over --max-credits {run.max_credits}: the batch spent {run.spent} and would need "
            f"{known} more; submitting stops at the cap")


def needs_confirmation(run: DryRun, over: int) -> bool:
    """A person at a terminal is asked first: something is to be sent and its estimate is over
    ``over`` credits, or unknown (an unknown price may be any price)."""
    known, unknown = run.estimate()
    return run.sending > 0 and (unknown > 0 or known > over)


def resume_line(run: DryRun) -> str | None:
    """``resuming: 225 done, 3 being followed, 172 to submit`` for a batch an earlier run
    started (its journal knows some jobs), else None; ``, 2 to look up`` after "followed" when
    creates of an earlier run may have been sent without their answer recorded."""
    if not (run.done or run.followed or run.looked_up):
        return None
    looked_up = f", {run.looked_up} to look up" if run.looked_up else ""
    invalid = f", {run.invalid} invalid" if run.invalid else ""
    return (f"resuming: {run.done} done, {run.followed} being followed{looked_up}, "
            f"{run.sending} to submit{invalid}")


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


async def dry_run(
    path: Path,
    clients: Sequence[ViduClient],
    options: BatchOptions,
    *,
    defaults: Mapping[str, Any],
    results: Path | None,
    messages: TextIO,
    errors: Path | None = None,
    balances: bool = True,
    fmt: JobFormat | None = None,
    base_dir: Path | None = None,
    shown_as: str | None = None,
) -> DryRun:
    """Check and summarise a run of ``path`` without creating anything; see the module
    docstring (``balances=False``: without asking the accounts, so with no request at all).
    Raises ``ConfigurationError`` for an unwritable results or ``errors`` path (the run's list
    of jobs to send again) or download folder,
    ``JournalError`` for a journal that cannot be used (in use, not a file),
    ``AuthenticationError`` / ``APIConnectionError`` from the credits request."""
    await asyncio.to_thread(_check_paths, results, errors, options.download, options.journal)
    found_balances: list[tuple[str, CreditBalance]] = []
    for number, client in enumerate(clients if balances else (), 1):
        name = "account" if len(clients) == 1 else f"account {number}"
        found_balances += [(name, b) for b in (await client.get_credits()).remains]
    journal = None
    if options.journal is not None and has_records(options.journal):
        journal = await Journal.open(options.journal, batch_id=options.batch_id or "")
    try:
        found = await _decide(path, clients, defaults, journal, options, messages, fmt,
                              base_dir, shown_as)
    finally:
        if journal is not None:
            await journal.close()
    return attrs.evolve(found, max_credits=options.max_credits, balances=tuple(found_balances))


def has_records(journal: Path) -> bool:
    """A journal to open (and lock) as a run would: anything there but an empty file, which
    no run is using and which holds nothing."""
    return journal.exists() and not (journal.is_file() and journal.stat().st_size == 0)


async def _decide(
    path: Path, clients: Sequence[ViduClient], defaults: Mapping[str, Any],
    journal: Journal | None, options: BatchOptions, messages: TextIO,
    fmt: JobFormat | None = None, base_dir: Path | None = None, shown_as: str | None = None,
) -> DryRun:
    """Read every line and decide each job as a run with ``options`` would (its uploads, its
    batch id, ``retry_failed``), counting by what becomes of it (``shown_as``: how messages
    name the jobs, e.g. ``<stdin>``)."""
    shown = Path(shown_as) if shown_as else path
    accounts = frozenset(account_label(c) for c in clients)
    batch_id, retry_failed = options.batch_id or "", options.retry_failed
    counts: Counter[str] = Counter()
    to_send: Counter[Group] = Counter()
    lines = read_jobs(path, defaults=defaults, fmt=fmt, base_dir=base_dir,
                      uploads=options.upload_images)
    for item in lines:
        report_line(item, shown, messages)
        counts["lines"] += 1
        if item.job is None:
            counts["invalid"] += 1
            continue
        record = journal.take(item.job.custom_id) if journal is not None else None
        action = await _plan(item.job, record, journal, batch_id, accounts,
                             retry_failed)
        if isinstance(action, Refuse):
            print(f"{shown}:{item.line}: error: {action.error.reason}: {action.error.message}",
                  file=messages)
            counts["invalid"] += 1
        elif isinstance(action, Replay):
            counts["done"] += 1
        elif isinstance(action, Follow):
            counts["followed"] += 1
        elif isinstance(action, Reconcile):
            counts["looked_up"] += 1
        else:
            to_send[Group.of(item.job.request)] += 1
    return DryRun(
        str(shown), counts["lines"], counts["invalid"], counts["done"], counts["followed"],
        dict(to_send), dict(journal.costs) if journal else {}, journal.spent if journal else 0,
        None, (), counts["looked_up"],
    )


async def _plan(
    job: Job, record: JobRecord | None, journal: Journal | None, batch_id: str,
    accounts: frozenset[str], retry_failed: bool,
) -> Action:
    """``batch.plan`` for one job; its fingerprint is taken only when the journal knows it."""
    if record is None or journal is None:
        return Create("")
    facts = await job_facts(job, journal.batch_id or batch_id, record.attempts)
    return plan(facts, record, accounts, retry_failed=retry_failed,
                other_batch=other_batch(journal.batch_id, batch_id))


def _check_paths(results: Path | None, errors: Path | None, download: Path | None,
                 journal: Path | None) -> None:
    """What a run writes can be written, found out without creating anything that stays: an
    existing file is opened for appending (nothing appended); a missing one's folder (for the
    journal and the download folder, which a run creates with their parents: the nearest
    existing one) must be a folder we may create files in."""
    checks = (("write the results file", results, _is_file, lambda p: p.parent),
              ("write the errors file", errors, _is_file, lambda p: p.parent),
              ("create the journal", journal, _is_journal, _nearest),
              ("save videos in", download, _is_folder, _nearest))
    for doing, target, check_existing, folder in checks:
        if target is None:
            continue
        try:
            if target.exists():
                check_existing(target)
            else:
                _may_create_in(folder(target))
        except OSError as error:
            raise ConfigurationError(
                f"cannot {doing} {target}: {error.strerror or error}"
            ) from None


def _is_file(path: Path) -> None:
    with path.open("a", encoding="utf-8"):
        pass


def _is_journal(path: Path) -> None:
    if path.is_file():  # anything else is refused when opened (a pipe would block here)
        _is_file(path)


def _is_folder(path: Path) -> None:
    _may_create_in(path)


def missing_folder(folder: Path) -> str | None:
    """``the folder F does not exist`` when it does not (a run creates a results file, not
    its folder), else None."""
    return None if folder.exists() else f"the folder {folder} does not exist"


def _nearest(path: Path) -> Path:
    """The nearest existing folder above ``path``, where a run's ``mkdir`` starts."""
    while not path.exists():
        path = path.parent
    return path


def _may_create_in(folder: Path) -> None:
    """``folder`` is a folder we may create files in: an unnamed temporary file proves it."""
    if (missing := missing_folder(folder)) is not None:
        raise FileNotFoundError(errno.ENOENT, missing)
    if not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{folder} is not a folder")
    with tempfile.TemporaryFile(dir=folder):
        pass
