"""Run a jobs file through a ``BatchSubmitter``: the work behind ``vidu-async submit`` and ``demo``.

Lines are read lazily; invalid ones are reported on stderr with their line number and become
``invalid`` results while the valid ones run. Each outcome is written to the results stream as
one JSON line the moment it settles, and fed to the progress display. With a ``Listener``, a
callback receiver runs alongside and Vidu's callbacks finish the tasks. A results stream that
fails (a full disk, a reader gone) and a journal that can no longer be written once jobs ran
end up in the summary, not as exceptions: the jobs already sent must still be accounted for.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import stat
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import SplitResult, urlsplit

import attrs

from vidu_async.batch import BatchOptions, BatchSubmitter
from vidu_async.client import ViduClient
from vidu_async.errors import ConfigurationError, JournalError
from vidu_async.failures import Failure, failure_of
from vidu_async.jobs import JobFormat, JobLine, count_jobs, read_jobs
from vidu_async.outcome import ErrorInfo
from vidu_async.progress import ProgressReporter
from vidu_async.receiver import CallbackReceiver, ReceiverOptions

__all__ = ["Listener", "SubmitSummary", "count_lines", "report_line", "submit_jobs_file"]


@attrs.frozen
class SubmitSummary:
    """How a run of a jobs file ended: outcomes by status, credits, and why it stopped early."""

    counts: Mapping[str, int]
    credits: int
    stop_reason: ErrorInfo | None
    failures: tuple[Failure, ...] = ()
    """The jobs that did not succeed, in the order they settled."""
    results_lost: str | None = None
    """Why the results stream failed (the results after it are in the journal only), or None."""
    broken: str | None = None
    """Why the run stopped before every job settled: the journal could no longer be written
    once jobs ran (a rerun resumes the jobs left); None when it ran to its end."""

    @property
    def all_ok(self) -> bool:
        """Every job succeeded, or was submitted (when not waiting), and every result was
        written."""
        return (self.broken is None and self.results_lost is None
                and all(status in ("succeeded", "submitted") for status in self.counts))


@attrs.frozen
class Listener:
    """Where ``submit`` receives Vidu's callbacks: Vidu POSTs to the public ``url``; the
    receiver listens on ``host:port`` for that URL's path (a proxy in between must pass the
    path on unchanged: the signature covers it)."""

    url: str
    host: str
    port: int

    @property
    def path(self) -> str:
        return urlsplit(self.url).path or "/"

    @classmethod
    def parse(cls, url: str, listen: str | None) -> Listener:
        """From ``--callback-url`` and ``--listen HOST:PORT``; without ``listen``, the URL's
        own host and port when it is an http:// URL on this machine. ``ValueError`` says what
        to fix."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--callback-url must be an http(s) URL, got {url!r}")
        if listen is None:
            if parts.scheme != "http" or not _is_loopback(parts.hostname):
                raise ValueError(
                    f"--callback-url {url} is not an http:// URL on this machine: give --listen "
                    "HOST:PORT, the local address that receives what Vidu sends to it"
                )
            return cls(url, parts.hostname, _port(parts, url) or 80)
        where = urlsplit(f"//{listen}")
        port = _port(where, listen)
        if not where.hostname or not port or where.path:
            raise ValueError(f"--listen takes HOST:PORT (e.g. 0.0.0.0:8080), got {listen!r}")
        return cls(url, where.hostname, port)


def _port(parts: SplitResult, text: str) -> int | None:
    try:
        return parts.port
    except ValueError:
        raise ValueError(f"the port of {text!r} is not a number from 0 to 65535") from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def count_lines(path: Path, fmt: JobFormat | None = None) -> int:
    """The number of jobs a progress display shows: the lines ``read_jobs`` yields."""
    return count_jobs(path, fmt)


def report_line(item: JobLine, path: Path, out: TextIO) -> None:
    """One line's problems and warnings, for people: ``jobs.jsonl:3: error: duration: ...``."""
    for problem in item.errors:
        print(f"{path}:{item.line}: error: {problem}", file=out)
    for warning in item.warnings:
        print(f"{path}:{item.line}: warning: {warning}", file=out)


