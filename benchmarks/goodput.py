"""Benchmark 2, throttled goodput: N creates against a simulator that allows R requests a second.

The simulator (its own process, restarted for each variant so every one meets a full bucket)
runs a token bucket per key: R requests a second, bursts of B; beyond it, 429 TooManyRequests
with a whole-seconds ``Retry-After``. Each variant submits the same N jobs at concurrency C:

- ``BatchSubmitter``: ``rate=None``, so it must discover the limit from the 429s (shared AIMD
  pacing, ``vidu_async/throttle.py``);
- ``BatchSubmitter rate=R``: told the limit, for reference;
- ``gather+tenacity``: what a user would write without us: a semaphore of C, ``asyncio.gather``
  over every job, and tenacity's ``wait_random_exponential(min=1, max=60)`` on 429 (the
  commonly copied recipe), posting the same prepared bodies with aiohttp.

A variant still running after 4x the ideal time is stopped (bounded runs). Reported: wall time
against the ideal N / R, and how many requests were answered 429.

    python benchmarks/goodput.py [--jobs 300] [--rate 20] [--burst 1] [--concurrency 16]

(``--burst`` other than 1 writes ``results/goodput-burst<B>.json``.)
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from _common import UNLIMITED, Simulator, record, simulator, table
from overhead import batch, make_jobs, prepared_bodies
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from vidu_async.batch import BatchOptions
from vidu_async.jobs import Job

CAP = 4.0
"""A variant still running after CAP x the ideal time is stopped and reported as such."""


class TooManyRequests(Exception):
    """A 429, for the tenacity variant."""


async def gather_tenacity(sim: Simulator, jobs: list[Job], concurrency: int) -> int:
    url = f"{sim.url}/ent/v2/reference2video"
    headers = {"Authorization": f"Token {sim.api_key}", "Content-Type": "application/json"}
    semaphore = asyncio.Semaphore(concurrency)

    async def create(body: bytes) -> str:
        async with session.post(url, data=body, headers=headers) as response:
            if response.status == 429:
                raise TooManyRequests
            response.raise_for_status()
            task_id: str = (await response.json())["task_id"]
            return task_id

    async def one(body: bytes) -> str:
        async with semaphore:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(lambda e: isinstance(e, TooManyRequests)),
                wait=wait_random_exponential(min=1, max=60),
                stop=stop_after_attempt(30),
                reraise=True,
            ):
                with attempt:
                    return await create(body)
        raise AssertionError("unreachable")

    async with aiohttp.ClientSession() as session:
        ids = await asyncio.gather(*(one(body) for body in prepared_bodies(jobs)))
    return len(set(ids))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--burst", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    n, r, c = args.jobs, args.rate, args.concurrency
    jobs = make_jobs(n)
    ideal = n / r
    variants: dict[str, Callable[[Simulator], Awaitable[int]]] = {
        "BatchSubmitter": lambda sim: batch(sim, jobs, BatchOptions(concurrency=c)),
        "BatchSubmitter rate=R": lambda sim: batch(sim, jobs, BatchOptions(concurrency=c, rate=r)),
        "gather+tenacity": lambda sim: gather_tenacity(sim, jobs, c),
    }
    results: dict[str, dict[str, Any]] = {}
    for name, run in variants.items():
        options = [*UNLIMITED, "--processing-seconds", "0", "--rate-limit", f"{r:g}/{args.burst}"]
        with simulator(*options) as sim:
            started = time.perf_counter()
            try:
                created = await asyncio.wait_for(run(sim), CAP * ideal)
            except TimeoutError:
                created = None  # gave up: reported as more than CAP x ideal
            wall = time.perf_counter() - started
            stats = await sim.stats()
        requests = sum(sum(by_status.values()) for by_status in stats["requests"].values())
        throttled = stats["faults"].get("rate_limited", 0)
        if created is not None and (created != n or stats["tasks_created"] != n):
            raise RuntimeError(f"{name}: {created} creates reported, {stats['tasks_created']} made")
        results[name] = {
            "seconds": wall,
            "vs_ideal": wall / ideal,
            "requests": requests,
            "429s": throttled,
            "share_429": throttled / requests,
            "finished": created is not None,
            "tasks_created": stats["tasks_created"],
            "goodput_per_s": stats["tasks_created"] / wall,
            "aim_met": created is not None and wall <= 1.1 * ideal and throttled / requests < 0.05,
        }
    rows = [
        [name, s["seconds"] if s["finished"] else f"> {s['seconds']:.0f} (gave up)",
         f"{s['vs_ideal']:.2f}x", s["requests"], s["429s"],
         f"{s['share_429']:.1%}", s["goodput_per_s"], "met" if s["aim_met"] else "MISSED"]
        for name, s in results.items()
    ]
    text = table(
        ["variant", "wall s", "vs ideal", "requests", "429s", "429 share", "creates/s",
         "aim (<=1.1x, <5% 429)"],
        rows,
    )
    print(f"{n} creates, limit {r:g} req/s (burst {args.burst}), concurrency {c}, "
          f"ideal {ideal:.1f} s\n")
    print(text)
    path = record(
        "goodput" if args.burst == 1 else f"goodput-burst{args.burst}",
        {"jobs": n, "rate_limit": r, "burst": args.burst, "concurrency": c, "ideal_s": ideal,
         "tenacity_wait": "wait_random_exponential(min=1, max=60)"},
        results,
        text,
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    asyncio.run(main())
