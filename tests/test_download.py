"""Downloads: one distinct safe name per job, whole files only, retried transfers, one refresh
of an expired link, no key to file hosts."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import re
import struct
import unicodedata
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given
from hypothesis import strategies as st

from vidu_async.batch import BatchOptions, BatchSubmitter
from vidu_async.client import ViduClient
from vidu_async.demo import sample_png
from vidu_async.download import (
    MAX_STEM_BYTES,
    DownloadNames,
    DownloadPace,
    download_creation,
    extension_for,
    file_stem,
    is_error_page,
    partial_path,
    remove_partial_files,
    retryable,
    safe_stem,
)
from vidu_async.errors import DownloadError
from vidu_async.jobs import Job
from vidu_async.outcome import Outcome
from vidu_async.requests import ReferenceToVideoRequest
from vidu_async.retry import RetryPolicy, no_wait
from vidu_async.tasks import Creation, TaskResult
from vidu_async.testing import FakeVidu, ManualClock, Timeline
from vidu_async.testing.media import COVER_JPEG

KEY = "sk-download-test-SECRET"


def box(kind: bytes, payload: bytes = b"", *, large: bool = False) -> bytes:
    """An ISO BMFF box; ``large`` writes the 64-bit size form (size field 1)."""
    if large:
        return struct.pack(">I4sQ", 1, kind, 16 + len(payload)) + payload
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


FTYP = box(b"ftyp", b"mp42" + bytes(4) + b"mp42isom")
MOOV = box(b"moov", box(b"mvhd", bytes(100)))
VIDEO = FTYP + MOOV + box(b"mdat", bytes(range(256)) * 4096)  # ~1 MB, several chunks
FRAGMENTS = [
    FTYP, box(b"moov", box(b"mvex", box(b"trex", bytes(24)))),
    *(piece for n in range(1, 9) for piece in (
        box(b"moof", box(b"mfhd", struct.pack(">II", 0, n))), box(b"mdat", bytes([n]) * 50_000)
    )),
    box(b"mfra", bytes(16)),
]
"""The top-level boxes of a fragmented MP4: a ``moof`` and an ``mdat`` per fragment."""
FRAGMENTED = b"".join(FRAGMENTS)
FRAGMENT_CUT_IN_HALF_ENDS = next(
    end for end in itertools.accumulate(map(len, FRAGMENTS)) if end > len(FRAGMENTED) // 2
)
LARGE_BOX = FTYP + box(b"mdat", bytes(range(256)) * 1024, large=True) + MOOV  # moov last
MEDIA = {
    "video.mp4": VIDEO, "fragmented.mp4": FRAGMENTED, "large-box.mp4": LARGE_BOX,
    "cover.png": sample_png(64, 48, 5), "cover.jpg": COVER_JPEG,
    "padded.mp4": VIDEO + bytes(4), "ff-trailer.mp4": VIDEO + b"\xff" * 16,
    "text-trailer.mp4": VIDEO + b"SEFH" + bytes(8) + b"SEFT",
}
"""What ``/chunked/<name>`` and ``/sized/<name>`` serve: whole media files of each checked kind,
MP4s with trailing bytes among them."""

ServerFactory = Callable[..., Awaitable[TestServer]]


class FileHost:
    """A file host and the task query. ``/files`` serves ``VIDEO``, ``/own/<name>`` bytes of its
    own, ``/flaky`` cuts ``cuts`` bodies short first, ``/broken`` always cuts the body short,
    ``/reset`` drops the connection unanswered, ``/stalled`` stops midway, ``/gated`` waits
    midway for ``release`` (``/gated-chunked`` too, with no ``Content-Length``), ``/typed``
    serves ``VIDEO`` as its query's ``type``, ``/drip`` sends 1,000 bytes one each 50 ms
    (announcing its query's ``announce`` bytes, else 1,000), ``/chunked/<name>`` serves
    ``MEDIA[name]`` chunked, with no ``Content-Length``, and cuts ``cuts`` bodies in half first
    (ending cleanly, as a proxy may), ``/sized/<name>`` its first ``length`` bytes (its query;
    default all) with a ``Content-Length`` they match."""

    def __init__(self) -> None:
        self.file_requests: list[tuple[str, str | None]] = []
        self.queries = 0
        self.fresh_url = ""
        self.cuts = 0
        self.stalled = asyncio.Event()
        self.release = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/files/{name}", self._file)
        app.router.add_get("/own/{name}", self._own)
        app.router.add_get("/flaky/{name}", self._flaky)
        app.router.add_get("/expired/{name}", self._expired)
        app.router.add_get("/broken/{name}", self._broken)
        app.router.add_get("/reset/{name}", self._reset)
        app.router.add_get("/stalled/{name}", self._stalled)
        app.router.add_get("/gated/{name}", self._gated)
        app.router.add_get("/gated-chunked/{name}", self._gated)
        app.router.add_get("/typed/{name}", self._typed)
        app.router.add_get("/drip/{name}", self._drip)
        app.router.add_get("/chunked/{name}", self._chunked)
        app.router.add_get("/sized/{name}", self._sized)
        app.router.add_get("/ent/v2/tasks/{id}/creations", self._query)
        return app

    async def _own(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        return web.Response(body=own_bytes(request.match_info["name"]), content_type="video/mp4")

    async def _flaky(self, request: web.Request) -> web.StreamResponse:
        if self.cuts:
            self.cuts -= 1
            return await self._broken(request)
        return await self._file(request)

    async def _reset(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        assert request.transport is not None
        request.transport.abort()
        raise ConnectionResetError("scripted")

    async def _gated(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        response = await self._partial(request)
        self.stalled.set()
        await asyncio.wait_for(self.release.wait(), 5)
        await response.write(VIDEO[100_000:])
        return response

    async def _typed(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        return web.Response(body=VIDEO, headers={"Content-Type": request.query["type"]})

    async def _drip(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        response.content_length = int(request.query.get("announce", 1000))
        await response.prepare(request)
        for _ in range(1000):  # 50 s in all, unless the client hangs up
            await response.write(b"x")
            await asyncio.sleep(0.05)
        return response

    async def _chunked(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        body = MEDIA[request.match_info["name"]]
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        if self.cuts:
            self.cuts -= 1
            body = body[: len(body) // 2]
        for start in range(0, len(body), 100_000):
            await response.write(body[start : start + 100_000])
        await response.write_eof()
        return response

    async def _sized(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        body = MEDIA[request.match_info["name"]]
        length = int(request.query.get("length", len(body)))
        return web.Response(body=body[:length], content_type="application/octet-stream")

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
        if "chunked" not in request.path:
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
async def client(server: TestServer, time: ManualClock) -> Any:
    base = str(server.make_url("/"))
    policy = RetryPolicy(max_attempts=3, sleep=time.sleep, clock=time, random=lambda: 1.0)
    async with ViduClient(KEY, base_url=base, retry=policy) as client:
        yield client


def own_bytes(name: str) -> bytes:
    return f"<{name}>".encode() * 5000


def suffixed(cleaned: str, original: str) -> str:
    """The documented form of a changed name: cleaned text, ``-``, 12 hex of the original's hash."""
    return f"{cleaned}-{hashlib.sha256(original.encode()).hexdigest()[:12]}"


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
    "text",
    [
        "911084878697623552",
        "cat-1",
        "job_",
        "a__b.v2",
        "console",
        "héllo wörld",
        "job 1",
        "猫-1",
        "鱼",
        "שלום-1",
        "مرحبا",
        "हिन्दी",
        "a" * MAX_STEM_BYTES,
        "猫" * 66 + "xy",  # 200 bytes
    ],
)
def test_a_safe_text_keeps_its_exact_name(text: str) -> None:
    assert safe_stem(text) == text


