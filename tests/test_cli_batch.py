"""``vidu-async batch status|cancel|download|results`` against the simulator, through ``main``."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from vidu_async.cli import main
from vidu_async.journal import Journal
from vidu_async.testing import CANCELED, Account, FakeVidu, Timeline

URL = "https://example.com/ref.png"
FAST = Timeline(created=0.01, processing=0.05)
HELD = Timeline(created=3600, processing=3600)
"""Tasks that stay ``created`` (cancellable) for the whole test."""


class ShiftedClock:
    """The event loop's clock plus an offset the test moves forward (to expire links)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return asyncio.get_running_loop().time() + self.offset


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    path = tmp_path / "jobs.jsonl"
    path.write_text('{"custom_id": "Cat", "prompt": "one"}\n'
                    '{"custom_id": "dog", "prompt": "two"}\n'
                    '{"custom_id": "eel", "prompt": "three", "watermark": true}\n')
    return path


def journal_of(jobs: Path) -> Path:
    return jobs.with_name(jobs.name + ".journal.jsonl")


async def submit(jobs: Path, *extra: str) -> int:
    return await asyncio.to_thread(main, [
        "submit", str(jobs), "--model", "viduq2", "--image", URL, "--quiet",
        "--poll-interval", "0.02", "--visibility-lag", "0.5", "--results",
        str(jobs.with_name("results.jsonl")), *extra,
    ])


