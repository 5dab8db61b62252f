"""The ``vidu-async`` process: its entry point tunes the garbage collector for a long batch
(``cli._gc``), which ``main`` (called by a library's or a test's own process) never does."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator

import pytest

from vidu_async.cli import main, run
from vidu_async.cli._gc import YOUNG_THRESHOLD, tune_for_a_batch


@pytest.fixture
def collector() -> Iterator[None]:
    """Whatever a test does to the collector is undone after it."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("collector")
def test_tuning_freezes_what_is_alive_and_collects_the_young_less_often() -> None:
    gc.unfreeze()
    young, middle, oldest = gc.get_threshold()
    alive = [object(), []]  # a container alive before: frozen, never walked again
    tune_for_a_batch()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (YOUNG_THRESHOLD, middle, oldest)
    assert young < YOUNG_THRESHOLD
    assert not any(alive[1] is tracked for tracked in gc.get_objects())  # frozen: out of sight
    later: list[object] = []
    assert any(later is tracked for tracked in gc.get_objects(generation=0))  # new: collected


@pytest.mark.usefixtures("collector")
def test_main_leaves_the_collector_alone(capsys: pytest.CaptureFixture[str]) -> None:
    threshold = gc.get_threshold()
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("vidu-async ")
    assert gc.get_threshold() == threshold


@pytest.mark.usefixtures("collector")
def test_run_tunes_then_exits_with_mains_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["vidu-async", "validate"])  # no file: a usage error
    with pytest.raises(SystemExit) as exited:
        run()
    assert exited.value.code == 2
    assert "the following arguments are required" in capsys.readouterr().err
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD


def test_python_dash_m_runs_the_same_command_line() -> None:
    done = subprocess.run([sys.executable, "-m", "vidu_async", "--version"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert done.stdout.startswith("vidu-async ")
