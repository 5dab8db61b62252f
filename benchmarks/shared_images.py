"""Benchmark 7, shared images: N jobs that all use the same three local 2 MB images.

The engine of ``vidu-async submit`` without ``--wait`` (``BatchSubmitter``, journal, named
batch, concurrency 8) submits the jobs to an instant simulator (its own process, fresh for each
variant), while a heartbeat task asks to wake every 5 ms and records how late it wakes (the
event loop's longest stall):

- ``upload``: the default, each distinct local image uploaded once and sent as its
  ``ssupload:`` URI;
- ``inline``: ``upload_images=False``, every create inlines the three images as base64 (the
  previous behaviour), run on fewer jobs (``--inline-jobs``) to stay within a minute or two.

Create body bytes are what the simulator received on its create endpoint; upload bytes what it
received on the storage ``PUT``; client CPU is this process's alone (the simulator runs apart).
Aims (1,000 jobs): under 5 MB of create bodies in all; no stall over 20 ms; at least 10x the 57
jobs/s measured before uploads.

    python benchmarks/shared_images.py [--jobs 1000] [--inline-jobs 100] [--mb 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import UNLIMITED, record, simulator, table
from payload import HEARTBEAT, heartbeat, png

from vidu_async.batch import BatchOptions, BatchSubmitter
from vidu_async.client import ViduClient
from vidu_async.jobs import Job
from vidu_async.requests import ReferenceToVideoRequest

BEFORE_JOBS_PER_SECOND = 57.0
"""Jobs a second with three shared 2 MB images before uploads (benchmarks/README.md, 5)."""
MB = 1024 * 1024


async def run(n: int, images: list[Path], upload: bool, folder: Path) -> dict[str, Any]:
    """Submit ``n`` jobs naming ``images`` against a fresh simulator; the run's figures."""
    jobs = [Job(f"job-{i}", ReferenceToVideoRequest("viduq2", f"a cat, take {i}",
                                                     images=images, duration=5))
            for i in range(n)]
    options = BatchOptions(concurrency=8, journal=folder / f"j-{upload}.jsonl",
                           batch_id="shared.jsonl", upload_images=upload)
    stalls: list[float] = []
    with simulator(*UNLIMITED, "--processing-seconds", "0") as sim:
        async with ViduClient(sim.api_key, base_url=sim.url) as client:
            beat = asyncio.create_task(heartbeat(stalls))
            started, cpu = time.perf_counter(), time.process_time()
            statuses = [o.status async for o in BatchSubmitter(client, options).run(jobs)]
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            beat.cancel()
        stats = await sim.stats()
    if statuses != ["submitted"] * n or stats["tasks_created"] != n:
        raise RuntimeError(f"{n} jobs: {sorted(set(statuses))}, {stats['tasks_created']} tasks")
    body = stats["body_bytes"]
    return {
        "jobs": n, "seconds": seconds, "jobs_per_second": n / seconds,
        "client_cpu_ms_per_job": cpu * 1000 / n,
        "create_mb": body.get("create", 0) / MB,
        "upload_mb": body.get("storage", 0) / MB,
        "uploads": stats["requests"].get("upload_start", {}).get("200", 0),
        "max_stall_ms": max(stalls, default=0.0) * 1000,
        "p99_stall_ms": statistics.quantiles(stalls, n=100)[98] * 1000 if len(stalls) > 1
        else 0.0,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--inline-jobs", type=int, default=100)
    parser.add_argument("--mb", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        images = []
        for k in range(3):
            images.append(folder / f"shared-{k}.png")
            images[-1].write_bytes(png(args.mb, k))
        results = {
            "upload": await run(args.jobs, images, True, folder),
            "inline": await run(args.inline_jobs, images, False, folder),
        }
    up = results["upload"]
    aims = {
        "create bodies < 5 MB": up["create_mb"] < 5,
        "max stall < 20 ms": up["max_stall_ms"] < 20,
        "jobs/s >= 10x 57": up["jobs_per_second"] >= 10 * BEFORE_JOBS_PER_SECOND,
    }
    rows = [[name, r["jobs"], f"{r['seconds']:.2f}", f"{r['jobs_per_second']:.0f}",
             f"{r['create_mb']:.2f}", r["uploads"], f"{r['upload_mb']:.1f}",
             f"{r['max_stall_ms']:.1f}", f"{r['p99_stall_ms']:.1f}"]
            for name, r in results.items()]
    text = table(["variant", "jobs", "seconds", "jobs/s", "create body MB", "uploads",
                  "upload MB", "max stall ms", "p99 stall ms"], rows)
    text += "\n\n" + "\n".join(f"{aim}: {'met' if ok else 'MISSED'}" for aim, ok in aims.items())
    text += "\nclient CPU per job: " + ", ".join(
        f"{name} {r['client_cpu_ms_per_job']:.1f} ms" for name, r in results.items())
    text += (f"\nspeed-up over the {BEFORE_JOBS_PER_SECOND:g} jobs/s before uploads: "
             f"{up['jobs_per_second'] / BEFORE_JOBS_PER_SECOND:.1f}x; heartbeat {HEARTBEAT}s")
    print(text)
    record("shared_images", vars(args), {"results": results, "aims": aims}, text)


if __name__ == "__main__":
    asyncio.run(main())
