"""``vidu-async demo``: a whole batch, end to end, against the embedded simulator.

It writes a small jobs file with generated reference images (real PNGs, made here with zlib:
no imaging library needed), starts the simulator in this process, and runs the file exactly as
``vidu-async submit --wait --download`` would: journal, results, downloaded videos.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

__all__ = ["DEMO_PROMPTS", "sample_png", "write_sample_jobs"]

DEMO_PROMPTS = (
    ("cat-meadow", "viduq3", "A ginger cat chases a butterfly across a sunny meadow"),
    ("harbour-dawn", "viduq2", "Fishing boats leave a quiet harbour at dawn, gulls overhead"),
    ("robot-chef", "viduq3-mix", "A small robot chef flips a pancake in a cosy kitchen"),
    ("paper-city", "viduq1", "A city folded from paper unfolds street by street"),
    ("rain-window", "vidu2.0", "Raindrops race each other down a window at night"),
    ("fox-snow", "viduq2-pro", "A red fox leaps into fresh snow and disappears"),
)


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
    """Write ``refs/*.png`` and ``jobs.jsonl`` (one job per ``DEMO_PROMPTS`` entry) in ``folder``."""
    refs = folder / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    lines = []
    for index, (custom_id, model, prompt) in enumerate(DEMO_PROMPTS):
        image = refs / f"{custom_id}.png"
        image.write_bytes(sample_png(256, 192, hue=index * 40))
        lines.append(json.dumps({"custom_id": custom_id, "model": model, "prompt": prompt,
                                 "images": [f"refs/{image.name}"]}))
    jobs = folder / "jobs.jsonl"
    jobs.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return jobs
