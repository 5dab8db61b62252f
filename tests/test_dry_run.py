"""``vidu-async submit --dry-run`` against the simulator: the summary, exit codes, nothing
created, paths checked without leaving files, a finished journal's jobs replayed; and the
``type`` every results line carries."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from vidu_async.batch import BatchOptions
from vidu_async.batch.identity import cost_class, job_facts
from vidu_async.batch.submitter import account_label
from vidu_async.cli import main
from vidu_async.client import ViduClient
from vidu_async.dryrun import DryRun, Group, dry_run, render, resume_line
from vidu_async.jobs import read_jobs
from vidu_async.journal import Journal
from vidu_async.outcome import Outcome
from vidu_async.requests import TextToVideoRequest
from vidu_async.tasks import CreditBalance
from vidu_async.testing import FakeVidu, Timeline

URL = "https://example.com/ref.png"
FAST = Timeline(created=0.01, processing=0.05)
REF = {"model": "viduq2", "images": [URL], "duration": 5}
TEXT = {"type": "text2video", "model": "viduq2", "duration": 5, "resolution": "720p"}


@pytest.fixture
async def sim(cli_env: Callable[[FakeVidu], None]) -> AsyncIterator[FakeVidu]:
    async with FakeVidu(timeline=FAST, concurrency_limit=20, credits=1000, seed=3) as fake:
        cli_env(fake)
        yield fake


def write_jobs(path: Path, *lines: dict[str, object] | str) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


async def submit(jobs: Path, *extra: str) -> int:
    args = ["submit", str(jobs), "--quiet", "--poll-interval", "0.02",
            "--visibility-lag", "0.5", *extra]
    code: int = await asyncio.to_thread(main, args)
    return code


def mixed(path: Path) -> Path:
    return write_jobs(
        path,
        {"custom_id": "a", "prompt": "a cat", **REF},
        {"custom_id": "b", "prompt": "a dog", **REF},
        {"custom_id": "c", "prompt": "a fox", **TEXT},
        {"custom_id": "d", "prompt": "a heron", **REF, "duration": 99},
    )


async def test_a_dry_run_prints_what_would_be_sent_and_creates_nothing(
    sim: FakeVidu, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    jobs = mixed(tmp_path / "jobs.jsonl")
    results = tmp_path / "out" / "results.jsonl"
    (tmp_path / "out").mkdir()
    code = await submit(jobs, "--dry-run", "--results", str(results),
                        "--download", str(tmp_path / "videos" / "new"))
    out, err = capfd.readouterr()
    assert code == 1  # line 4 is invalid
    assert f"{jobs}:4: error: duration: viduq2 accepts 1..10 seconds, got 99" in err
    assert out.splitlines() == [
        f"dry run of {jobs}: nothing is created",
        "  4 lines: 3 valid, 1 invalid",
        "  to send: 3 jobs",
        "    2 x reference2video viduq2 5s default resolution: price unknown",
        "    1 x text2video viduq2 5s 720p: price unknown",
        "  estimate: at least 0 credits (3 jobs of unknown price: prices are learned from this "
        "journal's tasks; there is no published table to estimate by)",
        "account: 1000 credits left (metered), concurrency 0/20, 0 queued",
    ]
    assert sim.stats.tasks_created == 0
    assert sim.stats.requests_to("credits") == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["jobs.jsonl", "out"]


async def test_a_dry_run_refuses_a_payload_only_submit_used_to_refuse(
    sim: FakeVidu, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl",
                      {"custom_id": "a", "prompt": "a cat", **TEXT, "payload": "p" * 1_048_540})
    assert await submit(jobs, "--dry-run") == 1
    assert (f"{jobs}:1: error: payload: viduq2 accepts at most 1048539 characters through this "
            "client (the API's 1048576 less 37 for the correlation key") in capfd.readouterr().err
    assert sim.stats.tasks_created == 0


async def test_a_finished_journal_replays_its_jobs_and_prices_the_rest(
    sim: FakeVidu, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl",
                      {"custom_id": "a", "prompt": "a cat", **REF},
                      {"custom_id": "c", "prompt": "a fox", **TEXT})
    assert await submit(jobs, "--wait", "--results", str(tmp_path / "r.jsonl")) == 0
    mixed(jobs)
    journal = jobs.with_name("jobs.jsonl.journal.jsonl")
    before = journal.read_bytes()
    capfd.readouterr()
    assert await submit(jobs, "--dry-run", "--max-credits", "120") == 1
    assert capfd.readouterr().out.splitlines()[1:] == [
        "  4 lines: 3 valid, 1 invalid",
        "  done (replayed): 2 jobs, no credits",
        "  to send: 1 job",
        "    1 x reference2video viduq2 5s default resolution: 45 credits each, 45",
        "  estimate: 45 credits",
        "  over --max-credits 120: the batch spent 93 and would need 45 more; submitting "
        "stops at the cap",
        "account: 907 credits left (metered), concurrency 0/20, 0 queued",
    ]
    assert journal.read_bytes() == before
    assert sim.stats.tasks_created == 2


async def test_a_create_whose_answer_was_never_recorded_is_counted_as_looked_up_first(
    sim: FakeVidu, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A run that died between a job's intent and its answer: the dry run and the resuming
    line count that job apart (looked up by key, never counted as sent, nor as followed)."""
    jobs = write_jobs(tmp_path / "jobs.jsonl", {"custom_id": "a", "prompt": "a cat", **REF})
    assert await submit(jobs, "--wait", "--results", str(tmp_path / "r.jsonl")) == 0
    write_jobs(jobs, {"custom_id": "a", "prompt": "a cat", **REF},
               {"custom_id": "b", "prompt": "a dog", **REF})
    [_, b] = [line.job for line in read_jobs(jobs)]
    assert b is not None
    path = jobs.with_name("jobs.jsonl.journal.jsonl")
    async with await Journal.open(path, batch_id="unused") as journal:
        facts = await job_facts(b, journal.batch_id, 0)
        async with ViduClient(sim.api_key, base_url=sim.url) as client:
            await journal.intent("b", key=facts.key, account=account_label(client),
                                 fingerprint=facts.fingerprint, cost_class=cost_class(b.request),
                                 server_at=0.0)
    capfd.readouterr()
    assert await submit(jobs, "--dry-run") == 0
    out = capfd.readouterr().out.splitlines()
    assert "  done (replayed): 1 job, no credits" in out
    assert ("  sent earlier, answer never recorded (looked up first, sent again only if proven "
            "absent): 1 job") in out
    assert "  to send: 0 jobs" in out
    assert resume_line(await dry_run_of(jobs, sim)) == (
        "resuming: 1 done, 0 being followed, 1 to look up, 0 to submit")


