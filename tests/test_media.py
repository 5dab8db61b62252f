"""Media probes and encoding (vidu_async.media): Pillow-made images as the oracle, hand-built
MP4 / MOV / AVI containers, size and ratio boundaries, truncated and corrupt data, and fuzzing."""

from __future__ import annotations

import base64
import io
import struct
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from vidu_async.capabilities import VIDEO_DECODED_MAX_BYTES, VIDEO_FILE_MAX_BYTES
from vidu_async.errors import ValidationError
from vidu_async.media import MediaInfo, MediaKind, MediaSource, encode_media, inspect_media

# --- fixtures: images from Pillow --------------------------------------------------------------


def pillow(fmt: str, size: tuple[int, int], mode: str = "RGB", **options: object) -> bytes:
    """An image saved by Pillow: one colour (half transparent with alpha) so files stay small."""
    out = io.BytesIO()
    Image.new(mode, size, "#3a78" if "A" in mode else "#3a7").save(out, fmt, **options)
    return out.getvalue()


def exif() -> Image.Exif:
    tags = Image.Exif()
    tags[0x010F] = "vidu-async tests"  # Make
    return tags


IMAGE_VARIANTS: dict[str, tuple[str, str, dict[str, object]]] = {
    # name: (Pillow format, mode, save options)
    "png": ("PNG", "RGB", {}),
    "jpeg-baseline": ("JPEG", "RGB", {}),
    "jpeg-progressive": ("JPEG", "RGB", {"progressive": True}),
    "jpeg-exif-icc": ("JPEG", "RGB", {"exif": exif(), "icc_profile": bytes(60_000)}),
    "webp-lossy": ("WEBP", "RGB", {"quality": 80}),
    "webp-lossless": ("WEBP", "RGB", {"lossless": True}),
    "webp-alpha": ("WEBP", "RGBA", {"quality": 80}),
    "webp-exif": ("WEBP", "RGB", {"exif": exif()}),
}
CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


def image(variant: str, size: tuple[int, int] = (300, 200)) -> bytes:
    fmt, mode, options = IMAGE_VARIANTS[variant]
    return pillow(fmt, size, mode, **options)


def png(width: int, height: int) -> bytes:
    return image("png", (width, height))


# --- fixtures: hand-built ISO BMFF (MP4 / MOV) and RIFF (AVI) ---------------------------------


def box(kind: bytes, *children: bytes, large: bool = False) -> bytes:
    """An ISO BMFF box; ``large`` writes the 64-bit size form (size field 1)."""
    payload = b"".join(children)
    if large:
        return struct.pack(">I4sQ", 1, kind, 16 + len(payload)) + payload
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def ftyp(brand: bytes = b"isom") -> bytes:
    return box(b"ftyp", brand, bytes(4), brand)


def mvhd(timescale: int = 1000, duration: int = 5000, version: int = 0) -> bytes:
    if version == 1:
        fields = struct.pack(">B3xQQIQ", 1, 0, 0, timescale, duration)
    else:
        fields = struct.pack(">B3xIIII", 0, 0, 0, timescale, duration)
    return box(b"mvhd", fields, bytes(80))  # rate, volume, matrix, next track id: unread