@pytest.mark.parametrize(
    ("text", "cleaned"),
    [
        ("Cat", "Cat"),
        ("ß", "ß"),
        ("../../etc/passwd", "etc_passwd"),
        ("/etc/passwd", "etc_passwd"),
        ("C:\\Windows\\system32", "C_Windows_system32"),
        ('a<b>c:d"e|f?g*h', "a_b_c_d_e_f_g_h"),
        ("..", "download"),
        ("", "download"),
        ("🐱", "download"),
        ("❤️x", "x"),
        (".hidden", "hidden"),
        ("-rf", "rf"),
        ("name.", "name"),
        ("a\x00b\nc\x1bd", "a_b_c_d"),
        ("a..b", "a.b"),
        (" lead", "lead"),
        ("trail. ", "trail"),
        ("a\u00a0b\tc", "a_b_c"),  # no-break space, tab
        ("CON .txt", "_CON .txt"),
        ("e\u0301", "é"),  # NFD in, NFC out
        ("\u202egpj.exe", "gpj.exe"),  # right-to-left override
        ("con", "_con"),
        ("NUL.tar.gz", "_NUL.tar.gz"),
        ("com1", "_com1"),
        ("lpt²", "_lpt²"),
        ("a-0123456789ab", "a-0123456789ab"),  # looks suffixed
        ("a" * (MAX_STEM_BYTES + 1), "a" * (MAX_STEM_BYTES - 13)),
        ("猫" * 67, "猫" * 62),  # 201 bytes, cut to fit 187 bytes and the suffix
    ],
)
def test_a_changed_text_gets_a_suffix_from_the_original(text: str, cleaned: str) -> None:
    assert safe_stem(text) == suffixed(cleaned, text)


def test_a_lone_surrogate_is_named_too() -> None:
    name = safe_stem("a\ud800")
    assert name.startswith("a_-")
    assert name != safe_stem("a\ud801")


