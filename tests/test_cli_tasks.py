"""``vidu-async tasks`` (the account's task list, filtered) and ``download``'s naming flags."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from vidu_async import ReferenceToVideoRequest, ViduClient
from vidu_async.cli import main
from vidu_async.cli.task import parse_when
from vidu_async.testing import FakeVidu, ManualClock, Timeline

URL = "https://example.com/ref.png"
NOW = dt.datetime(2026, 5, 10, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(("text", "expected"), [
    ("90m", NOW - dt.timedelta(minutes=90)),
    ("2d", NOW - dt.timedelta(days=2)),
    ("1.5h", NOW - dt.timedelta(minutes=90)),
    ("2026-05-01T08:00+02:00", dt.datetime(2026, 5, 1, 6, 0, tzinfo=dt.UTC)),
    ("2026-05-01T08:00:00Z", dt.datetime(2026, 5, 1, 8, 0, tzinfo=dt.UTC)),
])
def test_when_reads_ages_and_dates(text: str, expected: dt.datetime) -> None:
    assert parse_when(text, NOW) == expected


def test_a_date_without_offset_is_local_time() -> None:
    moment = parse_when("2026-05-01", NOW)
    assert moment.tzinfo is not None
    assert moment.replace(tzinfo=None) == dt.datetime(2026, 5, 1)


@pytest.mark.parametrize("text", ["yesterday", "3x", "", "2026-13-01"])
def test_when_refuses_other_text(text: str) -> None:
    with pytest.raises(ValueError, match="not a date, a date-time or an age"):
        parse_when(text, NOW)


@pytest.fixture
async def made(cli_env: Callable[[FakeVidu], None]) -> AsyncIterator[tuple[FakeVidu, list[str]]]:
    """Three tasks: two finished, the last held in ``created``."""
    clock = ManualClock()
    async with FakeVidu(timeline=Timeline(created=1, processing=1), clock=clock, seed=8) as fake:
        cli_env(fake)
        async with ViduClient(fake.api_key, base_url=fake.url) as client:
            ids = [(await client.create_reference2video(ReferenceToVideoRequest(
                "viduq2", f"a cat number {n}", images=[URL], watermark=True))).task_id
                for n in range(2)]
            clock.advance(10)
            fake.tick()
            held = await client.create_reference2video(
                ReferenceToVideoRequest("viduq2", "a dog", images=[URL]))
        yield fake, [*ids, held.task_id]


async def cli(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def test_tasks_lists_one_line_a_task_and_filters(
    made: tuple[FakeVidu, list[str]], capfd: pytest.CaptureFixture[str]
) -> None:
    _, ids = made
    assert await cli("tasks") == 0
    out, err = capfd.readouterr()
    lines = out.splitlines()
    assert sorted(line.split()[0] for line in lines) == sorted(ids)
    held = next(line for line in lines if line.startswith(ids[2]))
    assert held.split()[1] == "created" and held.endswith("a dog")
    assert " viduq2 " in held
    assert err == "3 tasks\n"
    assert await cli("tasks", "--state", "success", "--json") == 0
    answers = [json.loads(line) for line in capfd.readouterr().out.splitlines()]
    assert sorted(a["id"] for a in answers) == sorted(ids[:2])
    assert {a["payload"] for a in answers} == {""}  # the client's correlation prefix removed
    assert await cli("tasks", "--id", ids[1], "--id", ids[2], "--state", "created") == 0
    assert [line.split()[0] for line in capfd.readouterr().out.splitlines()] == [ids[2]]
    assert await cli("tasks", "--limit", "1") == 0
    out, err = capfd.readouterr()
    assert len(out.splitlines()) == 1 and "--limit 1: there may be more" in err
    assert await cli("tasks", "--until", "2000-01-01") == 0
    assert capfd.readouterr() == ("", "0 tasks\n")


async def test_tasks_refuses_bad_filters_before_any_request(
    made: tuple[FakeVidu, list[str]], capfd: pytest.CaptureFixture[str]
) -> None:
    fake, _ = made
    before = fake.stats.requests_to("list_tasks")
    assert await cli("tasks", "--since", "last week") == 2
    assert "not a date, a date-time or an age" in capfd.readouterr().err
    assert await cli("tasks", "--limit", "0") == 2
    assert "--limit must be 1 or more" in capfd.readouterr().err
    assert fake.stats.requests_to("list_tasks") == before


async def test_download_names_files_and_fetches_covers_and_watermarked_videos(
    made: tuple[FakeVidu, list[str]], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    _, ids = made
    args = ["download", ids[0], "--dest", str(tmp_path), "--name", "take-{task_id}",
            "--covers", "--watermarked"]
    assert await cli(*args) == 0
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == [f"covers/take-{ids[0]}.jpg", f"take-{ids[0]}.mp4",
                     f"watermarked/take-{ids[0]}.mp4"]
    assert f"file: {tmp_path}/covers/take-{ids[0]}.jpg" in capfd.readouterr().out
    assert await cli("download", ids[0], "--dest", str(tmp_path), "--name", "{prompt}") == 2
    assert "unknown field {prompt}" in capfd.readouterr().err


async def test_download_makes_no_folder_for_files_a_task_does_not_have(
    cli_env: Callable[[FakeVidu], None], tmp_path: Path
) -> None:
    async with FakeVidu(timeline=Timeline(created=0.01, processing=0.01)) as fake:
        cli_env(fake)
        async with ViduClient(fake.api_key, base_url=fake.url) as client:
            task = await client.create_reference2video(
                ReferenceToVideoRequest("viduq2", "a dog", images=[URL]))  # no watermark
            await client.wait_for_task(task.task_id, poll_interval=0.02)
        args = ["download", task.task_id, "--dest", str(tmp_path), "--watermarked"]
        assert await cli(*args) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{task.task_id}.mp4"]


@pytest.mark.parametrize(("dest", "says"), [
    ("afile", "cannot save the files of task {task} into {dest}: it is a file, not a folder"),
    ("/proc/nope", "cannot save the files of task {task} into {dest}: No such file or "
                   "directory"),
    ("afile/sub", "cannot save the files of task {task} into {dest}: Not a directory"),
])
async def test_download_where_files_cannot_be_saved_is_one_line_naming_the_folder(
    made: tuple[FakeVidu, list[str]], tmp_path: Path, capfd: pytest.CaptureFixture[str],
    dest: str, says: str,
) -> None:
    _, ids = made
    (tmp_path / "afile").write_text("a file, not a folder")
    where = dest if dest.startswith("/") else str(tmp_path / dest)
    assert await cli("download", ids[0], "--dest", where) == 1
    err = capfd.readouterr().err
    assert err == f"vidu-async download: {says.format(task=ids[0], dest=where)}\n"


async def test_download_to_a_full_disk_is_one_line_naming_the_file(
    made: tuple[FakeVidu, list[str]], tmp_path: Path
) -> None:
    """RLIMIT_FSIZE fails the video's writes with EFBIG, as a full disk does (ENOSPC), with no
    root needed: one line naming the file, exit 1, and no partial file left behind."""
    fake, ids = made
    limited = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
               "resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64)); "
               "from vidu_async.cli import main; sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "VIDU_API_KEY": fake.api_key, "VIDU_BASE_URL": fake.url,
           "PYTHONDONTWRITEBYTECODE": "1"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", limited, "download", ids[0], "--dest", str(tmp_path), env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    _, raw = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1
    assert raw.decode() == (f"vidu-async download: cannot save the files of task {ids[0]} into "
                            f"{tmp_path}: {tmp_path / ids[0]}.mp4: File too large\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("argv", "says"), [
    (["status", ""], "argument TASK_ID: a task id cannot be empty"),
    (["download", " "], "argument TASK_ID: a task id cannot be empty"),
    (["tasks", "--id", ""], "argument --id: a task id cannot be empty"),
    (["wait", "T", "--timeout", "-1"],
     "argument --timeout: must be more than 0 and at most 604800 seconds (a week), got '-1'"),
    (["wait", "T", "--timeout", "0"], "argument --timeout: must be more than 0 and at most"),
])
async def test_an_empty_task_id_or_a_timeout_of_no_time_is_a_usage_error(
    made: tuple[FakeVidu, list[str]], capfd: pytest.CaptureFixture[str], argv: list[str],
    says: str,
) -> None:
    fake, _ = made
    before = sum(fake.stats.requests_to(name) for name in ("get_task", "list_tasks"))
    assert await cli(*argv) == 2
    err = capfd.readouterr().err
    assert says in err and "Traceback" not in err
    assert sum(fake.stats.requests_to(name) for name in ("get_task", "list_tasks")) == before