IDENTITY = struct.pack(">9i", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def tkhd(width: int, height: int, version: int = 0, *, fixed: bool = False) -> bytes:
    """A track header; width and height are whole pixels, or raw 16.16 values if ``fixed``."""
    if version == 1:
        head = struct.pack(">B3xQQIIQ", 1, 0, 0, 1, 0, 0)
    else:
        head = struct.pack(">B3xIIIII", 0, 0, 0, 1, 0, 0)
    shift = 0 if fixed else 16
    size = struct.pack(">II", width << shift, height << shift)
    return box(b"tkhd", head, bytes(16), IDENTITY, size)


def trak(width: int, height: int, version: int = 0) -> bytes:
    return box(b"trak", tkhd(width, height, version))


def moov(width: int = 640, height: int = 360, *, duration: int = 5000) -> bytes:
    return box(b"moov", mvhd(1000, duration), trak(width, height))


def mdat(size: int = 64, *, large: bool = False) -> bytes:
    return box(b"mdat", bytes(size), large=large)


def mp4(*top: bytes, brand: bytes = b"isom") -> bytes:
    return ftyp(brand) + b"".join(top)


def chunk(fourcc: bytes, payload: bytes) -> bytes:
    return struct.pack("<4sI", fourcc, len(payload)) + payload + bytes(len(payload) & 1)


def riff(form: bytes, *chunks: bytes) -> bytes:
    body = form + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def avih(width: int, height: int, *, micros: int = 40_000, frames: int = 125) -> bytes:
    main = struct.pack("<10I", micros, 0, 0, 0x10, frames, 0, 1, 0, width, height)
    return chunk(b"avih", main + bytes(16))


def avi(width: int = 640, height: int = 360, *, micros: int = 40_000, frames: int = 125) -> bytes:
    hdrl = chunk(b"LIST", b"hdrl" + avih(width, height, micros=micros, frames=frames))
    movi = chunk(b"LIST", b"movi" + chunk(b"00dc", bytes(11)))
    return riff(b"AVI ", chunk(b"JUNK", bytes(7)), hdrl, movi)


def rejected(source: MediaSource, kind: MediaKind = "image", field: str = "images[0]") -> list[str]:
    """The problem messages ``inspect_media`` reports, all of them under ``field``."""
    with pytest.raises(ValidationError) as caught:
        inspect_media(source, kind, field=field)
    assert caught.value.problems
    assert {p.field for p in caught.value.problems} == {field}
    return [p.message for p in caught.value.problems]


def the_problem(source: MediaSource, kind: MediaKind = "image") -> str:
    [message] = rejected(source, kind)
    return message


# --- images --------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(IMAGE_VARIANTS))
@pytest.mark.parametrize("size", [(300, 200), (129, 513), (2000, 1999)])
def test_image_dimensions_equal_pillows(variant: str, size: tuple[int, int]) -> None:
    data = image(variant, size)
    oracle = Image.open(io.BytesIO(data))

    info = inspect_media(data, "image", field="images[0]")

    assert (info.width, info.height) == oracle.size == size
    assert info.content_type == CONTENT_TYPES[oracle.format or ""]
    assert (info.kind, info.origin, info.size, info.duration) == ("image", "bytes", len(data), None)
    assert info.warnings == ()


@pytest.mark.parametrize(
    ("variant", "marker"),
    [
        ("jpeg-baseline", b"\xff\xc0"),
        ("jpeg-progressive", b"\xff\xc2"),
        ("webp-lossy", b"VP8 "),
        ("webp-lossless", b"VP8L"),
        ("webp-alpha", b"VP8X"),
        ("webp-exif", b"VP8X"),
    ],
)
def test_fixtures_use_the_variant_they_are_named_for(variant: str, marker: bytes) -> None:
    """Guards the test above: each format variant really is exercised."""
    data = image(variant)
    assert (data[12:16] == marker) if variant.startswith("webp") else (marker in data)


def test_jpeg_probe_skips_large_app_segments_before_the_frame_header() -> None:
    data = image("jpeg-exif-icc")
    assert data.index(b"Exif") < data.index(b"ICC_PROFILE") < data.index(b"\xff\xc0")
    assert data.index(b"\xff\xc0") > 60_000
    assert inspect_media(data, "image", field="x").width == 300


def test_jpeg_fill_bytes_before_a_marker_are_skipped() -> None:
    data = image("jpeg-baseline")
    padded = data[:2] + b"\xff\xff" + data[2:]
    assert Image.open(io.BytesIO(padded)).size == (300, 200)
    assert inspect_media(padded, "image", field="x").width == 300


def test_vp8_scale_bits_are_not_part_of_the_size() -> None:
    data = image("webp-lossy")
    assert data[12:16] == b"VP8 "
    width, height = struct.unpack_from("<HH", data, 26)
    scaled = patch(data, 26, struct.pack("<HH", width | 0x4000, height | 0x8000))
    info = inspect_media(scaled, "image", field="x")
    assert (info.width, info.height) == (300, 200) == Image.open(io.BytesIO(scaled)).size


@pytest.mark.parametrize(
    ("width", "height", "ok"),
    [(128, 128, True), (127, 128, False), (128, 127, False), (127, 127, False)],
)
def test_minimum_side_is_128(width: int, height: int, ok: bool) -> None:
    data = png(width, height)
    if ok:
        assert inspect_media(data, "image", field="images[0]").width == width
    else:
        assert "at least 128" in the_problem(data)


@pytest.mark.parametrize(
    ("width", "height", "ok"),
    [(511, 128, True), (512, 128, False), (128, 511, True), (128, 512, False)],
)
def test_aspect_ratio_must_be_strictly_inside_4_to_1(width: int, height: int, ok: bool) -> None:
    data = png(width, height)
    if ok:
        assert inspect_media(data, "image", field="images[0]").height == height
    else:
        assert f"aspect ratio {width}x{height} is not strictly between 1:4 and 4:1" in (
            the_problem(data)
        )


def test_every_problem_of_one_entry_is_reported_under_its_field() -> None:
    messages = rejected(png(100, 401), field="images[3]")
    assert len(messages) == 2
    assert "100x401 pixels is too small" in messages[0]
    assert "aspect ratio 100x401" in messages[1]
    assert all(m.startswith("<") and "bytes>: " in m for m in messages)


# --- videos --------------------------------------------------------------------------------


def test_mp4_size_and_duration() -> None:
    data = mp4(moov(640, 360, duration=4500), mdat())
    info = inspect_media(data, "video", field="videos[0]")
    assert (info.content_type, info.width, info.height, info.duration) == (
        "video/mp4",
        640,
        360,
        4.5,
    )
    assert (info.kind, info.size, info.warnings) == ("video", len(data), ())


def test_quicktime_brand_or_no_ftyp_is_mov() -> None:
    assert inspect_media(mp4(moov(), brand=b"qt  "), "video", field="v").content_type == (
        "video/quicktime"
    )
    assert inspect_media(moov() + mdat(), "video", field="v").content_type == "video/quicktime"


def test_moov_after_mdat_is_found() -> None:
    info = inspect_media(mp4(mdat(5000), moov(320, 240)), "video", field="v")
    assert (info.width, info.height) == (320, 240)


def test_64_bit_box_sizes() -> None:
    data = mp4(mdat(100, large=True), box(b"moov", mvhd(600, 1800), trak(720, 1280), large=True))
    info = inspect_media(data, "video", field="v")
    assert (info.width, info.height, info.duration) == (720, 1280, 3.0)


def test_last_box_of_size_zero_runs_to_the_end() -> None:
    data = mp4(moov(), struct.pack(">I4s", 0, b"mdat"), bytes(1000))
    assert inspect_media(data, "video", field="v").width == 640


def test_version_1_headers() -> None:
    data = mp4(box(b"moov", mvhd(90_000, 720_000, version=1), trak(1920, 1080, version=1)))
    info = inspect_media(data, "video", field="v")
    assert (info.width, info.height, info.duration) == (1920, 1080, 8.0)


def test_first_track_with_a_size_is_the_video_and_fractions_are_dropped() -> None:
    audio = trak(0, 0)
    video = box(b"trak", tkhd(int(320.5 * 65536), 240 << 16, fixed=True))
    info = inspect_media(mp4(box(b"moov", mvhd(), audio, video)), "video", field="v")
    assert (info.width, info.height) == (320, 240)


@pytest.mark.parametrize(
    "header",
    [
        None,  # no mvhd at all
        mvhd(timescale=0),
        mvhd(duration=0),
        mvhd(duration=2**32 - 1),
        mvhd(duration=2**64 - 1, version=1),
    ],
)
def test_unreadable_duration_is_a_warning_not_an_error(header: bytes | None) -> None:
    children = [trak(640, 360)] if header is None else [header, trak(640, 360)]
    info = inspect_media(mp4(box(b"moov", *children)), "video", field="videos[0]")
    assert info.duration is None
    assert info.warnings == (
        f"{info.label}: the duration could not be read from the header; the server will check it",
    )


def test_avi_size_and_duration() -> None:
    data = avi(1280, 720, micros=33_333, frames=300)
    info = inspect_media(data, "video", field="v")
    assert (info.content_type, info.width, info.height) == ("video/x-msvideo", 1280, 720)
    assert info.duration == pytest.approx(9.9999)


@pytest.mark.parametrize(("micros", "frames"), [(0, 125), (40_000, 0)])
def test_avi_without_frame_timing_warns(micros: int, frames: int) -> None:
    info = inspect_media(avi(micros=micros, frames=frames), "video", field="v")
    assert info.duration is None
    assert len(info.warnings) == 1


@pytest.mark.parametrize(
    ("width", "height", "ok"),
    [(128, 128, True), (127, 300, False), (511, 128, True), (512, 128, False), (128, 512, False)],
)
def test_videos_follow_the_same_size_and_ratio_rules(width: int, height: int, ok: bool) -> None:
    for data in (mp4(moov(width, height)), avi(width, height)):
        if ok:
            assert inspect_media(data, "video", field="v").width == width
        else:
            assert f"{width}x{height}" in the_problem(data, "video")


def write_sparse(path: Path, head: bytes, size: int) -> Path:
    """A file of ``size`` bytes starting with ``head``; the rest is a hole, cheap to create."""
    with path.open("wb") as out:
        out.write(head)
        out.truncate(size)
    return path


def open_mdat() -> bytes:
    """An MP4 whose last box, mdat, runs to the end of the file (size field 0)."""
    return mp4(moov(), struct.pack(">I4s", 0, b"mdat"))


def test_video_size_limits(tmp_path: Path) -> None:
    under = write_sparse(tmp_path / "under.mp4", open_mdat(), VIDEO_DECODED_MAX_BYTES - 1)
    assert inspect_media(under, "video", field="v").size == VIDEO_DECODED_MAX_BYTES - 1

    at = write_sparse(tmp_path / "at.mp4", open_mdat(), VIDEO_DECODED_MAX_BYTES)
    [message] = rejected(at, "video")
    assert message.startswith(f"{at}: the video is 20.0 MB")
    assert "must be under 20.0 MB" in message and "URL" in message

    over = write_sparse(tmp_path / "over.mp4", open_mdat(), VIDEO_FILE_MAX_BYTES + 1)
    messages = rejected(over, "video")
    assert len(messages) == 2
    assert "videos may be at most 100.0 MB" in messages[0]


def test_probing_a_large_file_reads_only_its_headers(tmp_path: Path) -> None:
    # 19 MB of media data before the moov box: the probe must seek past it, not read it.
    big = 19 * 1024 * 1024
    path = tmp_path / "late-moov.mp4"
    with path.open("wb") as out:
        out.write(mp4(struct.pack(">I4s", 8 + big, b"mdat")))
        out.seek(big, io.SEEK_CUR)
        out.write(moov(400, 300))
    tracemalloc.start()
    try:
        info = inspect_media(path, "video", field="v")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (info.width, info.height) == (400, 300)
    assert peak < 256 * 1024


def test_kind_mismatch_is_named() -> None:
    assert the_problem(png(300, 300), "video").endswith("this is an image (PNG), not a video")
    assert the_problem(avi(), "image").endswith("this is a video (AVI), not an image")


# --- truncated, corrupt and unsupported data -----------------------------------------------

TRUNCATABLE: dict[str, bytes] = {
    **{variant: image(variant, (160, 144)) for variant in IMAGE_VARIANTS},
    "mp4-mdat-first": mp4(mdat(300), moov()),
    "mp4-64-bit": mp4(mdat(100, large=True), box(b"moov", mvhd(), trak(640, 360), large=True)),
    "avi": avi(),
}


def cut_points(length: int) -> list[int]:
    """Every cut in the first 256 bytes and the last 32, and 40 spread in between."""
    spread = range(256, length, max(1, (length - 256) // 40))
    return sorted({*range(min(length, 256)), *spread, *range(max(0, length - 32), length)})


@pytest.mark.parametrize("name", sorted(TRUNCATABLE))
def test_truncated_data_is_rejected_at_every_cut(name: str) -> None:
    data = TRUNCATABLE[name]
    kind: MediaKind = "video" if name.startswith(("mp4", "avi")) else "image"
    assert inspect_media(data, kind, field="f").size == len(data)
    for cut in cut_points(len(data)):
        [message] = rejected(data[:cut], kind, field="f")
        assert message.startswith(f"<{cut:,} bytes>: "), cut
        if cut >= 16:  # long enough to be recognised: the reason is the cut
            assert "truncated" in message or "no moov box" in message, (cut, message)


@pytest.mark.parametrize("name", sorted(TRUNCATABLE))
def test_truncated_files_are_rejected_at_every_cut(name: str, tmp_path: Path) -> None:
    """Files are read through seeks, not slices: a cut inside the header must not upset them."""
    data = TRUNCATABLE[name]
    kind: MediaKind = "video" if name.startswith(("mp4", "avi")) else "image"
    path = tmp_path / "cut.bin"
    for cut in cut_points(len(data)):
        path.write_bytes(data[:cut])
        [message] = rejected(path, kind, field="f")
        assert message.startswith(f"{path}: "), cut
        if cut >= 16:
            assert "truncated" in message or "no moov box" in message, (cut, message)


@pytest.mark.parametrize(
    ("variant", "cut", "expected"),
    [
        ("png", 28, "not a valid PNG file: truncated: 28 bytes end inside the header"),
        ("jpeg-baseline", 30, "not a valid JPEG file: truncated: the marker at byte 89 is cut off"),
    ],
)
def test_an_image_file_cut_inside_its_header_is_named(
    variant: str, cut: int, expected: str, tmp_path: Path
) -> None:
    path = tmp_path / f"cut-{variant}"
    path.write_bytes(image(variant)[:cut])
    assert the_problem(path) == f"{path}: {expected}"


def test_a_path_the_os_refuses_is_a_problem_not_a_crash() -> None:
    assert the_problem("ref\x00.png") == (
        "'ref\\x00.png': not a usable file path (embedded null byte)"
    )


def patch(data: bytes, offset: int, new: bytes) -> bytes:
    return data[:offset] + new + data[offset + len(new) :]


JPEG = image("jpeg-baseline")
CORRUPT: list[tuple[str, bytes, MediaKind, str]] = [
    ("png-first-chunk", patch(png(300, 200), 12, b"IDAT"), "image", "the first chunk is not IHDR"),
    ("png-zero-width", patch(png(300, 200), 16, bytes(4)), "image", "zero width or height"),
    ("jpeg-no-marker", patch(JPEG, 20, b"\x00\x00"), "image", "expected a marker at byte 20"),
    ("jpeg-bad-length", patch(JPEG, 4, b"\x00\x01"), "image", "impossible length 1"),
    ("jpeg-scan-first", b"\xff\xd8\xff\xda" + JPEG[4:], "image", "no frame header (SOF)"),
    (
        "jpeg-endless-comments",
        b"\xff\xd8" + b"\xff\xfe\x00\x02" * 5000 + b"\xff\xd9",
        "image",
        "no frame header (SOF) in the first 4096 markers",
    ),
    (
        "webp-vp8-start-code",
        patch(image("webp-lossy"), 23, b"\x00\x00\x00"),
        "image",
        "does not start with a key frame",
    ),
    (
        "webp-vp8-inter-frame",
        patch(image("webp-lossy"), 20, bytes([image("webp-lossy")[20] | 1])),
        "image",
        "does not start with a key frame",
    ),
    ("webp-vp8l-signature", patch(image("webp-lossless"), 20, b"\x00"), "image", "signature"),
    ("webp-unknown-chunk", patch(image("webp-lossy"), 12, b"VP9 "), "image", "unknown first chunk"),
    ("mp4-tiny-box", mp4(struct.pack(">I4s", 4, b"moov")), "video", "impossible size 4"),
    ("mp4-no-moov", mp4(mdat()), "video", "no moov box"),
    ("mp4-audio-only", mp4(box(b"moov", mvhd(), trak(0, 0))), "video", "no video track"),
    (
        "mp4-short-tkhd",
        mp4(box(b"moov", box(b"trak", box(b"tkhd", bytes(20))))),
        "video",
        "the tkhd box is too short",
    ),
    ("mp4-stray-bytes", mp4(moov(), b"abc"), "video", "3 stray bytes"),
    (
        "mp4-endless-boxes",
        mp4(box(b"free") * 5000, moov()),
        "video",
        "more than 4096 boxes",
    ),
    ("avi-no-hdrl", riff(b"AVI ", chunk(b"LIST", b"movi")), "video", "no hdrl header list"),
    ("avi-no-avih", riff(b"AVI ", chunk(b"LIST", b"hdrl")), "video", "has no avih header"),
    (
        "avi-short-avih",
        riff(b"AVI ", chunk(b"LIST", b"hdrl" + chunk(b"avih", bytes(20)))),
        "video",
        "the avih header is too short",
    ),
]


@pytest.mark.parametrize(
    ("data", "kind", "reason"), [case[1:] for case in CORRUPT], ids=[case[0] for case in CORRUPT]
)
def test_corrupt_headers_are_rejected_with_the_reason(
    data: bytes, kind: MediaKind, reason: str
) -> None:
    message = the_problem(data, kind)
    assert message.startswith(f"<{len(data):,} bytes>: not a valid ")
    assert reason in message


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "it is empty"),
        (pillow("GIF", (200, 200), "P"), "looks like a GIF image"),
        (pillow("BMP", (200, 200)), "looks like a BMP image"),
        (pillow("TIFF", (200, 200)), "looks like a TIFF image"),
        (box(b"ftyp", b"heic", bytes(4), b"mif1heic"), "HEIF / AVIF image"),
        (b"\x1a\x45\xdf\xa3" + bytes(40), "Matroska / WebM"),
        (b"hello, world: plain text", "unrecognised format"),
        (riff(b"WAVE", chunk(b"fmt ", bytes(16))), "unrecognised format"),
    ],
)
def test_unsupported_formats_are_named(data: bytes, reason: str) -> None:
    for kind in ("image", "video"):
        assert reason in the_problem(data, kind)