@pytest.mark.parametrize("text", ["猫" * 300, "x" + "猫" * 100, "é" * 250, "e\u0301" * 100])
def test_a_long_name_is_bounded_in_bytes_and_cut_between_characters(text: str) -> None:
    name = safe_stem(text)
    assert MAX_STEM_BYTES - 3 < len(name.encode()) <= MAX_STEM_BYTES
    assert name.endswith(suffixed("", text))


def test_several_creations_are_named_after_the_pair() -> None:
    def stem(base: str, creation_id: str) -> str:
        return file_stem(base, Creation(id=creation_id), 0, several=True)

    assert stem("j", "c-1").startswith("j_c-1-")
    assert len({stem("j", "c-1"), safe_stem("j_c-1"), stem("j_c", "1"), stem("j", "c-2")}) == 4
    assert file_stem("j", Creation(id="c-1"), 0, several=False) == "j"
    assert file_stem(None, Creation(id="c-1"), 0, several=False) == "c-1"
    assert file_stem(None, Creation(), 3, several=False) == "3"


def is_safe_component(name: str) -> bool:
    return (
        0 < len(name.encode()) <= MAX_STEM_BYTES
        and name == unicodedata.normalize("NFC", name)
        and not name.startswith((".", "-", " "))
        and not name.endswith((".", " "))
        and not re.search(r'[<>:"/\\|?*]', name)
        and all(c == " " or unicodedata.category(c)[0] not in "CZ" for c in name)
        and not re.fullmatch(r"(?i)(con|prn|aux|nul|com[\d¹²³]|lpt[\d¹²³])", name.split(".")[0])
    )


job_ids = st.one_of(
    st.text(),
    st.text(alphabet="aAbB_/.-\\猫é\u0301 ", max_size=8),
    st.tuples(st.text(min_size=1), st.text(min_size=1)),
)


def name_of(job: str | tuple[str, str]) -> str:
    if isinstance(job, str):
        return safe_stem(job)
    return file_stem(job[0], Creation(id=job[1]), 0, several=True)


@given(job_ids, job_ids)
def test_distinct_jobs_get_distinct_safe_names(
    a: str | tuple[str, str], b: str | tuple[str, str]
) -> None:
    assert is_safe_component(name_of(a))
    assert is_safe_component(name_of(b))
    if a != b:  # distinct even on a case-insensitive file system
        assert name_of(a).casefold() != name_of(b).casefold()


@pytest.mark.parametrize(("template", "exact"), [
    ("{custom_id}", True),
    ("{line}-{custom_id}", True),
    ("{custom_id}_{line}_{index}", True),
    ("take-{task_id}.v{line}", True),
    ("{line}", True),
    ("{custom_id}{line}", False),  # a1 on line 2 and a on line 12 both make a12
    ("{line}{custom_id}", False),  # 1 and 2x, 12 and x
    ("{custom_id}1{line}", False),  # a digit beside a number: a1 1 2, a 1 12
    ("{line}{index}", False),
    ("{custom_id}_{task_id}", False),  # a_b with task c, a with task b_c
    ("{custom_id}-{custom_id}", False),
])
def test_a_template_keeps_exact_names_only_when_its_fields_stay_apart(
    template: str, exact: bool
) -> None:
    names = DownloadNames(template)
    (stem,) = names.stems([Creation(id="c1")], custom_id="cat", task_id="t9", line=3)
    text = template.format(custom_id="cat", task_id="t9", line=3, index=1)
    assert (stem == text) is exact
    if not exact:
        assert stem.startswith(text + "-") and len(stem) == len(text) + 13


def test_ids_that_run_into_the_line_number_get_their_own_files() -> None:
    """``--name '{custom_id}{line}'``: ``a1`` on line 2 and ``a`` on line 12 were both
    ``a12.mp4``, the second download replacing the first."""
    names = DownloadNames("{custom_id}{line}")
    one = Creation(id="c1")
    first = names.stems([one], custom_id="a1", task_id="t1", line=2)
    second = names.stems([one], custom_id="a", task_id="t2", line=12)
    assert first != second
    assert all(stem.startswith("a12-") for stem in first + second)


TEMPLATE_PARTS = ("{custom_id}", "{task_id}", "{line}", "{index}", "-", "1")
RUN_JOBS = list(itertools.product(  # (custom_id, line, task id, creations): values that run
    ["a", "a1", "A", "1-a", "-a"], [1, 2, 11, 12], ["1", "12", "t-1"], [1, 11],  # together
))


