"""After a run, through the real CLI against the simulator: jobs from stdin, the list of the jobs
that did not succeed and what to do about each, and the ``--errors`` file submitted as is."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from vidu_async.cli import main
from vidu_async.demo import sample_png
from vidu_async.failures import Failure, failure_of, render
from vidu_async.jobs import sniff_format
from vidu_async.outcome import ErrorInfo, Outcome
from vidu_async.testing import FakeVidu, Timeline

URL = "https://example.com/ref.png"
FAST = Timeline(created=0.01, processing=0.05)
FLAKY = Timeline(created=0.01, processing=0.05, failure_rate=0.5,
                 failure_codes=("InternalServiceFailure",))


@pytest.fixture
async def sim(cli_env: Callable[[FakeVidu], None]) -> AsyncIterator[FakeVidu]:
    async with FakeVidu(timeline=FAST, concurrency_limit=20, seed=3) as fake:
        cli_env(fake)
        yield fake


def submit_args(jobs: str | Path, *extra: str) -> list[str]:
    return ["submit", str(jobs), "--model", "viduq2", "--image", URL, "--quiet",
            "--poll-interval", "0.02", "--visibility-lag", "0.5", *extra]


async def run(argv: list[str]) -> int:
    code: int = await asyncio.to_thread(main, argv)
    return code


def results(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text.encode())))


# --- stdin --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("head", "fmt"), [
    (b'{"prompt": "a cat"}\n', "jsonl"),
    (b'\n\n  {"prompt": "a cat"}\n', "jsonl"),
    (b'\xef\xbb\xbf{"prompt": "a cat"}\n', "jsonl"),
    (b"custom_id,prompt\nc1,a cat\n", "csv"),
    (b"Custom ID,Prompt,Aspect Ratio\nc1,a cat,16:9\n", "csv"),
    (b"prompt,\na cat,\n", "csv"),
    (b"a cat, a dog\n", "txt"),
    (b"prompt, and then some\n", "txt"),
    (b"a cat\n", "txt"),
    (b"", "txt"),
])
def test_stdin_format_is_sniffed_from_its_first_line(head: bytes, fmt: str) -> None:
    assert sniff_format(head)[0] == fmt


async def test_validate_reads_stdin_once_and_names_it_and_its_format(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    stdin(monkeypatch, 'custom_id,prompt,duration\nok,a cat,5\nbad,a dog,99\n')
    assert await run(["validate", "-", "--model", "viduq2", "--image", URL]) == 1
    err = capfd.readouterr().err
    assert "reading <stdin> as csv: its first line is a header of field names" in err
    assert "<stdin>:3: error: duration: viduq2 accepts 1..10 seconds, got 99" in err
    assert "<stdin>: 2 jobs, 1 valid, 1 invalid" in err


async def test_relative_media_from_stdin_resolve_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "ref.png").write_bytes(sample_png(256, 256, 40))
    monkeypatch.chdir(tmp_path)
    line = '{"prompt": "a cat", "images": ["ref.png"]}\n'
    stdin(monkeypatch, line)
    assert await run(["validate", "-", "--model", "viduq2"]) == 0
    monkeypatch.chdir(tmp_path.parent)
    stdin(monkeypatch, line)
    assert await run(["validate", "-", "--model", "viduq2"]) == 1
    assert "ref.png" in capfd.readouterr().err


async def test_format_overrides_the_sniff_and_an_unusual_extension(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    stdin(monkeypatch, "custom_id,prompt\n")  # a prompt that looks like a header
    assert await run(["validate", "-", "--format", "txt", "--type", "text2video",
                      "--model", "viduq2"]) == 0
    assert "<stdin>: 1 job, 1 valid" in capfd.readouterr().err
    data = tmp_path / "jobs.data"
    data.write_text('{"prompt": "a cat"}\n')
    assert await run(["validate", str(data), "--model", "viduq2", "--image", URL]) == 2
    assert "use .jsonl" in capfd.readouterr().err
    assert await run(["validate", str(data), "--format", "jsonl", "--model", "viduq2",
                      "--image", URL]) == 0


async def test_submit_from_stdin_needs_a_journal_and_sends_nothing_without(
    sim: FakeVidu, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    stdin(monkeypatch, "a cat\n")
    assert await run(submit_args("-")) == 2
    assert "jobs from - need --journal FILE" in capfd.readouterr().err
    assert sim.stats.tasks_created == 0


async def test_submit_from_stdin_runs_and_a_rerun_of_the_same_input_pays_nothing(
    sim: FakeVidu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    journal = tmp_path / "cats.journal.jsonl"
    out = tmp_path / "results.jsonl"
    prompts = "a cat\na dog\n"
    stdin(monkeypatch, prompts)
    argv = submit_args("-", "--journal", str(journal), "--wait", "--results", str(out))
    assert await run(argv) == 0
    assert [r["status"] for r in results(out)] == ["succeeded", "succeeded"]
    assert sim.stats.tasks_created == 2
    journal.unlink()  # even a lost journal: the same --journal name is the same batch
    stdin(monkeypatch, prompts)
    assert await run(argv) == 0
    assert sim.stats.tasks_created == 2


# --- the jobs that did not succeed --------------------------------------------------------------


def outcome(status: str, **fields: object) -> Outcome:
    return Outcome("cat", status, 12, **fields)  # type: ignore[arg-type]


FAILED_ON_VIDU = outcome("failed", task_id="t1", state="failed", err_code="InternalServiceFailure",
                         error=ErrorInfo("InternalServiceFailure", "the task failed"))
REFUSED = outcome("failed", error=ErrorInfo("FieldInvalid", "model: unknown model 'viduq9'"))
NOT_SAVED = outcome("failed", task_id="t1", state="success",
                    error=ErrorInfo("DownloadFailed", "disk full"))


@pytest.mark.parametrize(("result", "retry_failed", "says", "resubmit"), [
    (outcome("invalid", error=ErrorInfo("ValidationError", "duration: allowed 4, 8")), False,
     "fix line 12: duration: allowed 4, 8; then rerun", True),
    (outcome("invalid", error=ErrorInfo("RequestChanged", "give it a new custom_id")), False,
     "give it a new custom_id", True),
    (outcome("invalid", error=ErrorInfo("AccountNotGiven", "give that key again")), False,
     "give that key again", False),
    (FAILED_ON_VIDU, False, "task t1 failed on Vidu (InternalServiceFailure): rerun with "
     "--retry-failed to make a new task", True),
    # --retry-failed given: the task still failed is this run's retry of the job.
    (FAILED_ON_VIDU, True, "task t1 failed on Vidu (InternalServiceFailure), and was this run's "
     "retry of the job (one a run): rerun with --retry-failed", True),
    (outcome("failed", task_id="t1", state="failed", err_code="UserCancelled",
             error=ErrorInfo("UserCancelled", "the task failed")), False,
     "task t1 was cancelled before it started", True),
    # The create was refused (a 400): no task, nothing made, nothing billed.
    (REFUSED, False, "Vidu refused the create, no task was made (FieldInvalid: model: unknown "
     "model 'viduq9'): fix the line, then submit it in a new batch", True),
    (REFUSED, True, "Vidu refused the create, no task was made", True),
    (NOT_SAVED, False, "the video was made but not saved (disk full): rerun to download", False),
    (NOT_SAVED, True, "the video was made but not saved (disk full): rerun to download", False),
    (outcome("not_submitted", error=ErrorInfo("BudgetReached", "max_credits is spent")), False,
     "not sent (max_credits is spent): rerun once that is fixed", True),
    (outcome("ambiguous", error=ErrorInfo("AmbiguousCreate", "could not be proven")), False,
     "rerun with the same journal to look it up", False),
    (outcome("duplicate", task_id="t2", error=ErrorInfo("DuplicateTask", "a second task")),
     False, "a second task", False),
])
def test_each_failure_says_what_to_do(
    result: Outcome, retry_failed: bool, says: str, resubmit: bool
) -> None:
    failure = failure_of(result, retry_failed=retry_failed)
    assert failure is not None
    assert says in failure.advice
    assert failure.resubmit is resubmit


def test_success_is_no_failure_and_the_list_is_capped() -> None:
    assert failure_of(outcome("succeeded", task_id="t")) is None
    assert failure_of(outcome("submitted", task_id="t")) is None
    many = [Failure(f"job-{i}", i, "invalid", "ValidationError", "fix it", True)
            for i in range(25)]
    lines = render(many, errors=Path("errors.jsonl"))
    assert lines[0] == "25 jobs did not succeed:"
    assert lines[1] == "  job-0 (line 0): invalid: fix it"
    assert len(lines) == 1 + 20 + 1
    assert lines[-1] == "  and 5 more: see errors.jsonl"
    assert render([]) == []


@pytest.mark.parametrize(("custom_id", "shown"), [
    ("cat", "cat"), (" ", "' '"), ("", "''"), (" cat", "' cat'"), ("cat\t", "'cat\\t'"),
    ("a cat", "a cat"),
])
def test_an_id_that_would_not_show_is_quoted(custom_id: str, shown: str) -> None:
    [_, line] = render([Failure(custom_id, 3, "invalid", "ValidationError", "fix it", True)])
    assert line == f"  {shown} (line 3): invalid: fix it"


async def test_a_refused_create_goes_to_the_errors_file_and_a_new_batch_makes_it(
    sim: FakeVidu, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"custom_id": "a", "prompt": "x", "model": "viduq9"}\n'
                    '{"custom_id": "b", "prompt": "y"}\n')
    errors = tmp_path / "errors.jsonl"
    out = tmp_path / "results.jsonl"
    assert await run(submit_args(jobs, "--results", str(out), "--errors", str(errors))) == 1
    err = capfd.readouterr().err
    assert "  a (line 1): failed: Vidu refused the create, no task was made" in err
    assert "made but not saved" not in err and "not in it" not in err
    assert results(errors) == [{"custom_id": "a", "model": "viduq9", "images": [URL],
                                "prompt": "x"}]
    assert sim.stats.tasks_created == 1
    errors.write_text(errors.read_text().replace("viduq9", "viduq2"))
    assert await run(["submit", str(errors), "--quiet", "--results", str(out)]) == 0
    assert sim.stats.tasks_created == 2


async def test_a_task_failing_again_under_retry_failed_says_it_was_this_runs_retry(
    cli_env: Callable[[FakeVidu], None], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    jobs = tmp_path / "prompts.txt"
    jobs.write_text("a cat\n")
    always = Timeline(created=0.01, processing=0.05, failure_rate=1.0,
                      failure_codes=("InternalServiceFailure",))
    async with FakeVidu(timeline=always) as fake:
        cli_env(fake)
        assert await run(submit_args(jobs, "--wait", "--results", str(tmp_path / "1"))) == 1
        capfd.readouterr()
        assert await run(submit_args(jobs, "--wait", "--retry-failed",
                                     "--results", str(tmp_path / "2"))) == 1
        assert fake.stats.tasks_created == 2
    err = capfd.readouterr().err
    assert "failed on Vidu (InternalServiceFailure), and was this run's retry" in err
    assert "rerun with --retry-failed to make a new task" not in err


async def test_the_run_ends_with_the_failed_jobs_and_errors_writes_them_resubmittable(
    cli_env: Callable[[FakeVidu], None],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    jobs = tmp_path / "jobs.jsonl"
    lines = [
        "this is not json",
        '{"custom_id": "long", "prompt": "too long", "duration": 99}',
        *(f'{{"custom_id": "job-{i}", "prompt": "prompt {i}"}}' for i in range(8)),
    ]
    jobs.write_text("\n".join(lines) + "\n")
    errors = tmp_path / "elsewhere" / "errors.jsonl"
    errors.parent.mkdir()
    out = tmp_path / "results.jsonl"
    async with FakeVidu(timeline=FLAKY, concurrency_limit=20, seed=5) as fake:
        cli_env(fake)
        assert await run(submit_args(jobs, "--wait", "--results", str(out),
                                     "--errors", str(errors))) == 1
        err = capfd.readouterr().err
        by_id = {r["custom_id"]: r for r in results(out)}
        failed = sorted(str(k) for k, r in by_id.items() if r["status"] == "failed")
        assert failed, "the simulator's seed fails some tasks"
        assert f"{len(failed) + 2} jobs did not succeed:" in err
        assert "  (id not read) (line 1): invalid: fix line 1: (line): not valid JSON" in err
        assert "  long (line 2): invalid: fix line 2: duration: viduq2 accepts 1..10" in err
        for custom_id in failed:
            task = by_id[custom_id]["task_id"]
            assert f"  {custom_id} (line {by_id[custom_id]['line']}): failed: task {task} " \
                   "failed on Vidu (InternalServiceFailure): rerun with --retry-failed" in err
        assert f"errors: {len(failed) + 1} jobs to send again written to {errors}" in err
        assert "  not in it: (id not read): line 1: not valid JSON" in err
        written = results(errors)
        assert [r["custom_id"] for r in written] == ["long", *failed]
        assert written[0] == {"custom_id": "long", "model": "viduq2", "images": [URL],
                              "prompt": "too long", "duration": 99}
        created = fake.stats.tasks_created

        # Fixed and submitted as is, from another folder, without the first run's flags.
        text = errors.read_text().replace('"duration": 99', '"duration": 5')
        errors.write_text(text)
        monkeypatch.chdir(errors.parent)
        again = tmp_path / "again.jsonl"
        code = await run(["submit", "errors.jsonl", "--quiet", "--poll-interval", "0.02",
                          "--visibility-lag", "0.5", "--wait", "--results", str(again)])
        assert code in (0, 1)  # the flaky simulator may fail a task again
        assert sorted(str(r["custom_id"]) for r in results(again)) == sorted(["long", *failed])
        assert fake.stats.tasks_created == created + len(failed) + 1


@pytest.mark.parametrize("where", ["the jobs file", "a folder that is a file"])
async def test_an_errors_path_that_cannot_be_used_is_exit_2_before_anything_is_sent(
    sim: FakeVidu, tmp_path: Path, capfd: pytest.CaptureFixture[str], where: str
) -> None:
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("a cat\n")
    (tmp_path / "file").write_text("")
    errors = jobs if where == "the jobs file" else tmp_path / "file" / "errors.jsonl"
    assert await run(submit_args(jobs, "--errors", str(errors))) == 2
    assert str(errors) in capfd.readouterr().err
    assert jobs.read_text() == "a cat\n"
    assert sim.stats.tasks_created == 0


async def test_a_dry_run_from_stdin_names_it(
    sim: FakeVidu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    stdin(monkeypatch, "a cat\na dog\n")
    journal = tmp_path / "j.jsonl"
    assert await run(submit_args("-", "--journal", str(journal), "--dry-run")) == 0
    out = capfd.readouterr().out
    assert "dry run of <stdin>: nothing is created" in out
    assert "to send: 2 jobs" in out
    assert sim.stats.tasks_created == 0


async def test_a_bad_line_from_stdin_is_named_by_its_line(
    sim: FakeVidu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    stdin(monkeypatch, '{"prompt": "a cat"}\n{"prompt": "a dog", "duration": 99}\n')
    assert await run(submit_args("-", "--journal", str(tmp_path / "j.jsonl"))) == 1
    err = capfd.readouterr().err
    assert "reading <stdin> as jsonl: it starts with {" in err
    assert "<stdin>:2: error: duration: viduq2 accepts 1..10 seconds, got 99" in err
    assert sim.stats.tasks_created == 1


async def test_a_line_whose_id_cannot_be_read_is_null_by_its_line_never_another_jobs_id(
    sim: FakeVidu, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"custom_id": "line-3", "prompt": "a cat"}\n'
                    '{not json\n'
                    '{"custom_id": "dog", "prompt": "a dog", "duration": 99}\n'
                    '{"custom_id": "line-2", "prompt": "an eel"}\n')
    out, errors = tmp_path / "results.jsonl", tmp_path / "errors.jsonl"
    args = [a for a in submit_args(jobs, "--results", str(out), "--errors", str(errors))
            if a != "--quiet"]  # the progress display too
    assert await run(args) == 1
    got = sorted((r["line"], r["custom_id"], r["status"]) for r in results(out))
    assert got == [(1, "line-3", "submitted"), (2, None, "invalid"), (3, "dog", "invalid"),
                   (4, "line-2", "submitted")]
    err = capfd.readouterr().err
    assert "2 jobs did not succeed:" in err
    assert "  (id not read) (line 2): invalid: fix line 2: " in err
    assert "  not in it: (id not read): line 2: " in err
    assert [r["custom_id"] for r in results(errors)] == ["dog"]
    assert "4 jobs in " in err and "(2 submitted, 2 invalid)" in err  # the progress's end
    assert sim.stats.tasks_created == 2