# --- files, URLs, data URIs, encoding ----------------------------------------------------------


def test_a_file_is_sniffed_by_content_not_extension(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(png(300, 200))
    for source in (path, str(path)):
        info = inspect_media(source, "image", field="images[0]")
        assert (info.origin, info.label, info.content_type) == ("file", str(path), "image/png")
        assert encode_media(source, "image").startswith("data:image/png;base64,")


def test_a_bad_file_is_named_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(mp4(mdat(), moov())[:-10])
    assert the_problem(path, "video").startswith(f"{path}: not a valid MP4 file: truncated")


def test_missing_files_and_directories(tmp_path: Path) -> None:
    missing = tmp_path / "missing.png"
    with pytest.raises(ValidationError) as caught:
        inspect_media(missing, "image", field="images[0]")
    assert [str(p) for p in caught.value.problems] == [f"images[0]: file not found: {missing}"]
    assert the_problem(tmp_path) == f"{tmp_path}: not a regular file"
    with pytest.raises(ValidationError, match="file not found"):
        encode_media(missing, "image")


@pytest.mark.parametrize("kind", ["image", "video"])
def test_urls_are_checked_for_form_only(kind: MediaKind) -> None:
    url = "https://cdn.example.com/a/b.png?sig=1"
    info = inspect_media(url, kind, field="f")
    assert info == MediaInfo(kind, "url", url, None, None, None, None, None, len(url), ())
    assert encode_media(url, kind) == url
    assert inspect_media("HTTP://example.com", kind, field="f").origin == "url"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/a.png", "only http:// and https:// URLs are accepted"),
        ("file:///etc/hosts", "only http:// and https:// URLs are accepted"),
        ("https://", "the URL has no host"),
        ("http://[::1/a.png", "not a valid URL (Invalid IPv6 URL)"),
    ],
)
def test_bad_urls(url: str, reason: str) -> None:
    assert the_problem(url) == f"{url}: {reason}"


