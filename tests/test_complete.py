"""Whether a downloaded file is whole: MP4 / MOV boxes, PNG and JPEG ends, RIFF sizes; unknown
formats and trailers after a whole MP4 pass; every cut of a checked file is caught and only a box
running past the end is called a cut; only headers are read."""

from __future__ import annotations

import struct
from pathlib import Path

import attrs
import pytest

from vidu_async._complete import Shortfall, shortfall
from vidu_async._probe import BytesReader, FileReader, Reader
from vidu_async.demo import sample_png
from vidu_async.testing.media import COVER_JPEG, tiny_mp4


def box(
    kind: bytes, payload: bytes = b"", *, size: int | None = None, large: bool = False
) -> bytes:
    """An ISO BMFF box; ``size`` overrides the size field, ``large`` writes the 64-bit form."""
    if large:
        return struct.pack(">I4sQ", 1, kind, 16 + len(payload)) + payload
    return struct.pack(">I4s", 8 + len(payload) if size is None else size, kind) + payload


FTYP = box(b"ftyp", b"isom" + bytes(4) + b"isomavc1")
QT_FTYP = box(b"ftyp", b"qt  " + bytes(4) + b"qt  ")
MOOV = box(b"moov", box(b"mvhd", bytes(100)))
MDAT = box(b"mdat", bytes(range(256)))
MP4 = FTYP + MOOV + MDAT
PNG = sample_png(16, 9, 3)
WEBP = b"RIFF" + struct.pack("<I", 4 + 18) + b"WEBP" + b"VP8L" + struct.pack("<I", 10) + bytes(10)
AVI = b"RIFF" + struct.pack("<I", 4 + 12) + b"AVI " + b"JUNK" + struct.pack("<I", 4) + bytes(4)
SIMULATED = tiny_mp4(5.0, 1280, 720, note="task 1")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(MP4, id="mp4"),
        pytest.param(FTYP + MDAT + MOOV, id="mp4-moov-last"),
        pytest.param(FTYP + MOOV + box(b"moof") + MDAT + box(b"moof") + MDAT, id="fragmented"),
        pytest.param(FTYP + MOOV + box(b"mdat", bytes(300), large=True), id="64-bit-size"),
        pytest.param(FTYP + MOOV + box(b"mdat", bytes(300), size=0), id="size-0-to-the-end"),
        pytest.param(QT_FTYP + MOOV + MDAT, id="mov"),
        pytest.param(box(b"wide") + MDAT + MOOV, id="quicktime-without-ftyp"),
        pytest.param(SIMULATED, id="simulator-video"),
        pytest.param(MP4 + bytes(4), id="trailer-4-zero-bytes"),
        pytest.param(MP4 + bytes(3), id="trailer-3-zero-bytes"),
        pytest.param(MP4 + bytes(12), id="trailer-zero-bytes-size-0"),
        pytest.param(MP4 + b"\xff" * 16, id="trailer-16-ff-bytes"),
        pytest.param(MP4 + b"SEFHxxxxxxxxSEFT", id="trailer-text"),
        pytest.param(MP4 + box(b"abcd", size=2), id="trailer-unknown-box-impossible-size"),
        pytest.param(FTYP + MDAT + MOOV + b"\xff" * 16, id="trailer-after-moov-last"),
        pytest.param(MP4 + box(b"free", bytes(8)) + b"SEFT", id="free-box-then-trailer"),
        pytest.param(FTYP + box(b"free") + MOOV + box(b"skip", b"x" * 5) + box(b"uuid", bytes(16))
                     + MDAT, id="free-skip-uuid-boxes"),
        pytest.param(FTYP + MOOV + box(b"mdat"), id="empty-mdat"),
        pytest.param(FTYP + MOOV + box(b"moof", bytes(20)) + MDAT,
                     id="limit-fragmented-cut-at-a-fragment-boundary"),
        pytest.param((FTYP + MOOV + box(b"mdat", bytes(300), size=0))[:-100],
                     id="limit-size-0-box-cut"),
        pytest.param(PNG, id="png"),
        pytest.param(COVER_JPEG, id="simulator-cover-jpeg"),
        pytest.param(PNG + bytes(8), id="png-padded-after-iend"),
        pytest.param(COVER_JPEG + bytes(16), id="jpeg-padded-after-its-end"),
        pytest.param(WEBP, id="webp"),
        pytest.param(WEBP + b"trailing", id="webp-longer-than-riff"),
        pytest.param(AVI, id="avi"),
        pytest.param(b"GIF89a" + bytes(20), id="gif-unchecked"),
        pytest.param(b"\x1a\x45\xdf\xa3" + bytes(20), id="webm-unchecked"),
        pytest.param(box(b"ftyp", b"heic" + bytes(8)) + box(b"meta"), id="heif-unchecked"),
        pytest.param(b"<html>not a media file</html>", id="unknown"),
    ],
)
def test_a_whole_file_or_one_that_cannot_be_checked_passes(data: bytes) -> None:
    assert shortfall(BytesReader(data)) is None


CUT, MALFORMED = True, False


