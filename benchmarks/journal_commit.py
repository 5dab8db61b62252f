"""Journal commit: intent+created pairs per second, one fsync per record against group commit.

2,000 jobs, 16 workers, each job an ``intent`` then a ``created`` (both durable before they
return), the way a batch journals its creates, with an optional simulated create latency between
them. Variants, alternating over rounds on the same disk (median kept):

- ``ledger``: one write and one fsync per record, each in a thread behind a lock (what the old
  ``Ledger`` did before group commit; kept here as the baseline);
- ``journal``: ``vidu_async.journal.Journal``, group commit (one write and one fsync per group).

No network: this measures the journal alone. The journals go in a temporary folder under
``--dir`` (default: the system's temporary folder; it must be a real disk for fsync to count).

    python benchmarks/journal_commit.py [--jobs 2000] [--concurrency 16] [--rounds 3]
        [--create-ms 0] [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from _common import record, table

from vidu_async.journal import Journal

Pair = Callable[[str], Awaitable[None]]


async def run_workers(jobs: int, concurrency: int, pair: Pair) -> float:
    """Seconds for ``concurrency`` workers to journal ``jobs`` intent+created pairs."""
    ids = iter(f"job-{i}" for i in range(jobs))

    async def worker() -> None:
        for job_id in ids:
            await pair(job_id)

    start = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return time.perf_counter() - start


async def with_ledger(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The baseline: every record written and fsynced on its own."""
    lock = asyncio.Lock()
    with path.open("ab") as handle:
        def append(line: bytes) -> None:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

        async def durable(record: dict[str, Any]) -> None:
            async with lock:
                await asyncio.to_thread(append, json.dumps(record).encode() + b"\n")

        async def pair(job_id: str) -> None:
            await durable({"kind": "intent", "job": job_id, "key": f"key-{job_id}"})
            await asyncio.sleep(args.create_ms / 1000)
            await durable({"kind": "created", "job": job_id, "task_id": f"task-{job_id}"})

        seconds = await run_workers(args.jobs, args.concurrency, pair)
    return {"seconds": seconds, "fsyncs": 2 * args.jobs}


async def with_journal(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    async with await Journal.open(path, batch_id="bench") as journal:
        async def pair(job_id: str) -> None:
            await journal.intent(job_id, key=f"key-{job_id}", account="acct",
                                 fingerprint="f" * 64, cost_class="viduq2/5s", server_at=0.0)
            await asyncio.sleep(args.create_ms / 1000)
            await journal.created(job_id, task_id=f"task-{job_id}", credits=20)

        seconds = await run_workers(args.jobs, args.concurrency, pair)
    return {"seconds": seconds, "fsyncs": journal.syncs, "writes": journal.writes}


VARIANTS = {"ledger": with_ledger, "journal": with_journal}


async def measure(folder: Path, args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """Every variant once per round, alternating, each on a fresh journal in ``folder``."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    for round_ in range(args.rounds):
        for name, variant in VARIANTS.items():
            runs[name].append(await variant(folder / f"{name}-{round_}.jsonl", args))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--create-ms", type=float, default=0.0)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        filesystem = subprocess.run(
            ["df", "--output=fstype,source", folder], capture_output=True, text=True
        ).stdout.split("\n")[1].strip()
        runs = asyncio.run(measure(Path(folder), args))
    rows, results = [], {}
    base = statistics.median(r["seconds"] for r in runs["ledger"])
    for name, measured in runs.items():
        seconds = statistics.median(r["seconds"] for r in measured)
        fsyncs = statistics.median(r["fsyncs"] for r in measured)
        results[name] = {"runs": measured, "median_seconds": seconds,
                         "pairs_per_s": args.jobs / seconds, "median_fsyncs": fsyncs}
        rows.append([name, args.jobs / seconds, base / seconds, fsyncs, fsyncs / args.jobs])
    text = table(["variant", "pairs/s", "speed-up", "fsyncs", "fsyncs/job"], rows)
    print(f"filesystem: {filesystem}\n{text}")
    path = record(
        "journal_commit",
        {"jobs": args.jobs, "concurrency": args.concurrency, "rounds": args.rounds,
         "create_ms": args.create_ms, "filesystem": filesystem},
        results,
        text,
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
