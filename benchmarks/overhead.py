"""Benchmark 1, overhead: what BatchSubmitter costs over a bare aiohttp loop.

2,000 creates against an instant, fault-free simulator (its own process), at the same
concurrency, by:

- ``bare``: N aiohttp workers posting bodies prepared beforehand (JSON bytes, same fields, same
  correlation payload), reading each answer as JSON: the floor any client pays;
- ``batch``: ``BatchSubmitter(wait=False)`` without a journal;
- ``batch+journal``: the same with a journal (an fsync'd intent before each create).

Variants alternate over several rounds (the machine is shared and noisy) and the median is kept.
Besides creates/s, the client's CPU time per create is reported (``time.process_time``): with
the simulator sharing 2 cores, wall-clock rates understate the difference when the simulator is
the bottleneck, CPU per create does not. ``--profile`` writes a cProfile of one batch run.

    python benchmarks/overhead.py [--jobs 2000] [--concurrency 16] [--rounds 3] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
from _common import RESULTS, UNLIMITED, Simulator, record, simulator, table

from vidu_async.batch import BatchOptions, BatchSubmitter
from vidu_async.client import ViduClient
from vidu_async.jobs import Job
from vidu_async.requests import ReferenceToVideoRequest, dumps_body
from vidu_async.tasks import new_correlation_key, wrap_payload

IMAGE = "https://example.com/reference.png"


def make_jobs(n: int) -> list[Job]:
    return [
        Job(
            f"job-{i}",
            ReferenceToVideoRequest("viduq2", f"a cat plays piano, take {i}", images=(IMAGE,)),
            line=i + 1,
        )
        for i in range(n)
    ]


def prepared_bodies(jobs: list[Job]) -> list[bytes]:
    bodies = []
    for job in jobs:
        fields = job.request.to_payload()
        fields["payload"] = wrap_payload(new_correlation_key(), job.request.payload or "")
        bodies.append(dumps_body(fields))
    return bodies


async def bare(sim: Simulator, bodies: list[bytes], concurrency: int) -> int:
    """The floor: prepared bodies, N workers, one shared session, nothing else."""
    url = f"{sim.url}/ent/v2/reference2video"
    headers = {
        "Authorization": f"Token {sim.api_key}",
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    pending = iter(bodies)
    created = 0

    async def worker() -> None:
        nonlocal created
        for body in pending:
            async with session.post(url, data=body, headers=headers) as response:
                answer = await response.json()
                response.raise_for_status()
                created += bool(answer["task_id"])

    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(connector=connector) as session, asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return created


async def batch(sim: Simulator, jobs: list[Job], options: BatchOptions) -> int:
    """Submit ``jobs`` with ``BatchSubmitter``; how many were created."""
    created = 0
    async with ViduClient(sim.api_key, base_url=sim.url) as client:
        async for outcome in BatchSubmitter(client, options).run(jobs):
            created += outcome.status == "submitted"
    return created


async def measure(sim: Simulator, n: int, run: Callable[[], Awaitable[int]]) -> dict[str, Any]:
    sim_cpu = sim.cpu_seconds()
    cpu, wall = time.process_time(), time.perf_counter()
    created = await run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if created != n:
        raise RuntimeError(f"expected {n} creates, got {created}")
    return {
        "seconds": wall,
        "creates_per_s": n / wall,
        "client_cpu_us_per_create": cpu / n * 1e6,
        "sim_cpu_us_per_create": (sim.cpu_seconds() - sim_cpu) / n * 1e6,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile one batch run")
    args = parser.parse_args()
    n, c = args.jobs, args.concurrency
    jobs = make_jobs(n)
    runs: dict[str, list[dict[str, Any]]] = {"bare": [], "batch": [], "batch+journal": []}
    with simulator(*UNLIMITED, "--processing-seconds", "0") as sim, \
            tempfile.TemporaryDirectory() as tmp:
        await bare(sim, prepared_bodies(jobs[:200]), c)  # warm-up: imports, first connections
        for round_ in range(args.rounds):
            journal = Path(tmp, f"journal-{round_}.jsonl")
            bodies = prepared_bodies(jobs)  # outside the timed region: the bare loop's head start
            variants: dict[str, Callable[[], Awaitable[int]]] = {
                "bare": partial(bare, sim, bodies, c),
                "batch": partial(batch, sim, jobs, BatchOptions(concurrency=c)),
                "batch+journal": partial(
                    batch, sim, jobs, BatchOptions(concurrency=c, journal=journal)
                ),
            }
            names = list(variants)
            for name in names[round_ % 3:] + names[:round_ % 3]:  # rotate who goes first
                runs[name].append(await measure(sim, n, variants[name]))
        profile_path = None
        if args.profile:
            profile_path = RESULTS / "overhead.prof"
            RESULTS.mkdir(exist_ok=True)
            profiler = cProfile.Profile()
            profiler.enable()
            await batch(sim, jobs, BatchOptions(concurrency=c))
            profiler.disable()
            profiler.dump_stats(profile_path)
        sim_stats = await sim.stats()

    summary = {}
    for name, samples in runs.items():
        summary[name] = {key: statistics.median(s[key] for s in samples) for key in samples[0]}
    base = summary["bare"]
    rows = []
    for name, s in summary.items():
        rows.append([
            name, s["creates_per_s"], s["creates_per_s"] / base["creates_per_s"],
            s["client_cpu_us_per_create"],
            base["client_cpu_us_per_create"] / s["client_cpu_us_per_create"],
            s["sim_cpu_us_per_create"],
        ])
    text = table(
        ["variant", "creates/s", "ratio vs bare", "client CPU µs/create", "CPU ratio (bare/x)",
         "sim CPU µs/create"],
        rows,
    )
    print(f"{n} creates, concurrency {c}, median of {args.rounds} rounds\n")
    print(text)
    ratio = summary["batch"]["creates_per_s"] / base["creates_per_s"]
    verdict = "met" if ratio >= 0.85 else "MISSED"
    print(f"\nBatchSubmitter / bare: {ratio:.2f} (aim >= 0.85: {verdict})")
    if profile_path is not None:
        stats = pstats.Stats(str(profile_path))
        stats.sort_stats("cumulative").print_stats(25)
    path = record(
        "overhead",
        {"jobs": n, "concurrency": c, "rounds": args.rounds, "image": IMAGE,
         "simulator": "serve " + " ".join([*UNLIMITED, "--processing-seconds", "0"])},
        {"median": summary, "runs": runs, "ratio_batch_vs_bare": ratio,
         "ratio_journal_vs_bare": summary["batch+journal"]["creates_per_s"] / base["creates_per_s"],
         "aim_met": ratio >= 0.85, "simulator_stats": sim_stats},
        text,
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    asyncio.run(main())
