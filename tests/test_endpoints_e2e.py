"""Every generation endpoint end to end: the client, the simulator, jobs files and the CLI."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from vidu_async.batch import BatchOptions, BatchSubmitter
from vidu_async.cli import main
from vidu_async.client import ViduClient
from vidu_async.errors import InvalidRequestError, ValidationError, ViduWarning
from vidu_async.jobs import Job, JobsFileError, read_jobs
from vidu_async.requests import (
    ImageToVideoRequest,
    ReferenceToVideoRequest,
    Request,
    StartEndToVideoRequest,
    Subject,
    SubjectsToVideoRequest,
    TextToVideoRequest,
)
from vidu_async.retry import RetryPolicy
from vidu_async.testing import EndpointFaults, FakeVidu, Faults, ManualClock, task_cost

URL = "https://example.com/frame.png"
URL2 = "https://example.com/last.png"


def png(width: int = 256, height: int = 256) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (20, 120, 200)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def sim(clock: ManualClock) -> AsyncIterator[FakeVidu]:
    async with FakeVidu("key", clock=clock) as running:
        yield running


@pytest.fixture
async def client(sim: FakeVidu, clock: ManualClock) -> AsyncIterator[ViduClient]:
    retry = RetryPolicy(sleep=clock.sleep, clock=clock)
    async with ViduClient(sim.api_key, base_url=sim.url, retry=retry) as running:
        yield running


# (request, the fields the simulator must receive, the call's price key, its duration)
CASES: list[tuple[Request, set[str], str, int]] = [
    (
        TextToVideoRequest("viduq1", "a fox", style="anime", aspect_ratio="1:1"),
        {"model", "prompt", "style", "aspect_ratio", "payload"},
        "text2video",
        5,
    ),
    (
        TextToVideoRequest("viduq3-pro", "a fox", duration=8, audio=True),
        {"model", "prompt", "duration", "audio", "payload"},
        "text2video",
        8,
    ),
    (
        ImageToVideoRequest("viduq2-pro", [URL], is_rec=True, bgm=True),
        {"model", "images", "is_rec", "bgm", "payload"},
        "img2video",
        5,
    ),
    (
        StartEndToVideoRequest("viduq1", [URL, URL2], resolution="1080p", seed=7),
        {"model", "images", "resolution", "seed", "payload"},
        "start-end2video",
        5,
    ),
    (
        ReferenceToVideoRequest("viduq2", "a cat", images=[URL], aspect_ratio="1:1"),
        {"model", "prompt", "images", "aspect_ratio", "payload"},
        "reference2video",
        5,
    ),
    (
        SubjectsToVideoRequest(
            "viduq3", "@cat meets @dog", [Subject("cat", [URL]), Subject("dog", [URL2])],
            duration=6,
        ),
        {"model", "prompt", "subjects", "duration", "payload"},
        "subjects",
        6,
    ),
]


@pytest.mark.parametrize(("request_", "fields", "price", "seconds"), CASES,
                         ids=[f"{c[2]}-{c[0].model}" for c in CASES])
async def test_every_endpoint_creates_and_follows_to_success(
    sim: FakeVidu, client: ViduClient, clock: ManualClock,
    request_: Request, fields: set[str], price: str, seconds: int,
) -> None:
    task = await client.create(request_)

    received = sim.tasks[task.task_id].request
    assert set(received) == fields
    assert {k: v for k, v in received.items() if k != "payload"} == {
        k: v for k, v in request_.to_payload().items() if k != "payload"
    }
    assert sim.tasks[task.task_id].kind == price
    is_rec = bool(getattr(request_, "is_rec", False))
    assert task.credits == task_cost(request_.model, seconds, off_peak=False, route=price,
                                     is_rec=is_rec)
    clock.advance(10.0)
    result = await client.wait_for_task(task.task_id)
    assert result.succeeded and result.creations


async def test_named_helpers_send_to_their_endpoint_and_refuse_another(
    sim: FakeVidu, client: ViduClient
) -> None:
    text = await client.create_text2video(TextToVideoRequest("viduq2", "rain"))
    first = await client.create_img2video(ImageToVideoRequest("viduq1", [URL]))
    frames = await client.create_start_end2video(StartEndToVideoRequest("viduq1", [URL, URL2]))
    both = [
        await client.create_reference2video(ReferenceToVideoRequest("viduq2", "x", images=[URL])),
        await client.create_reference2video(
            SubjectsToVideoRequest("viduq2", "@a", [Subject("a", [URL])])
        ),
    ]
    kinds = [sim.tasks[t.task_id].kind for t in (text, first, frames, *both)]
    assert kinds == ["text2video", "img2video", "start-end2video", "reference2video", "subjects"]
    with pytest.raises(TypeError, match="TextToVideoRequest"):
        await client.create_img2video(TextToVideoRequest("viduq2", "x"))  # type: ignore[arg-type]
    assert sim.stats.tasks_created == 5


@pytest.mark.parametrize(
    ("path", "body", "reason", "words"),
    [
        ("text2video", {"model": "viduq2", "prompt": "x", "images": [URL]}, "FieldUnwanted",
         "images"),
        ("img2video", {"model": "viduq2-pro", "images": [URL], "aspect_ratio": "1:1"},
         "FieldUnwanted", "aspect_ratio"),
        ("start-end2video", {"model": "viduq1"}, "FieldLacking", "images"),
        ("text2video", {"model": "viduq2", "prompt": "x", "duration": "5"}, "FieldInvalid",
         "duration"),
        ("img2video", {"model": "viduq1", "images": [URL, URL2]}, "FieldInvalid", "images"),
        ("reference2video", {"model": "viduq3-mix", "prompt": "@a",
                             "subjects": [{"name": "a", "images": [URL]}]},
         "FieldInvalid", "viduq3-mix"),
        ("reference2video", {"model": "viduq2", "prompt": "@a", "subjects": [{"name": "a"}],
                             "images": [URL]}, "FieldUnwanted", "images"),
    ],
)
async def test_the_simulator_refuses_each_route_s_wrong_bodies_as_vidu_does(
    sim: FakeVidu, path: str, body: dict[str, Any], reason: str, words: str
) -> None:
    async with aiohttp.ClientSession() as session, session.post(
        f"{sim.url}/ent/v2/{path}", json=body, headers={"Authorization": f"Token {sim.api_key}"}
    ) as response:
        answer = await response.json()
    assert (response.status, answer["reason"]) == (400, reason)
    assert words in answer["message"]
    assert sim.stats.tasks_created == 0


async def test_an_unknown_model_is_warned_and_sent_unless_strict(
    sim: FakeVidu, client: ViduClient
) -> None:
    request = TextToVideoRequest("viduq9-future", "a fox")
    with pytest.raises(ValidationError, match="viduq9-future"):
        await client.create(request, strict=True)
    assert sim.stats.requests_to("create") == 0

    with pytest.warns(ViduWarning, match="viduq9-future"), pytest.raises(InvalidRequestError):
        await client.create(request)  # this simulator knows only the tables' models
    assert sim.stats.requests_to("create") == 1


async def test_an_uploaded_image_is_named_by_its_uri_in_a_create(
    sim: FakeVidu, client: ViduClient, tmp_path: Path
) -> None:
    path = tmp_path / "frame.png"
    path.write_bytes(png())

    uri = await client.upload_image(path)

    assert uri.startswith("ssupload:?id=")
    assert sim.stats.storage_auth_refused == 0  # the storage PUT carried no Authorization
    task = await client.create(ImageToVideoRequest("viduq2-pro", [uri]))
    assert sim.tasks[task.task_id].request["images"] == [uri]
    with pytest.raises(InvalidRequestError, match="names no finished upload"):
        await client.create(ImageToVideoRequest("viduq2-pro", ["ssupload:?id=forged"]))


async def test_the_storage_put_refuses_an_authorization_header(sim: FakeVidu) -> None:
    auth = {"Authorization": f"Token {sim.api_key}"}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{sim.url}/tools/v2/files/uploads", json={"scene": "vidu"}, headers=auth
        ) as started:
            put_url = (await started.json())["put_url"]
        async with session.put(
            put_url, data=png(), headers={**auth, "Content-Type": "image/png"}
        ) as stored:
            assert stored.status == 400
    assert sim.stats.storage_auth_refused == 1


async def test_an_upload_is_checked_before_anything_is_sent(
    sim: FakeVidu, client: ViduClient
) -> None:
    with pytest.raises(ValidationError, match="image"):
        await client.upload_image(png(128, 600))  # ratio beyond 1:4
    with pytest.raises(ValidationError, match="not a URI"):
        await client.upload_image(URL)
    assert sim.stats.requests_to("upload_start") == 0


JOBS = [
    {"custom_id": "t", "model": "viduq2", "prompt": "rain"},
    {"custom_id": "i", "type": "img2video", "model": "viduq1", "images": [URL]},
    {"custom_id": "s", "type": "start-end2video", "model": "viduq1", "images": [URL, URL2]},
    {"custom_id": "r", "model": "viduq2", "prompt": "x", "images": [URL]},
    {"custom_id": "j", "model": "viduq2", "prompt": "@a", "subjects": [{"name": "a",
                                                                        "images": [URL]}]},
    {"custom_id": "new", "model": "viduq9-future", "prompt": "rain"},
]


def write_jsonl(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def test_a_jobs_file_mixes_every_endpoint(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "jobs.jsonl", JOBS)

    lines = list(read_jobs(path))

    assert all(line.ok for line in lines)
    assert [line.kind for line in lines] == [
        "text2video", "img2video", "start-end2video", "reference2video", "reference2video",
        "text2video",
    ]
    assert isinstance(lines[4].job and lines[4].job.request, SubjectsToVideoRequest)
    assert [str(w) for w in lines[5].warnings] and "viduq9-future" in str(lines[5].warnings[0])
    strict = list(read_jobs(path, strict=True))
    assert [line.ok for line in strict] == [True] * 5 + [False]


def test_a_default_type_applies_to_lines_naming_none(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "jobs.jsonl", [
        {"model": "viduq1", "images": [URL]},
        {"type": "reference2video", "model": "viduq2", "prompt": "p", "images": [URL]},
    ])
    kinds = [line.kind for line in read_jobs(path, defaults={"type": "img2video"})]
    assert kinds == ["img2video", "reference2video"]


def test_a_csv_header_takes_every_endpoint_s_fields_but_not_subjects(tmp_path: Path) -> None:
    path = tmp_path / "jobs.csv"
    path.write_text(
        "custom_id,type,model,prompt,images,is_rec,style,audio_type\n"
        f"a,img2video,viduq2-pro,,{URL},true,,\n"
        "b,text2video,viduq2,rain,,,anime,\n",
        encoding="utf-8",
    )
    lines = list(read_jobs(path))
    assert [(line.ok, line.kind) for line in lines] == [(True, "img2video"), (True, "text2video")]
    assert lines[0].job is not None and lines[0].job.request.is_rec is True

    bad = tmp_path / "subjects.csv"
    bad.write_text("model,prompt,subjects\nviduq2,x,[]\n", encoding="utf-8")
    with pytest.raises(JobsFileError, match="subjects: a list of objects needs a JSONL"):
        list(read_jobs(bad))


def test_validate_reports_every_type_and_strict_refuses_unknown_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_jsonl(tmp_path / "jobs.jsonl", JOBS)

    assert main(["validate", str(path), "--json"]) == 0
    out, err = capsys.readouterr()
    assert [json.loads(line)["type"] for line in out.splitlines()] == [
        "text2video", "img2video", "start-end2video", "reference2video", "reference2video",
        "text2video",
    ]
    assert "warning: model: " in err and "text2video: 2 valid" in err

    assert main(["validate", str(path), "--strict"]) == 1
    _, err = capsys.readouterr()
    assert f"{path}:6: error: model" in err

    assert main(["validate", str(path), "--type", "img2video", "--model", "viduq1"]) == 1
    _, err = capsys.readouterr()
    assert "img2video" in err


# --- a batch mixing every endpoint ----------------------------------------------------------------


async def test_a_batch_mixing_every_endpoint_under_faults_pays_each_job_once(
    clock: ManualClock,
) -> None:
    """Lost answers, 500s, resets and 429s on creates: each of 30 jobs (every endpoint, five
    times) ends with exactly one task, on the endpoint it asked for."""
    faults = Faults(create=EndpointFaults(commit_then_drop=0.15, server_error=0.1, reset=0.05,
                                          too_many_requests=0.1))
    asked = {f"{kind}-{n}-{request.model}": (request, kind)
             for n in range(5) for request, _, kind, _ in CASES}
    jobs = [Job(job_id, request) for job_id, (request, _) in asked.items()]
    async with FakeVidu("key", clock=clock, faults=faults, seed=3) as sim:
        retry = RetryPolicy(sleep=clock.sleep, clock=clock, max_attempts=10, budget=3600.0,
                            visibility_lag=2.0)
        async with ViduClient(sim.api_key, base_url=sim.url, retry=retry) as client:
            options = BatchOptions(concurrency=6, wait=True, poll_interval=5.0, clock=clock,
                                   sleep=clock.sleep, batch_id="mixed")
            outcomes = [o async for o in BatchSubmitter(client, options).run(jobs)]
    assert sim.stats.duplicate_payloads() == {}
    assert sum(sim.stats.faults.values()) > 0
    by_id = {o.custom_id: o for o in outcomes}
    assert sorted(by_id) == sorted(j.custom_id for j in jobs)
    for job in jobs:
        outcome = by_id[job.custom_id]
        assert outcome.status == "succeeded", outcome  # the list shows payloads: all proven
        assert outcome.task_id is not None
        assert sim.tasks[outcome.task_id].kind == asked[job.custom_id][1]  # its own endpoint
    assert len(sim.tasks) == len(jobs)  # one task each, none that no job owns
