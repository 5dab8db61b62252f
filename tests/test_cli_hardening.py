"""The command line on bad days: wrong options, a dead API, a closed pipe, a busy port, a server
asking for a day's wait. Each is one clear line and the documented exit code, never a traceback."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
import socket
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from vidu_async.batch import BatchOptions, BatchSubmitter
from vidu_async.cli import main
from vidu_async.cli.submit import shared_file
from vidu_async.client import ViduClient
from vidu_async.errors import APIConnectionError, APIError
from vidu_async.jobs import Job
from vidu_async.reconcile import ScanLimits
from vidu_async.requests import ReferenceToVideoRequest
from vidu_async.retry import RetryPolicy, no_wait
from vidu_async.testing import EndpointFaults, FakeVidu, Faults, ManualClock, Timeline

URL = "https://example.com/ref.png"


@pytest.fixture
async def sim(cli_env: Callable[[FakeVidu], None]) -> AsyncIterator[FakeVidu]:
    async with FakeVidu(timeline=Timeline(created=0.01, processing=0.05)) as fake:
        cli_env(fake)
        yield fake


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("a cat\na dog\na fox\n")
    return path


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # nothing listens there once the probe is closed


def one_line(capfd: pytest.CaptureFixture[str]) -> str:
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


@pytest.mark.parametrize(("flags", "says"), [
    (["--rate", "0"], "argument --rate: must be from 0.001 to 10000 requests per second"),
    (["--poll-interval", "0"], "argument --poll-interval: must be from 0.01 to 3600 seconds"),
    (["--visibility-lag", "-1"], "argument --visibility-lag: must be from 0 to 86400 seconds"),
    (["--base-url", "api.vidu.com"], "--base-url must be an absolute http(s) URL"),
])
async def test_a_wrong_option_is_one_line_and_exit_2_before_anything_is_sent(
    sim: FakeVidu, jobs: Path, capfd: pytest.CaptureFixture[str], flags: list[str], says: str,
) -> None:
    args = ["submit", str(jobs), "--model", "viduq2", "--image", URL, "--quiet", *flags]
    assert await asyncio.to_thread(main, args) == 2
    assert says in one_line(capfd)
    assert sum(sim.stats.requests.values()) == 0


async def test_a_malformed_base_url_in_the_environment_is_a_usage_error(
    jobs: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIDU_API_KEY", "k")
    monkeypatch.setenv("VIDU_BASE_URL", "ftp://example.com")
    args = ["submit", str(jobs), "--model", "viduq2", "--image", URL, "--quiet"]
    assert await asyncio.to_thread(main, args) == 2
    assert one_line(capfd).startswith("vidu-async submit: VIDU_BASE_URL must be an absolute")


async def test_a_missing_key_says_what_to_set(
    jobs: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VIDU_API_KEY", raising=False)
    monkeypatch.delenv("VIDU_API_KEYS", raising=False)
    args = ["submit", str(jobs), "--model", "viduq2", "--image", URL, "--quiet"]
    assert await asyncio.to_thread(main, args) == 3
    line = one_line(capfd)
    assert "set VIDU_API_KEY" in line and "api_key=" not in line


async def test_an_api_that_cannot_be_reached_fails_before_any_job_is_read() -> None:
    read: list[Job] = []

    def jobs() -> list[Job]:
        job = Job("a", ReferenceToVideoRequest("viduq2", "a cat", images=[URL]))
        read.append(job)
        return [job]

    base = f"http://127.0.0.1:{closed_port()}"
    async with ViduClient("k", base_url=base, retry=RetryPolicy(sleep=no_wait)) as client:
        run = BatchSubmitter(client, BatchOptions()).run(iter(jobs()))
        with pytest.raises(APIConnectionError, match="could not connect"):
            await anext(run)
        await run.aclose()


async def test_a_retry_after_of_a_day_stops_submitting_and_says_so() -> None:
    faults = Faults(create=EndpointFaults(too_many_requests=1.0, retry_after=99999))
    jobs = [Job(f"j{i}", ReferenceToVideoRequest("viduq2", f"cat {i}", images=[URL]))
            for i in range(5)]
    async with FakeVidu(faults=faults) as fake, ViduClient(
        fake.api_key, base_url=fake.url, retry=RetryPolicy(sleep=no_wait)
    ) as client:
        waits: list[float] = []

        async def sleep(seconds: float) -> None:
            waits.append(seconds)
            await asyncio.sleep(0)

        batch = BatchSubmitter(client, BatchOptions(sleep=sleep))
        outcomes = [o async for o in batch.run(jobs)]
    assert {o.status for o in outcomes} == {"not_submitted"}
    assert batch.stop_reason is not None and batch.stop_reason.reason == "RetryAfterTooLong"
    assert "27.8 h" in batch.stop_reason.message
    assert not [w for w in waits if w > 120]  # never slept the server's demand
    assert fake.stats.tasks_created == 0


async def test_serve_on_a_port_in_use_is_one_line_and_exit_2(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = await asyncio.to_thread(main, ["serve", "--port", str(port)])
    assert code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in one_line(capfd)


async def test_a_results_pipe_closed_early_stops_only_the_results(tmp_path: Path) -> None:
    """``submit ... | head -1``: the reader goes away after one line; the batch finishes, the
    journal keeps every end, and stderr says once that results stopped."""
    jobs = tmp_path / "prompts.txt"
    jobs.write_text("".join(f"prompt {i}\n" for i in range(12)))
    # Five slots, 0.3 s a task: the other results come well after the reader left.
    timeline = Timeline(created=0.01, processing=0.3)
    async with FakeVidu(timeline=timeline, concurrency_limit=5) as sim:
        env = {**os.environ, "VIDU_API_KEY": sim.api_key, "VIDU_BASE_URL": sim.url}
        first, code, err = await _run_like_head_1(jobs, env, tmp_path / "journal.jsonl")
        created = sim.stats.tasks_created
    assert json.loads(first)["status"] == "succeeded"
    assert code == 1  # every job succeeded, but their results were lost
    assert "Traceback" not in err and "BrokenPipeError" not in err
    assert err.count("no more results are written there") == 1
    assert "results: stdout lacks the results after writing failed" in err
    finals = [json.loads(line) for line in (tmp_path / "journal.jsonl").read_text().splitlines()
              if json.loads(line)["kind"] == "final"]
    assert len(finals) == created == 12


async def _run_like_head_1(jobs: Path, env: dict[str, str], journal: Path
                           ) -> tuple[str, int, str]:
    """Run ``submit`` with its results piped to a reader that leaves after the first line."""
    argv = [sys.executable, "-m", "vidu_async", "submit", str(jobs), "--model", "viduq2",
            "--image", URL, "--quiet", "--wait", "--poll-interval", "0.02", "--journal",
            str(journal), "--visibility-lag", "0.5"]

    def like_head_1() -> tuple[str, int, str]:
        with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) as process:
            assert process.stdout is not None and process.stderr is not None
            first = process.stdout.readline().decode()
            process.stdout.close()  # the reader is gone, as `head -1` exits
            err = process.stderr.read().decode()
            return first, process.wait(timeout=30), err

    return await asyncio.wait_for(asyncio.to_thread(like_head_1), 60)


async def test_a_long_wait_is_said_with_its_reason(caplog: pytest.LogCaptureFixture) -> None:
    faults = Faults(create=EndpointFaults(too_many_requests=0.5, retry_after=10))
    jobs = [Job(f"j{i}", ReferenceToVideoRequest("viduq2", f"cat {i}", images=[URL]))
            for i in range(6)]
    caplog.set_level(logging.WARNING, logger="vidu_async.batch")
    async with FakeVidu(faults=faults, seed=4) as fake, ViduClient(
        fake.api_key, base_url=fake.url, retry=RetryPolicy(sleep=no_wait)
    ) as client:
        clock = ManualClock()
        batch = BatchSubmitter(client, BatchOptions(sleep=clock.sleep, clock=clock))
        outcomes = [o async for o in batch.run(jobs)]
    assert {o.status for o in outcomes} == {"submitted"}
    said = [r.getMessage() for r in caplog.records if "sending again in" in r.getMessage()]
    assert said and all("TooManyRequests" in m and "(the server asked for it)" in m
                        for m in said)
    assert len(said) == fake.stats.faults["too_many_requests"]


async def test_a_results_file_that_fills_up_is_said_and_the_run_ends_with_exit_1(
    sim: FakeVidu, jobs: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """/dev/full fails every write with ENOSPC, as a full disk does; the batch goes on, the
    end says where every result still is, and the exit code says results were lost."""
    journal = tmp_path / "journal.jsonl"
    args = ["submit", str(jobs), "--model", "viduq2", "--image", URL, "--quiet", "--results",
            "/dev/full", "--journal", str(journal), "--errors", str(tmp_path / "errors.jsonl")]
    assert await asyncio.to_thread(main, args) == 1
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert err.count("results stream /dev/full failed (No space left on device)") == 1
    assert (f"results: /dev/full lacks the results after writing failed (No space left on "
            f"device); the journal keeps every end: vidu-async batch results {journal}") in err
    assert "errors: 0 jobs to send again" in err  # the run's end is reached
    assert sim.stats.tasks_created == 3


@pytest.mark.parametrize("where", ["/dev/null", "a pipe"])
async def test_results_to_a_device_or_a_pipe_are_written_without_emptying_it(
    sim: FakeVidu, jobs: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str], where: str
) -> None:
    path = where
    if where == "a pipe":
        path = str(tmp_path / "fifo")
        os.mkfifo(path)
    read: list[bytes] = []

    def reader() -> None:
        with open(path, "rb") as pipe:
            read.append(pipe.read())

    args = ["submit", str(jobs), "--model", "viduq2", "--image", URL, "--quiet", "--results",
            path]
    if where == "a pipe":
        code, _ = await asyncio.gather(asyncio.to_thread(main, args),
                                       asyncio.to_thread(reader))
        assert [json.loads(line)["status"] for line in read[0].splitlines()] == ["submitted"] * 3
    else:
        code = await asyncio.to_thread(main, args)
    assert code == 0
    err = capfd.readouterr().err
    assert "failed" not in err and "Traceback" not in err


async def test_a_journal_that_fills_up_mid_run_ends_it_with_its_resume_command(
    tmp_path: Path, cli_env: Callable[[FakeVidu], None]
) -> None:
    """The journal's disk fills once tasks were paid for (RLIMIT_FSIZE: its writes fail with
    EFBIG, as on a full disk, with no root needed): a run failure with what to do, exit 1,
    not a usage error; the printed command then resumes the batch, paying each job once."""
    count = 40
    jobs = tmp_path / "prompts.txt"
    jobs.write_text("".join(f"prompt {i}\n" for i in range(count)))
    journal = tmp_path / "journal.jsonl"
    limited = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
               "resource.setrlimit(resource.RLIMIT_FSIZE, (6000, 6000)); "
               "from vidu_async.cli import main; sys.exit(main(sys.argv[1:]))")
    argv = ["submit", str(jobs), "--model", "viduq2", "--image", URL, "--quiet",
            "--journal", str(journal), "--visibility-lag", "0.5"]
    async with FakeVidu(timeline=Timeline(created=0.01, processing=0.05)) as fake:
        env = {**os.environ, "VIDU_API_KEY": fake.api_key, "VIDU_BASE_URL": fake.url}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", limited, *argv, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        _, raw = await asyncio.wait_for(process.communicate(), 60)
        err = raw.decode()
        assert process.returncode == 1, err
        assert "Traceback" not in err
        paid = fake.stats.tasks_created
        assert 0 < paid < count
        assert (f"the run stopped: cannot write journal {journal}: File too large. Tasks "
                "already created keep running on Vidu and are billed") in err
        resume = err.split("resume with:\n  vidu-async ")[1].splitlines()[0]
        cli_env(fake)
        code = await asyncio.to_thread(main, [*shlex.split(resume), "--results",
                                              str(tmp_path / "results.jsonl")])
        assert code == 0
        assert fake.stats.tasks_created == count
        assert fake.stats.duplicate_payloads() == {}


@pytest.mark.parametrize(("flags", "says"), [
    (["submit", "jobs.txt", "--poll-interval", "inf"],
     "argument --poll-interval: must be a finite number, got 'inf'"),
    (["submit", "jobs.txt", "--rate", "nan"], "argument --rate: must be a finite number"),
    (["submit", "jobs.txt", "--visibility-lag=-inf"],
     "argument --visibility-lag: must be a finite number"),
    (["wait", "t1", "--timeout", "infinity"], "argument --timeout: must be a finite number"),
    (["submit", "jobs.txt", "--rate", "fast"], "argument --rate: not a number: 'fast'"),
])
def test_a_number_flag_refuses_what_is_not_a_finite_number(
    flags: list[str], says: str, capfd: pytest.CaptureFixture[str]
) -> None:
    assert main(flags) == 2
    assert says in capfd.readouterr().err


async def test_a_results_folder_that_does_not_exist_is_said_so_by_the_dry_run_and_the_run(
    sim: FakeVidu, jobs: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "out" / "r.jsonl"
    args = ["submit", str(jobs), "--model", "viduq2", "--image", URL, "--quiet", "--results",
            str(results)]
    for extra in (["--dry-run"], []):
        assert await asyncio.to_thread(main, [*args, *extra]) == 2
        assert one_line(capfd) == (f"vidu-async submit: cannot write the results file {results}: "
                                   f"the folder {results.parent} does not exist")
    assert sim.stats.requests_to("create") == 0


def test_the_help_names_every_exit_code_and_every_endpoint(
    capfd: pytest.CaptureFixture[str]
) -> None:
    assert main(["submit", "--help"]) == 0
    text = " ".join(capfd.readouterr().out.split())
    assert "130 interrupted (Ctrl-C); 143 terminated (SIGTERM)" in text
    assert main(["--help"]) == 0
    text = " ".join(capfd.readouterr().out.split())
    assert "text-, image-, start-end- and reference-to-video" in text


@pytest.mark.parametrize(("flag", "where", "says"), [
    ("--results", "plain-file/results.jsonl", "cannot write the results file"),
    ("--journal", "/dev/full", "not a regular file"),
])
async def test_an_unusable_results_or_journal_path_is_one_line_exit_2(
    sim: FakeVidu, jobs: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str],
    flag: str, where: str, says: str,
) -> None:
    (tmp_path / "plain-file").write_text("a file, not a folder")
    path = where if where.startswith("/") else str(tmp_path / where)
    args = ["submit", str(jobs), "--model", "viduq2", "--image", URL, "--quiet", flag, path]
    assert await asyncio.to_thread(main, args) == 2
    assert says in one_line(capfd)
    assert sim.stats.requests_to("create") == 0


@pytest.mark.parametrize(("flags", "says"), [
    (["--results", "{jobs}"], "--results {jobs} is the jobs file {jobs}"),
    (["--results", "{dir}/sub/../prompts.txt"], "--results {dir}/sub/../prompts.txt is the jobs"),
    (["--results", "{jobs}.journal.jsonl"], "--results {jobs}.journal.jsonl is the journal "),
    (["--errors", "{jobs}.journal.jsonl.lock"], "--errors {jobs}.journal.jsonl.lock is the "
                                                "journal's lock file {jobs}.journal.jsonl.lock"),
    (["--errors", "{jobs}"], "--errors {jobs} is the jobs file {jobs}"),
    (["--journal", "{dir}/j", "--results", "{dir}/j.lock"],
     "--results {dir}/j.lock is the journal's lock file {dir}/j.lock"),
    (["--journal", "{jobs}"], "the journal {jobs} is the jobs file {jobs}"),
    (["--results", "{dir}/r", "--errors", "{dir}/r"], "--errors {dir}/r is --results {dir}/r"),
    (["--results", "{dir}/link-to-jobs"], "--results {dir}/link-to-jobs is the jobs file"),
    (["--results", "{dir}/hard-link"], "--results {dir}/hard-link is the jobs file"),
])
async def test_a_results_or_errors_file_that_is_the_jobs_file_or_the_journal_is_refused(
    sim: FakeVidu, jobs: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str],
    flags: list[str], says: str,
) -> None:
    """One file given two jobs would be emptied while read (3000 prompts, 68 sent, the rest
    gone) or have the journal replaced: refused before anything is sent, the file untouched."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "link-to-jobs").symlink_to(jobs)
    (tmp_path / "hard-link").hardlink_to(jobs)
    given = [f.format(jobs=jobs, dir=tmp_path) for f in flags]
    before = jobs.read_bytes()
    for extra in (["--dry-run"], []):
        args = ["submit", str(jobs), "--model", "viduq2", "--image", URL, "--quiet", *given]
        assert await asyncio.to_thread(main, [*args, *extra]) == 2
        line = one_line(capfd)
        assert says.format(jobs=jobs, dir=tmp_path) in line
        assert line.endswith(": give each its own path (nothing was sent)")
    assert sim.stats.requests_to("create") == 0
    assert jobs.read_bytes() == before
    assert not (tmp_path / "prompts.txt.journal.jsonl").exists()