def test_distinct_jobs_of_a_run_never_share_a_file_whatever_the_template() -> None:
    """Every template of up to three parts, over jobs whose values run together (a1 and 2, a
    and 12): two jobs of one run (their custom_id, line and task id all differ) never share a
    name, even ignoring case, and each creation of a job has its own."""
    for size in (1, 2, 3):
        for parts in itertools.product(TEMPLATE_PARTS, repeat=size):
            template = "".join(parts)
            if not {"{custom_id}", "{task_id}", "{line}"} & set(parts):
                continue
            names = DownloadNames(template)
            owners: dict[str, list[tuple[str, int, str]]] = {}
            for custom_id, line, task_id, count in RUN_JOBS:
                job = (custom_id, line, task_id)
                stems = names.stems([Creation(id=f"c{n}") for n in range(count)],
                                    custom_id=custom_id, task_id=task_id, line=line)
                assert len({stem.casefold() for stem in stems}) == count, (template, job)
                for stem in stems:
                    others = owners.setdefault(stem.casefold(), [])
                    assert all(any(x == y for x, y in zip(other, job, strict=True))
                               for other in others), (template, job, others)
                    others.append(job)


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
    assert await client.download(result("t", ("c-1", url)), tmp_path, stem="job-1") == (
        tmp_path / "job-1.mp4",
    )
    assert await client.download(result("t", ("c-1", url)), tmp_path, stem="../job 1") == (
        tmp_path / (suffixed("job 1", "../job 1") + ".mp4"),
    )
    paths = await client.download(result("t", ("c-1", url), ("c-2", url)), tmp_path, stem="j")
    assert [p.name[: len("j_c-1-")] for p in paths] == ["j_c-1-", "j_c-2-"]
    assert len(listing(tmp_path)) == 4


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
    assert [re.sub(r"-[0-9a-f]{12}\.mp4$", "", p.name)[:20] for p in paths] == [
        "etc_passwd__abs_olut",
        "etc_passwd_nul_byte",
        "etc_passwd_._._._._.",
    ]
    assert all(p.parent == dest and len(p.name.encode()) < 255 for p in paths)
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


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (DownloadError("x", url="u", status=500), True),
        (DownloadError("x", url="u", status=503), True),
        (DownloadError("x", url="u", status=429), True),
        (DownloadError("x", url="u", status=403), False),
        (DownloadError("x", url="u", status=404), False),
        (DownloadError("x", url="u"), False),  # no cause: not a transfer failure
    ],
)
def test_which_answers_are_retried(error: DownloadError, expected: bool) -> None:
    assert retryable(error) is expected


@pytest.mark.parametrize(
    ("cause", "expected"),
    [
        (aiohttp.ServerDisconnectedError(), True),
        (aiohttp.ClientPayloadError("Response payload is not completed"), True),
        (aiohttp.ClientConnectionError("refused"), True),
        (TimeoutError(), True),
        (aiohttp.InvalidURL("nope"), False),
        (FileExistsError("a partial file"), False),
    ],
)
def test_which_transfer_failures_are_retried(cause: BaseException, expected: bool) -> None:
    error = DownloadError("x", url="u")
    error.__cause__ = cause
    assert retryable(error) is expected


JOB_IDS = [
    "猫-1",
    "狗-1",
    "鱼",
    "鸟",
    "🐱",
    "🐶",
    "שלום",
    "مرحبا-1",
    "猫" * 200,
    "猫" * 199 + "狗",
    "a/b",
    "a_b",
    "Cat",
    "cat",
    "cat-1",
    "job 1",
    "job_1",
]


async def test_every_job_downloads_to_its_own_file(
    client: ViduClient, server: TestServer, tmp_path: Path
) -> None:
    paths = {}
    for number, job_id in enumerate(JOB_IDS):
        task = result(f"task-{number}", ("c-1", str(server.make_url(f"/own/k{number}"))))
        (paths[job_id],) = await client.download(task, tmp_path, stem=job_id)
    assert len(listing(tmp_path)) == len(JOB_IDS)
    assert len({p.name.casefold() for p in paths.values()}) == len(JOB_IDS)
    for number, job_id in enumerate(JOB_IDS):
        assert paths[job_id].read_bytes() == own_bytes(f"k{number}")
    assert [paths[job_id].name for job_id in ("猫-1", "鱼", "cat", "cat-1", "a_b")] == [
        "猫-1.mp4",
        "鱼.mp4",
        "cat.mp4",
        "cat-1.mp4",
        "a_b.mp4",
    ]


async def test_a_partial_file_of_an_interrupted_run_is_replaced(
    client: ViduClient, server: TestServer, tmp_path: Path
) -> None:
    stale = partial_path(tmp_path / "task-7.mp4")
    assert stale.name == ".task-7.mp4.part"
    stale.write_bytes(b"half of an old download")
    task = result("task-7", ("c-1", str(server.make_url("/files/v.mp4"))))
    (path,) = await client.download(task, tmp_path)
    assert path.read_bytes() == VIDEO
    assert listing(tmp_path) == ["task-7.mp4"]


