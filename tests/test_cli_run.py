"""``vidu-async submit`` before paying and while it runs, off a terminal: a resumed batch says
what it found, the summary separates this run's credits from the batch's, a budget the estimate
exceeds is said before any create, unwritable paths stop a real run before the first create,
``-v`` logs the reasons of retries and never the key, and nothing ever waits for an answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from vidu_async.cli import main
from vidu_async.dryrun import DryRun, Group, needs_confirmation, resume_line
from vidu_async.requests import ReferenceToVideoRequest
from vidu_async.testing import EndpointFaults, FakeVidu, Faults, Timeline

URL = "https://example.com/ref.png"
FAST = Timeline(created=0.01, processing=0.05)
REF = {"model": "viduq2", "images": [URL], "duration": 5}
COST = 45
"""What one viduq2 reference2video task of 5 s costs in the simulator."""


@pytest.fixture
async def sim(cli_env: Callable[[FakeVidu], None]) -> AsyncIterator[FakeVidu]:
    async with FakeVidu(timeline=FAST, concurrency_limit=20, seed=5) as fake:
        cli_env(fake)
        yield fake


def write_jobs(path: Path, ids: list[str], *extra: str) -> Path:
    lines = [json.dumps({"custom_id": i, "prompt": f"a {i}", **REF}) for i in ids]
    path.write_text("".join(f"{line}\n" for line in [*lines, *extra]))
    return path


async def submit(jobs: Path, *extra: str) -> int:
    args = ["submit", str(jobs), "--poll-interval", "0.02", "--visibility-lag", "0.5", *extra]
    code: int = await asyncio.to_thread(main, args)
    return code


async def test_a_resumed_batch_says_what_it_found_and_splits_the_credits(
    sim: FakeVidu, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", ["cat", "dog"])
    results = tmp_path / "r.jsonl"
    # Off a terminal nothing asks, even with unknown prices and a tiny threshold.
    assert await submit(jobs, "--wait", "--results", str(results), "--confirm-over", "0") == 0
    first = capfd.readouterr().err
    assert "resuming" not in first and "[y/N]" not in first
    assert f"| {2 * COST} credits | rate" in first  # a first run: one figure
    bad = json.dumps({"custom_id": "bad", "prompt": "x", **REF, "duration": 99})
    write_jobs(jobs, ["cat", "dog", "fox", "owl", "emu"], bad)
    assert await submit(jobs, "--wait", "--results", str(results)) == 1
    err = capfd.readouterr().err
    assert err.count(f"{jobs}:6: error:") == 1  # said once, by the look ahead, then:
    assert err.splitlines()[1] == "resuming: 2 done, 0 being followed, 3 to submit, 1 invalid"
    assert f"| {3 * COST} credits this run, {5 * COST} in the batch | rate" in err
    assert sim.stats.tasks_created == 5
    assert [r["status"] for r in map(json.loads, results.read_text().splitlines())].count(
        "succeeded") == 5


async def test_an_estimate_over_max_credits_is_said_before_any_create(
    sim: FakeVidu, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", ["cat"])
    assert await submit(jobs, "--quiet", "--results", str(tmp_path / "r.jsonl")) == 0
    write_jobs(jobs, ["cat", "dog", "fox", "owl"])
    capfd.readouterr()
    assert await submit(jobs, "--quiet", "--max-credits", str(3 * COST),
                        "--results", str(tmp_path / "r.jsonl")) == 1
    err = capfd.readouterr().err.splitlines()
    assert err[:2] == [
        "resuming: 0 done, 1 being followed, 3 to submit",  # submitted, not waited for
        f"vidu-async submit: over --max-credits {3 * COST}: the batch spent {COST} and would "
        f"need {3 * COST} more; submitting stops at the cap",
    ]
    # The hard cap sends what fits: two more tasks, the fourth job is not submitted.
    assert sim.stats.tasks_created == 3
    stop = next(i for i, line in enumerate(err) if line.startswith("stopped submitting:"))
    assert err[stop].startswith(f"stopped submitting: BudgetReached: max_credits {3 * COST}")
    listed = err.index("1 job did not succeed:")  # then the list of what did not succeed
    assert listed > stop and "not_submitted" in err[listed + 1]


@pytest.mark.parametrize(
    ("flag", "target", "said"),
    [
        ("--download", "file/videos", "cannot save videos in"),
        ("--results", "file/r.jsonl", "cannot write the results file"),
        ("--journal", "file/j.jsonl", "cannot use journal"),
    ],
)
async def test_unwritable_paths_stop_a_real_run_before_the_first_create(
    sim: FakeVidu, tmp_path: Path, capfd: pytest.CaptureFixture[str],
    flag: str, target: str, said: str,
) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", ["cat"])
    (tmp_path / "file").write_text("")
    path = tmp_path / target
    extra = [] if flag == "--results" else ["--results", str(tmp_path / "r.jsonl")]
    assert await submit(jobs, "--quiet", flag, str(path), *extra) == 2
    err = capfd.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"vidu-async submit: {said} {path}: ")
    assert sim.stats.tasks_created == 0


async def test_verbose_logs_retries_with_their_reasons_and_never_the_key(
    tmp_path: Path, cli_env: Callable[[FakeVidu], None], capfd: pytest.CaptureFixture[str]
) -> None:
    faults = Faults(credits=EndpointFaults(server_error=1.0))
    async with FakeVidu(timeline=FAST, concurrency_limit=20, seed=5, faults=faults) as fake:
        cli_env(fake)
        jobs = write_jobs(tmp_path / "jobs.jsonl", ["cat"])
        out = tmp_path / "r.jsonl"
        assert await submit(jobs, "--quiet", "--results", str(out)) == 0
        quiet = capfd.readouterr().err
        assert await submit(jobs, "-q", "-v", "--fresh", "--journal", str(tmp_path / "j2"),
                            "--results", str(out)) == 0
        verbose = capfd.readouterr().err
    assert fake.stats.tasks_created == 2
    assert "retrying in" not in quiet
    retries = [line for line in verbose.splitlines() if "retrying in" in line]
    assert retries and all(line.startswith("INFO vidu_async.") for line in retries)
    assert all("InternalServiceFailure" in line or "500" in line for line in retries)
    assert fake.api_key not in verbose


def test_a_person_is_asked_when_the_estimate_is_over_the_threshold_or_unknown() -> None:
    group = Group.of(ReferenceToVideoRequest(prompt="x", model="viduq2", images=[URL],
                                             duration=5))

    def run(to_send: int, price: int | None, done: int = 0) -> DryRun:
        costs = {} if price is None else {group.cost_class: price}
        return DryRun("j", to_send + done, 0, done, 0, {group: to_send} if to_send else {},
                      costs, 0, None, ())

    cases = [  # (jobs to send, price, threshold) -> asked
        ((0, None, 0), False),   # nothing to send
        ((3, None, 10_000), True),  # unknown price: over any threshold
        ((3, 45, 135), False),   # 135 is not over 135
        ((3, 45, 134), True),
        ((1, 0, 0), False),      # free
    ]
    for (n, price, threshold), asked in cases:
        assert needs_confirmation(run(n, price), threshold) is asked, (n, price, threshold)
    assert resume_line(run(2, 45)) is None
    assert resume_line(run(2, 45, done=3)) == "resuming: 3 done, 0 being followed, 2 to submit"
