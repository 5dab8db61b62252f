"""``vidu-async demo``: distinct placeholder videos, the results shown, a rerun paying nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vidu_async.cli import main


def test_demo_shows_results_placeholders_and_a_rerun_that_pays_nothing(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "demo"
    assert main(["demo", "--dir", str(folder), "--quiet"]) == 0
    err = capfd.readouterr().err
    records = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    videos = {r["custom_id"]: (folder / "videos" / f"{r['custom_id']}.mp4").read_bytes()
              for r in records}
    assert len(set(videos.values())) == len(records) == 6  # no two videos alike
    for record in records:
        assert f"task {record['task_id']}".encode() in videos[record["custom_id"]]
        assert (f"  {record['custom_id']}: succeeded, task {record['task_id']}, "
                f"{record['credits']} credits") in err
    assert "placeholders from the simulator" in err
    assert "0 new tasks, 0 credits: nothing paid twice" in err
    assert f"vidu-async batch results {folder / 'journal.jsonl'}" in err