def test_remove_partial_files_removes_only_old_partial_files(tmp_path: Path) -> None:
    for name in [".a.mp4.part", ".b.mp4.1a2b3c4d.part", ".new.mp4.part", "c.part", "d.mp4"]:
        (tmp_path / name).write_bytes(b"x")
        if name != ".new.mp4.part":
            os.utime(tmp_path / name, (1000.0, 1000.0))
    (tmp_path / ".dir.part").mkdir()
    removed = remove_partial_files(tmp_path, before=2000.0)
    assert sorted(p.name for p in removed) == [".a.mp4.part", ".b.mp4.1a2b3c4d.part"]
    assert listing(tmp_path) == [".dir.part", ".new.mp4.part", "c.part", "d.mp4"]
    assert [p.name for p in remove_partial_files(tmp_path)] == [".new.mp4.part"]


async def test_a_truncated_body_is_retried_until_whole(
    client: ViduClient, server: TestServer, host: FileHost, time: ManualClock, tmp_path: Path
) -> None:
    host.cuts = 2
    task = result("task-8", ("c-1", str(server.make_url("/flaky/v.mp4?sig=abc"))))
    (path,) = await client.download(task, tmp_path)
    assert path.read_bytes() == VIDEO
    assert listing(tmp_path) == ["task-8.mp4"]
    assert [p for p, _ in host.file_requests] == ["/flaky/v.mp4"] * 3
    assert time.waits == [1.0, 2.0]


@pytest.mark.parametrize("route", ["reset", "broken"])
async def test_a_host_that_always_fails_gives_a_download_error_naming_the_link(
    client: ViduClient,
    server: TestServer,
    host: FileHost,
    time: ManualClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    route: str,
) -> None:
    task = result("task-9", ("c-1", str(server.make_url(f"/{route}/v.mp4?sig=secret"))))
    with pytest.raises(DownloadError) as info:
        await client.download(task, tmp_path)
    public = str(server.make_url(f"/{route}/v.mp4"))
    assert info.value.url == public
    assert str(info.value).startswith(f"downloading {public}: ")
    assert "Error" in str(info.value)  # the cause's type: ServerDisconnectedError, ...
    assert "3 attempts made" in str(info.value)
    assert "secret" not in str(info.value) + caplog.text
    assert len(host.file_requests) in (3, 6)  # aiohttp may resend an unanswered GET once itself
    assert time.waits == [1.0, 2.0]  # three attempts of ours
    assert listing(tmp_path) == []


async def test_downloads_of_one_target_take_turns(
    server: TestServer, host: FileHost, tmp_path: Path
) -> None:
    creation = Creation(id="c-1", url=str(server.make_url("/gated/v.mp4")))
    async with aiohttp.ClientSession() as session:

        def download() -> Awaitable[Path]:
            return download_creation(
                session, creation, tmp_path, "job", client_timeout=aiohttp.ClientTimeout(total=10)
            )

        first = asyncio.create_task(download())
        await asyncio.wait_for(host.stalled.wait(), 5)
        second = asyncio.create_task(download())
        for _ in range(50):  # time enough for the second to reach the file host, were it let
            await asyncio.sleep(0)
        assert len(host.file_requests) == 1
        host.release.set()
        assert await first == await second == tmp_path / "job.mp4"
    assert len(host.file_requests) == 2
    assert (tmp_path / "job.mp4").read_bytes() == VIDEO
    assert listing(tmp_path) == ["job.mp4"]


async def test_a_partial_file_taken_over_by_another_process_is_not_published(
    client: ViduClient, server: TestServer, host: FileHost, tmp_path: Path
) -> None:
    task = result("task-10", ("c-1", str(server.make_url("/gated/v.mp4"))))
    running = asyncio.create_task(client.download(task, tmp_path))
    await asyncio.wait_for(host.stalled.wait(), 5)
    partial = partial_path(tmp_path / "task-10.mp4")
    async with asyncio.timeout(5):
        while not partial.exists():  # noqa: ASYNC110 - waiting for the partial file to appear
            await asyncio.sleep(0.01)
    partial.unlink()  # what another process starting the same download does
    partial.write_bytes(b"the other process's bytes")
    host.release.set()
    with pytest.raises(DownloadError, match="replaced by another process"):
        await running
    assert listing(tmp_path) == [partial.name]
    assert partial.read_bytes() == b"the other process's bytes"


# --- what the file host answers, and how fast -----------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        (None, False),
        ("", False),
        ("video/mp4", False),
        ("video/quicktime", False),
        ("application/octet-stream", False),
        ("binary/octet-stream", False),
        ("image/jpeg", False),  # a cover
        ("application/mp4", False),
        ("text/html", True),
        ("TEXT/HTML; charset=UTF-8", True),
        ("text/plain", True),
        ("application/json", True),
        ("application/problem+json", True),
        ("application/xml", True),
        ("application/xhtml+xml", True),
        ("application/x-www-form-urlencoded", True),
        ("multipart/form-data; boundary=x", True),
    ],
)
def test_is_error_page(content_type: str | None, expected: bool) -> None:
    assert is_error_page(content_type) is expected


