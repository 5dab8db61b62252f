"""Downloads: safe names, whole files only, one refresh of an expired link, no key to file hosts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from vidu_async.client import ViduClient
from vidu_async.download import extension_for, safe_stem
from vidu_async.errors import DownloadError
from vidu_async.retry import RetryPolicy, no_wait
from vidu_async.tasks import Creation, TaskResult

KEY = "sk-download-test-SECRET"
VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4096  # ~1 MB, several chunks

ServerFactory = Callable[..., Awaitable[TestServer]]


class FileHost:
    """A file host (``/files``, ``/expired``, ``/broken``, ``/stalled``) and the task query."""

    def __init__(self) -> None:
        self.file_requests: list[tuple[str, str | None]] = []
        self.queries = 0
        self.fresh_url = ""
        self.stalled = asyncio.Event()
        self.release = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/files/{name}", self._file)
        app.router.add_get("/expired/{name}", self._expired)
        app.router.add_get("/broken/{name}", self._broken)
        app.router.add_get("/stalled/{name}", self._stalled)
        app.router.add_get("/ent/v2/tasks/{id}/creations", self._query)
        return app

    def _record(self, request: web.Request) -> None:
        self.file_requests.append((request.path, request.headers.get("Authorization")))

    async def _file(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        return web.Response(body=VIDEO, content_type="video/mp4")

    async def _expired(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        return web.Response(status=403, text="<Error>AccessDenied: Request has expired</Error>")

    async def _partial(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        response.content_length = len(VIDEO)
        await response.prepare(request)
        await response.write(VIDEO[:100_000])
        return response

    async def _broken(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        await self._partial(request)
        assert request.transport is not None
        request.transport.abort()
        raise ConnectionResetError("scripted")

    async def _stalled(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        response = await self._partial(request)
        self.stalled.set()
        await asyncio.wait_for(self.release.wait(), 5)
        return response

    async def _query(self, request: web.Request) -> web.StreamResponse:
        self.queries += 1
        assert request.headers["Authorization"] == f"Token {KEY}"
        task_id = request.match_info["id"]
        creation = {"id": "c-1", "url": self.fresh_url, "cover_url": ""}
        return web.json_response({"id": task_id, "state": "success", "creations": [creation]})


@pytest.fixture
def host() -> FileHost:
    return FileHost()


@pytest.fixture
async def server(host: FileHost, aiohttp_server: ServerFactory) -> Any:
    server = await aiohttp_server(host.app())
    yield server
    host.release.set()


@pytest.fixture
async def client(server: TestServer) -> Any:
    base = str(server.make_url("/"))
    async with ViduClient(KEY, base_url=base, retry=RetryPolicy(sleep=no_wait)) as client:
        yield client


def result(task_id: str, *creations: tuple[str, str]) -> TaskResult:
    return TaskResult.from_dict(
        {
            "id": task_id,
            "state": "success",
            "creations": [{"id": cid, "url": url} for cid, url in creations],
        }
    )


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("911084878697623552", "911084878697623552"),
        ("../../etc/passwd", "etc_passwd"),
        ("/etc/passwd", "etc_passwd"),
        ("C:\\Windows\\system32", "C_Windows_system32"),
        ("..", "download"),
        ("", "download"),
        (".hidden", "hidden"),
        ("a\x00b\nc\x1bd", "a_b_c_d"),
        ("a..b", "a.b"),
        ("héllo wörld", "h_llo_w_rld"),
        ("x" * 500, "x" * 120),
    ],
)
def test_safe_stem(text: str, expected: str) -> None:
    assert safe_stem(text) == expected


@pytest.mark.parametrize(
    ("url", "content_type", "expected"),
    [
        ("https://cdn.example/v/abc.mp4?X-Sig=1", "application/octet-stream", ".mp4"),
        ("https://cdn.example/v/abc.MOV", None, ".mov"),
        ("https://cdn.example/v/abc", "video/quicktime", ".mov"),
        ("https://cdn.example/v/abc.exe", "image/png", ".png"),
        ("https://cdn.example/v/abc.sh", "text/html", ".mp4"),
        ("https://cdn.example/v/abc", None, ".mp4"),
    ],
)
def test_extension_for(url: str, content_type: str | None, expected: str) -> None:
    assert extension_for(url, content_type) == expected


async def test_download_a_result_whole_and_without_the_key(
    client: ViduClient, server: TestServer, host: FileHost, tmp_path: Path
) -> None:
    task = result("task-1", ("c-1", str(server.make_url("/files/video.mp4?sig=abc"))))
    (path,) = await client.download(task, tmp_path / "out")
    assert path == tmp_path / "out" / "task-1.mp4"
    assert path.read_bytes() == VIDEO
    assert listing(tmp_path / "out") == ["task-1.mp4"]
    assert host.file_requests == [("/files/video.mp4", None)]


async def test_a_stem_names_the_files(
    client: ViduClient, server: TestServer, tmp_path: Path
) -> None:
    url = str(server.make_url("/files/v"))
    assert await client.download(result("t", ("c-1", url)), tmp_path, stem="../job 1") == (
        tmp_path / "job_1.mp4",
    )
    assert await client.download(result("t", ("c-1", url), ("c-2", url)), tmp_path, stem="j") == (
        tmp_path / "j_c-1.mp4",
        tmp_path / "j_c-2.mp4",
    )


async def test_an_expired_link_is_refreshed_once(
    client: ViduClient, server: TestServer, host: FileHost, tmp_path: Path
) -> None:
    host.fresh_url = str(server.make_url("/files/fresh.mp4"))
    task = result("task-2", ("c-1", str(server.make_url("/expired/old.mp4"))))
    (path,) = await client.download(task, tmp_path)
    assert path.read_bytes() == VIDEO
    assert host.queries == 1
    assert [p for p, _ in host.file_requests] == ["/expired/old.mp4", "/files/fresh.mp4"]


async def test_a_link_still_expired_after_refreshing_is_an_error(
    client: ViduClient, server: TestServer, host: FileHost, tmp_path: Path
) -> None:
    host.fresh_url = str(server.make_url("/expired/still.mp4?sig=secret"))
    task = result("task-3", ("c-1", str(server.make_url("/expired/old.mp4"))))
    with pytest.raises(DownloadError) as info:
        await client.download(task, tmp_path)
    assert info.value.status == 403
    assert "sig=secret" not in str(info.value)
    assert host.queries == 1
    assert listing(tmp_path) == []


async def test_a_bare_creation_without_task_id_is_not_refreshed(
    client: ViduClient, server: TestServer, host: FileHost, tmp_path: Path
) -> None:
    creation = Creation(id="c-9", url=str(server.make_url("/expired/old.mp4")))
    with pytest.raises(DownloadError):
        await client.download(creation, tmp_path)
    assert host.queries == 0
    creation = Creation(id="c-9", url=str(server.make_url("/files/v")))
    assert await client.download(creation, tmp_path) == tmp_path / "c-9.mp4"


async def test_hostile_names_stay_inside_the_destination(
    client: ViduClient, server: TestServer, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    url = str(server.make_url("/files/x"))
    task = result(
        "../../etc/passwd",
        ("/abs/olute", url),
        ("nul\x00byte", url),
        ("../" * 100 + "y" * 300, url),
    )
    paths = await client.download(task, dest)
    assert [p.name for p in paths] == [
        "etc_passwd_abs_olute.mp4",
        "etc_passwd_nul_byte.mp4",
        "etc_passwd_" + "y" * 60 + ".mp4",
    ]
    assert all(p.parent == dest for p in paths)
    assert listing(tmp_path) == ["dest"]


async def test_a_broken_transfer_leaves_no_file(
    client: ViduClient, server: TestServer, tmp_path: Path
) -> None:
    task = result("task-4", ("c-1", str(server.make_url("/broken/v.mp4"))))
    with pytest.raises(DownloadError, match=r"/broken/v\.mp4"):
        await client.download(task, tmp_path)
    assert listing(tmp_path) == []


async def test_a_cancelled_download_leaves_no_file(
    client: ViduClient, server: TestServer, host: FileHost, tmp_path: Path
) -> None:
    task = result("task-5", ("c-1", str(server.make_url("/stalled/v.mp4"))))
    running = asyncio.create_task(client.download(task, tmp_path))
    await asyncio.wait_for(host.stalled.wait(), 5)
    async with asyncio.timeout(5):
        while not listing(tmp_path):  # noqa: ASYNC110 - waiting for the temporary file to appear
            await asyncio.sleep(0.01)
    assert listing(tmp_path)[0].endswith(".part")
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert listing(tmp_path) == []


async def test_an_unfinished_task_has_nothing_to_download(
    client: ViduClient, tmp_path: Path
) -> None:
    pending = TaskResult.from_dict({"id": "task-6", "state": "processing"})
    with pytest.raises(DownloadError, match="task-6 is processing"):
        await client.download(pending, tmp_path)
