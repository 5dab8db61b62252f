"""Benchmark 6, lost answers: what creates whose answer never arrives cost a batch.

The engine of ``vidu-async submit`` without ``--wait`` (``BatchSubmitter`` with a journal and a
named batch, concurrency C) submits N jobs to an instant simulator (its own process, fresh for
each run), once fault-free and once with, on every create:

- ``commit_then_drop``: the task is created and billed, then the connection is closed (5%);
- ``error_after_commit``: the task is created and billed, then the create is answered 500 (2%);
- ``server_error``: 500 before handling, nothing created (2%): absence must be proven, which
  takes ``RetryPolicy.visibility_lag`` (given here, short) plus 0.1 s (``SERVER_SKEW``).

``vidu-async serve --fault`` injects on every endpoint, so the task-list scans that look lost
keys up meet the same 500s (``commit_then_drop`` is create-only). A lost answer
is one the client logged as lost (``create answer lost``); requests per lost answer are the
faulty run's requests beyond the clean run's, divided by them. Each run must create exactly N
tasks (no duplicate, none missing), or the benchmark fails.

Aims: wall time within 1.2 x (clean + visibility_lag); at most 3 requests per lost answer on
average; the larger batch (default 5x the jobs) within 6 x the time of the smaller one.
*Jobs lost again* had a resend (after absence was proven) lost too, and *longest chain* is the
most lost answers of one job. A lost create that made a task can be found at once; one that
made none is proven absent (and resent) only visibility_lag after it, so a job whose create was
proven absent k times ends no sooner than k x visibility_lag after its first lost answer.
*Lag floor* is the latest such end in the run: the time no client can beat without risking a
second task.

    python benchmarks/lost_answers.py [--jobs 1000] [--large 5000] [--lag 2] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import UNLIMITED, record, simulator, table
from overhead import cli_options, make_jobs

from vidu_async.batch import BatchSubmitter
from vidu_async.client import ViduClient
from vidu_async.retry import RetryPolicy

FAULTS = {"commit_then_drop": 0.05, "error_after_commit": 0.02, "server_error": 0.02}
CAP = 300.0
"""Seconds after which a run is stopped and the benchmark fails (bounded runs)."""


class LostAnswers(logging.Handler):
    """Counts the client's "create answer lost" log lines (one per create answer lost), and
    per correlation key: a job whose resend is lost again waits out the lag once more."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.by_key: dict[str, int] = {}
        self.first: dict[str, float] = {}
        """When each key's first answer was lost (``time.time()``)."""
        self.absent: dict[str, int] = {}
        """How often each key's lookup proved its create absent (each then resent)."""

    @property
    def count(self) -> int:
        return sum(self.by_key.values())

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("create answer lost"):
            key = message.rsplit(" ", 1)[-1]
            self.by_key[key] = self.by_key.get(key, 0) + 1
            self.first.setdefault(key, record.created)
        elif message.endswith(": proven absent"):
            key = message.split()[5].rstrip(":")
            self.absent[key] = self.absent.get(key, 0) + 1

    def floor(self, started: float, lag: float) -> float:
        """Seconds from ``started`` before which the run cannot end without risking a second
        task: a lost create that made no task is proven absent (and resent) only ``lag``
        after it, so a key proven absent k times ends no sooner than k x lag after its first
        lost answer (one that made a task can be found at once)."""
        return max((self.first[key] - started + self.absent.get(key, 0) * lag
                    for key in self.by_key), default=0.0)


