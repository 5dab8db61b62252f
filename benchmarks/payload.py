"""Benchmark 5, payload preparation: time, peak memory and event-loop stalls while 1,000 jobs
with local 2 MB images are prepared for sending.

Preparation is what ``ViduClient.create_reference2video`` does before a request leaves, through
the same method it uses, ``ViduClient.prepare_create_body``: ``validate()``, ``to_payload()``
(which reads each file and inlines it as a base64 data URI) and ``dumps_body``, in a thread, a
few bodies at a time. The benchmark calls it (no network: the bodies are measured and dropped)
with 8 jobs at a time, the
batch's default concurrency, while a heartbeat task asks to wake every 5 ms and records how late
it wakes: the longest lateness is the loop's longest stall. Scenarios, each in a fresh child
process so its peak RSS is its own:

- ``shared``: every job references the same three 2 MB PNG files;
- ``own``: every job references three files of its own (3,000 files, 6 GB on disk, written
  to a temporary folder first and deleted afterwards).

Aim: no stall over 50 ms.

    python benchmarks/payload.py [--jobs 1000] [--concurrency 8] [--mb 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from _common import record, table

from vidu_async import ReferenceToVideoRequest, ViduClient

KEY = "0123456789abcdef0123456789abcdef"

HEARTBEAT = 0.005


def png(megabytes: float, tag: int) -> bytes:
    """A valid RGB PNG of about ``megabytes`` MB (pixels stored uncompressed); ``tag`` goes in
    a text chunk, so files made with different tags differ."""
    width = 1024
    height = int(megabytes * 1024 * 1024 / (width * 3 + 1))
    rows = bytes(height * (width * 3 + 1))
    pixels = zlib.compress(rows, 0)  # stored blocks: the size of the raw pixels

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"tEXt", b"Comment\0" + str(tag).encode())
            + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


async def heartbeat(stalls: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + HEARTBEAT
        await asyncio.sleep(HEARTBEAT)
        stalls.append(loop.time() - due)


async def run_scenario(paths: list[list[Path]], concurrency: int) -> dict[str, Any]:
    requests = iter(
        ReferenceToVideoRequest("viduq2", f"take {i}", images=tuple(str(p) for p in images))
        for i, images in enumerate(paths)
    )
    stalls: list[float] = []
    sizes: list[int] = []

    client = ViduClient("unused-key", base_url="http://127.0.0.1:9")  # never connects

    async def worker() -> None:
        for request in requests:
            body = await client.prepare_create_body(request, correlation_key=KEY)
            sizes.append(len(body))

    beat = asyncio.create_task(heartbeat(stalls))
    await asyncio.sleep(HEARTBEAT * 2)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    seconds = time.perf_counter() - started
    beat.cancel()
    await client.close()
    stalls.sort()
    return {
        "jobs": len(sizes),
        "seconds": seconds,
        "jobs_per_s": len(sizes) / seconds,
        "body_mb": sizes[0] / 1e6,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_mb": rss_before / 1024,
        "max_stall_ms": stalls[-1] * 1000,
        "p99_stall_ms": stalls[int(len(stalls) * 0.99)] * 1000,
        "beats": len(stalls),
    }


def child(args: argparse.Namespace) -> None:
    folder = Path(args.folder)
    if args.scenario == "shared":
        shared = sorted(folder.glob("shared-*.png"))
        paths = [shared] * args.jobs
    else:
        paths = [[folder / f"own-{i}-{k}.png" for k in range(3)] for i in range(args.jobs)]
    result = asyncio.run(run_scenario(paths, args.concurrency))
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--mb", type=float, default=2.0)
    parser.add_argument("--scenario", choices=["shared", "own"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scenario:
        child(args)
        return
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="vidu-bench-") as tmp:
        folder = Path(tmp)
        for k in range(3):
            (folder / f"shared-{k}.png").write_bytes(png(args.mb, k))
        started = time.perf_counter()
        base = png(args.mb, 0)
        for i in range(args.jobs):
            for k in range(3):
                unique = base.replace(b"Comment\x000", f"Comment\0{i}-{k}".encode(), 1)
                (folder / f"own-{i}-{k}.png").write_bytes(unique)
        print(f"wrote {args.jobs * 3} files in {time.perf_counter() - started:.1f}s",
              file=sys.stderr)
        for scenario in ("shared", "own"):
            out = subprocess.run(
                [sys.executable, __file__, "--scenario", scenario, "--folder", tmp,
                 "--jobs", str(args.jobs), "--concurrency", str(args.concurrency)],
                check=True, capture_output=True, text=True,
            ).stdout
            results[scenario] = json.loads(out)
    rows = [
        [name, r["seconds"], r["jobs_per_s"], r["body_mb"], r["peak_rss_mb"], r["max_stall_ms"],
         r["p99_stall_ms"], "met" if r["max_stall_ms"] <= 50 else "MISSED"]
        for name, r in results.items()
    ]
    text = table(
        ["images", "seconds", "jobs/s", "body MB", "peak RSS MB", "max stall ms",
         "p99 stall ms", "aim (<= 50 ms)"],
        rows,
    )
    print(f"{args.jobs} jobs x 3 local {args.mb:g} MB images, {args.concurrency} at a time\n")
    print(text)
    path = record(
        "payload",
        {"jobs": args.jobs, "concurrency": args.concurrency, "image_mb": args.mb,
         "heartbeat_s": HEARTBEAT},
        {**results, "aim_met": all(r["max_stall_ms"] <= 50 for r in results.values())},
        text,
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
