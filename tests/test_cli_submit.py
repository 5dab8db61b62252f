"""``vidu-async submit`` and ``demo`` end to end against the simulator, killed and resumed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shlex
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from vidu_async import ReferenceToVideoRequest, ViduClient
from vidu_async.cli import main
from vidu_async.submit import Listener
from vidu_async.testing import CANCELED, Account, FakeVidu, Timeline

URL = "https://example.com/ref.png"
FAST = Timeline(created=0.01, processing=0.05)


@pytest.fixture
async def sim(cli_env: Callable[[FakeVidu], None]) -> AsyncIterator[FakeVidu]:
    async with FakeVidu(timeline=FAST, concurrency_limit=20, seed=3) as fake:
        cli_env(fake)
        yield fake


def submit_args(jobs: Path, *extra: str) -> list[str]:
    return ["submit", str(jobs), "--model", "viduq2", "--image", URL, "--quiet",
            "--poll-interval", "0.02", "--visibility-lag", "0.5", *extra]


def results(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def journalled(journal: Path, kind: str) -> int:
    """How many records of ``kind`` a run's journal holds on disk so far (none: no journal)."""
    try:
        return journal.read_text().count(f'"kind": "{kind}"')
    except FileNotFoundError:
        return 0


@contextlib.contextmanager
def ctrl_c_reaches_children() -> Iterator[None]:
    """Processes started meanwhile take Ctrl-C even when this one ignores it (a background job
    of a script): they would inherit the ignored SIGINT, and Python installs no handler then."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


async def test_bad_lines_are_reported_by_number_and_the_rest_run(
    sim: FakeVidu, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        '{"custom_id": "a", "prompt": "one"}\n'
        "this is not json\n"
        '{"custom_id": "b", "prompt": "two", "duration": 99}\n'
        '{"custom_id": "c", "prompt": "three", "bgm": true, "duration": 10}\n'
    )
    out = tmp_path / "results.jsonl"
    code = await asyncio.to_thread(main, submit_args(jobs, "--wait", "--results", str(out)))
    err = capfd.readouterr().err
    assert code == 1
    assert f"{jobs}:2: error: (line): not valid JSON" in err
    assert f"{jobs}:3: error: duration: viduq2 accepts 1..10 seconds, got 99" in err
    assert f"{jobs}:4: warning: bgm: viduq2 ignores bgm at 10 seconds" in err
    by_line = {r["line"]: r for r in results(out)}
    assert {n: r["status"] for n, r in by_line.items()} == {
        1: "succeeded", 2: "invalid", 3: "invalid", 4: "succeeded",
    }
    assert set(by_line[1]) == {"custom_id", "line", "status", "task_id", "state", "credits",
                               "err_code", "error", "creations", "files", "type"}
    assert by_line[3]["error"] == {
        "reason": "ValidationError", "message": "duration: viduq2 accepts 1..10 seconds, got 99"
    }
    assert sim.stats.tasks_created == 2


async def test_without_wait_jobs_are_submitted_and_exit_zero(sim: FakeVidu, tmp_path: Path
                                                              ) -> None:
    jobs = tmp_path / "prompts.txt"
    jobs.write_text("a cat\na dog\n")
    out = tmp_path / "results.jsonl"
    assert await asyncio.to_thread(main, submit_args(jobs, "--results", str(out))) == 0
    assert [r["status"] for r in results(out)] == ["submitted", "submitted"]
    assert (tmp_path / "prompts.txt.journal.jsonl").exists()


async def test_missing_or_rejected_key_exits_3_before_any_job(
    sim: FakeVidu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    jobs = tmp_path / "prompts.txt"
    jobs.write_text("a cat\n")
    monkeypatch.setenv("VIDU_API_KEY", "wrong-key")
    assert await asyncio.to_thread(main, submit_args(jobs)) == 3
    assert "401" in capfd.readouterr().err
    monkeypatch.delenv("VIDU_API_KEY")
    assert await asyncio.to_thread(main, submit_args(jobs)) == 3
    assert "VIDU_API_KEY" in capfd.readouterr().err
    assert sim.stats.tasks_created == 0


async def test_credits_run_out_then_a_rerun_after_top_up_finishes_without_duplicates(
    cli_env: Callable[[FakeVidu], None], tmp_path: Path
) -> None:
    jobs = tmp_path / "prompts.txt"
    jobs.write_text("".join(f"prompt {i}\n" for i in range(12)))
    out = tmp_path / "results.jsonl"
    # viduq2 at the default 5 s costs 45 credits in the simulator: five tasks fit in 230.
    async with FakeVidu(timeline=FAST, credits=230, seed=5) as fake:
        cli_env(fake)
        args = submit_args(jobs, "--wait", "--results", str(out), "--concurrency", "3")
        assert await asyncio.to_thread(main, args) == 1
        first = results(out)
        statuses = sorted(str(r["status"]) for r in first)
        assert statuses == ["not_submitted"] * 7 + ["succeeded"] * 5
        stopped = [r for r in first if r["status"] == "not_submitted"]
        assert all(r["error"]["reason"] == "CreditInsufficient" for r in stopped)  # type: ignore[index]
        fake.top_up(10_000)
        assert await asyncio.to_thread(main, args) == 0
        again = results(out)
        assert sorted(str(r["status"]) for r in again) == ["succeeded"] * 12
        assert fake.stats.tasks_created == 12
        assert fake.stats.duplicate_payloads() == {}


async def test_killed_at_random_moments_and_rerun_pays_each_job_once(tmp_path: Path) -> None:
    count = 40
    jobs = tmp_path / "prompts.txt"
    jobs.write_text("".join(f"prompt number {i}\n" for i in range(count)))
    out = tmp_path / "results.jsonl"
    journal = tmp_path / "journal.jsonl"
    rng = random.Random(2026)
    async with FakeVidu(timeline=Timeline(created=0.05, processing=0.3), seed=11) as fake:
        env = {**os.environ, "VIDU_API_KEY": fake.api_key, "VIDU_BASE_URL": fake.url}
        argv = [sys.executable, "-m", "vidu_async", *submit_args(
            jobs, "--wait", "--results", str(out), "--journal", str(journal),
            "--concurrency", "6",
        )]
        kills = 0
        for attempt in range(8):
            process = await asyncio.create_subprocess_exec(
                *argv, env=env, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            # Killed at a random moment, six times; then left to finish (a resumed run may
            # first wait out the visibility lag of creates a killed run left unanswered).
            limit = rng.uniform(0.4, 1.6) if attempt < 6 else 60.0
            try:
                code = await asyncio.wait_for(process.wait(), limit)
            except TimeoutError:
                process.send_signal(signal.SIGKILL)
                await process.wait()
                kills += 1
                continue
            assert code == 0, f"attempt {attempt} exited {code}"
            break
        else:
            pytest.fail("the batch never finished")
        assert kills >= 2, "the test must actually interrupt some runs"
        assert fake.stats.tasks_created == count
        assert fake.stats.duplicate_payloads() == {}
        final = results(out)
        assert len(final) == count
        assert {r["status"] for r in final} == {"succeeded"}
        assert len({r["custom_id"] for r in final}) == count


def test_demo_runs_end_to_end(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "demo"
    assert main(["demo", "--dir", str(folder), "--quiet"]) == 0
    lines = results(folder / "results.jsonl")
    assert {r["status"] for r in lines} == {"succeeded"}
    videos = sorted(p.name for p in (folder / "videos").iterdir())
    assert videos == sorted(f"{r['custom_id']}.mp4" for r in lines)
    assert all((folder / "videos" / v).read_bytes()[4:8] == b"ftyp" for v in videos)
    assert f"results: {folder / 'results.jsonl'}" in capfd.readouterr().err


@pytest.mark.parametrize(("signum", "code", "name"), [
    (signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM"),
])
async def test_an_interrupt_exits_with_the_resume_command_and_the_journal_saved(
    tmp_path: Path, signum: int, code: int, name: str, cli_env: Callable[[FakeVidu], None],
    capfd: pytest.CaptureFixture[str],
) -> None:
    jobs = tmp_path / "prompts.txt"
    jobs.write_text("".join(f"prompt {i}\n" for i in range(30)))
    # Tasks run long enough to be running still when `batch status` asks, however slow the
    # machine (5 s ended them first under load, and nothing was left to list).
    async with FakeVidu(timeline=Timeline(created=0.05, processing=600.0), seed=2) as fake:
        env = {**os.environ, "VIDU_API_KEY": fake.api_key, "VIDU_BASE_URL": fake.url}
        with ctrl_c_reaches_children():
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "vidu_async", *submit_args(jobs, "--wait"),
                env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )
        journal = tmp_path / "prompts.txt.journal.jsonl"
        # Interrupted once the run has journalled a task, not once the simulator made five: a
        # run starved of CPU may not have read one answer yet, and then the interrupt leaves
        # every job unconfirmed (a rerun looks them up) and batch status lists none running.
        async with asyncio.timeout(60):  # a bound for a loaded machine, not a wait
            while fake.stats.tasks_created < 5 or not journalled(journal, "created"):  # noqa: ASYNC110 - a file
                await asyncio.sleep(0.02)
        process.send_signal(signum)
        _, err = await asyncio.wait_for(process.communicate(), 60)
        cli_env(fake)  # the commands the message names find the tasks (no results were written)
        assert await asyncio.to_thread(main, ["batch", "status", str(journal), "--json"]) == 0
        running = json.loads(capfd.readouterr().out)["running"]
        assert running and all(job["task_id"] for job in running)
        # Every task the simulator created had its intent journalled before the create was sent.
        assert journalled(journal, "intent") >= fake.stats.tasks_created >= 5
    assert process.returncode == code
    text = err.decode()
    assert f"interrupted ({name}); the journal" in text
    assert "keep running on Vidu and are billed" in text
    assert (f"To cancel the ones that have not started: vidu-async batch cancel {journal} "
            f"(vidu-async batch status {journal} lists the running ones and their task ids)"
            ) in text
    assert f"vidu-async submit {jobs} --model viduq2" in text
    assert f"--journal {journal}" in text


async def test_a_fresh_run_interrupted_resumes_with_the_printed_command_paying_nothing_again(
    tmp_path: Path, cli_env: Callable[[FakeVidu], None]
) -> None:
    """The resume command of a ``--fresh`` run leaves ``--fresh`` out: its journal keeps the
    fresh batch's id, and ``--fresh`` would refuse that journal (or, on a new one, pay again)."""
    jobs = tmp_path / "prompts.txt"
    jobs.write_text("one\ntwo\n")
    journal = tmp_path / "again.journal.jsonl"
    async with FakeVidu(timeline=Timeline(created=0.05, processing=1.5), seed=2) as fake:
        env = {**os.environ, "VIDU_API_KEY": fake.api_key, "VIDU_BASE_URL": fake.url}
        with ctrl_c_reaches_children():
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "vidu_async",
                *submit_args(jobs, "--wait", "--fresh", "--journal", str(journal)),
                env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )
        async with asyncio.timeout(30):
            while fake.stats.tasks_created < 2:  # noqa: ASYNC110 - a counter, not an event
                await asyncio.sleep(0.02)
        process.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 130
        resume = err.decode().split("Resume with:\n  vidu-async ")[1].splitlines()[0]
        assert "--fresh" not in resume and f"--journal {journal}" in resume
        cli_env(fake)
        out = tmp_path / "results.jsonl"
        assert await asyncio.to_thread(main, [*shlex.split(resume), "--results", str(out)]) == 0
        assert fake.stats.tasks_created == 2
    assert {r["status"] for r in results(out)} == {"succeeded"}