async def run(n: int, concurrency: int, lag: float, faults: dict[str, float],
              seed: int) -> dict[str, Any]:
    """Submit ``n`` jobs against a fresh simulator with ``faults``; the run's figures."""
    options = [f"--fault={kind}={p:g}" for kind, p in faults.items()]
    lost = LostAnswers()
    client_log = logging.getLogger("vidu_async.client")
    client_log.addHandler(lost)
    client_log.setLevel(logging.INFO)
    statuses: dict[str, int] = {}
    try:
        with simulator(*UNLIMITED, "--processing-seconds", "0", "--seed", str(seed),
                       *options) as sim, tempfile.TemporaryDirectory() as tmp:
            started, started_at = time.perf_counter(), time.time()
            async with ViduClient(sim.api_key, base_url=sim.url,
                                  retry=RetryPolicy(visibility_lag=lag)) as client:
                submitter = BatchSubmitter(client, cli_options(concurrency, Path(tmp, "j.jsonl")))
                async with asyncio.timeout(CAP):
                    async for outcome in submitter.run(make_jobs(n)):
                        statuses[outcome.status] = statuses.get(outcome.status, 0) + 1
            wall = time.perf_counter() - started
            stats = await sim.stats()
    finally:
        client_log.removeHandler(lost)
    if statuses != {"submitted": n} or stats["tasks_created"] != n \
            or stats["duplicate_payloads"]:
        raise RuntimeError(f"{n} jobs: outcomes {statuses}, {stats['tasks_created']} tasks, "
                           f"duplicates {stats['duplicate_payloads']}")
    by_endpoint = {name: sum(counts.values()) for name, counts in stats["requests"].items()}
    chained = sum(1 for times in lost.by_key.values() if times > 1)
    return {"seconds": wall, "lost_answers": lost.count, "requests": sum(by_endpoint.values()),
            "jobs_lost_again": chained, "longest_chain": max(lost.by_key.values(), default=0),
            "lag_floor_s": lost.floor(started_at, lag),
            "requests_by_endpoint": by_endpoint, "requests_by_status": stats["requests"],
            "faults": stats["faults"], "outcomes": statuses}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--large", type=int, default=5000)
    parser.add_argument("--lag", type=float, default=2.0, help="RetryPolicy.visibility_lag, s")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    n, big, lag, c = args.jobs, args.large, args.lag, args.concurrency
    runs = {
        "clean": await run(n, c, lag, {}, args.seed),
        "faulty": await run(n, c, lag, FAULTS, args.seed),
        "clean, large": await run(big, c, lag, {}, args.seed),
        "faulty, large": await run(big, c, lag, FAULTS, args.seed),
    }
    rows = []
    for name, s in runs.items():
        clean = runs["clean, large" if "large" in name else "clean"]
        jobs = big if "large" in name else n
        extra = s["requests"] - clean["requests"]
        s["requests_per_lost_answer"] = extra / s["lost_answers"] if s["lost_answers"] else None
        s["vs_clean"] = s["seconds"] / clean["seconds"]
        s["vs_clean_plus_lag"] = s["seconds"] / (clean["seconds"] + lag)
        rows.append([
            name, jobs, s["seconds"], f"{s['vs_clean']:.2f}x", f"{s['vs_clean_plus_lag']:.2f}x",
            s["lost_answers"], s["requests"], s["requests_by_endpoint"].get("list_tasks", 0),
            "-" if s["requests_per_lost_answer"] is None else s["requests_per_lost_answer"],
            s["jobs_lost_again"], s["longest_chain"], s["lag_floor_s"],
        ])
    aims = {
        "faulty within 1.2x (clean + lag)": runs["faulty"]["vs_clean_plus_lag"] <= 1.2,
        "faulty, large within 1.2x (clean, large + lag)":
            runs["faulty, large"]["vs_clean_plus_lag"] <= 1.2,
        "<= 3 requests per lost answer": runs["faulty"]["requests_per_lost_answer"] <= 3,
        "<= 3 requests per lost answer, large":
            runs["faulty, large"]["requests_per_lost_answer"] <= 3,
        f"faulty {big} within 6x faulty {n}":
            runs["faulty, large"]["seconds"] <= 6 * runs["faulty"]["seconds"],
    }
    text = table(["run", "jobs", "wall s", "vs clean", "vs clean + lag", "lost answers",
                  "requests", "list requests", "extra requests per lost answer",
                  "jobs lost again", "longest chain", "lag floor s"], rows)
    text += "\n\n" + table(["aim", "verdict"],
                           [[aim, "met" if ok else "MISSED"] for aim, ok in aims.items()])
    print(f"faults on create: {', '.join(f'{k} {p:.0%}' for k, p in FAULTS.items())} "
          f"(on other endpoints: the same but commit_then_drop); visibility_lag {lag:g} s; "
          f"concurrency {c}; journal, named batch, wait=False\n")
    print(text)
    growth = runs["faulty, large"]["seconds"] / runs["faulty"]["seconds"]
    print(f"\n{big} vs {n} jobs, faulty: {growth:.2f}x (aim <= 6x)")
    path = record(
        "lost_answers",
        {"jobs": n, "large": big, "visibility_lag_s": lag, "concurrency": c, "seed": args.seed,
         "faults": FAULTS, "simulator": "serve " + " ".join([*UNLIMITED, "--processing-seconds",
                                                              "0"])},
        {"runs": runs, "aims": aims},
        text,
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    asyncio.run(main())
