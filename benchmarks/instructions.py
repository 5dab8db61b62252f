"""Benchmark 1b, work per create: instructions the client process executes, counted by callgrind.

Timed runs on a shared VM drift by 20-30% from one run to the next; an instruction count does
not. Each variant of ``overhead.py`` (bare, client, batch, batch+journal) runs once under
``valgrind --tool=callgrind`` (the client process only; the simulator is its own process, not
counted) with ``--small`` and then ``--large`` creates; the difference divided by the difference
in creates is the work per create, start-up and imports cancelling out. Repeatable to about 1%.
The garbage collector keeps CPython's default settings here (``overhead.py`` times both).
Needs ``valgrind`` on the PATH (Debian: ``apt-get install valgrind``); takes a minute or two.

    python benchmarks/instructions.py [--variants bare,client,batch,batch+journal]
                                      [--small 300] [--large 900]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import record, simulator, table
from overhead import (
    JOURNALLED,
    SIMULATOR,
    WARM_UP,
    bare,
    batch,
    cli_options,
    client_only,
    make_jobs,
    prepared_bodies,
)

from vidu_async.batch import BatchOptions

VARIANTS = ("bare", "client", "batch", JOURNALLED)
CONCURRENCY = 16


async def one_run(variant: str, n: int) -> None:
    """``n`` creates by ``variant`` against a fresh, warmed simulator (what callgrind counts)."""
    jobs = make_jobs(n)
    with tempfile.TemporaryDirectory() as tmp, simulator(*SIMULATOR) as sim:
        await bare(sim, prepared_bodies(make_jobs(WARM_UP)), CONCURRENCY)
        if variant == "bare":
            created = await bare(sim, prepared_bodies(jobs), CONCURRENCY)
        elif variant == "client":
            created = await client_only(sim, jobs, CONCURRENCY)
        elif variant == "batch":
            created = await batch(sim, jobs, BatchOptions(concurrency=CONCURRENCY))
        else:
            created = await batch(sim, jobs, cli_options(CONCURRENCY, Path(tmp, "j.jsonl")))
    if created != n:
        raise RuntimeError(f"{variant}: expected {n} creates, got {created}")


def counted(variant: str, n: int) -> int:
    """Instructions the client process ran for ``n`` creates by ``variant``."""
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
               sys.executable, __file__, "--run", variant, str(n)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"callgrind printed no count:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--small", type=int, default=300)
    parser.add_argument("--large", type=int, default=900)
    parser.add_argument("--run", nargs=2, metavar=("VARIANT", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:  # the child that callgrind watches
        asyncio.run(one_run(args.run[0], int(args.run[1])))
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        sys.exit(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    per_create = {
        v: (counted(v, args.large) - counted(v, args.small)) / (args.large - args.small)
        for v in variants
    }
    base = per_create.get("bare")
    rows = [[v, f"{per_create[v] / 1e6:.2f} M", "-" if base is None else per_create[v] / base]
            for v in variants]
    text = table(["variant", "instructions per create", "x bare"], rows)
    print(f"client process only, ({args.large} - {args.small} creates), concurrency "
          f"{CONCURRENCY}\n")
    print(text)
    path = record("instructions", {"small": args.small, "large": args.large,
                                   "concurrency": CONCURRENCY, "simulator": SIMULATOR},
                  {"instructions_per_create": per_create}, text)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
