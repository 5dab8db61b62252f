"""``vidu-async demo``: distinct placeholder videos, the results shown, a rerun paying nothing;
and only ever in a folder of its own, never over a user's files or a running batch's journal."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from vidu_async.cli import main
from vidu_async.demo import MARKER, _forget_journal, refusal, write_sample_jobs
from vidu_async.journal import Journal


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
    # Its own folder again (the README's set-up command may run twice): a new simulator, so
    # the earlier journal goes, and every job is paid once more in simulated credits.
    assert main(["demo", "--dir", str(folder), "--quiet"]) == 0
    assert "6 tasks" in capfd.readouterr().err


def user_file(name: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_text("mine\n")


def demo_jobs_without_marker(folder: Path) -> None:  # a folder of a demo before the marker
    write_sample_jobs(folder)
    (folder / "results.jsonl").write_text("the demo's\n")


@pytest.mark.parametrize(("make", "refused"), [
    (lambda folder: folder.rmdir(), None),  # a new folder
    (lambda folder: None, None),  # an empty one
    (user_file("notes.txt"), None),  # holding none of the demo's names
    (lambda folder: (folder / MARKER).write_text(""), None),
    (demo_jobs_without_marker, None),
    (user_file("jobs.jsonl"), "jobs.jsonl"),
    (user_file("results.jsonl"), "results.jsonl"),
    (user_file("journal.jsonl"), "journal.jsonl"),
    (user_file("journal.jsonl.lock"), "journal.jsonl.lock"),
    (lambda folder: (folder / "videos").mkdir(), "videos"),
    (lambda folder: (folder / "refs").symlink_to(folder / "gone"), "refs"),
    (lambda folder: [user_file(n)(folder) for n in ("jobs.jsonl", "results.jsonl")],
     "jobs.jsonl, results.jsonl"),
])
def test_the_demo_writes_only_in_a_new_or_empty_folder_or_its_own(
    tmp_path: Path, make: Callable[[Path], object], refused: str | None
) -> None:
    folder = tmp_path / "here"
    folder.mkdir()
    make(folder)
    assert refusal(folder) == (refused and (
        f"--dir {folder} holds {refused}, which the demo did not write and would overwrite: "
        "give it a new or empty folder (nothing was changed)"))


def test_a_folder_of_a_users_own_files_is_refused_in_one_line_touching_nothing(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # It overwrote jobs.jsonl and results.jsonl and deleted journal.jsonl, exit 0.
    files = {"jobs.jsonl": '{"prompt": "my own"}\n', "results.jsonl": "my results\n",
             "journal.jsonl": '{"v": 2, "kind": "batch", "batch_id": "jobs.jsonl"}\n'}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert main(["demo", "--dir", str(tmp_path), "--quiet"]) == 2
    assert capfd.readouterr().err == (
        f"vidu-async demo: --dir {tmp_path} holds jobs.jsonl, journal.jsonl, results.jsonl, "
        "which the demo did not write and would overwrite: give it a new or empty folder "
        "(nothing was changed)\n")
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == files
    assert main(["demo", "--dir", str(tmp_path / "jobs.jsonl")]) == 2
    assert capfd.readouterr().err == (
        f"vidu-async demo: --dir {tmp_path / 'jobs.jsonl'} is not a folder\n")


async def test_a_journal_a_run_holds_in_the_demos_own_folder_is_left_alone(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # It deleted a running submit's journal, then died of a 46-line JournalLockedError.
    (tmp_path / MARKER).write_text("")
    held = await Journal.open(tmp_path / "journal.jsonl", batch_id="theirs")
    try:
        code = await asyncio.to_thread(main, ["demo", "--dir", str(tmp_path), "--quiet"])
        err = capfd.readouterr().err
        assert code == 2
        assert err.startswith(f"vidu-async demo: journal {tmp_path / 'journal.jsonl'} is in "
                              "use by process ")
        assert err.count("\n") == 1
        assert '"batch_id": "theirs"' in (tmp_path / "journal.jsonl").read_text()
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            MARKER, "journal.jsonl", "journal.jsonl.lock"]
    finally:
        await held.close()


async def test_a_damaged_journal_of_the_demos_own_is_removed_not_repaired(
    tmp_path: Path,
) -> None:
    """The demo starts its journal over in its own folder: a damaged line (a crash, an
    edit) is no reason to ask the user to repair a file it deletes anyway."""
    journal = tmp_path / "journal.jsonl"
    journal.write_text('{"v": 2, "kind": "batch", "batch_id": "demo"}\ngarbage{\n')
    await _forget_journal(journal)
    assert not journal.exists()
    await _forget_journal(journal)  # nothing left: nothing to do
