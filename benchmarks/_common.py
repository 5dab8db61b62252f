"""What every benchmark shares: the simulator in its own process, tables, and the JSON record.

The simulator is ``python -m vidu_async serve --port 0 ...`` started as a child process on
127.0.0.1; its URL and key are read from the ``export VIDU_BASE_URL=... VIDU_API_KEY=...`` line it
prints, and its counters from ``GET /_sim/stats``. It stops on SIGINT (its Ctrl-C path).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent

# Plenty of credits and no concurrency ceiling: the benchmarks measure the client, not billing.
UNLIMITED = ["--credits", "2000000000", "--concurrency-limit", "1000000"]


class Simulator:
    """A running ``vidu-async serve`` child: ``url``, ``api_key``, ``pid``, ``stats()``."""

    def __init__(self, proc: subprocess.Popen[str], url: str, api_key: str) -> None:
        self.proc = proc
        self.url = url
        self.api_key = api_key

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def stats(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as session, \
                session.get(f"{self.url}/_sim/stats") as response:
            data: dict[str, Any] = await response.json()
        data.pop("payloads", None)  # one entry per task: large and not needed
        return data

    def cpu_seconds(self) -> float:
        """User + system CPU the simulator process has used so far (from /proc)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def simulator(*options: str) -> Iterator[Simulator]:
    """Start ``python -m vidu_async serve --port 0 *options`` and stop it afterwards."""
    command = [sys.executable, "-m", "vidu_async", "serve", "--port", "0", *options]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stdout is not None
        url = key = None
        deadline = time.monotonic() + 30
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"the simulator exited early ({proc.wait()}): {command}")
            if line.startswith("export "):
                pairs = dict(item.split("=", 1) for item in line.split()[1:])
                url, key = pairs["VIDU_BASE_URL"], pairs["VIDU_API_KEY"]
        if url is None or key is None:
            raise RuntimeError(f"the simulator printed no URL: {command}")
        yield Simulator(proc, url, key)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def machine() -> dict[str, Any]:
    """Where and with what the figures were made."""
    versions: dict[str, str | None] = {}
    for name in ("vidu-async", "aiohttp", "attrs", "tenacity"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    return {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "cpus": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "packages": versions,
        "git_commit": commit or None,
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (readable in a terminal, pasteable into the README)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for row in cells:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def record(name: str, parameters: dict[str, Any], results: Any, text: str) -> Path:
    """Write ``results/<name>.json`` (machine, parameters, results, the printed table)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = {
        "benchmark": name,
        "machine": machine(),
        "parameters": parameters,
        "results": results,
        "table": text,
    }
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
