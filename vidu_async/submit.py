"""Run a jobs file through a ``BatchSubmitter``: the work behind ``vidu-async submit`` and ``demo``.

Lines are read lazily; invalid ones are reported on stderr with their line number and become
``invalid`` results while the valid ones run. Each outcome is written to the results stream as
one JSON line the moment it settles, and fed to the progress display.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import attrs

from vidu_async.batch import BatchOptions, BatchSubmitter
from vidu_async.client import ViduClient
from vidu_async.jobs import JobLine, read_jobs
from vidu_async.outcome import ErrorInfo
from vidu_async.progress import ProgressReporter

__all__ = ["SubmitSummary", "count_lines", "report_line", "submit_jobs_file"]


@attrs.frozen
class SubmitSummary:
    """How a run of a jobs file ended: outcomes by status, credits, and why it stopped early."""

    counts: Mapping[str, int]
    credits: int
    stop_reason: ErrorInfo | None

    @property
    def all_ok(self) -> bool:
        """Every job succeeded, or was submitted (when not waiting)."""
        return all(status in ("succeeded", "submitted") for status in self.counts)


def count_lines(path: Path) -> int:
    """The number of non-blank lines (the job count a progress display shows), read in blocks."""
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


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
) -> SubmitSummary:
    """Submit every valid line of ``path``; write one result line per line to ``results``."""
    submitter = BatchSubmitter(clients, options, observer=progress)
    counts: Counter[str] = Counter()

    def lines() -> Iterator[JobLine]:
        for item in read_jobs(path, defaults=defaults):
            report_line(item, path, messages)
            yield item

    ticker = asyncio.create_task(_tick(progress)) if progress is not None else None
    try:
        async with contextlib.aclosing(submitter.run(lines())) as outcomes:
            async for outcome in outcomes:
                counts[outcome.status] += 1
                results.write(json.dumps(outcome.to_dict(), ensure_ascii=False) + "\n")
                results.flush()
                if progress is not None:
                    progress.job_settled(outcome.status, outcome.credits, outcome.task_id)
    finally:
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
    return SubmitSummary(dict(counts), submitter.credits_spent, submitter.stop_reason)


async def _tick(progress: ProgressReporter, every: float = 1.0) -> None:
    """Let the display redraw (elapsed time, ETA) even while no job settles."""
    while True:
        await asyncio.sleep(every)
        progress.update()
