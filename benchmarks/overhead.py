"""Benchmark 1, overhead: what BatchSubmitter costs over a bare aiohttp loop.

2,000 creates against an instant, fault-free simulator (its own process), at the same
concurrency, by:

- ``bare``: N aiohttp workers posting bodies prepared beforehand (JSON bytes, same fields, same
  correlation payload), reading each answer as JSON: the floor any client pays;
- ``client``: N workers calling ``ViduClient.create`` (validation, body, retrier,
  parsed answer): what the client adds before any batch machinery;
- ``batch``: ``BatchSubmitter(wait=False)`` without a journal;
- ``batch+journal``: the same with a journal (fsync'd records around each create) and a named
  batch: what ``vidu-async submit`` runs without ``--wait``, and the variant the aim is about;
- ``batch+journal, slow start``: the same with ``start_rate=10`` (a batch that expects a
  strict limit it was not told), to show what that start costs;
- ``batch+journal, default gc``: the same with CPython's default garbage-collector settings.

Every other variant runs with the collector tuned as the ``vidu-async`` process tunes it
(``vidu_async.cli._gc.tune_for_a_batch``: the imports frozen, the youngest generation collected
a tenth as often), the bare loop included: side by side in one process, under one setting.

Every measured run gets a fresh simulator, warmed by a few creates: the batch ends with a scan of
the tasks created since it started (less a minute's slack, its duplicate check), which on a
shared simulator would also list the other variants' tasks. Variants alternate over several
rounds (the machine is shared and noisy) and the median is kept.
Besides creates/s, the client's CPU time per create is reported (``time.process_time``): with
the simulator sharing 2 cores, wall-clock rates understate the difference when the simulator is
the bottleneck, CPU per create does not. ``--profile`` writes a cProfile of one batch run.

``--latency 0.02`` holds every answer 20 ms, as a nearby real server would: the client's CPU
then no longer sets the pace (written to ``overhead-latency.json``).

    python benchmarks/overhead.py [--jobs 2000] [--concurrency 16] [--rounds 3] [--profile]
                                  [--latency SECONDS]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import pstats
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import attrs
from _common import RESULTS, UNLIMITED, Simulator, record, simulator, table

from vidu_async.batch import BatchOptions, BatchSubmitter
from vidu_async.cli._gc import tune_for_a_batch
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


async def client_only(sim: Simulator, jobs: list[Job], concurrency: int) -> int:
    """N workers calling ``ViduClient.create`` on one client; how many were created."""
    pending = iter(jobs)
    created = 0

    async def worker() -> None:
        nonlocal created
        for job in pending:
            task = await client.create(job.request)
            created += bool(task.task_id)

    async with ViduClient(sim.api_key, base_url=sim.url) as client, asyncio.TaskGroup() as group:
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


SIMULATOR = [*UNLIMITED, "--processing-seconds", "0"]
JOURNALLED = "batch+journal"
"""The variant the aim is about: the engine of ``vidu-async submit`` without ``--wait``."""


def cli_options(concurrency: int, journal: Path) -> BatchOptions:
    """What ``vidu-async submit jobs.jsonl`` passes its engine: a journal, a batch named after
    the jobs file (so it looks for an earlier run's tasks first), the default pacing."""
    return BatchOptions(concurrency=concurrency, journal=journal, batch_id="jobs.jsonl")
WARM_UP = 48
"""Creates sent to each fresh simulator before a measured run (its imports, first connections)."""


DEFAULT_GC = f"{JOURNALLED}, default gc"
"""The journalled batch under CPython's default collector settings (what tuning gave)."""


@contextlib.contextmanager
def default_collector() -> Iterator[None]:
    """CPython's collector settings within, the ``vidu-async`` process's after."""
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    try:
        yield
    finally:
        tune_for_a_batch()


async def measure(n: int, run: Callable[[Simulator], Awaitable[int]],
                  warm_up: list[bytes], concurrency: int,
                  options: tuple[str, ...] = ()) -> dict[str, Any]:
    """One measured run against a fresh, warmed simulator; its figures."""
    with simulator(*SIMULATOR, *options) as sim:
        await bare(sim, warm_up, concurrency)
        sim_cpu = sim.cpu_seconds()
        cpu, wall = time.process_time(), time.perf_counter()
        created = await run(sim)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        sim_cpu = sim.cpu_seconds() - sim_cpu
        requests = (await sim.stats())["requests"]
    if created != n:
        raise RuntimeError(f"expected {n} creates, got {created}")
    return {
        "seconds": wall,
        "creates_per_s": n / wall,
        "client_cpu_us_per_create": cpu / n * 1e6,
        "sim_cpu_us_per_create": sim_cpu / n * 1e6,
        "requests": requests,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile one batch+journal run")
    parser.add_argument("--latency", type=float, default=0.0,
                        help="seconds the simulator holds every answer (0: the aim's instant "
                             "server; e.g. 0.02 for a nearby real one); results in "
                             "overhead-latency.json")
    args = parser.parse_args()
    tune_for_a_batch()
    n, c = args.jobs, args.concurrency
    jobs = make_jobs(n)
    served = ("--latency", f"{args.latency:g}") if args.latency else ()
    warm_up = prepared_bodies(make_jobs(WARM_UP))
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            bodies = prepared_bodies(jobs)  # outside the timed region: the bare loop's head start
            variants: dict[str, Callable[[Simulator], Awaitable[int]]] = {
                "bare": partial(bare, bodies=bodies, concurrency=c),
                "client": partial(client_only, jobs=jobs, concurrency=c),
                "batch": partial(batch, jobs=jobs, options=BatchOptions(concurrency=c)),
                JOURNALLED: partial(batch, jobs=jobs, options=cli_options(
                    c, Path(tmp, f"journal-{round_}.jsonl"))),
                f"{JOURNALLED}, slow start": partial(batch, jobs=jobs, options=attrs.evolve(
                    cli_options(c, Path(tmp, f"journal-{round_}-slow.jsonl")),
                    start_rate=10.0)),
                DEFAULT_GC: partial(batch, jobs=jobs, options=cli_options(
                    c, Path(tmp, f"journal-{round_}-gc.jsonl"))),
            }
            names = list(variants)
            turn = round_ % len(names)
            for name in names[turn:] + names[:turn]:  # rotate who goes first
                collector = default_collector() if name == DEFAULT_GC else contextlib.nullcontext()
                with collector:
                    runs.setdefault(name, []).append(await measure(n, variants[name], warm_up,
                                                                       c, served))
        profile_path = None
        if args.profile:
            profile_path = RESULTS / "overhead.prof"
            RESULTS.mkdir(exist_ok=True)
            profiler = cProfile.Profile()
            options = cli_options(c, Path(tmp, "journal-profiled.jsonl"))

            async def profiled(sim: Simulator) -> int:
                profiler.enable()
                try:
                    return await batch(sim, jobs, options)
                finally:
                    profiler.disable()

            await measure(n, profiled, warm_up, c, served)
            profiler.dump_stats(profile_path)

    numbers = ("seconds", "creates_per_s", "client_cpu_us_per_create", "sim_cpu_us_per_create")
    summary = {
        name: {key: statistics.median(s[key] for s in samples) for key in numbers}
        for name, samples in runs.items()
    }
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
    held = f", every answer held {args.latency * 1000:g} ms" if args.latency else ""
    print(f"{n} creates, concurrency {c}, median of {args.rounds} rounds{held}\n")
    print(text)
    ratio = summary[JOURNALLED]["creates_per_s"] / base["creates_per_s"]
    verdict = "met" if ratio >= 0.85 else "MISSED"
    print(f"\nBatchSubmitter with a journal / bare: {ratio:.2f} (aim >= 0.85: {verdict})")
    if profile_path is not None:
        stats = pstats.Stats(str(profile_path))
        stats.sort_stats("cumulative").print_stats(30)
        stats.sort_stats("tottime").print_stats(25)
    path = record(
        "overhead-latency" if args.latency else "overhead",
        {"jobs": n, "concurrency": c, "rounds": args.rounds, "latency_s": args.latency,
         "image": IMAGE,
         "warm_up_creates": WARM_UP, "simulator": "serve " + " ".join([*SIMULATOR, *served]),
         "gc": f"tune_for_a_batch (threshold {gc.get_threshold()}), {DEFAULT_GC!r} CPython's",
         "simulator_per_run": "fresh"},
        {"median": summary, "runs": runs,
         "ratio_batch_vs_bare": summary["batch"]["creates_per_s"] / base["creates_per_s"],
         "ratio_journal_vs_bare": ratio, "aim_met": ratio >= 0.85},
        text,
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    asyncio.run(main())