async def dry_run_of(jobs: Path, sim: FakeVidu) -> DryRun:
    async with ViduClient(sim.api_key, base_url=sim.url) as client:
        return await dry_run(jobs, [client], BatchOptions(journal=jobs.with_name(
            jobs.name + ".journal.jsonl"), batch_id=jobs.name), defaults={}, results=None,
            messages=io.StringIO(), balances=False)


async def test_exit_codes_key_journal_in_use_and_unwritable_paths(
    sim: FakeVidu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", {"custom_id": "a", "prompt": "a cat", **REF})
    assert await submit(jobs, "--dry-run") == 0
    a_file = tmp_path / "file"
    a_file.write_text("")
    capfd.readouterr()
    assert await submit(jobs, "--dry-run", "--results", str(a_file / "r.jsonl")) == 2
    assert f"cannot write the results file {a_file / 'r.jsonl'}" in capfd.readouterr().err
    assert await submit(jobs, "--dry-run", "--download", str(a_file / "videos")) == 2
    assert f"cannot save videos in {a_file / 'videos'}" in capfd.readouterr().err
    assert await submit(jobs, "--dry-run", "--download", str(a_file)) == 2
    assert await submit(jobs, "--dry-run", "--journal", str(a_file / "j.jsonl")) == 2
    assert f"cannot create the journal {a_file / 'j.jsonl'}" in capfd.readouterr().err
    assert a_file.read_text() == ""
    monkeypatch.setenv("VIDU_API_KEY", "wrong-key")
    assert await submit(jobs, "--dry-run") == 3
    monkeypatch.setenv("VIDU_API_KEY", sim.api_key)
    assert sim.stats.tasks_created == 0
    assert not jobs.with_name("jobs.jsonl.journal.jsonl").exists()


@pytest.mark.parametrize(("flag", "kind"), [("--results", "results"), ("--errors", "errors")])
async def test_a_missing_folder_is_exit_2_in_the_same_words_with_or_without_dry_run(
    sim: FakeVidu, tmp_path: Path, capfd: pytest.CaptureFixture[str], flag: str, kind: str
) -> None:
    # The dry run passed a missing --errors folder (exit 0) that the run then refused.
    jobs = write_jobs(tmp_path / "jobs.jsonl", {"custom_id": "a", "prompt": "a cat", **REF})
    path = tmp_path / "missing" / "out.jsonl"
    said = (f"vidu-async submit: cannot write the {kind} file {path}: the folder "
            f"{path.parent} does not exist\n")
    for dry in (["--dry-run"], []):
        assert await submit(jobs, flag, str(path), *dry) == 2
        assert capfd.readouterr().err == said
    assert sim.stats.tasks_created == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs.jsonl"]


async def test_a_journal_in_use_is_exit_2(sim: FakeVidu, tmp_path: Path,
                                          capfd: pytest.CaptureFixture[str]) -> None:
    from vidu_async.journal import Journal

    jobs = write_jobs(tmp_path / "jobs.jsonl", {"custom_id": "a", "prompt": "a cat", **REF})
    journal = await Journal.open(tmp_path / "j.jsonl", batch_id="jobs.jsonl")
    try:
        assert await submit(jobs, "--dry-run", "--journal", str(tmp_path / "j.jsonl")) == 2
    finally:
        await journal.close()
    assert "is in use by" in capfd.readouterr().err
    assert sim.stats.tasks_created == 0


def test_the_estimate_is_priced_by_learned_cost_class_only() -> None:
    request = TextToVideoRequest(prompt="x", model="viduq2", duration=4, off_peak=True)
    group = Group.of(request)
    assert group.label() == "text2video viduq2 4s default resolution off-peak"
    balance = CreditBalance(type="", credit_remain=10, concurrency_limit=None,
                            current_concurrency=1, queue_count=0)
    run = DryRun("j", 2, 0, 0, 0, {group: 2}, {group.cost_class: 12}, 0, None,
                 (("account", balance),))
    assert render(run)[2:] == [
        "  to send: 2 jobs",
        "    2 x text2video viduq2 4s default resolution off-peak: 12 credits each, 24",
        "  estimate: 24 credits",
        "account: 10 credits left, concurrency 1/?, 0 queued",
        "  the credits left are fewer than the estimate's 24: submitting stops when they run "
        "out (a rerun after a top-up goes on)",
    ]


async def test_every_results_line_names_its_endpoint_type(
    sim: FakeVidu, tmp_path: Path
) -> None:
    jobs = mixed(tmp_path / "jobs.jsonl")
    out = tmp_path / "r.jsonl"
    assert await submit(jobs, "--results", str(out)) == 1
    again = tmp_path / "again.jsonl"
    assert await submit(jobs, "--results", str(again)) == 1  # replayed from the journal
    for path in (out, again):
        records = [json.loads(line) for line in path.read_text().splitlines()]
        assert {r["custom_id"]: r["type"] for r in records} == {
            "a": "reference2video", "b": "reference2video", "c": "text2video",
            "d": "reference2video",
        }


def test_an_outcome_record_without_type_still_loads() -> None:
    old = Outcome("a", "succeeded", 1).to_dict()
    del old["type"]
    assert Outcome.from_dict(old).kind is None
    assert Outcome.from_dict({**old, "type": "img2video"}).kind == "img2video"
