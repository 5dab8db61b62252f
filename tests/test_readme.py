"""The README's Python examples run as written, against the simulator.

Each example that does a job and ends (the quick start, the batch, the endpoint requests, the
pytest example) is run in its own interpreter, from an empty folder holding the ``cat.png`` the
quick start names, with ``VIDU_API_KEY`` and ``VIDU_BASE_URL`` pointing at a simulator. The two
callback-server examples serve until stopped, so they are only compiled here.
"""

from __future__ import annotations

import ast
import asyncio
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from vidu_async.testing import FakeVidu, Timeline

README = Path(__file__).parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
SERVERS = ("serve_forever()", "receiver.serve(")
"""Examples that serve callbacks until stopped: compiled, not run."""


def by(marker: str) -> str:
    [block] = [b for b in BLOCKS if marker in b]
    return block


async def run(code: str, folder: Path, sim: FakeVidu) -> str:
    env = {**os.environ, "VIDU_API_KEY": sim.api_key, "VIDU_BASE_URL": sim.url}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, cwd=folder, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return out.decode()


@pytest.fixture
async def sim() -> AsyncIterator[FakeVidu]:
    async with FakeVidu(timeline=Timeline(created=0.05, processing=0.2)) as running:
        yield running


def test_every_python_example_is_found_and_compiles() -> None:
    assert len(BLOCKS) >= 6
    for block in BLOCKS:
        compile(block, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


async def test_the_quick_start_creates_waits_and_downloads(sim: FakeVidu, tmp_path: Path) -> None:
    Image.new("RGB", (256, 256), (200, 120, 40)).save(tmp_path / "cat.png")
    out = await run(by("async def main()"), tmp_path, sim)
    [task] = sim.tasks.values()
    assert task.request["model"] == "viduq3" and task.request["duration"] == 8
    assert out.startswith("(PosixPath('videos/") and (tmp_path / "videos").is_dir()


async def test_the_batch_example_runs_its_jobs(sim: FakeVidu, tmp_path: Path) -> None:
    out = await run(by("BatchSubmitter(client, options).run(jobs)"), tmp_path, sim)
    assert sorted(line.split()[:2] for line in out.splitlines()) == [
        ["p0", "succeeded"], ["p1", "succeeded"]]
    assert (tmp_path / "batch.journal.jsonl").exists()
    assert len(list((tmp_path / "videos").iterdir())) == 2


async def test_the_endpoint_requests_are_valid(sim: FakeVidu, tmp_path: Path) -> None:
    code = by("TextToVideoRequest(") + "\nfor r in requests:\n    r.validate()\nprint('ok')\n"
    assert await run(code, tmp_path, sim) == "ok\n"


async def test_the_pytest_example_passes(sim: FakeVidu, tmp_path: Path) -> None:
    code = by("async def test_my_service") + "\nimport asyncio\nasyncio.run(test_my_service())\n"
    await run(code, tmp_path, sim)


def test_the_server_examples_are_the_only_ones_not_run() -> None:
    run_here = ("async def main()", "BatchSubmitter(client, options).run(jobs)",
                "TextToVideoRequest(", "async def test_my_service",
                "def callback_app(")  # run by test_receiver
    for block in BLOCKS:
        assert any(m in block for m in run_here) or any(s in block for s in SERVERS), block


def test_every_python_example_type_checks_strictly(tmp_path: Path) -> None:
    """A user's ``mypy --strict`` accepts the examples as written (those with a top-level
    ``await`` as the body of a coroutine): the public API's types are what they show."""
    for number, block in enumerate(BLOCKS):
        if re.search(r"^(async |await )", block, re.M):
            block = "async def example() -> None:\n" + textwrap.indent(block, "    ")
        (tmp_path / f"example_{number}.py").write_text(block, encoding="utf-8")
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"),
         *sorted(str(p) for p in tmp_path.glob("example_*.py"))],
        capture_output=True, text=True, check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