@pytest.mark.parametrize(
    ("pace", "received", "expected"),
    [
        (DownloadPace(), 0, 300.0),
        (DownloadPace(), 64 * 2**20, 300.0 + 1024),  # 64 MiB received at 64 KiB/s
        (DownloadPace(grace=3.0, min_rate=1000.0), 500, 3.5),
        (DownloadPace(grace=None), 10**9, None),
    ],
)
def test_an_attempt_may_take_the_grace_plus_a_second_per_min_rate_bytes(
    pace: DownloadPace, received: int, expected: float | None
) -> None:
    assert pace.limit(received) == expected


@pytest.mark.parametrize("kwargs", [{"grace": 0.0}, {"grace": -1.0}, {"min_rate": 0.0}])
def test_a_pace_that_allows_no_time_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        DownloadPace(**kwargs)


@pytest.mark.parametrize(
    "content_type", ["text/html; charset=utf-8", "application/json", "application/problem+xml"]
)
async def test_an_error_page_answered_200_is_refreshed_once_never_retried_and_writes_nothing(
    client: ViduClient, server: TestServer, host: FileHost, tmp_path: Path, content_type: str
) -> None:
    link = server.make_url("/typed/v.mp4").with_query(type=content_type, sig="secret")
    host.fresh_url = str(link)  # the fresh link serves the same page
    with pytest.raises(DownloadError) as info:
        await client.download(result("task-11", ("c-1", str(link))), tmp_path)
    public = str(server.make_url("/typed/v.mp4"))
    media_type = content_type.split(";")[0]
    assert str(info.value) == (
        f"downloading {public}: the file host answered {media_type}, {len(VIDEO)} bytes, not a "
        "media file (an error page: an expired link, a proxy or a captive portal?)"
    )
    assert (info.value.url, info.value.status) == (public, 200)
    assert host.queries == 1
    assert len(host.file_requests) == 2  # the link, then the fresh one: neither retried
    assert listing(tmp_path) == []


async def test_an_error_page_on_an_expired_link_is_cured_by_a_fresh_link(
    client: ViduClient, server: TestServer, host: FileHost, tmp_path: Path
) -> None:
    host.fresh_url = str(server.make_url("/files/fresh.mp4"))
    page = server.make_url("/typed/v.mp4").with_query(type="text/html")
    (path,) = await client.download(result("task-13", ("c-1", str(page))), tmp_path)
    assert path.read_bytes() == VIDEO


@pytest.mark.parametrize(
    "content_type", ["video/mp4", "application/octet-stream", "binary/octet-stream", "image/png"]
)
async def test_media_types_are_downloaded(
    client: ViduClient, server: TestServer, tmp_path: Path, content_type: str
) -> None:
    link = server.make_url("/typed/v").with_query(type=content_type)
    (path,) = await client.download(result("task-12", ("c-1", str(link))), tmp_path)
    assert path.read_bytes() == VIDEO


async def test_a_host_too_slow_for_the_file_fails_for_good_and_leaves_nothing(
    server: TestServer, host: FileHost, tmp_path: Path
) -> None:
    creation = Creation(id="c-1", url=str(server.make_url("/drip/v.mp4?sig=secret")))
    pace = DownloadPace(grace=0.2, min_rate=10_000.0)  # 1,000 bytes: 0.3 s in all, not 50
    async with aiohttp.ClientSession() as session:
        with pytest.raises(DownloadError) as info:
            await download_creation(
                session, creation, tmp_path, "job", pace=pace, retry=RetryPolicy(sleep=no_wait),
                client_timeout=aiohttp.ClientTimeout(sock_read=5),  # each byte comes in time
            )
    public = str(server.make_url("/drip/v.mp4"))
    assert re.fullmatch(
        rf"downloading {re.escape(public)}: too slow: \d+ of 1000 bytes in [\d.]+ s \(an "
        r"attempt may take 0\.2 s plus 1 s per 10000 bytes received\)",
        str(info.value),
    ), str(info.value)
    assert not retryable(info.value)
    assert len(host.file_requests) == 1  # it had its whole time: not tried again
    assert listing(tmp_path) == []


async def test_the_client_s_total_timeout_is_the_grace_of_a_download(
    server: TestServer, host: FileHost, tmp_path: Path
) -> None:
    base = str(server.make_url("/"))
    timeout = aiohttp.ClientTimeout(total=0.3, sock_read=5)
    async with ViduClient(KEY, base_url=base, timeout=timeout) as client:
        task = result("task-13", ("c-1", str(server.make_url("/drip/v.mp4"))))
        with pytest.raises(DownloadError, match=r"may take 0\.3 s plus 1 s per 65536 bytes"):
            await client.download(task, tmp_path)
    assert len(host.file_requests) == 1
    assert listing(tmp_path) == []


