"""``vidu-async submit`` pays for each job once, end to end: racing runs, lost journals, edited
files, budgets across reruns, journal errors and download names, against the simulator."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.waiting import until
from vidu_async.cli import main
from vidu_async.demo import sample_png
from vidu_async.download import safe_stem
from vidu_async.journal import Journal
from vidu_async.testing import EndpointFaults, FakeVidu, Faults, ManualClock, Timeline

URL = "https://example.com/ref.png"
FAST = Timeline(created=0.01, processing=0.05)
COST = 45
"""What one viduq2 task of the default 5 s costs in the simulator."""


@contextlib.asynccontextmanager
async def simulator(
    cli_env: Callable[[FakeVidu], None], timeline: Timeline
) -> AsyncIterator[FakeVidu]:
    """A simulator the CLI finds through its environment."""
    async with FakeVidu(timeline=timeline, concurrency_limit=50, seed=7) as fake:
        cli_env(fake)
        yield fake


@pytest.fixture
async def sim(cli_env: Callable[[FakeVidu], None]) -> AsyncIterator[FakeVidu]:
    async with simulator(cli_env, FAST) as fake:
        yield fake


def submit_args(jobs: Path, *extra: str) -> list[str]:
    return ["submit", str(jobs), "--model", "viduq2", "--image", URL, "--quiet",
            "--poll-interval", "0.02", "--visibility-lag", "0.5", *extra]


async def submit(jobs: Path, *extra: str) -> int:
    code: int = await asyncio.to_thread(main, submit_args(jobs, *extra))
    return code


def results(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def requests_sent(fake: FakeVidu) -> int:
    return sum(fake.stats.requests.values())


def prompts_of_tasks(fake: FakeVidu) -> Counter[str]:
    return Counter(str(task.request["prompt"]) for task in fake.tasks.values())


def write_prompts(path: Path, prompts: list[str]) -> None:
    path.write_text("".join(f"{p}\n" for p in prompts), encoding="utf-8")


# --- two runs at once ---------------------------------------------------------------------------


async def test_two_runs_started_together_pay_each_job_once(tmp_path: Path) -> None:
    count = 30
    jobs = tmp_path / "prompts.txt"
    write_prompts(jobs, [f"race prompt {i}" for i in range(count)])
    out = tmp_path / "results.jsonl"
    journal = tmp_path / "prompts.txt.journal.jsonl"
    # The simulator's time stands still until the refused run has ended: the winner's tasks
    # cannot end, so it holds the journal whenever the other run opens it, however slow.
    clock = ManualClock(now=time.time())
    async with FakeVidu(timeline=Timeline(created=0.05, processing=1.0), concurrency_limit=50,
                        seed=4, clock=clock) as fake:
        env = {**os.environ, "VIDU_API_KEY": fake.api_key, "VIDU_BASE_URL": fake.url}
        argv = [sys.executable, "-m", "vidu_async",
                *submit_args(jobs, "--wait", "--results", str(out), "--concurrency", "10")]
        runs = [
            await asyncio.create_subprocess_exec(
                *argv, env=env, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            for _ in range(2)
        ]
        try:
            talks = [asyncio.ensure_future(r.communicate()) for r in runs]
            first, _ = await asyncio.wait(talks, timeout=60,
                                          return_when=asyncio.FIRST_COMPLETED)
            (ended,) = first
            assert runs[talks.index(ended)].returncode == 2  # refused: the winner cannot end
            # The refused run may end before the winner made its tasks (a loaded machine):
            # moved on any earlier, the clock would stand still again over tasks just made.
            await until(lambda: fake.stats.tasks_created >= count, "the winner's tasks",
                        within=60)
            clock.advance(10.0)  # the winner's tasks end now
            errs = await asyncio.wait_for(asyncio.gather(*talks), 60)
        finally:  # a failed assertion must not leave a run going on after the test
            for run in runs:
                if run.returncode is None:
                    run.kill()
                    await run.wait()
        assert fake.stats.tasks_created == count
        assert fake.stats.duplicate_payloads() == {}
    codes = sorted((r.returncode, i) for i, r in enumerate(runs))
    assert [code for code, _ in codes] == [0, 2]
    winner, loser = runs[codes[0][1]], runs[codes[1][1]]
    message = [line for line in errs[codes[1][1]][1].decode().splitlines() if line.strip()]
    assert len(message) == 1, message
    assert str(journal) in message[0]
    assert f"process {winner.pid} " in message[0]
    assert f"process {loser.pid} " not in message[0]
    final = results(out)
    assert len(final) == count
    assert {r["status"] for r in final} == {"succeeded"}
    assert len({r["task_id"] for r in final}) == count


async def test_a_journal_in_use_refuses_a_second_run_that_sends_nothing(
    sim: FakeVidu, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    jobs = tmp_path / "prompts.txt"
    write_prompts(jobs, ["a cat", "a dog"])
    journal = tmp_path / "prompts.txt.journal.jsonl"
    out = tmp_path / "results.jsonl"
    out.write_text("the first run's results\n")
    async with await Journal.open(journal, batch_id="prompts.txt"):  # the other run
        assert await submit(jobs, "--results", str(out)) == 2
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert f"journal {journal} is in use by process {os.getpid()} " in err[0]
    assert requests_sent(sim) == 0
    assert out.read_text() == "the first run's results\n"


async def test_results_on_stdout_appended_to_a_file_keep_what_it_held(
    sim: FakeVidu, tmp_path: Path
) -> None:
    # `vidu-async submit a.txt >> all.jsonl`: only a --results file is this run's own to empty.
    jobs = tmp_path / "prompts.txt"
    write_prompts(jobs, ["a cat"])
    collected = tmp_path / "all.jsonl"
    collected.write_text('{"earlier": "results"}\n')
    env = {**os.environ, "VIDU_API_KEY": sim.api_key, "VIDU_BASE_URL": sim.url}
    with collected.open("a") as stdout:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "vidu_async", *submit_args(jobs), env=env, stdout=stdout,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert await asyncio.wait_for(process.wait(), 30) == 0
    lines = results(collected)
    assert lines[0] == {"earlier": "results"}
    assert [r["status"] for r in lines[1:]] == ["submitted"]


# --- a lost journal, a second checkout ----------------------------------------------------------


async def test_a_deleted_journal_does_not_pay_again(sim: FakeVidu, tmp_path: Path) -> None:
    jobs = tmp_path / "prompts.txt"
    write_prompts(jobs, [f"lost journal {i}" for i in range(5)])
    out = tmp_path / "results.jsonl"
    assert await submit(jobs, "--wait", "--results", str(out)) == 0
    first = {r["custom_id"]: r["task_id"] for r in results(out)}
    (tmp_path / "prompts.txt.journal.jsonl").unlink()
    balance = sim.balance()
    assert await submit(jobs, "--wait", "--results", str(out)) == 0
    again = results(out)
    assert {r["custom_id"]: r["task_id"] for r in again} == first
    assert {r["status"] for r in again} == {"succeeded"}
    assert sim.stats.tasks_created == 5
    assert sim.balance() == balance


WAITING = "before creating jobs not found on the account"


async def test_only_a_run_the_journal_may_not_know_of_waits_out_the_lists_lag(
    sim: FakeVidu, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A rerun of an intact journal with a new line goes at once (every create of its runs is
    recorded); after the journal is deleted (its ``.lock`` stays) the rerun waits before
    creating a new line, and says why: a run it holds no record of may have tasks the list
    does not show yet. A rerun whose lines are all found on the account neither waits nor
    says it does."""
    caplog.set_level(logging.INFO, logger="vidu_async")
    jobs = tmp_path / "prompts.txt"
    write_prompts(jobs, ["a fox", "a heron"])
    assert await submit(jobs, "-v") == 0
    write_prompts(jobs, ["a lighthouse", "a fox", "a heron"])
    caplog.clear()
    assert await submit(jobs, "-v") == 0
    assert WAITING not in caplog.text
    assert sim.stats.tasks_created == 3
    (tmp_path / "prompts.txt.journal.jsonl").unlink()
    caplog.clear()
    assert await submit(jobs, "-v") == 0
    assert WAITING not in caplog.text  # every line found its task
    assert sim.stats.tasks_created == 3
    (tmp_path / "prompts.txt.journal.jsonl").unlink()
    write_prompts(jobs, ["a lighthouse", "a fox", "a heron", "an owl"])
    caplog.clear()
    assert await submit(jobs, "-v") == 0
    assert WAITING in caplog.text and "'prompts.txt'" in caplog.text
    assert sim.stats.tasks_created == 4