def test_wrong_types_and_empty_strings() -> None:
    assert "got int" in the_problem(42)  # type: ignore[arg-type]
    assert "empty string" in the_problem("")


def data_uri(content_type: str, data: bytes) -> str:
    return f"data:{content_type};base64," + base64.b64encode(data).decode()


def test_data_uri_round_trip() -> None:
    data = image("webp-lossless", (200, 300))
    uri = encode_media(data, "image")
    assert uri == data_uri("image/webp", data)
    info = inspect_media(uri, "image", field="images[1]")
    assert (info.origin, info.content_type, info.width, info.height) == (
        "data_uri",
        "image/webp",
        200,
        300,
    )
    assert (info.size, info.encoded_length, info.warnings) == (len(data), len(uri), ())
    assert encode_media(uri, "image") == uri


def test_data_uri_videos_are_checked_after_decoding() -> None:
    info = inspect_media(data_uri("video/mp4", avi(400, 300)), "video", field="v")
    assert (info.content_type, info.width) == ("video/x-msvideo", 400)
    assert info.warnings == (
        f"{info.label}: the data URI says video/mp4 but the data is video/x-msvideo",
    )
    assert "too small" in the_problem(data_uri("video/mp4", mp4(moov(100, 100))), "video")


def test_mov_sent_as_video_mp4_needs_no_warning() -> None:
    info = inspect_media(data_uri("video/mp4", mp4(moov(), brand=b"qt  ")), "video", field="v")
    assert info.warnings == ()


