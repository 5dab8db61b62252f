"""Benchmark 3, polling cost: status requests spent following N tasks to their end.

The simulator (its own process, restarted per variant) runs every task at once (no concurrency
ceiling) for ``--processing`` seconds. Each variant creates N tasks and follows them all to the end:

- ``bulk``: ``BatchSubmitter(wait=True, poll_interval=P)``: every round lists the followed
  tasks, 100 ids per ``GET /tasks`` request;
- ``per-task``: the tasks created first, then ``ViduClient.wait_for_task(poll_interval=P,
  max_interval=P)`` for each, all at once under ``asyncio.gather`` and a semaphore of N;
- ``callbacks``: ``BatchSubmitter`` with a ``CallbackReceiver`` on 127.0.0.1 and a
  ``callback_url``: ends arrive by callback; polling is the safety net. With the receiver's
  default ``confirm=True`` it reads each claimed end back itself (one query per task); with
  ``confirm=False`` the batch reads them back in bulk.

Status requests are ``GET /tasks`` plus ``GET /tasks/{id}/creations`` as counted by the simulator.
A *task-round* is one task's state refreshed once (reported per task per round by the batch's
observer; for per-task polling every query is one). Aim: bulk polling at most one status request
per 100 tasks per round.

    python benchmarks/polling.py [--tasks 1000] [--processing 5] [--poll-interval 1]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from _common import UNLIMITED, Simulator, record, simulator, table
from overhead import make_jobs

from vidu_async.batch import BatchOptions, BatchSubmitter
from vidu_async.client import ViduClient
from vidu_async.jobs import Job
from vidu_async.receiver import CallbackReceiver, ReceiverOptions


class Rounds:
    """A ``BatchObserver`` counting task-rounds (one per task per refresh)."""

    def __init__(self) -> None:
        self.task_rounds = 0

    def job_created(self, task_id: str, credits: int | None) -> None:
        pass

    def task_state(self, task_id: str, state: str) -> None:
        self.task_rounds += 1


async def bulk(sim: Simulator, jobs: list[Job], interval: float) -> tuple[int, int]:
    rounds = Rounds()
    options = BatchOptions(concurrency=16, wait=True, poll_interval=interval,
                           max_pending=len(jobs))
    done = 0
    async with ViduClient(sim.api_key, base_url=sim.url) as client:
        async for outcome in BatchSubmitter(client, options, observer=rounds).run(jobs):
            done += outcome.status == "succeeded"
    return done, rounds.task_rounds


async def per_task(sim: Simulator, jobs: list[Job], interval: float) -> tuple[int, int]:
    async with ViduClient(sim.api_key, base_url=sim.url) as client:
        options = BatchOptions(concurrency=16, wait=False)
        ids = [o.task_id async for o in BatchSubmitter(client, options).run(jobs) if o.task_id]
        semaphore = asyncio.Semaphore(len(ids))

        async def follow(task_id: str) -> bool:
            async with semaphore:
                result = await client.wait_for_task(
                    task_id, poll_interval=interval, max_interval=interval
                )
                return result.succeeded

        done = await asyncio.gather(*(follow(task_id) for task_id in ids))
    return sum(done), -1  # every status request is one task-round


async def callbacks(
    sim: Simulator, jobs: list[Job], interval: float, *, confirm: bool
) -> tuple[int, int]:
    rounds = Rounds()
    done = 0
    async with ViduClient(sim.api_key, base_url=sim.url) as client:
        receiver = CallbackReceiver(client, ReceiverOptions(confirm=confirm))
        async with receiver.serve("127.0.0.1", 0) as url:
            options = BatchOptions(concurrency=16, wait=True, poll_interval=interval,
                                   max_pending=len(jobs), callback_url=url)
            submitter = BatchSubmitter(client, options, observer=rounds, callbacks=receiver)
            async for outcome in submitter.run(jobs):
                done += outcome.status == "succeeded"
    return done, rounds.task_rounds


Variant = Callable[[Simulator, list[Job], float], Awaitable[tuple[int, int]]]
VARIANTS: dict[str, Variant] = {
    "bulk": bulk,
    "per-task": per_task,
    "callbacks": partial(callbacks, confirm=True),
    "callbacks, confirm=False": partial(callbacks, confirm=False),
}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--processing", type=float, default=5.0)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    args = parser.parse_args()
    n = args.tasks
    jobs = make_jobs(n)
    options = [*UNLIMITED, "--processing-seconds", f"{args.processing:g}"]
    results: dict[str, dict[str, Any]] = {}
    for name, run in VARIANTS.items():
        with simulator(*options) as sim:
            started = time.perf_counter()
            done, task_rounds = await run(sim, jobs, args.poll_interval)
            wall = time.perf_counter() - started
            stats = (await sim.stats())["requests"]
        if done != n:
            raise RuntimeError(f"{name}: {done} of {n} tasks followed to success")
        lists = sum(stats.get("list_tasks", {}).values())
        queries = sum(stats.get("query", {}).values())
        status = lists + queries
        task_rounds = status if task_rounds < 0 else task_rounds
        results[name] = {
            "seconds": wall,
            "list_requests": lists,
            "query_requests": queries,
            "status_requests": status,
            "status_per_task": status / n,
            "task_rounds": task_rounds,
            "status_per_100_task_rounds": 100 * status / task_rounds if task_rounds else None,
        }
    rows = [
        [name, r["seconds"], r["list_requests"], r["query_requests"], r["status_per_task"],
         r["task_rounds"],
         "-" if r["status_per_100_task_rounds"] is None else r["status_per_100_task_rounds"]]
        for name, r in results.items()
    ]
    text = table(
        ["variant", "wall s", "GET /tasks", "GET /tasks/{id}", "status req/task", "task-rounds",
         "status req per 100 task-rounds"],
        rows,
    )
    per_100 = results["bulk"]["status_per_100_task_rounds"]
    print(f"{n} tasks processing {args.processing:g} s each, polled every "
          f"{args.poll_interval:g} s\n")
    print(text)
    print(f"\nbulk: {per_100:.2f} status requests per 100 task-rounds "
          f"(aim <= 1: {'met' if per_100 <= 1 else 'MISSED'}); per-task / bulk requests: "
          f"{results['per-task']['status_requests'] / results['bulk']['status_requests']:.0f}x")
    path = record(
        "polling",
        {"tasks": n, "processing_s": args.processing, "poll_interval_s": args.poll_interval},
        {**results, "aim_met": per_100 <= 1},
        text,
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    asyncio.run(main())