@pytest.mark.parametrize(
    ("data", "expected", "cut"),
    [
        (b"", "0 bytes, too few for any media file", MALFORMED),
        (b"<html>", "6 bytes, too few for any media file", MALFORMED),
        (MP4[:-10], f"{len(MP4) - 10} bytes, the MP4's boxes need {len(MP4)}", CUT),
        (FTYP + MOOV + MDAT[:3], f"{len(FTYP + MOOV) + 3} bytes, the MP4's boxes need "
         f"{len(FTYP + MOOV) + 8}", CUT),
        (FTYP + MOOV + struct.pack(">I4sI", 1, b"mdat", 0),
         f"{len(FTYP + MOOV) + 12} bytes, the MP4's boxes need {len(FTYP + MOOV) + 16}", CUT),
        (FTYP + MOOV + box(b"mdat", bytes(20), large=True)[:-5],
         f"{len(FTYP + MOOV) + 31} bytes, the MP4's boxes need {len(FTYP + MOOV) + 36}", CUT),
        (MP4 + box(b"moof", bytes(20))[:-1],
         f"{len(MP4) + 27} bytes, the MP4's boxes need {len(MP4) + 28}", CUT),
        (MP4 + box(b"mdat", bytes(20), large=True)[:12],
         f"{len(MP4) + 12} bytes, the MP4's boxes need {len(MP4) + 16}", CUT),
        (FTYP + MOOV, f"{len(FTYP + MOOV)} bytes, the MP4 has no mdat box", MALFORMED),
        (FTYP + MDAT, f"{len(FTYP + MDAT)} bytes, the MP4 has no moov box", MALFORMED),
        (FTYP, f"{len(FTYP)} bytes, the MP4 has no moov or mdat box", MALFORMED),
        (FTYP + box(b"moov", size=4) + MDAT,
         f"{len(FTYP + MDAT) + 8} bytes, the MP4's box 'moov' at byte {len(FTYP)} has an "
         "impossible size 4", MALFORMED),
        (MP4 + box(b"free", size=4),
         f"{len(MP4) + 8} bytes, the MP4's box 'free' at byte {len(MP4)} has an impossible "
         "size 4", MALFORMED),
        ((QT_FTYP + MOOV + MDAT)[:-1],
         f"{len(QT_FTYP + MOOV + MDAT) - 1} bytes, the MOV's boxes need "
         f"{len(QT_FTYP + MOOV + MDAT)}", CUT),
        (PNG[:-1], f"{len(PNG) - 1} bytes, the PNG does not end with its IEND chunk", MALFORMED),
        (PNG[:16], "16 bytes, the PNG does not end with its IEND chunk", MALFORMED),
        (COVER_JPEG[:-1],
         f"{len(COVER_JPEG) - 1} bytes, the JPEG does not end with its end marker FF D9",
         MALFORMED),
        (WEBP[:-1], f"{len(WEBP) - 1} bytes, the WebP's RIFF header says {len(WEBP)}", CUT),
        (AVI[:-1], f"{len(AVI) - 1} bytes, the AVI's RIFF header says {len(AVI)}", CUT),
    ],
)
def test_a_file_not_whole_says_why_and_whether_it_was_cut(
    data: bytes, expected: str, cut: bool
) -> None:
    problem = shortfall(BytesReader(data))
    assert problem is not None and (str(problem), problem.cut) == (expected, cut)
    assert problem.size == len(data)


@pytest.mark.parametrize(
    "data",
    [MP4, FTYP + MDAT + MOOV, SIMULATED, PNG, COVER_JPEG, WEBP],
    ids=["mp4", "mp4-moov-last", "simulator-video", "png", "jpeg", "webp"],
)
def test_every_cut_of_a_checked_file_is_caught(data: bytes) -> None:
    assert [cut for cut in range(len(data)) if shortfall(BytesReader(data[:cut])) is None] == []


def test_a_fragmented_mp4_passes_cut_only_at_a_fragment_boundary() -> None:
    fragments = [box(kind, bytes(40)) for _ in range(3) for kind in (b"moof", b"mdat")]
    data = FTYP + MOOV + b"".join(fragments)
    first_whole = len(FTYP + MOOV) + len(fragments[0] + fragments[1])  # has moov and mdat
    boundaries = range(first_whole, len(data), len(fragments[0]))
    passing = [cut for cut in range(len(data)) if shortfall(BytesReader(data[:cut])) is None]
    assert passing == [at + k for at in boundaries for k in range(8)]  # within a box header


@attrs.define
class CountingReader:
    """A ``Reader`` that adds up the bytes read through it."""

    reader: Reader
    read: int = 0

    @property
    def size(self) -> int:
        return self.reader.size

    def read_at(self, offset: int, count: int) -> bytes:
        data = self.reader.read_at(offset, count)
        self.read += len(data)
        return data


def test_a_file_of_gigabytes_is_checked_from_its_box_headers(tmp_path: Path) -> None:
    path = tmp_path / "big.mp4"
    size = 5 << 30  # a sparse file: 5 GiB long, almost nothing on the disk
    with path.open("wb") as file:
        file.write(FTYP + MOOV + struct.pack(">I4sQ", 1, b"mdat", size - len(FTYP + MOOV)))
        file.truncate(size)
    with path.open("rb") as file:
        whole = CountingReader(FileReader(file, size))
        assert shortfall(whole) is None
        cut = CountingReader(FileReader(file, size - 1))
        assert shortfall(cut) == Shortfall(size - 1, f"the MP4's boxes need {size}", cut=True)
    assert whole.read < 100 and cut.read < 100
