"""A jobs file is checked as a batch sends it: local images the upload API takes travel as short
``ssupload:`` URIs, so they do not count as inline base64 against the 20 MB body limit. The
create still checks what it sends: an image whose upload failed is inlined and, if the body is
then too large, refused before anything is sent."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from vidu_async.batch import BatchOptions, BatchSubmitter
from vidu_async.cli import main
from vidu_async.client import ViduClient
from vidu_async.dryrun import dry_run
from vidu_async.jobs import read_jobs
from vidu_async.retry import RetryPolicy, no_wait
from vidu_async.testing import FakeVidu

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]
MB = 1024 * 1024


def png(path: Path, size: int, shade: int = 0) -> Path:
    """A valid PNG of about ``size`` bytes (a private chunk pads it): written in milliseconds."""
    info = PngInfo()
    info.add(b"paDd", bytes(size))
    Image.new("RGB", (300, 200), (shade, 100, 200)).save(path, pnginfo=info)
    return path


def jobs_file(folder: Path, *images: list[str]) -> Path:
    """One reference2video line per list of images, relative to ``folder``."""
    path = folder / "jobs.jsonl"
    path.write_text("".join(
        json.dumps({"custom_id": f"j{n}", "model": "viduq2", "prompt": "a hero",
                    "images": names, "duration": 5}) + "\n"
        for n, names in enumerate(images, 1)))
    return path


@pytest.fixture
def seven(tmp_path: Path) -> list[str]:
    """Seven distinct local 3 MB images: 28 MB inline, a few hundred bytes as URIs."""
    return [png(tmp_path / f"r{i}.png", 3 * MB, i).name for i in range(7)]


def errors(path: Path, *, uploads: bool) -> dict[str | None, list[str]]:
    return {item.custom_id: [str(p) for p in item.errors]
            for item in read_jobs(path, uploads=uploads)}


def test_uploaded_images_count_as_their_uris_and_refused_ones_inline(
    tmp_path: Path, seven: list[str]
) -> None:
    big = [png(tmp_path / f"big{i}.png", 11 * MB, i).name for i in range(2)]  # over 10 MB
    path = jobs_file(tmp_path, seven, big, [big[0], seven[0]])
    found = errors(path, uploads=True)
    assert found["j1"] == [] and found["j3"] == []  # 11 MB inline + one URI fits
    [too_big] = found["j2"]  # the upload API refuses both: inlined, 29.3 MB
    assert too_big.startswith("body: the request body would be 29.3 MB, over the API's 20 MB "
                              "limit, inlining images[0] 14.7 MB, images[1] 14.7 MB; pass ")
    inline = errors(path, uploads=False)
    assert inline["j1"] == [
        "body: the request body would be 28.0 MB, over the API's 20 MB limit, inlining "
        "images[0] 4.0 MB, images[1] 4.0 MB, images[2] 4.0 MB and 4 more; pass large images or "
        "videos as http(s) URLs, or images as ssupload: URIs (ViduClient.upload_image), instead "
        "of inlining files (a batch inlines a local image only when the upload API refuses it "
        "or its upload fails)"]
    assert inline["j3"] == []


def test_validate_counts_local_images_as_the_submit_that_uploads_them(
    tmp_path: Path, seven: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(jobs_file(tmp_path, seven))]) == 0
    assert "1 job, 1 valid, 0 invalid" in capsys.readouterr().err


async def test_a_dry_run_of_a_batch_without_uploads_counts_local_images_inline(
    tmp_path: Path, seven: list[str]
) -> None:
    path = jobs_file(tmp_path, seven)
    clients = [ViduClient("test-key-0123456789", base_url="http://127.0.0.1:9")]  # never asked
    found = {
        uploads: await dry_run(path, clients, BatchOptions(upload_images=uploads), defaults={},
                               results=None, messages=io.StringIO(), balances=False)
        for uploads in (True, False)
    }
    assert {uploads: (run.invalid, run.sending) for uploads, run in found.items()} == {
        True: (0, 1), False: (1, 0)}


async def test_submit_and_its_dry_run_send_the_job_with_uploaded_images(
    cli_sim: FakeVidu, tmp_path: Path, seven: list[str], capfd: pytest.CaptureFixture[str]
) -> None:
    path = jobs_file(tmp_path, seven)
    args = ["submit", str(path), "--quiet", "--visibility-lag", "0.5", "--yes",
            "--results", str(tmp_path / "results.jsonl")]
    assert await asyncio.to_thread(main, [*args, "--dry-run"]) == 0
    assert "1 valid, 0 invalid" in capfd.readouterr().out
    assert await asyncio.to_thread(main, args) == 0
    [task] = cli_sim.tasks.values()
    assert [uri.startswith("ssupload:") for uri in task.request["images"]] == [True] * 7


async def test_an_image_whose_upload_fails_is_inlined_and_a_body_too_large_is_refused_unsent(
    aiohttp_server: ServerFactory, tmp_path: Path, seven: list[str]
) -> None:
    """The upload API refuses every upload: the images go inline, and the create refuses the
    28 MB body before sending it, naming the inlined images and what to do instead."""
    seen: list[str] = []

    async def refuse(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path}")
        return web.json_response({"code": "Unavailable", "message": "uploads are off"},
                                 status=400)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    server = await aiohttp_server(app)
    [line] = read_jobs(jobs_file(tmp_path, seven))
    assert line.job is not None
    client = ViduClient("test-key-0123456789", base_url=str(server.make_url("")),
                        retry=RetryPolicy(sleep=no_wait))
    async with client:
        batch = BatchSubmitter(client, BatchOptions())
        [outcome] = [o async for o in batch.run([line.job])]
    assert outcome.status == "invalid"
    assert outcome.error is not None
    assert "the request body would be 28.0 MB, over the API's 20 MB limit, inlining images[0] " \
        in outcome.error.message
    assert "pass large images or videos as http(s) URLs" in outcome.error.message
    assert outcome.error.message.endswith("only when the upload API refuses it or its upload "
                                          "fails)")
    assert seen.count("POST /tools/v2/files/uploads") == 7  # each upload was tried
    assert "POST /ent/v2/reference2video" not in seen  # and no create sent
