"""A run refused a journal's lock names the run holding it, even when it arrives in the instant
between the holder taking the lock and writing who it is.

The race is driven, not hoped for: the test holds the lock file itself with what a holder
leaves there mid-way (nothing, half its line, an ended run's line), and writes the holder's
line from the refused run's ``pause`` (which also records each wait: no real sleep).
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vidu_async.errors import JournalLockedError
from vidu_async.journal import HOLDER_WAIT, _lock, _names_holder

HOST = socket.gethostname()
LIVE = f"process {os.getpid()} on {HOST} since 2025-01-01 10:00:00 +0000\n"
"""A holder's line naming a process that runs (this one)."""


def ended_pid() -> int:
    """The id of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize(("text", "running", "names"), [
    ("", True, False),  # not written yet
    ("process 42 on", True, False),  # half written
    (f"process 42 on {HOST} since 2025-01-01\n", True, True),
    (f"process 42 on {HOST} since 2025-01-01\n", False, False),  # that run has ended
    ("process 42 on elsewhere since 2025-01-01\n", False, True),  # cannot check: named
    ("someone else's note\n", False, True),  # not our line: shown as it is
    ("\n", True, False),
])
def test_a_lock_file_names_its_holder_only_when_whole_and_not_an_ended_run(
    text: str, running: bool, names: bool
) -> None:
    assert _names_holder(text, HOST, lambda pid: running) is names


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Path]:
    """A journal whose lock this test holds (``<journal>.lock``, empty)."""
    path = tmp_path / "j.jsonl"
    fd = os.open(tmp_path / "j.jsonl.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    yield path
    os.close(fd)


def holder_writes(journal: Path, text: str, waits: list[float]) -> Callable[[float], None]:
    """A ``pause`` that records its wait and, the first time, has the holder write ``text``."""
    lock = journal.with_name(journal.name + ".lock")

    def pause(seconds: float) -> None:
        if not waits:
            lock.write_text(text)
        waits.append(seconds)

    return pause


@pytest.mark.parametrize("found", ["", "process 4", "ended"],
                         ids=["nothing yet", "half a line", "an ended run's line"])
def test_a_run_refused_before_the_holder_says_who_it_is_names_it_once_it_does(
    journal: Path, found: str
) -> None:
    lock = journal.with_name(journal.name + ".lock")
    lock.write_text(found if found != "ended" else f"process {ended_pid()} on {HOST} since x\n")
    waits: list[float] = []
    with pytest.raises(JournalLockedError) as refused:
        _lock(journal, pause=holder_writes(journal, LIVE, waits))
    assert f"journal {journal} is in use by {LIVE.strip()};" in str(refused.value)
    assert len(waits) == 1


def test_a_holder_that_never_says_who_it_is_is_another_process_after_a_bounded_wait(
    journal: Path,
) -> None:
    waits: list[float] = []
    with pytest.raises(JournalLockedError, match=r"is in use by another process;"):
        _lock(journal, pause=holder_writes(journal, "", waits))
    assert HOLDER_WAIT <= sum(waits) <= HOLDER_WAIT + max(waits)


def test_a_holder_that_said_who_it_is_is_named_without_waiting(journal: Path) -> None:
    journal.with_name(journal.name + ".lock").write_text(LIVE)
    waits: list[float] = []
    with pytest.raises(JournalLockedError, match=rf"in use by process {os.getpid()} on "):
        _lock(journal, pause=waits.append)
    assert waits == []
