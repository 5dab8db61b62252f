"""``replaced_whole``: output files are replaced whole, and devices and pipes are never replaced."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from vidu_async._files import replaced_whole


def test_a_file_is_replaced_whole_or_not_at_all(tmp_path: Path) -> None:
    out = tmp_path / "errors.jsonl"
    out.write_text("old\n")

    def stopped_midway() -> None:
        with replaced_whole(out) as handle:
            handle.write("half of the new")
            raise RuntimeError("stopped midway")

    with pytest.raises(RuntimeError):
        stopped_midway()
    assert out.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["errors.jsonl"]  # no temporary left
    with replaced_whole(out) as handle:
        handle.write("new\n")
    assert out.read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["errors.jsonl"]


def test_a_pipe_is_written_to_and_stays_a_pipe(tmp_path: Path) -> None:
    # As root, renaming a file over /dev/null made it a regular file for the whole machine.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with replaced_whole(fifo) as handle:
            handle.write("line\n")
        assert stat.S_ISFIFO(fifo.stat().st_mode)
        assert os.read(reader, 100) == b"line\n"
    finally:
        os.close(reader)