async def test_a_host_announcing_a_huge_file_then_trickling_is_cut_off_after_the_grace(
    server: TestServer, host: FileHost, tmp_path: Path
) -> None:
    """Only bytes received extend the deadline: 640 MiB announced gave this host 18 hours."""
    announced = 640 * 2**20
    link = server.make_url("/drip/v.mp4").with_query(announce=str(announced))
    pace = DownloadPace(grace=0.2, min_rate=10_000.0)  # the drip sends 20 bytes a second
    async with aiohttp.ClientSession() as session, asyncio.timeout(5):  # a guard: not 18 h
        with pytest.raises(DownloadError, match=rf"too slow: \d+ of {announced} bytes") as info:
            await download_creation(
                session, Creation(id="c-1", url=str(link)), tmp_path, "job", pace=pace,
                retry=RetryPolicy(sleep=no_wait), client_timeout=aiohttp.ClientTimeout(sock_read=5),
            )
    assert not retryable(info.value)
    assert len(host.file_requests) == 1
    assert listing(tmp_path) == []


@pytest.mark.parametrize("route", ["gated", "gated-chunked"])
async def test_the_deadline_grows_with_the_bytes_received(
    server: TestServer, host: FileHost, tmp_path: Path, route: str
) -> None:
    creation = Creation(id="c-1", url=str(server.make_url(f"/{route}/v.mp4")))
    pace = DownloadPace(grace=0.3, min_rate=50_000.0)  # the first 100 kB: 2 s more
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        started = loop.time()
        running = asyncio.create_task(download_creation(
            session, creation, tmp_path, "job", pace=pace, client_timeout=aiohttp.ClientTimeout()
        ))
        await asyncio.wait_for(host.stalled.wait(), 5)
        await asyncio.sleep(started + 0.6 - loop.time())  # twice the grace: the size allows it
        host.release.set()
        assert await running == tmp_path / "job.mp4"
    assert loop.time() - started > 0.6
    assert (tmp_path / "job.mp4").read_bytes() == VIDEO


FileAnswer = Callable[[web.Request, bytes, str], Awaitable[web.StreamResponse]]