def test_data_uri_type_must_be_allowed_and_should_match() -> None:
    data = png(300, 200)
    info = inspect_media(data_uri("IMAGE/JPEG", data), "image", field="f")
    assert info.warnings == (
        f"{info.label}: the data URI says image/jpeg but the data is image/png",
    )
    assert "'image/gif' is not one of image/png, image/jpeg, image/webp" in the_problem(
        data_uri("image/gif", data)
    )
    assert "'(none)' is not one of" in the_problem(data_uri("", data))


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("data:image/png,%89PNG", "not a base64 data URI"),
        ("data:image/png;base64", "not a base64 data URI"),
        ("data:image/png;base64,iVBO!!!", "not valid base64"),
        ("data:image/png;base64,iVBORw0KGgo=é", "not valid base64"),
        ("data:image/png;base64,iVBORw0KGgo=", "not a valid PNG file: truncated"),
    ],
)
def test_bad_data_uris(uri: str, reason: str) -> None:
    message = the_problem(uri)
    assert reason in message
    assert message.startswith("<data URI, image/png, ")


def test_error_messages_never_carry_the_base64_payload() -> None:
    uri = data_uri("image/png", png(100, 100))
    for message in rejected(uri):
        assert uri[40:80] not in message
        assert len(message) < 200


@pytest.mark.parametrize("extra", [0, 1, 2])
def test_encoded_length_matches_encode_media(tmp_path: Path, extra: int) -> None:
    data = png(300, 200) + bytes(extra)  # trailing bytes after IEND: lengths of every n % 3
    path = tmp_path / "a.bin"
    path.write_bytes(data)
    for source in (data, path):
        encoded = encode_media(source, "image")
        assert inspect_media(source, "image", field="f").encoded_length == len(encoded)
        assert base64.b64decode(encoded.split(",", 1)[1]) == data
    video = mp4(moov(), mdat(10 + extra))
    assert inspect_media(video, "video", field="f").encoded_length == len(
        encode_media(video, "video")
    )