async def submit_jobs_file(
    path: Path,
    clients: Sequence[ViduClient],
    options: BatchOptions,
    *,
    defaults: Mapping[str, Any],
    results: TextIO,
    messages: TextIO,
    progress: ProgressReporter | None = None,
    listener: Listener | None = None,
    fresh_results: bool = False,
    reported: bool = False,
    fmt: JobFormat | None = None,
    base_dir: Path | None = None,
    shown_as: str | None = None,
) -> SubmitSummary:
    """Submit every valid line of ``path``; write one result line per line to ``results``
    (``fresh_results``: a file this run empties first, once it holds the journal's lock).
    Each line's problems go to ``messages`` unless ``reported`` (a dry run said them first).

    With ``listener`` (and ``options.callback_url`` set to its URL), a receiver verifying with
    the keys of ``clients`` runs on its address while the batch runs; ``ConfigurationError``
    when it cannot listen there. ``fmt`` and ``base_dir`` as ``read_jobs`` takes them;
    ``shown_as``: how messages name the jobs (``<stdin>`` for jobs spooled from it).

    A ``JournalError`` once jobs were read (a write failed: creates may have been sent) ends
    the run with ``SubmitSummary.broken``, as does a job not sent because of one; before (the
    journal cannot be opened) it is raised.
    """
    counts: Counter[str] = Counter()
    failures: list[Failure] = []
    writer = _ResultsWriter(results, messages, fresh=fresh_results)
    started = False
    """A line was read: the journal is open and creates may follow."""

    def lines() -> Iterator[JobLine]:
        nonlocal started
        for item in read_jobs(path, defaults=defaults, fmt=fmt, base_dir=base_dir,
                              uploads=options.upload_images):
            started = True
            if not reported:
                report_line(item, Path(shown_as) if shown_as else path, messages)
            yield item

    receiver = None
    if listener is not None:
        receiver = CallbackReceiver(clients, ReceiverOptions(confirm=False))
    submitter = BatchSubmitter(clients, options, callbacks=receiver)
    broken: str | None = None
    try:
        async with contextlib.AsyncExitStack() as stack:
            if receiver is not None and listener is not None:
                await _serve(receiver, listener, stack, messages)
            if progress is not None:
                stack.push_async_callback(_stop, asyncio.create_task(_tick(progress, submitter)))
            outcomes = await stack.enter_async_context(
                contextlib.aclosing(submitter.run(lines()))
            )
            async for outcome in outcomes:
                counts[outcome.status] += 1
                if broken is None and outcome.error and outcome.error.reason == _JOURNAL_FAILED:
                    broken = outcome.error.message  # each job after it fails so: not sent
                failure = failure_of(outcome, retry_failed=options.retry_failed)
                if failure is not None:
                    failures.append(failure)
                writer.write(outcome.to_dict())
                if progress is not None:
                    _show(progress, submitter)
    except (JournalError, BaseExceptionGroup) as error:
        journal_failure = _journal_failure(error)
        if journal_failure is None or not started:  # not opened (nothing sent), or not ours
            raise
        broken = broken or str(journal_failure)
    return SubmitSummary(dict(counts), submitter.credits_spent, submitter.stop_reason,
                         tuple(failures), writer.failure, broken)


_JOURNAL_FAILED = JournalError.__name__
"""The ``reason`` of a job the journal's failure kept from being sent."""


def _journal_failure(error: BaseException) -> JournalError | None:
    """The journal's failure ``error`` is: one ``JournalError``, or a group of them (jobs
    waiting on the same failed write all raise it); None for anything else."""
    if isinstance(error, JournalError):
        return error
    if isinstance(error, BaseExceptionGroup):
        matched, rest = error.split(JournalError)
        if matched is not None and rest is None:
            return _journal_failure(matched.exceptions[0])
    return None


async def _serve(receiver: CallbackReceiver, listener: Listener,
                 stack: contextlib.AsyncExitStack, messages: TextIO) -> None:
    """Serve ``receiver`` on the listener's address until ``stack`` closes."""
    serving = receiver.serve(listener.host, listener.port, path=listener.path)
    try:
        local = await stack.enter_async_context(serving)
    except OSError as error:  # the address is taken, or not this machine's
        raise ConfigurationError(
            f"cannot receive callbacks on {listener.host}:{listener.port}: {error}"
        ) from error
    print(f"receiving callbacks to {listener.url} on {local}", file=messages)


class _ResultsWriter:
    """Writes results lines; when the stream breaks (``| head`` exited, a full disk), says so
    once and stops writing there while the batch goes on (every end is in the journal too)."""

    def __init__(self, out: TextIO, messages: TextIO, *, fresh: bool) -> None:
        self._out: TextIO | None = out
        self._messages = messages
        self._empty_first = fresh and _regular_file(out)
        self.failure: str | None = None
        """Why the stream failed (``No space left on device``), or None."""

    def write(self, record: Mapping[str, Any]) -> None:
        if self._out is None:
            return
        try:
            if self._empty_first:
                self._out.truncate(0)  # a results file holds this run's results only
            self._empty_first = False
            self._out.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._out.flush()
        except OSError as error:  # BrokenPipeError, a full disk
            name = getattr(self._out, "name", "results")
            self._out = None
            self.failure = str(error.strerror or error)
            print(f"results stream {name} failed ({self.failure}): no more results are "
                  "written there; the batch goes on and its journal keeps every end",
                  file=self._messages)


def _regular_file(out: TextIO) -> bool:
    """Whether ``out`` is a regular file, which can be emptied: a device (``/dev/null``) or a
    pipe is written as it is."""
    try:
        return stat.S_ISREG(os.fstat(out.fileno()).st_mode)
    except (OSError, ValueError):  # no file descriptor (a StringIO), or closed
        return False


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _tick(progress: ProgressReporter, batch: BatchSubmitter, every: float = 0.5) -> None:
    """Show where the batch is (and the elapsed time, the ETA) even while no job settles."""
    while True:
        _show(progress, batch)
        await asyncio.sleep(every)


def _show(progress: ProgressReporter, batch: BatchSubmitter) -> None:
    progress.show(batch.snapshot(), batch.credits_spent, batch.credits_total)