async def test_single_task_commands(
    sim: FakeVidu, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    async with ViduClient(sim.api_key, base_url=sim.url) as client:
        task = await client.create_reference2video(
            ReferenceToVideoRequest("viduq2", "a cat", images=[URL], payload="mine")
        )
    assert await asyncio.to_thread(main, ["wait", task.task_id, "--timeout", "30"]) == 0
    waited = capfd.readouterr()
    assert waited.out.startswith(f"task {task.task_id}: success, 45 credits\n  video 1: http")
    states = [line.split()[-1] for line in waited.err.splitlines()]
    assert states[-1] == "success" and len(states) == len(set(states))  # each change once
    assert await asyncio.to_thread(main, ["status", task.task_id, "--json"]) == 0
    answer = json.loads(capfd.readouterr().out)
    assert (answer["id"], answer["state"]) == (task.task_id, "success")
    assert answer["payload"] == "mine"  # the user's own, without the correlation prefix
    dest = tmp_path / "out"
    args = ["download", task.task_id, "--dest", str(dest), "--json"]
    assert await asyncio.to_thread(main, args) == 0
    files = json.loads(capfd.readouterr().out)["files"]
    assert [Path(f).parent for f in files] == [dest]
    assert Path(files[0]).read_bytes()[4:8] == b"ftyp"
    # A task that has finished cannot be cancelled: the user hears its state and the reason.
    assert await asyncio.to_thread(main, ["cancel", task.task_id]) == 1
    err = capfd.readouterr().err
    assert f"task {task.task_id} is success: only a task that has not started" in err
    assert "(the API answered: task state is scheduled, can not cancel)" in err
    assert await asyncio.to_thread(main, ["status", "999"]) == 1
    assert "404" in capfd.readouterr().err


async def test_credits_shows_each_account(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    accounts = {"key-one-AAAA": Account(credits=900, concurrency_limit=3),
                "key-two-BBBB": Account(credits=50, concurrency_limit=1)}
    async with FakeVidu(accounts=accounts) as fake:
        monkeypatch.setenv("VIDU_API_KEYS", "key-one-AAAA,key-two-BBBB")
        monkeypatch.setenv("VIDU_BASE_URL", fake.url)
        assert await asyncio.to_thread(main, ["credits"]) == 0
        out = capfd.readouterr().out.splitlines()
        assert await asyncio.to_thread(main, ["credits", "--json"]) == 0
        answers = [json.loads(line) for line in capfd.readouterr().out.splitlines()]
    assert out[0].startswith("account 1 (key ...AAAA): 900 credits")
    assert "0/3 running, 0 queued" in out[0]
    assert out[1].startswith("account 2 (key ...BBBB): 50 credits")
    assert [a["remains"][0]["credit_remain"] for a in answers] == [900, 50]
    assert "key-one" not in "\n".join(out)  # never more of a key than its last four


async def test_cancel_before_the_task_starts(
    cli_env: Callable[[FakeVidu], None], capfd: pytest.CaptureFixture[str]
) -> None:
    async with FakeVidu(timeline=Timeline(created=3600)) as fake:
        cli_env(fake)
        async with ViduClient(fake.api_key, base_url=fake.url) as client:
            task = await client.create_reference2video(
                ReferenceToVideoRequest("viduq2", "a cat", images=[URL])
            )
        assert await asyncio.to_thread(main, ["cancel", task.task_id, "--json"]) == 0
        assert json.loads(capfd.readouterr().out) == {"task_id": task.task_id, "cancelled": True}
        cancelled = fake.tasks[task.task_id]
        assert (cancelled.state, cancelled.err_code, cancelled.credits) == ("failed", CANCELED, 0)


# --- callbacks ----------------------------------------------------------------------------------


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_callbacks_to_a_local_url_finish_the_tasks(
    sim: FakeVidu, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    jobs = tmp_path / "prompts.txt"
    jobs.write_text("a cat\na dog\na fox\n")
    out = tmp_path / "results.jsonl"
    url = f"http://127.0.0.1:{unused_port()}/hooks/vidu"
    args = submit_args(jobs, "--wait", "--results", str(out), "--callback-url", url)
    async with asyncio.timeout(60):  # the safety net polls every 120 s: a hang guard
        assert await asyncio.to_thread(main, args) == 0
    assert [r["status"] for r in results(out)] == ["succeeded"] * 3
    assert {t.request["callback_url"] for t in sim.tasks.values()} == {url}
    assert sim.stats.callbacks_delivered >= 3
    # Claimed ends are read back in bulk (polling every 0.02 s would have taken many rounds),
    # then the duplicate check scans once.
    assert sim.stats.requests_to("list_tasks") <= 3 + 1
    assert sim.stats.requests_to("query") == 0
    assert f"receiving callbacks to {url} on http://127.0.0.1:" in capfd.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--listen", "127.0.0.1:8080"], "--listen receives callbacks to follow tasks"),
        (["--wait", "--listen", "127.0.0.1:8080"], "it needs --wait (or --download) and"),
        (["--wait", "--callback-url", "https://hooks.example.com/vidu"], "give --listen HOST:PORT"),
        (["--wait", "--callback-url", "https://hooks.example.com/vidu", "--listen", "8080"],
         "--listen takes HOST:PORT (e.g. 0.0.0.0:8080), got '8080'"),
        (["--wait", "--callback-url", "http://127.0.0.1:99999/vidu"], "is not a number"),
    ],
)
async def test_callback_flags_that_cannot_work_are_usage_errors(
    sim: FakeVidu, tmp_path: Path, capfd: pytest.CaptureFixture[str],
    extra: list[str], message: str,
) -> None:
    jobs = tmp_path / "prompts.txt"
    jobs.write_text("a cat\n")
    assert await asyncio.to_thread(main, submit_args(jobs, *extra)) == 2
    assert message in capfd.readouterr().err
    assert sim.stats.tasks_created == 0


async def test_an_address_already_in_use_is_a_usage_error(
    sim: FakeVidu, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    jobs = tmp_path / "prompts.txt"
    jobs.write_text("a cat\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        url = f"http://127.0.0.1:{port}/vidu"
        code = await asyncio.to_thread(main, submit_args(jobs, "--wait", "--callback-url", url))
    assert code == 2
    assert f"cannot receive callbacks on 127.0.0.1:{port}" in capfd.readouterr().err
    assert sim.stats.tasks_created == 0


@pytest.mark.parametrize(
    ("url", "listen", "where"),
    [
        ("http://127.0.0.1:8080/vidu/callback", None, ("127.0.0.1", 8080, "/vidu/callback")),
        ("http://localhost/hook?token=x", None, ("localhost", 80, "/hook")),
        ("http://[::1]:9000", None, ("::1", 9000, "/")),
        ("https://hooks.example.com/v/cb", "0.0.0.0:8443", ("0.0.0.0", 8443, "/v/cb")),
        ("https://hooks.example.com/cb", "[::]:8080", ("::", 8080, "/cb")),
    ],
)
def test_where_callbacks_are_received(
    url: str, listen: str | None, where: tuple[str, int, str]
) -> None:
    listener = Listener.parse(url, listen)
    assert (listener.host, listener.port, listener.path) == where
    assert listener.url == url


async def test_a_name_template_whose_fields_run_together_gives_each_job_its_own_file(
    sim: FakeVidu, tmp_path: Path
) -> None:
    """``--name '{custom_id}{line}'``: ``a1`` on line 2 and ``a`` on line 12 both made
    ``a12.mp4``; the second download replaced the first, a paid video lost with exit 0."""
    jobs = tmp_path / "jobs.jsonl"
    ids = {2: "a1", 12: "a"}
    jobs.write_text("".join(json.dumps({"custom_id": ids.get(n, f"j{n}x"), "prompt": f"p {n}"})
                            + "\n" for n in range(1, 13)))
    out, videos = tmp_path / "results.jsonl", tmp_path / "videos"
    args = submit_args(jobs, "--download", str(videos), "--name", "{custom_id}{line}",
                       "--results", str(out))
    assert await asyncio.to_thread(main, args) == 0
    files = {r["custom_id"]: r["files"] for r in results(out)}
    assert len(list(videos.iterdir())) == 12
    assert isinstance(files["a1"], list) and isinstance(files["a"], list)
    (first,), (second,) = files["a1"], files["a"]
    assert first != second
    assert Path(first).name.startswith("a12-") and Path(second).name.startswith("a12-")