async def test_a_job_left_out_of_the_run_after_a_lost_journal_is_not_paid_again_later(
    sim: FakeVidu, tmp_path: Path
) -> None:
    # The start-up search runs only while the journal is new: a job that the first run with
    # the new journal did not reach (here its line was briefly broken) must still find its task.
    jobs = tmp_path / "jobs.jsonl"
    rows = [{"custom_id": name, "prompt": f"a {name} on a hill"} for name in "abc"]
    jobs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "results.jsonl"
    assert await submit(jobs, "--wait", "--results", str(out)) == 0
    first = {r["custom_id"]: r["task_id"] for r in results(out)}
    (tmp_path / "jobs.jsonl.journal.jsonl").unlink()
    jobs.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]) + '{"custom_id": "c",\n')
    assert await submit(jobs, "--wait", "--results", str(out)) == 1
    jobs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert await submit(jobs, "--wait", "--results", str(out)) == 0
    assert {r["custom_id"]: r["task_id"] for r in results(out)} == first
    assert sim.stats.tasks_created == 3


async def test_a_second_checkout_of_the_same_file_does_not_pay_again(
    sim: FakeVidu, tmp_path: Path
) -> None:
    here, there = tmp_path / "laptop", tmp_path / "server"
    here.mkdir()
    there.mkdir()
    jobs = here / "prompts.txt"
    write_prompts(jobs, [f"checkout {i}" for i in range(4)])
    assert await submit(jobs, "--results", str(here / "results.jsonl")) == 0
    shutil.copy(jobs, there / "prompts.txt")
    out = there / "results.jsonl"
    assert await submit(there / "prompts.txt", "--wait", "--results", str(out)) == 0
    assert (there / "prompts.txt.journal.jsonl").exists()
    assert sim.stats.tasks_created == 4
    assert sorted(str(r["task_id"]) for r in results(out)) == sorted(sim.tasks)


