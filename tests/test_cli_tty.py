"""``vidu-async submit`` on a terminal, through a pseudo-terminal: it shows the dry run's summary
and asks before spending (a no sends nothing and writes nothing), results go to a file instead of
the screen, and the live bar and log lines never share a line, the ETA kept on a narrow screen."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import struct
import sys
import termios
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from vidu_async.testing import EndpointFaults, FakeVidu, Faults, Timeline

URL = "https://example.com/ref.png"
FAST = Timeline(created=0.01, processing=0.3)
REF = {"model": "viduq2", "images": [URL], "duration": 5}
CLEAR = "\x1b[2K"
COLUMNS = 60


@pytest.fixture
async def sim() -> AsyncIterator[FakeVidu]:
    faults = Faults(list_tasks=EndpointFaults(server_error=0.4))  # retries to log mid-run
    async with FakeVidu(timeline=FAST, concurrency_limit=20, seed=2, faults=faults) as fake:
        yield fake


def write_jobs(path: Path, count: int) -> Path:
    lines = (json.dumps({"custom_id": f"job{i}", "prompt": f"a cat {i}", **REF})
             for i in range(count))
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


async def on_terminal(fake: FakeVidu, cwd: Path, *args: str,
                      answer: str | None = None) -> tuple[int, str]:
    """Run ``vidu-async ARGS`` with a terminal COLUMNS wide as its stdin, stdout and stderr;
    type ``answer`` once it asks. Returns the exit code and everything the terminal received."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env.update(VIDU_API_KEY=fake.api_key, VIDU_BASE_URL=fake.url)
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, COLUMNS, 0, 0))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vidu_async", *args, stdin=follower, stdout=follower,
        stderr=follower, env=env, cwd=cwd,
    )
    os.close(follower)

    def read() -> bytes:
        try:
            return os.read(leader, 65536)
        except OSError:  # EIO: the program and its terminal are gone
            return b""

    received = bytearray()
    try:
        while chunk := await asyncio.wait_for(asyncio.to_thread(read), 60):
            received += chunk
            if answer is not None and b"[y/N] " in received:
                os.write(leader, answer.encode() + b"\n")
                answer = None
        code = await asyncio.wait_for(process.wait(), 60)
    finally:
        os.close(leader)
    return code, received.decode().replace("\r\n", "\n")


def visible(output: str) -> list[str]:
    """What each line of the terminal shows in the end: what was written after the line was
    last cleared."""
    return [line.split("\r")[-1].replace(CLEAR, "") for line in output.split("\n")]


async def test_a_person_who_says_no_sends_nothing_and_leaves_nothing(
    sim: FakeVidu, tmp_path: Path
) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", 2)
    code, output = await on_terminal(sim, tmp_path, "submit", "jobs.jsonl", "--wait",
                                     answer="n")
    assert code == 1
    lines = visible(output)
    assert lines[:3] == [
        "results: jobs.jsonl.results.jsonl (stdout is a terminal; --results names another "
        "file)",
        "about to submit jobs.jsonl:",
        "  2 lines: 2 valid, 0 invalid",
    ]
    assert "account: 100000 credits left (metered), concurrency 0/20, 0 queued" in lines
    assert "Send 2 creates, about 0 credits and 2 of unknown price? [y/N] n" in lines
    assert "nothing was sent" in lines
    assert sim.stats.tasks_created == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [jobs.name]


async def test_after_a_yes_results_go_to_a_file_and_the_bar_keeps_its_own_line(
    sim: FakeVidu, tmp_path: Path
) -> None:
    write_jobs(tmp_path / "jobs.jsonl", 12)
    code, output = await on_terminal(sim, tmp_path, "submit", "jobs.jsonl", "--wait", "-v",
                                     "--poll-interval", "0.05", answer="y")
    assert code == 0
    written = (tmp_path / "jobs.jsonl.results.jsonl").read_text().splitlines()
    results = [json.loads(line) for line in written]
    assert [r["status"] for r in results] == ["succeeded"] * 12
    assert '"custom_id"' not in output  # no results on the screen
    lines = visible(output)
    assert lines[-2:] == ["results: jobs.jsonl.results.jsonl", ""]
    bars = [line for line in lines if line.startswith("[")]
    logged = [line for line in lines if line.startswith("INFO vidu_async.")]
    assert bars and logged
    # Each drawing of the bar fits the width with its ETA; nothing else is written on its line.
    drawn = [part.split("\n")[0] for part in output.split("\r" + CLEAR)]
    for line in (d for d in drawn if d.startswith("[")):
        assert len(line) <= COLUMNS - 1 and "| ETA " in line and "INFO" not in line
    # A log line written while the bar was up cleared it first, and the bar came back after.
    first_bar = output.index(CLEAR + "[")
    mid_run = output.index("INFO vidu_async.retry", first_bar)
    assert output[:mid_run].endswith(CLEAR)
    assert output[mid_run:].split("\n", 1)[1].startswith("\r" + CLEAR + "[")
    assert sim.stats.tasks_created == 12


async def test_yes_on_the_command_line_asks_nothing(sim: FakeVidu, tmp_path: Path) -> None:
    write_jobs(tmp_path / "jobs.jsonl", 1)
    code, output = await on_terminal(sim, tmp_path, "submit", "jobs.jsonl", "--yes")
    assert code == 0
    assert "[y/N]" not in output and "about to submit" not in output
    assert sim.stats.tasks_created == 1