async def cli(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


@pytest.fixture
async def held(cli_env: Callable[[FakeVidu], None]) -> AsyncIterator[FakeVidu]:
    async with FakeVidu(timeline=HELD, seed=3) as fake:
        cli_env(fake)
        yield fake


async def test_status_counts_running_jobs_from_the_api_and_the_credits_spent(
    held: FakeVidu, jobs: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert await submit(jobs) == 0
    capfd.readouterr()
    assert await cli("batch", "status", str(journal_of(jobs))) == 0
    out = capfd.readouterr().out.splitlines()
    assert out[0] == f"batch {journal_of(jobs)}: 3 jobs: 3 created; 135 credits spent"
    assert out[1] == "running:"
    assert sorted(line.split(":")[0].strip() for line in out[2:]) == ["Cat", "dog", "eel"]
    lists, queries = held.stats.requests_to("list_tasks"), held.stats.requests_to("query")
    assert await cli("batch", "status", str(journal_of(jobs)), "--json") == 0
    answer = json.loads(capfd.readouterr().out)
    assert held.stats.requests_to("list_tasks") == lists + 1  # three tasks, one request
    assert held.stats.requests_to("query") == queries
    assert answer["counts"] == {"created": 3} and answer["credits"] == 135
    assert {j["task_id"] for j in answer["running"]} == set(held.tasks)
    assert answer["in_use"] is False


async def test_status_says_when_a_run_holds_the_journal(
    held: FakeVidu, jobs: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert await submit(jobs) == 0
    capfd.readouterr()
    async with await Journal.open(journal_of(jobs), batch_id="x"):
        assert await cli("batch", "status", str(journal_of(jobs))) == 0
    assert "a run is using this journal now" in capfd.readouterr().out


async def test_cancel_cancels_the_tasks_not_started_and_names_the_others(
    jobs: Path, cli_env: Callable[[FakeVidu], None], capfd: pytest.CaptureFixture[str]
) -> None:
    one_slot = Timeline(created=0, processing=3600)  # the first task starts, two queue
    async with FakeVidu(timeline=one_slot, concurrency_limit=1, seed=3) as fake:
        cli_env(fake)
        assert await submit(jobs) == 0
        capfd.readouterr()
        assert await cli("batch", "cancel", str(journal_of(jobs))) == 1
        out = capfd.readouterr().out
        started = [t for t in fake.tasks.values() if t.state == "processing"]
        assert len(started) == 1
        assert out.startswith("cancelled 2 tasks")
        assert (f"task {started[0].task_id}: processing: only a task that has not started can "
                "be cancelled") in out
        others = [(t.state, t.err_code) for t in fake.tasks.values() if t not in started]
        assert others == [("failed", CANCELED)] * 2
        assert await cli("batch", "cancel", str(journal_of(jobs)), "--json") == 1
        answer = json.loads(capfd.readouterr().out)
    assert answer["cancelled"] == []  # nothing left to cancel: the others ended
    assert [j["task_id"] for j in answer["not_cancelled"]] == [started[0].task_id]


async def test_download_fetches_every_finished_video_with_fresh_links_and_names(
    jobs: Path, cli_env: Callable[[FakeVidu], None], capfd: pytest.CaptureFixture[str]
) -> None:
    clock = ShiftedClock()
    async with FakeVidu(timeline=FAST, seed=3, clock=clock, link_ttl=60) as fake:
        cli_env(fake)
        assert await submit(jobs, "--wait") == 0
        clock.offset += 120  # every link the journal recorded has expired
        capfd.readouterr()
        dest = jobs.parent / "videos"
        args = ["batch", "download", str(journal_of(jobs)), str(dest), "--name",
                "{line}-{custom_id}", "--covers", "--watermarked"]
        assert await cli(*args) == 0
        assert capfd.readouterr().out == f"downloaded 7 files of 3 tasks into {dest}\n"
        by_id = {t.request["prompt"]: t.task_id for t in fake.tasks.values()}
    names = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert names[:3] == ["1-Cat-" + names[0].split("-")[2], "2-dog.mp4", "3-eel.mp4"]
    assert names[3:] == ["covers/" + names[0].removesuffix(".mp4") + ".jpg", "covers/2-dog.jpg",
                         "covers/3-eel.jpg", "watermarked/3-eel.mp4"]
    assert by_id["two"].encode() in (dest / "2-dog.mp4").read_bytes()
    assert b"(watermarked)" in (dest / "watermarked" / "3-eel.mp4").read_bytes()


async def test_download_skips_running_tasks_and_says_so(
    held: FakeVidu, jobs: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert await submit(jobs) == 0
    capfd.readouterr()
    assert await cli("batch", "download", str(journal_of(jobs)), str(jobs.parent / "v"),
                     "--json") == 0
    assert json.loads(capfd.readouterr().out) == {"downloaded": [], "not_finished": 3,
                                                  "failed": []}


async def test_results_rewrites_the_results_file_from_the_journal_without_the_network(
    cli_env: Callable[[FakeVidu], None],
    jobs: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    async with FakeVidu(timeline=FAST, seed=3) as fake:
        cli_env(fake)
        assert await submit(jobs, "--wait") == 0
    results = jobs.with_name("results.jsonl")
    written = sorted(results.read_text().splitlines())
    results.write_text("lost\n")
    monkeypatch.delenv("VIDU_API_KEY")  # no key, no simulator: the journal is enough
    assert await cli("batch", "results", str(journal_of(jobs)), "--out", str(results)) == 0
    assert sorted(results.read_text().splitlines()) == written
    assert await cli("batch", "results", str(journal_of(jobs))) == 0
    assert sorted(capfd.readouterr().out.splitlines()) == written


async def test_results_of_a_batch_not_followed_say_submitted(
    held: FakeVidu, jobs: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert await submit(jobs) == 0
    capfd.readouterr()
    assert await cli("batch", "results", str(journal_of(jobs))) == 0
    records = [json.loads(line) for line in capfd.readouterr().out.splitlines()]
    assert [(r["custom_id"], r["status"]) for r in records] == [
        ("Cat", "submitted"), ("dog", "submitted"), ("eel", "submitted")]
    assert {r["task_id"] for r in records} == set(held.tasks)


async def test_a_journal_that_is_not_there_or_a_bad_template_is_a_usage_error(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert await cli("batch", "status", str(tmp_path / "none.jsonl")) == 2
    assert "none.jsonl" in capfd.readouterr().err
    (tmp_path / "j.jsonl").write_text('{"v": 2, "kind": "batch", "batch_id": "b"}\n')
    assert await cli("batch", "download", str(tmp_path / "j.jsonl"), str(tmp_path),
                     "--name", "video") == 2
    assert "must name {custom_id}, {task_id} or {line}" in capfd.readouterr().err


async def test_a_rejected_key_is_named_by_position_and_last_four(
    jobs: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    accounts = {"key-one-AAAA": Account(), "key-two-BBBB": Account()}
    async with FakeVidu(accounts=accounts, timeline=HELD) as fake:
        monkeypatch.setenv("VIDU_BASE_URL", fake.url)
        monkeypatch.delenv("VIDU_API_KEY", raising=False)
        monkeypatch.setenv("VIDU_API_KEYS", "key-one-AAAA,revoked-WXYZ,key-two-BBBB")
        assert await submit(jobs) == 3
        err = capfd.readouterr().err
        assert "key 2 of 3 (...WXYZ) in VIDU_API_KEYS was rejected (HTTP 401" in err
        assert "acct-" not in err and "revoked" not in err
        assert fake.stats.tasks_created == 0
        assert await cli("credits") == 3
        assert "key 2 of 3 (...WXYZ) in VIDU_API_KEYS was rejected" in capfd.readouterr().err


async def test_tasks_of_a_key_not_given_are_unread_and_a_refused_key_is_named(
    cli_env: Callable[[FakeVidu], None],
    jobs: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    accounts = {"key-one-AAAA": Account(), "key-two-BBBB": Account()}
    async with FakeVidu(accounts=accounts, timeline=HELD) as fake:
        cli_env(fake)
        monkeypatch.setenv("VIDU_API_KEY", "key-one-AAAA")
        assert await submit(jobs) == 0
        monkeypatch.setenv("VIDU_API_KEY", "key-two-BBBB")
        capfd.readouterr()
        assert await cli("batch", "status", str(journal_of(jobs))) == 0
        out = capfd.readouterr().out
        assert "3 jobs: 3 unknown" in out
        assert "could not be read:\n" in out
        monkeypatch.delenv("VIDU_API_KEY")
        monkeypatch.setenv("VIDU_API_KEYS", "key-one-AAAA,revoked-WXYZ")
        assert await cli("batch", "status", str(journal_of(jobs))) == 3
    assert "key 2 of 2 (...WXYZ) in VIDU_API_KEYS was rejected" in capfd.readouterr().err


async def test_no_key_tells_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    for name in ("VIDU_API_KEY", "VIDU_API_KEYS"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "j.jsonl").write_text('{"v": 2, "kind": "batch", "batch_id": "b"}\n')
    assert await cli("batch", "status", str(tmp_path / "j.jsonl")) == 3
    assert "set VIDU_API_KEY (or VIDU_API_KEYS=key1,key2" in capfd.readouterr().err


async def test_submit_download_names_files_by_the_template_and_fetches_covers(
    jobs: Path, cli_env: Callable[[FakeVidu], None], capfd: pytest.CaptureFixture[str]
) -> None:
    dest = jobs.parent / "videos"
    async with FakeVidu(timeline=FAST, seed=3) as fake:
        cli_env(fake)
        assert await submit(jobs, "--download", str(dest), "--name", "clip") == 2
        assert "must name {custom_id}, {task_id} or {line}" in capfd.readouterr().err
        assert fake.stats.tasks_created == 0
        assert await submit(jobs, "--download", str(dest), "--name", "{line}", "--covers") == 0
        assert fake.stats.tasks_created == 3
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files == ["1.mp4", "2.mp4", "3.mp4", "covers/1.jpg", "covers/2.jpg", "covers/3.jpg"]
    written = jobs.with_name("results.jsonl").read_text().splitlines()
    by_line = {r["line"]: r for r in map(json.loads, written)}
    assert by_line[2]["files"] == [str(dest / "2.mp4"), str(dest / "covers" / "2.jpg")]


def refusing_creates() -> web.Application:
    """An account whose keys read credits but whose creates are refused (a key revoked)."""

    async def credits(request: web.Request) -> web.Response:
        return web.json_response({"remains": [{"concurrency_limit": 5}]})

    async def tasks(request: web.Request) -> web.Response:
        return web.json_response({"tasks": [], "next_page_token": ""})

    async def create(request: web.Request) -> web.Response:
        return web.json_response({"reason": "Unauthorized", "message": "key revoked"},
                                 status=401)

    app = web.Application()
    app.router.add_get("/ent/v2/credits", credits)
    app.router.add_get("/ent/v2/tasks", tasks)
    app.router.add_post("/ent/v2/reference2video", create)
    return app


async def test_a_key_refused_mid_run_is_named_by_position_and_last_four(
    aiohttp_server: Any, jobs: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="vidu_async.batch")
    server = await aiohttp_server(refusing_creates())
    monkeypatch.setenv("VIDU_BASE_URL", str(server.make_url("/")))
    monkeypatch.delenv("VIDU_API_KEY", raising=False)
    monkeypatch.setenv("VIDU_API_KEYS", "key-one-AAAA,key-two-BBBB")
    assert await submit(jobs) == 1
    said = "\n".join(r.getMessage() for r in caplog.records)
    assert "key 1 of 2 (...AAAA) can take no more creates: Unauthorized" in said
    assert "key 2 of 2 (...BBBB) can take no more creates: Unauthorized" in said
    assert "acct-" not in said