def test_encode_media_refuses_what_it_cannot_send() -> None:
    with pytest.raises(ValidationError) as caught:
        encode_media(png(300, 200), "video")
    assert [str(p) for p in caught.value.problems] == [
        f"videos: <{len(png(300, 200)):,} bytes>: this is an image (PNG), not a video"
    ]
    with pytest.raises(ValidationError, match="unrecognised format"):
        encode_media(b"plain text", "image")


# --- fuzzing: a probe returns a MediaInfo or raises ValidationError, nothing else ---------------

FUZZ_SETTINGS = settings(max_examples=150, deadline=None)
SEEDS = {**TRUNCATABLE, "mov": mp4(moov(), mdat(), brand=b"qt  ")}
MAGICS = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF\x00\x00\x00\x00WEBP"]
MAGICS += [b"RIFF\x10\x00\x00\x00AVI ", b"\x00\x00\x00\x10ftypisom", b"\x00\x00\x00\x10moov"]


def outcome(source: MediaSource, kind: MediaKind) -> MediaInfo | ValidationError:
    try:
        return inspect_media(source, kind, field="f")
    except ValidationError as exc:
        return exc


def probe_everything(source: MediaSource) -> None:
    """Any other exception escaping here fails the fuzz test."""
    for kind in ("image", "video"):
        result = outcome(source, kind)
        if isinstance(result, ValidationError):
            assert result.problems and {p.field for p in result.problems} == {"f"}
        else:
            assert (result.width or 0) >= 128 and (result.height or 0) >= 128
        if isinstance(source, bytes) and not isinstance(result, ValidationError):
            assert encode_media(source, kind).startswith(f"data:{kind}/")


