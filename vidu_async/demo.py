"""``vidu-async demo``: a whole batch, end to end, against the embedded simulator.

It writes a small jobs file with generated reference images (real PNGs, made here with zlib:
no imaging library needed), starts the simulator in this process, and runs the file exactly as
``vidu-async submit --wait --download`` would: journal, results, downloaded videos (the
simulator's placeholders, each carrying its task id). Then it runs the same batch again, as a
rerun after an interruption would, to show that the journal makes it pay for nothing twice.

It never overwrites or deletes what it did not write: it writes in a new folder, in one holding
none of the names it writes, or in its own (marked by ``MARKER``, or, from a demo before the
marker, holding its jobs file byte for byte); anything else is refused, nothing touched.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import time
import zlib
from pathlib import Path
from typing import Any, TextIO

from vidu_async.batch import BatchOptions
from vidu_async.client import ViduClient
from vidu_async.errors import ConfigurationError
from vidu_async.journal import lock_path, remove_journal
from vidu_async.progress import ProgressReporter, ProgressState
from vidu_async.submit import SubmitSummary, submit_jobs_file
from vidu_async.testing import FakeVidu

__all__ = ["DEMO_PROMPTS", "MARKER", "refusal", "run", "sample_png", "write_sample_jobs"]

DEMO_PROMPTS = (
    ("cat-meadow", "viduq3", "A ginger cat chases a butterfly across a sunny meadow"),
    ("harbour-dawn", "viduq2", "Fishing boats leave a quiet harbour at dawn, gulls overhead"),
    ("robot-chef", "viduq3-mix", "A small robot chef flips a pancake in a cosy kitchen"),
    ("paper-city", "viduq1", "A city folded from paper unfolds street by street"),
    ("rain-window", "vidu2.0", "Raindrops race each other down a window at night"),
    ("fox-snow", "viduq2-pro", "A red fox leaps into fresh snow and disappears"),
)


MARKER = ".vidu-demo"
"""The file that makes a folder the demo's own: a later demo writes there again."""
_JOURNAL = "journal.jsonl"
_WRITES = ("jobs.jsonl", "refs", _JOURNAL, lock_path(Path(_JOURNAL)).name, "results.jsonl",
           "videos")