async def test_a_second_checkout_with_local_images_and_no_custom_id_does_not_pay_again(
    sim: FakeVidu, tmp_path: Path
) -> None:
    # The same file and the same image in another folder ask exactly what they asked before.
    here, there = tmp_path / "laptop", tmp_path / "server"
    here.mkdir()
    (here / "ref.png").write_bytes(sample_png(256, 256, 40))
    (here / "jobs.jsonl").write_text(
        '{"model": "viduq2", "prompt": "a cat", "images": ["ref.png"]}\n'
        '{"model": "viduq2", "prompt": "a dog", "images": ["ref.png"]}\n'
    )
    assert await submit(here / "jobs.jsonl", "--results", str(here / "results.jsonl")) == 0
    shutil.copytree(here, there, ignore=shutil.ignore_patterns("*.journal.*", "results.*"))
    out = there / "results.jsonl"
    assert await submit(there / "jobs.jsonl", "--wait", "--results", str(out)) == 0
    assert sim.stats.tasks_created == 2
    assert sorted(str(r["task_id"]) for r in results(out)) == sorted(sim.tasks)


async def test_a_start_up_search_that_fails_is_one_line_and_sends_nothing(
    cli_env: Callable[[FakeVidu], None], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # A new journal must first look for this batch's earlier tasks; the list refuses (a
    # Retry-After longer than any wait obeyed), so nothing may be sent, and the user is told.
    faults = Faults(list_tasks=EndpointFaults(too_many_requests=1.0, retry_after=500))
    async with FakeVidu(timeline=FAST, faults=faults) as fake:
        cli_env(fake)
        jobs = tmp_path / "prompts.txt"
        write_prompts(jobs, ["a cat"])
        code = await submit(jobs)
        assert fake.stats.requests_to("create") == 0
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert "nothing was sent" in err[0]
    assert "Traceback" not in err[0]
    assert code == 1


# --- an edited jobs file ------------------------------------------------------------------------


async def test_a_line_inserted_at_the_top_keeps_every_other_jobs_task(
    sim: FakeVidu, tmp_path: Path
) -> None:
    jobs = tmp_path / "prompts.txt"
    old = [f"a fox number {i}" for i in range(5)]
    write_prompts(jobs, old)
    out = tmp_path / "results.jsonl"
    assert await submit(jobs, "--wait", "--results", str(out)) == 0
    lines = ["a brand new owl", *old]
    write_prompts(jobs, lines)
    assert await submit(jobs, "--wait", "--results", str(out)) == 0
    again = results(out)
    assert len(again) == len(lines)
    for record in again:
        task = sim.tasks[str(record["task_id"])]
        assert task.request["prompt"] == lines[int(str(record["line"])) - 1]
    assert prompts_of_tasks(sim) == Counter(lines)
    assert sim.stats.duplicate_payloads() == {}


async def test_another_files_journal_is_named_in_every_refused_line_and_nothing_is_sent(
    sim: FakeVidu, tmp_path: Path
) -> None:
    first = tmp_path / "a.jsonl"
    first.write_text("".join(json.dumps({"custom_id": n, "prompt": f"a {n}"}) + "\n"
                             for n in "xy"))
    assert await submit(first, "--wait", "--results", str(tmp_path / "a.out")) == 0
    second = tmp_path / "b.jsonl"
    second.write_text("".join(json.dumps({"custom_id": n, "prompt": f"the {n}"}) + "\n"
                              for n in "xy"))
    out = tmp_path / "b.out"
    journal = str(tmp_path / "a.jsonl.journal.jsonl")
    assert await submit(second, "--wait", "--journal", journal, "--results", str(out)) == 1
    for record in results(out):
        assert record["status"] == "invalid"
        assert "the journal is batch 'a.jsonl''s" in record["error"]["message"]
    assert sim.stats.tasks_created == 2
    # The same file renamed, with its journal: replayed, nothing said of the batch's name.
    first.rename(tmp_path / "renamed.jsonl")
    again = tmp_path / "renamed.out"
    assert await submit(tmp_path / "renamed.jsonl", "--wait", "--journal", journal,
                        "--results", str(again)) == 0
    assert {r["status"] for r in results(again)} == {"succeeded"}
    assert sim.stats.tasks_created == 2


async def test_an_edited_line_with_its_custom_id_is_refused_and_the_rest_replayed(
    sim: FakeVidu, tmp_path: Path
) -> None:
    jobs = tmp_path / "jobs.jsonl"
    rows = [{"custom_id": name, "prompt": f"a {name} in the snow"} for name in "abc"]
    jobs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "results.jsonl"
    assert await submit(jobs, "--wait", "--results", str(out)) == 0
    first = {r["custom_id"]: r for r in results(out)}
    rows[1]["prompt"] = "a b in the rain"
    jobs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert await submit(jobs, "--wait", "--results", str(out)) == 1
    again = {r["custom_id"]: r for r in results(out)}
    assert again["b"]["status"] == "invalid"
    error = again["b"]["error"]
    assert isinstance(error, dict)
    assert error["reason"] == "RequestChanged"
    assert "new custom_id" in error["message"]
    assert {k: again[k]["task_id"] for k in "ac"} == {k: first[k]["task_id"] for k in "ac"}
    assert {again[k]["status"] for k in "ac"} == {"succeeded"}
    assert sim.stats.tasks_created == 3
    assert "a b in the rain" not in prompts_of_tasks(sim)


async def test_a_job_whose_local_image_is_gone_is_replayed_or_said_to_be_sent_not_resent(
    sim: FakeVidu, tmp_path: Path
) -> None:
    """``done`` ended (its result journalled) and ``sent`` was only created; then their image
    is deleted. The rerun replays ``done`` from the journal and reports ``sent`` invalid,
    naming its task: neither is offered as never sent, nothing is paid again."""
    image = tmp_path / "ref.png"
    image.write_bytes(sample_png(256, 256, 40))
    jobs = tmp_path / "jobs.jsonl"
    row = {"model": "viduq2", "images": [str(image)]}
    jobs.write_text(json.dumps({"custom_id": "done", "prompt": "one", **row}) + "\n")
    out = tmp_path / "results.jsonl"
    assert await submit(jobs, "--wait", "--results", str(out)) == 0
    (first,) = results(out)
    with jobs.open("a") as handle:
        handle.write(json.dumps({"custom_id": "sent", "prompt": "two", **row}) + "\n")
    assert await submit(jobs, "--results", str(out)) == 0
    sent_task = {str(r["custom_id"]): r for r in results(out)}["sent"]["task_id"]
    image.unlink()
    assert await submit(jobs, "--wait", "--results", str(out)) == 1
    again = {str(r["custom_id"]): r for r in results(out)}
    assert again["done"] == first
    assert again["sent"]["status"] == "invalid"
    error = again["sent"]["error"]
    assert isinstance(error, dict)
    assert f"an earlier run sent this job (task {sent_task})" in str(error["message"])
    assert sim.stats.tasks_created == 2


# --- the budget ---------------------------------------------------------------------------------


async def test_max_credits_is_a_hard_cap_across_reruns(
    sim: FakeVidu, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    jobs = tmp_path / "prompts.txt"
    write_prompts(jobs, [f"budget {i}" for i in range(6)])
    out = tmp_path / "results.jsonl"
    cap = COST * 5 // 2
    start = sim.balance()
    for rerun in range(3):
        code = await submit(jobs, "--wait", "--results", str(out), "--max-credits", str(cap))
        assert code == 1, f"rerun {rerun}"
        assert start - sim.balance() <= cap, f"rerun {rerun}"
        statuses = Counter(str(r["status"]) for r in results(out))
        assert statuses == {"succeeded": 2, "not_submitted": 4}, f"rerun {rerun}"
        assert f"BudgetReached: max_credits {cap} reached" in capfd.readouterr().err
    assert sim.stats.tasks_created == 2
    assert start - sim.balance() == 2 * COST


async def test_max_credits_counts_the_tasks_found_after_a_lost_journal(
    sim: FakeVidu, tmp_path: Path
) -> None:
    jobs = tmp_path / "prompts.txt"
    write_prompts(jobs, [f"budget {i}" for i in range(6)])
    cap = str(COST * 5 // 2)
    start = sim.balance()
    assert await submit(jobs, "--wait", "--max-credits", cap) == 1
    assert sim.stats.tasks_created == 2
    (tmp_path / "prompts.txt.journal.jsonl").unlink()
    # The rerun finds the batch's two tasks (90 credits): only 22 of the cap are left, and the
    # found tasks show what one costs, so nothing is sent to learn the price (a task sent to
    # learn it could start before its cancel and be paid: 135 spent, over the cap).
    assert await submit(jobs, "--wait", "--max-credits", cap) == 1
    assert sim.stats.tasks_created == 2
    assert start - sim.balance() == 2 * COST


async def test_another_jobs_file_of_the_same_name_spends_none_of_this_ones_budget(
    sim: FakeVidu, tmp_path: Path
) -> None:
    """``a/jobs.txt`` and ``b/jobs.txt`` share the batch's name (its tag), not their lines: the
    tasks of ``a`` are found on the account but adopted by no job of ``b``, so they are not in
    ``b``'s budget."""
    first, second = tmp_path / "a" / "jobs.txt", tmp_path / "b" / "jobs.txt"
    first.parent.mkdir()
    second.parent.mkdir()
    write_prompts(first, [f"a {i}" for i in range(4)])
    write_prompts(second, ["b 0", "b 1"])
    assert await submit(first, "--wait") == 0
    out = tmp_path / "results.jsonl"
    assert await submit(second, "--wait", "--results", str(out),
                        "--max-credits", str(2 * COST)) == 0
    assert {r["status"] for r in results(out)} == {"succeeded"}
    assert sim.stats.tasks_created == 6


async def test_max_credits_zero_sends_nothing_and_says_why(
    sim: FakeVidu, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    jobs = tmp_path / "prompts.txt"
    write_prompts(jobs, ["a cat", "a dog"])
    out = tmp_path / "results.jsonl"
    assert await submit(jobs, "--results", str(out), "--max-credits", "0") == 1
    assert sim.stats.tasks_created == 0
    assert sim.stats.requests_to("create") == 0
    assert {r["status"] for r in results(out)} == {"not_submitted"}
    assert "stopped submitting: BudgetReached: max_credits 0 reached" in capfd.readouterr().err


@pytest.fixture
async def slow_to_start(cli_env: Callable[[FakeVidu], None]) -> AsyncIterator[FakeVidu]:
    """Tasks wait a second before they queue: time enough to cancel one on a busy machine."""
    async with simulator(cli_env, Timeline(created=1.0, processing=0.05)) as fake:
        yield fake


async def test_a_job_the_budget_stopped_is_sent_by_a_rerun_with_more_budget(
    slow_to_start: FakeVidu, tmp_path: Path
) -> None:
    sim = slow_to_start
    jobs = tmp_path / "prompts.txt"
    write_prompts(jobs, ["a cat", "a dog"])
    out = tmp_path / "results.jsonl"
    start = sim.balance()
    # The first task's price is not known yet: it goes alone, costs more than the cap, and is
    # cancelled before it starts (free).
    assert await submit(jobs, "--wait", "--results", str(out), "--max-credits", "30") == 1
    assert start - sim.balance() == 0
    assert {r["status"] for r in results(out)} == {"not_submitted"}
    # Nothing was billed, so a cap of two tasks sends both jobs.
    code = await submit(jobs, "--wait", "--results", str(out), "--max-credits", str(2 * COST))
    assert {str(r["status"]): r["err_code"] for r in results(out)} == {"succeeded": None}
    assert start - sim.balance() == 2 * COST
    assert code == 0


# --- a new batch on purpose ---------------------------------------------------------------------


async def test_fresh_needs_a_new_journal_and_then_pays_again_on_purpose(
    sim: FakeVidu, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    jobs = tmp_path / "prompts.txt"
    write_prompts(jobs, ["a cat", "a dog", "a fox"])
    assert await submit(jobs, "--results", str(tmp_path / "first.jsonl")) == 0
    capfd.readouterr()
    assert await submit(jobs, "--fresh") == 2
    err = capfd.readouterr().err
    assert "--fresh starts a new batch" in err
    assert str(tmp_path / "prompts.txt.journal.jsonl") in err
    assert "to resume that batch, rerun without --fresh" in err
    assert sim.stats.tasks_created == 3
    out = tmp_path / "second.jsonl"
    new_journal = tmp_path / "again.journal.jsonl"
    assert await submit(jobs, "--fresh", "--journal", str(new_journal),
                        "--results", str(out)) == 0
    assert sim.stats.tasks_created == 6
    assert sim.stats.duplicate_payloads() == {}
    assert prompts_of_tasks(sim) == Counter({"a cat": 2, "a dog": 2, "a fox": 2})
    first_ids = {r["task_id"] for r in results(tmp_path / "first.jsonl")}
    assert first_ids.isdisjoint(r["task_id"] for r in results(out))


# --- journals that cannot be used ---------------------------------------------------------------


def corrupt_middle_line(journal: Path) -> None:
    header = json.dumps({"v": 2, "kind": "batch", "batch_id": "prompts.txt"})
    journal.write_text(f"{header}\n{{this is not json\n{header}\n")


def named_pipe(journal: Path) -> None:
    os.mkfifo(journal)


def folder_is_a_file(journal: Path) -> None:
    journal.parent.write_text("not a folder\n")


@pytest.mark.parametrize(
    ("make", "where", "says"),
    [
        (corrupt_middle_line, "journal.jsonl", "journal.jsonl:2: not JSON"),
        (named_pipe, "journal.jsonl", "is a named pipe, not a regular file"),
        (folder_is_a_file, "plain-file/journal.jsonl", "cannot use journal"),
    ],
)
async def test_a_journal_that_cannot_be_used_is_one_line_exit_2_and_sends_nothing(
    sim: FakeVidu, tmp_path: Path, capfd: pytest.CaptureFixture[str],
    make: Callable[[Path], None], where: str, says: str,
) -> None:
    jobs = tmp_path / "prompts.txt"
    write_prompts(jobs, ["a cat", "a dog"])
    journal = tmp_path / where
    make(journal)
    assert await submit(jobs, "--journal", str(journal)) == 2
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("vidu-async submit: ")
    assert str(journal) in err[0]
    assert says in err[0]
    assert requests_sent(sim) == 0


# --- download names -----------------------------------------------------------------------------


async def test_non_ascii_and_colliding_ids_download_to_their_own_files(
    sim: FakeVidu, tmp_path: Path
) -> None:
    ids = ["猫-1", "狗-1", "鱼", "鸟", "Cat", "cat"]
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("".join(
        json.dumps({"custom_id": i, "prompt": f"animal {n}"}, ensure_ascii=False) + "\n"
        for n, i in enumerate(ids)
    ), encoding="utf-8")
    videos = tmp_path / "videos"
    out = tmp_path / "results.jsonl"
    assert await submit(jobs, "--download", str(videos), "--results", str(out)) == 0
    files = {str(r["custom_id"]): r["files"] for r in results(out)}
    assert sorted(p.name for p in videos.iterdir()) == sorted(
        f"{safe_stem(i)}.mp4" for i in ids
    )
    assert {i: f for i, f in files.items()} == {i: [str(videos / f"{safe_stem(i)}.mp4")]
                                                for i in ids}
    # Names that were safe stay as they are; a case that could meet another on a
    # case-insensitive disk gets a suffix.
    assert [safe_stem(i) for i in ("猫-1", "狗-1", "鱼", "鸟", "cat")] == [
        "猫-1", "狗-1", "鱼", "鸟", "cat"
    ]
    assert safe_stem("Cat").startswith("Cat-") and len(safe_stem("Cat")) == len("Cat-") + 12