@FUZZ_SETTINGS
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(data: bytes) -> None:
    probe_everything(data)


@FUZZ_SETTINGS
@given(st.sampled_from(MAGICS), st.binary(max_size=400))
def test_fuzz_known_magic_then_noise(magic: bytes, noise: bytes) -> None:
    probe_everything(magic + noise)


@FUZZ_SETTINGS
@given(st.text(max_size=80))
def test_fuzz_data_uris(text: str) -> None:
    probe_everything("data:" + text)


@FUZZ_SETTINGS
@given(st.sampled_from(sorted(SEEDS)), st.data())
def test_fuzz_mutated_and_truncated_valid_files(name: str, draw: st.DataObject) -> None:
    blob = bytearray(SEEDS[name])
    position = st.one_of(st.integers(0, min(len(blob), 128) - 1), st.integers(0, len(blob) - 1))
    for offset, value in draw.draw(st.lists(st.tuples(position, st.integers(0, 255)), max_size=6)):
        blob[offset] = value
    cut = draw.draw(st.integers(0, len(blob)))
    probe_everything(bytes(blob[:cut]))


@pytest.fixture(scope="module")
def fuzz_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "probe.bin"


@FUZZ_SETTINGS
@given(st.sampled_from(sorted(SEEDS)), st.data())
def test_fuzz_mutated_and_truncated_files_on_disk(
    fuzz_file: Path, name: str, draw: st.DataObject
) -> None:
    """The same as above through a ``FileReader``: seeks and reads past the end, not slices."""
    blob = bytearray(SEEDS[name])
    position = st.integers(0, len(blob) - 1)
    for offset, value in draw.draw(st.lists(st.tuples(position, st.integers(0, 255)), max_size=4)):
        blob[offset] = value
    cut = draw.draw(st.one_of(*(st.integers(0, min(len(blob), n)) for n in (48, 256, len(blob)))))
    fuzz_file.write_bytes(bytes(blob[:cut]))
    probe_everything(fuzz_file)
