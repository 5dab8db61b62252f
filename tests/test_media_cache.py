"""Local media prepared once (``MediaCache``): one read per file or bytes object while it stays
unchanged, shared by probes, fingerprints and bodies, bounded, and the same bytes sent as before.

Counts come from the cache's own ``stats()``; the process-wide cache is measured by differences,
on files made fresh in ``tmp_path`` (so no earlier test has them).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import threading
from pathlib import Path

import attrs
import pytest
from PIL import Image

from vidu_async.batch import BatchOptions, BatchSubmitter
from vidu_async.batch.identity import fingerprint
from vidu_async.client import ViduClient
from vidu_async.errors import ValidationError
from vidu_async.jobs import Job
from vidu_async.media import (
    CacheStats,
    MediaCache,
    _Memo,
    encode_media,
    inspect_media,
    media_cache,
    media_digest,
)
from vidu_async.requests import (
    ReferenceToVideoRequest,
    Subject,
    SubjectsToVideoRequest,
    dumps_body,
)
from vidu_async.retry import RetryPolicy, no_wait
from vidu_async.testing import FakeVidu, ManualClock, Timeline

URL = "https://example.com/cat.png"


def png(shade: int, size: tuple[int, int] = (256, 256)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (shade, 100, 200)).save(out, "PNG")
    return out.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def grew(before: CacheStats, cache: MediaCache | None = None) -> dict[str, int]:
    """What the cache did since ``before``: probes, reads, hits, evictions."""
    now = (cache or media_cache()).stats()
    return {name: getattr(now, name) - getattr(before, name)
            for name in ("probes", "reads", "hits", "evictions")}


# --- one read per file, shared by every use ------------------------------------------------


async def test_a_file_shared_by_50_inline_jobs_is_read_once_and_sent_unchanged(
    tmp_path: Path,
) -> None:
    image = write(tmp_path / "cat.png", png(10))
    jobs = [Job(f"j{i}", ReferenceToVideoRequest("viduq2", f"take {i}", images=[image, URL],
                                                duration=5)) for i in range(50)]
    before = media_cache().stats()
    clock = ManualClock()
    async with (FakeVidu(timeline=Timeline(created=0, processing=0)) as sim,
                ViduClient(sim.api_key, base_url=sim.url,
                           retry=RetryPolicy(sleep=no_wait)) as client):
        options = BatchOptions(concurrency=8, upload_images=False, clock=clock, sleep=clock.sleep)
        outcomes = [o async for o in BatchSubmitter(client, options).run(jobs)]
    assert {o.status for o in outcomes} == {"submitted"}
    done = grew(before)
    assert done["reads"] == 1 and done["probes"] <= 1  # fingerprints, checks and bodies share it
    assert done["hits"] >= 2 * 50 - 1
    assert [t.request["images"] for t in sim.tasks.values()] == [
        [data_uri(image.read_bytes()), URL]] * 50


def test_probe_digest_and_data_uri_come_from_one_read(tmp_path: Path) -> None:
    image = write(tmp_path / "cat.png", png(20))
    before = media_cache().stats()
    for _ in range(3):
        assert inspect_media(image, "image", field="images[0]").width == 256
    assert grew(before) == {"probes": 1, "reads": 0, "hits": 2, "evictions": 0}
    digest = media_digest(image, "image")
    assert digest == "sha256:" + hashlib.sha256(image.read_bytes()).hexdigest()
    assert encode_media(str(image), "image") == data_uri(image.read_bytes())
    assert grew(before)["reads"] == 1
    other = write(tmp_path / "dog.png", png(30))
    media_digest(other, "image")  # a full read first: probed from memory, once
    probed = grew(before)
    inspect_media(other, "image", field="images[0]")
    assert grew(before) == {**probed, "hits": probed["hits"] + 1}
    assert probed["probes"] == 2 and probed["reads"] == 2


def test_a_modified_file_is_read_again(tmp_path: Path) -> None:
    image = write(tmp_path / "cat.png", png(10))
    request = ReferenceToVideoRequest("viduq2", "p", images=[image])
    first = fingerprint(request)
    assert fingerprint(request) == first
    before = media_cache().stats()
    write(image, png(11))  # another picture, the same size (both are flat colour)
    assert fingerprint(request) != first
    assert encode_media(image, "image") == data_uri(png(11))
    assert grew(before)["reads"] == 1
    stamp = image.stat()
    write(image, png(12))
    os.utime(image, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # size and mtime as before
    assert encode_media(image, "image") == data_uri(png(12))
    assert grew(before)["reads"] == 2


def test_a_bytes_object_is_prepared_once_and_equal_bytes_share_the_digest() -> None:
    data = png(40)
    before = media_cache().stats()
    for _ in range(5):
        assert encode_media(data, "image") == data_uri(data)
        assert media_digest(data, "image") == "sha256:" + hashlib.sha256(data).hexdigest()
    assert grew(before)["reads"] == 1
    copy = bytes(bytearray(data))  # equal content, another object
    assert media_digest(copy, "image") == media_digest(data, "image")


def test_an_unreadable_file_is_not_remembered(tmp_path: Path) -> None:
    image = tmp_path / "later.png"
    with pytest.raises(ValidationError, match="file not found"):
        encode_media(image, "image")
    assert media_digest(image, "image") == f"missing:{image}"
    write(image, png(50))
    assert encode_media(image, "image") == data_uri(png(50))


def test_a_file_too_large_to_send_is_hashed_in_blocks_and_not_kept(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    with big.open("wb") as handle:
        handle.truncate(21 * 1024 * 1024)  # sparse: written at once
    held = media_cache().stats().held_bytes
    assert media_digest(big, "image") == "sha256:" + hashlib.sha256(big.read_bytes()).hexdigest()
    assert media_cache().stats().held_bytes == held
    with pytest.raises(ValidationError, match="unrecognised format"):
        encode_media(big, "image")


# --- bounded, least recently used first out ------------------------------------------------


def test_the_bound_evicts_the_least_recently_used(tmp_path: Path) -> None:
    a, b, c = (write(tmp_path / f"{name}.png", png(shade))
               for name, shade in (("a", 1), ("b", 2), ("c", 3)))
    size = {path: len(data_uri(path.read_bytes())) for path in (a, b, c)}
    cache = MediaCache(max_bytes=size[a] + size[c] + size[b] // 2)  # room for two
    before = cache.stats()
    for path in (a, b, a, c):  # a used again, so b is the oldest when c comes
        cache.prepared(str(path))
    assert grew(before, cache) == {"probes": 3, "reads": 3, "hits": 1, "evictions": 1}
    assert cache.stats().held_bytes == size[a] + size[c]
    cache.prepared(str(a))
    assert grew(before, cache)["reads"] == 3
    cache.prepared(str(b))
    assert grew(before, cache) == {"probes": 3, "reads": 4, "hits": 3, "evictions": 2}
    assert cache.stats().held_bytes == size[a] + size[b]  # c was the oldest


def test_an_entry_larger_than_the_bound_is_returned_not_kept(tmp_path: Path) -> None:
    image = write(tmp_path / "a.png", png(1))
    cache = MediaCache(max_bytes=100)
    assert cache.prepared(str(image)).data_uri == data_uri(image.read_bytes())
    assert cache.stats().held_bytes == 0
    cache.prepared(str(image))
    assert cache.stats().reads == 2


# --- concurrent users share one preparation ------------------------------------------------


def test_concurrent_callers_of_one_key_wait_for_one_making() -> None:
    memo: _Memo[str, int] = _Memo(10, lambda _: 1)
    release = threading.Event()
    makings: list[int] = []

    def make() -> int:
        makings.append(1)
        release.wait(10)
        return 42

    answers: list[int] = []
    threads = [threading.Thread(target=lambda: answers.append(memo.get("k", make)))
               for _ in range(6)]
    for thread in threads:
        thread.start()
    pause = threading.Event()
    for _ in range(10_000):  # until the other five wait on the first one's future (<= 10 s)
        if memo.hits == 5:
            break
        pause.wait(0.001)
    release.set()
    for thread in threads:
        thread.join(10)
    assert answers == [42] * 6 and len(makings) == 1 and memo.made == 1


def test_a_failed_making_reaches_its_waiters_and_is_tried_again() -> None:
    memo: _Memo[str, int] = _Memo(10, lambda _: 1)

    def fail() -> int:
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        memo.get("k", fail)
    assert memo.get("k", lambda: 7) == 7 and memo.made == 1


async def test_concurrent_bodies_in_threads_read_a_file_once(tmp_path: Path) -> None:
    image = write(tmp_path / "cat.png", png(60))
    request = ReferenceToVideoRequest("viduq2", "p", images=[image, image])
    before = media_cache().stats()
    bodies = await asyncio.gather(*(asyncio.to_thread(request.to_body, payload=f"k{i}")
                                    for i in range(16)))
    assert grew(before)["reads"] == 1
    assert len({body.replace(f"k{i}".encode(), b"") for i, body in enumerate(bodies)}) == 1


# --- bodies: byte for byte what they were --------------------------------------------------


def test_bodies_are_byte_identical_to_escaping_everything(tmp_path: Path) -> None:
    """``to_body`` splices the cached base64; the old way serialized the whole dict."""
    image = write(tmp_path / "cat.png", png(70))
    raw = png(80)
    given_uri = data_uri(png(90)).replace("base64,", 'base64,"\\')  # escaped, not spliced
    request = ReferenceToVideoRequest(
        "viduq2", 'a "quoted" \\ prompt, ünïcode ✓', images=[image, raw, URL, given_uri],
        duration=5, payload="mine",
    )
    old = {**request.body_with(lambda item, kind: item if isinstance(item, str) else ""),
           "images": [data_uri(image.read_bytes()), data_uri(raw), URL, given_uri]}
    assert request.to_body() == dumps_body(old)
    assert request.to_body(payload="envelope") == dumps_body({**old, "payload": "envelope"})
    subjects = SubjectsToVideoRequest("viduq2", "@cat", [Subject("cat", [image, URL])])
    expected = subjects.body_with(lambda item, kind: item if isinstance(item, str) else "")
    expected["subjects"][0]["images"] = [data_uri(image.read_bytes()), URL]
    assert subjects.to_body(payload="p") == dumps_body({**expected, "payload": "p"})
    assert attrs.evolve(request, payload=None).to_body(payload="p") == dumps_body(
        {k: v for k, v in old.items() if k != "payload"} | {"payload": "p"})
