"""Whether a downloaded file is whole: MP4 / MOV boxes, PNG and JPEG ends, RIFF sizes; unknown
formats pass; every cut of a checked file is caught; only headers are read."""

from __future__ import annotations

import struct
from pathlib import Path

import attrs
import pytest

from vidu_async._complete import shortfall
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


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "0 bytes, too few for any media file"),
        (b"<html>", "6 bytes, too few for any media file"),
        (MP4[:-10], f"{len(MP4) - 10} bytes, the MP4's boxes need {len(MP4)}"),
        (MP4 + b"\0\0\0", f"{len(MP4) + 3} bytes, the MP4's boxes need {len(MP4) + 8}"),
        (FTYP + MOOV + struct.pack(">I4sI", 1, b"mdat", 0),
         f"{len(FTYP + MOOV) + 12} bytes, the MP4's boxes need {len(FTYP + MOOV) + 16}"),
        (FTYP + MOOV + box(b"mdat", bytes(20), large=True)[:-5],
         f"{len(FTYP + MOOV) + 31} bytes, the MP4's boxes need {len(FTYP + MOOV) + 36}"),
        (FTYP + MOOV, f"{len(FTYP + MOOV)} bytes, the MP4 has no mdat box"),
        (FTYP + MDAT, f"{len(FTYP + MDAT)} bytes, the MP4 has no moov box"),
        (FTYP, f"{len(FTYP)} bytes, the MP4 has no moov or mdat box"),
        (FTYP + box(b"moov", size=4) + MDAT,
         f"{len(FTYP + MDAT) + 8} bytes, the MP4's box 'moov' at byte {len(FTYP)} has an "
         "impossible size 4"),
        ((QT_FTYP + MOOV + MDAT)[:-1],
         f"{len(QT_FTYP + MOOV + MDAT) - 1} bytes, the MOV's boxes need "
         f"{len(QT_FTYP + MOOV + MDAT)}"),
        (PNG[:-1], f"{len(PNG) - 1} bytes, the PNG does not end with its IEND chunk"),
        (PNG[:16], "16 bytes, the PNG does not end with its IEND chunk"),
        (COVER_JPEG[:-1],
         f"{len(COVER_JPEG) - 1} bytes, the JPEG does not end with its end marker FF D9"),
        (WEBP[:-1], f"{len(WEBP) - 1} bytes, the WebP's RIFF header says {len(WEBP)}"),
        (AVI[:-1], f"{len(AVI) - 1} bytes, the AVI's RIFF header says {len(AVI)}"),
    ],
)
def test_a_file_ended_early_says_how_long_it_should_be(data: bytes, expected: str) -> None:
    assert shortfall(BytesReader(data)) == expected


@pytest.mark.parametrize(
    "data",
    [MP4, FTYP + MDAT + MOOV, SIMULATED, PNG, COVER_JPEG, WEBP],
    ids=["mp4", "mp4-moov-last", "simulator-video", "png", "jpeg", "webp"],
)
def test_every_cut_of_a_checked_file_is_caught(data: bytes) -> None:
    assert [cut for cut in range(len(data)) if shortfall(BytesReader(data[:cut])) is None] == []


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
        assert shortfall(cut) == f"{size - 1} bytes, the MP4's boxes need {size}"
    assert whole.read < 100 and cut.read < 100