class SimProxy:
    """The simulator behind a proxy whose file links are answered by ``files(request, body,
    content type)`` from the simulator's own answer."""

    def __init__(self, sim: FakeVidu, session: aiohttp.ClientSession, files: FileAnswer) -> None:
        self.sim = sim
        self.session = session
        self.files = files

    async def handle(self, request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        async with self.session.request(
            request.method, self.sim.url + request.path_qs, headers=headers,
            data=await request.read(),  # the Host header comes too: links name the proxy
        ) as answer:
            body = await answer.read()
            if request.path.startswith("/_sim/files/"):
                return await self.files(request, body, answer.content_type)
            return web.Response(status=answer.status, body=body, content_type=answer.content_type)


async def error_page(request: web.Request, body: bytes, content_type: str) -> web.Response:
    return web.Response(text="<html>Link expired</html>", content_type="text/html")


async def half_chunked(request: web.Request, body: bytes, content_type: str) -> web.StreamResponse:
    """Half the file, chunked, then a clean end: what a proxy cutting files short sends."""
    response = web.StreamResponse(headers={"Content-Type": content_type})
    response.enable_chunked_encoding()
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    await response.write_eof()
    return response


async def run_one_job(
    aiohttp_server: ServerFactory, files: FileAnswer | None, folder: Path, names: DownloadNames
) -> Outcome:
    """Run one job through a batch that downloads into ``folder``, straight from the simulator,
    or through a ``SimProxy`` answering its file links with ``files``."""
    async with FakeVidu(timeline=Timeline(created=0, processing=0)) as sim, \
            aiohttp.ClientSession() as session:
        base = sim.url
        if files is not None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", SimProxy(sim, session, files).handle)
            base = str((await aiohttp_server(app)).make_url("/")).rstrip("/")
        clock = ManualClock()
        async with ViduClient(sim.api_key, base_url=base, retry=RetryPolicy(sleep=no_wait)) as c:
            options = BatchOptions(wait=True, download=folder, names=names, sleep=clock.sleep,
                                   clock=clock)
            job = Job("clip", ReferenceToVideoRequest(
                "viduq2", "a cat", images=("https://example.com/cat.png",), duration=5,
                watermark=True,
            ), 1)
            (outcome,) = [o async for o in BatchSubmitter(c, options).run([job])]
    return outcome


async def test_a_batch_reports_an_error_page_as_a_failed_download(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    outcome = await run_one_job(aiohttp_server, error_page, tmp_path / "videos", DownloadNames())
    assert (outcome.status, outcome.files) == ("failed", ())
    assert outcome.error is not None and outcome.error.reason == "DownloadFailed"
    assert "answered text/html" in outcome.error.message
    assert outcome.to_dict()["status"] == "failed"
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == []


@pytest.mark.parametrize("name", sorted(MEDIA))
async def test_a_whole_file_sent_chunked_is_saved(
    client: ViduClient, server: TestServer, host: FileHost, tmp_path: Path, name: str
) -> None:
    task = result("task-20", ("c-1", str(server.make_url(f"/chunked/{name}"))))
    (path,) = await client.download(task, tmp_path)
    assert path.read_bytes() == MEDIA[name]
    assert listing(tmp_path) == [f"task-20{Path(name).suffix}"]
    assert len(host.file_requests) == 1


ENDED_EARLY, NOT_WHOLE = "the file host ended the file early", "the file is not whole"


@pytest.mark.parametrize(
    ("name", "what", "problem"),
    [
        ("video.mp4", ENDED_EARLY, f"the MP4's boxes need {len(VIDEO)}"),
        ("fragmented.mp4", ENDED_EARLY, f"the MP4's boxes need {FRAGMENT_CUT_IN_HALF_ENDS}"),
        ("large-box.mp4", ENDED_EARLY, f"the MP4's boxes need {len(FTYP) + 16 + 256 * 1024}"),
        ("cover.png", NOT_WHOLE, "the PNG does not end with its IEND chunk"),
        ("cover.jpg", NOT_WHOLE, "the JPEG does not end with its end marker FF D9"),
    ],
)
async def test_a_file_the_host_ends_early_is_retried_and_never_saved(
    client: ViduClient, server: TestServer, host: FileHost, time: ManualClock, tmp_path: Path,
    name: str, what: str, problem: str,
) -> None:
    host.cuts = 3
    task = result("task-21", ("c-1", str(server.make_url(f"/chunked/{name}?sig=secret"))))
    with pytest.raises(DownloadError) as info:
        await client.download(task, tmp_path)
    public = server.make_url(f"/chunked/{name}")
    assert str(info.value).startswith(
        f"downloading {public}: ClientPayloadError: {what}: {len(MEDIA[name]) // 2} bytes, "
        f"{problem}; gave up"
    )
    assert (info.value.url, info.value.status) == (str(public), None)
    assert listing(tmp_path) == []
    assert len(host.file_requests) == 3 and time.waits == [1.0, 2.0]


@pytest.mark.parametrize(
    ("name", "length"),
    [
        ("padded.mp4", None),
        ("ff-trailer.mp4", None),
        ("text-trailer.mp4", None),
        ("video.mp4", len(VIDEO) - 10),  # its boxes need more: the host says it is whole
        ("cover.png", 100),
    ],
)
async def test_a_body_that_matched_its_content_length_is_saved_unchecked_at_once(
    client: ViduClient, server: TestServer, host: FileHost, tmp_path: Path, name: str,
    length: int | None,
) -> None:
    query = "" if length is None else f"?length={length}"
    task = result("task-23", ("c-1", str(server.make_url(f"/sized/{name}{query}"))))
    (path,) = await client.download(task, tmp_path)
    assert path.read_bytes() == MEDIA[name][:length]
    assert listing(tmp_path) == [f"task-23{Path(name).suffix}"]
    assert len(host.file_requests) == 1


async def test_a_file_ended_early_once_is_fetched_again_whole(
    client: ViduClient, server: TestServer, host: FileHost, tmp_path: Path
) -> None:
    host.cuts = 1
    (path,) = await client.download(
        result("task-22", ("c-1", str(server.make_url("/chunked/video.mp4")))), tmp_path
    )
    assert path.read_bytes() == VIDEO
    assert listing(tmp_path) == ["task-22.mp4"]
    assert len(host.file_requests) == 2


async def test_a_batch_reports_files_a_proxy_cut_short_as_a_failed_download(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    outcome = await run_one_job(aiohttp_server, half_chunked, tmp_path / "videos", DownloadNames())
    assert (outcome.status, outcome.files) == ("failed", ())
    assert outcome.error is not None and outcome.error.reason == "DownloadFailed"
    assert "the file host ended the file early: " in outcome.error.message
    assert "the MP4's boxes need" in outcome.error.message
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == []


async def test_the_simulator_s_videos_and_covers_are_whole(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    names = DownloadNames(covers=True, watermarked=True)
    outcome = await run_one_job(aiohttp_server, None, tmp_path / "videos", names)
    assert outcome.status == "succeeded"
    assert sorted(Path(f).relative_to(tmp_path / "videos").as_posix() for f in outcome.files) == [
        "clip.mp4", "covers/clip.jpg", "watermarked/clip.mp4"
    ]