def test_a_device_or_a_pipe_may_take_both_results_and_errors(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/full")):
        assert shared_file([("--results", path), ("--errors", path)]) is None
    assert shared_file([("the jobs file", None), ("--results", tmp_path / "r")]) is None
    assert shared_file([("--results", tmp_path / "r"), ("--errors", tmp_path / "r")]) == (
        f"--errors {tmp_path}/r is --results {tmp_path}/r")


async def test_batch_results_into_a_pipe_writes_it_and_leaves_it_a_pipe(
    sim: FakeVidu, jobs: Path, tmp_path: Path
) -> None:
    """``--out`` was replaced by a renamed file: as root, ``--out /dev/null`` turned the device
    into a regular file. A pipe stands in for the device here (no root needed)."""
    journal = tmp_path / "journal.jsonl"
    args = ["submit", str(jobs), "--model", "viduq2", "--image", URL, "--quiet",
            "--journal", str(journal), "--results", str(tmp_path / "results.jsonl")]
    assert await asyncio.to_thread(main, args) == 0
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # the pipe's buffer holds 3 lines
    try:
        assert await asyncio.to_thread(
            main, ["batch", "results", str(journal), "--out", str(fifo)]) == 0
        assert stat.S_ISFIFO(fifo.stat().st_mode)
        lines = os.read(reader, 1 << 16).splitlines()
    finally:
        os.close(reader)
    assert [json.loads(line)["status"] for line in lines] == ["submitted"] * 3


def busy_account(created: list[str]) -> web.Application:
    """An account with more recent tasks than a scan reads: its list pages on and on."""
    pages: list[int] = []

    async def credits(request: web.Request) -> web.Response:
        return web.json_response({"remains": [{"concurrency_limit": 5}]})

    async def tasks(request: web.Request) -> web.Response:
        pages.append(1)
        item = {"id": f"old{len(pages)}", "state": "success", "payload": ""}
        return web.json_response({"tasks": [item], "next_page_token": f"p{len(pages)}"})

    async def create(request: web.Request) -> web.Response:
        body = await request.json()
        created.append(body["payload"])
        return web.json_response({"task_id": f"t{len(created)}", "state": "created",
                                  "credits": 45, "payload": body["payload"]})

    app = web.Application()
    app.router.add_get("/ent/v2/credits", credits)
    app.router.add_get("/ent/v2/tasks", tasks)
    app.router.add_post("/ent/v2/reference2video", create)
    return app


async def test_a_first_run_on_an_account_too_busy_to_search_goes_on_and_says_so(
    aiohttp_server: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    created: list[str] = []
    server = await aiohttp_server(busy_account(created))
    journal = tmp_path / "j.jsonl"
    caplog.set_level(logging.WARNING, logger="vidu_async.batch")

    def batch(client: ViduClient) -> BatchSubmitter:
        return BatchSubmitter(client, BatchOptions(journal=journal, batch_id="busy"))

    job = Job("a", ReferenceToVideoRequest("viduq2", "a cat", images=[URL]))
    async with ViduClient("k", base_url=str(server.make_url("/")), retry=RetryPolicy(
            sleep=no_wait), scan_limits=ScanLimits(max_pages=3)) as client:
        [outcome] = [o async for o in batch(client).run([job])]
        assert outcome.status == "submitted" and len(created) == 1
        assert any("treating it as new" in r.getMessage() for r in caplog.records)
        # The journal was used: a job it does not know may have a task the search cannot see.
        later = Job("b", ReferenceToVideoRequest("viduq2", "a dog", images=[URL]))
        with pytest.raises(APIError, match=r"cannot check .* nothing was sent"):
            [o async for o in batch(client).run([later])]
    assert len(created) == 1
