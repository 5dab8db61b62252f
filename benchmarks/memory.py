"""Benchmark 4, memory: peak RSS of ``vidu-async submit`` (no ``--wait``) against job files of
growing size, each on a fresh instant simulator in its own process.

Each run is ``python -m vidu_async submit JOBS --model viduq2 --image URL --quiet --results
/dev/null`` with ``VIDU_API_KEY`` / ``VIDU_BASE_URL`` set, its journal the default one beside
JOBS (a fresh folder per run). Its peak RSS comes from ``os.wait4`` (the rusage of that one
child). A memory-flat submitter's peak should barely grow with the input: the aim is the
largest file's peak within 1.3x of the peak for a file ten times smaller.

Sizes whose projected time (from the measured rate of the size before) exceeds ``--budget``
seconds are scaled down to fit, and the table says so.

    python benchmarks/memory.py [--sizes 1000,10000,100000] [--budget 120]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import REPO, UNLIMITED, record, simulator, table

IMAGE = "https://example.com/reference.png"


def write_jobs(path: Path, n: int) -> None:
    with path.open("w") as out:
        for i in range(n):
            out.write(json.dumps({"custom_id": f"job-{i}", "prompt": f"a cat, take {i}"}) + "\n")


def submit(url: str, key: str, n: int) -> dict[str, Any]:
    """Run the CLI over an n-line file; its wall time, peak RSS and exit code."""
    with tempfile.TemporaryDirectory(prefix="vidu-bench-") as tmp:
        jobs = Path(tmp, "jobs.jsonl")
        write_jobs(jobs, n)
        command = [sys.executable, "-m", "vidu_async", "submit", str(jobs), "--model", "viduq2",
                   "--image", IMAGE, "--quiet", "--results", os.devnull]
        env = {**os.environ, "VIDU_API_KEY": key, "VIDU_BASE_URL": url}
        started = time.perf_counter()
        proc = subprocess.Popen(command, env=env, cwd=REPO, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            raise RuntimeError(f"submit exited {code} on {n} jobs: {stderr[-2000:]}")
        journal = jobs.with_name("jobs.jsonl.journal.jsonl")
        return {
            "jobs": n,
            "seconds": seconds,
            "creates_per_s": n / seconds,
            "peak_rss_mb": usage.ru_maxrss / 1024,
            "journal_mb": journal.stat().st_size / 1e6 if journal.exists() else None,
        }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--budget", type=float, default=120.0)
    args = parser.parse_args()
    asked = [int(s) for s in args.sizes.split(",")]
    runs: list[dict[str, Any]] = []
    for n in asked:
        # A fresh simulator per size: on a shared one, each run would find the last one's
        # tasks of its batch (every run's file is jobs.jsonl) that its new journal does not
        # record, and wait the visibility lag before creating anything (pay once).
        with simulator(*UNLIMITED, "--processing-seconds", "0") as sim:
            rate = runs[-1]["creates_per_s"] if runs else None
            if rate is not None and n / rate > args.budget:
                fitted = int(args.budget * rate / 1000) * 1000
                print(f"{n} jobs would take ~{n / rate:.0f}s; "
                      f"running {fitted} instead", file=sys.stderr)
                result = submit(sim.url, sim.api_key, fitted)
                result["asked"] = n
            else:
                result = submit(sim.url, sim.api_key, n)
        runs.append(result)
        print(f"{result['jobs']} jobs: {result['seconds']:.1f}s, "
              f"{result['peak_rss_mb']:.1f} MB", file=sys.stderr)
    ratio = runs[-1]["peak_rss_mb"] / runs[-2]["peak_rss_mb"]
    growth = runs[-1]["jobs"] / runs[-2]["jobs"]
    # What each line past the smaller run's adds: what the batch keeps of every job to its end.
    per_line = ((runs[-1]["peak_rss_mb"] - runs[-2]["peak_rss_mb"]) * 2**20
                / (runs[-1]["jobs"] - runs[-2]["jobs"]))
    rows = [
        [r["jobs"], r.get("asked", r["jobs"]), r["seconds"], r["creates_per_s"], r["peak_rss_mb"],
         r["peak_rss_mb"] / runs[0]["peak_rss_mb"], r["journal_mb"]]
        for r in runs
    ]
    text = table(["jobs", "asked", "seconds", "creates/s", "peak RSS MB", "vs first",
                  "journal MB"], rows)
    print(text)
    met = ratio <= 1.3
    print(f"\n{runs[-1]['jobs']} jobs vs {runs[-2]['jobs']} ({growth:.0f}x the input): peak RSS "
          f"{ratio:.2f}x (aim <= 1.3x: {'met' if met else 'MISSED'}), {per_line:.0f} bytes a line")
    path = record(
        "memory",
        {"sizes_asked": asked, "budget_s": args.budget, "image": IMAGE,
         "command": "python -m vidu_async submit JOBS --model viduq2 --image URL --quiet "
                    "--results /dev/null (default journal)"},
        {"runs": runs, "ratio_last_two": ratio, "input_growth_last_two": growth, "aim_met": met,
         "bytes_per_line_last_two": per_line},
        text,
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    asyncio.run(main())
