"""Fixtures every test module may use."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from vidu_async.retry import RetryPolicy
from vidu_async.testing import FakeVidu, ManualClock, Timeline

# Property tests draw the same examples on every run (a bug they can catch fails CI every time);
# ``pytest --hypothesis-profile=explore --hypothesis-seed=N`` draws new ones to look further.
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("repeatable")


@pytest.fixture
def time() -> ManualClock:
    """A clock the test moves by hand, for the simulator and the client alike."""
    return ManualClock()


@pytest.fixture
def policy(time: ManualClock) -> RetryPolicy:
    """A retry policy on ``time``, whose waits pass as the test moves it, without jitter."""
    return RetryPolicy(sleep=time.sleep, clock=time, random=lambda: 1.0)


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> Callable[[FakeVidu], None]:
    """Point the command line's environment at a simulator: its key and its URL, and no list
    of other keys (``cli_env(fake)``, undone after the test)."""

    def point(fake: FakeVidu) -> None:
        monkeypatch.setenv("VIDU_API_KEY", fake.api_key)
        monkeypatch.setenv("VIDU_BASE_URL", fake.url)
        monkeypatch.delenv("VIDU_API_KEYS", raising=False)

    return point


@pytest.fixture
async def cli_sim(cli_env: Callable[[FakeVidu], None]) -> AsyncIterator[FakeVidu]:
    """A running simulator whose tasks end within a few tens of milliseconds, found by the
    command line through its environment."""
    async with FakeVidu(timeline=Timeline(created=0.01, processing=0.02)) as fake:
        cli_env(fake)
        yield fake


def _running_children() -> set[int]:
    """This process's children still running (not zombies), from ``/proc`` (Linux; elsewhere
    the check below is off)."""
    found = set()
    for listing in Path("/proc/self/task").glob("*/children"):
        try:
            pids = listing.read_text().split()
        except OSError:
            continue  # a thread that ended meanwhile
        for pid in pids:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue  # ended meanwhile
            if state != "Z":
                found.add(int(pid))
    return found


@pytest.fixture(autouse=True)
def no_process_left_running() -> Iterator[None]:
    """A test that starts a process (a CLI run, a holder of a lock) ends it, even when an
    assertion fails: one left running went on for half an hour, using the machine."""
    before = _running_children()
    yield
    left = _running_children() - before
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"the test left processes running: {sorted(left)} (killed now)"