"""What the demo writes in its folder, besides ``MARKER``."""


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def sample_png(width: int, height: int, hue: int) -> bytes:
    """A colourful RGB gradient as PNG bytes (filter 0 rows, zlib-compressed)."""
    rows = bytearray()
    for y in range(height):
        rows.append(0)
        for x in range(width):
            rows += bytes(((x * 255 // width + hue) % 256, (y * 255 // height) % 256,
                           (hue * 3 + (x + y) // 2) % 256))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(bytes(rows), 6)) + _chunk(b"IEND", b""))


def write_sample_jobs(folder: Path) -> Path:
    """Write ``refs/*.png`` and ``jobs.jsonl`` (a job per ``DEMO_PROMPTS`` entry) in ``folder``."""
    refs = folder / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    for index, (custom_id, _model, _prompt) in enumerate(DEMO_PROMPTS):
        (refs / f"{custom_id}.png").write_bytes(sample_png(256, 192, hue=index * 40))
    jobs = folder / "jobs.jsonl"
    jobs.write_bytes(_jobs_text())
    return jobs


def _jobs_text() -> bytes:
    """The demo's jobs file: a line per ``DEMO_PROMPTS`` entry, its image in ``refs/``."""
    lines = [json.dumps({"custom_id": custom_id, "model": model, "prompt": prompt,
                         "images": [f"refs/{custom_id}.png"]})
             for custom_id, model, prompt in DEMO_PROMPTS]
    return ("\n".join(lines) + "\n").encode()


def refusal(folder: Path) -> str | None:
    """Why the demo may not write in ``folder`` (it would overwrite or delete what it did not
    write), or None: a new folder, one holding none of its names, or its own."""
    if not folder.exists():
        return None
    if not folder.is_dir():
        return f"--dir {folder} is not a folder"
    if (folder / MARKER).is_file() or _holds_demo_jobs(folder / "jobs.jsonl"):
        return None
    taken = [name for name in _WRITES if os.path.lexists(folder / name)]
    if not taken:
        return None
    return (f"--dir {folder} holds {', '.join(taken)}, which the demo did not write and would "
            "overwrite: give it a new or empty folder (nothing was changed)")


def _holds_demo_jobs(path: Path) -> bool:
    """Whether ``path`` is the demo's jobs file as it writes it (a demo's folder before
    ``MARKER``), read only if its size is right."""
    expected = _jobs_text()
    try:
        return path.stat().st_size == len(expected) and path.read_bytes() == expected
    except OSError:
        return False


async def _forget_journal(path: Path) -> None:
    """Delete an earlier demo's journal (its tasks were another simulator's), damaged or not,
    while holding its lock: a run using it is refused (``JournalLockedError``), never robbed
    of it."""
    if not await asyncio.to_thread(os.path.lexists, path):
        return  # nothing to delete, nor a lock file to leave behind (a sign of earlier use)
    await asyncio.to_thread(remove_journal, path)


def _claim(folder: Path) -> Path:
    """Mark ``folder`` as the demo's own and write the sample jobs there."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text(
        f"written by vidu-async demo, which may rewrite {', '.join(_WRITES)} here\n",
        encoding="utf-8")
    return write_sample_jobs(folder)


async def run(folder: Path, *, quiet: bool, out: TextIO) -> int:
    """Write the sample jobs, start the simulator here, submit them with wait and download, show
    the results, and run the same batch again to show that a rerun pays nothing twice.

    Raises ``ConfigurationError`` for a folder the demo may not write in (``refusal``), and
    ``JournalError`` for a journal that a run is using or that cannot be used (an earlier
    demo's found so before anything is written)."""
    if (why := refusal(folder)) is not None:
        raise ConfigurationError(why)
    journal = folder / _JOURNAL
    await _forget_journal(journal)
    jobs = _claim(folder)
    results_path = folder / "results.jsonl"
    videos = folder / "videos"
    options = BatchOptions(concurrency=4, wait=True, download=videos, journal=journal,
                           poll_interval=0.25)
    async with FakeVidu(seed=7) as sim, ViduClient(sim.api_key, base_url=sim.url) as client:
        print(f"simulated Vidu API on {sim.url}; jobs in {jobs}", file=out)
        summary = await _submit(jobs, client, options, results_path, out, quiet=quiet)
        made = sim.stats.tasks_created
        files = sorted(videos.glob("*.mp4")) if videos.is_dir() else []
        print(f"\n{made} tasks, {summary.credits} credits (simulated)", file=out)
        print(f"videos:  {videos}/ ({len(files)} files: placeholders from the simulator, a few "
              "hundred bytes each, no frames, each carrying its task id)", file=out)
        print(f"results: {results_path}, one JSON object per job:", file=out)
        for record in _results(results_path):
            print(f"  {record['custom_id']}: {record['status']}, task {record['task_id']}, "
                  f"{record['credits']} credits, {', '.join(record['files'])}", file=out)
        print(f"journal: {journal}", file=out)
        print("\nthe same command again, as after an interruption (the journal resumes it):",
              file=out)
        again = await _submit(jobs, client, options, results_path, out, quiet=True)
        print(f"  {sim.stats.tasks_created - made} new tasks, {again.credits} credits: nothing "
              "paid twice; every job's end came from the journal", file=out)
    print(f"the results again, from the journal alone: vidu-async batch results {journal}",
          file=out)
    print(f"the same jobs against the real API: VIDU_API_KEY=... vidu-async submit {jobs} "
          f"--download {folder / 'api-videos'}", file=out)  # videos/ is the demo's to rewrite
    return 0 if summary.all_ok and again.all_ok else 1


async def _submit(jobs: Path, client: ViduClient, options: BatchOptions, results_path: Path,
                  out: TextIO, *, quiet: bool) -> SubmitSummary:
    """One run of the jobs file, as ``vidu-async submit`` does it, results written afresh."""
    progress = ProgressReporter(ProgressState(time.monotonic(), total=len(DEMO_PROMPTS)),
                                out, quiet=quiet)
    with results_path.open("w", encoding="utf-8") as results:
        try:
            return await submit_jobs_file(
                jobs, [client], options, defaults={}, results=results,
                messages=progress.messages, progress=progress,
            )
        finally:
            progress.close()


def _results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
