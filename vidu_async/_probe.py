"""Header-only probes of image and video data: the format from magic bytes, then size and duration.

A probe reads a few bytes at known offsets through a ``Reader`` (bytes in memory, or a seekable
file), so a 100 MB video costs a handful of small reads and no pixel is ever decoded. Whatever the
input, a probe either returns a ``Header`` or raises ``ProbeError`` with a reason a person can act
on; it never lets a ``struct.error`` or ``IndexError`` out (every read is length-checked first).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import BinaryIO, Literal, Protocol

import attrs

__all__ = [
    "BOX_HEADER_BYTES",
    "JPEG_EOI",
    "PNG_IEND",
    "SNIFF_BYTES",
    "BoxHeader",
    "BoxShortfall",
    "BytesReader",
    "FileReader",
    "Format",
    "Header",
    "MediaKind",
    "ProbeError",
    "Reader",
    "box_header",
    "probe",
    "require_end",
    "sniff",
]

MediaKind = Literal["image", "video"]

SNIFF_BYTES = 16
"""How many leading bytes ``sniff`` needs to tell every format apart."""

_MAX_WALK = 4096
"""The most markers, boxes or chunks walked in one container before giving up on hostile input."""
_TAIL = 1024
"""How many bytes at the end of an image are searched for its end marker (truncation check)."""

_Dims = tuple[int, int, float | None]
"""What a format parser reads: width, height, and duration in seconds (None: unknown or still)."""


class ProbeError(Exception):
    """The data is not a readable file of a supported format; the message says why."""


class Reader(Protocol):
    """Random access to the bytes being probed."""

    @property
    def size(self) -> int: ...

    def read_at(self, offset: int, count: int) -> bytes:
        """Up to ``count`` bytes from ``offset`` (fewer at the end)."""
        ...


@attrs.frozen
class BytesReader:
    """A ``Reader`` over bytes already in memory (raw bytes, a decoded data URI)."""

    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def read_at(self, offset: int, count: int) -> bytes:
        return self.data[offset : offset + count]


@attrs.frozen
class FileReader:
    """A ``Reader`` over an open binary file: seeks, so only the bytes asked for are read."""

    file: BinaryIO
    size: int

    def read_at(self, offset: int, count: int) -> bytes:
        if count <= 0:  # as slicing bytes does; ``file.read`` would read all or raise
            return b""
        self.file.seek(offset)
        return self.file.read(count)


@attrs.frozen
class Format:
    """One supported container format: its name, kind, content type and header parser."""

    name: str
    kind: MediaKind
    content_type: str
    parse: Callable[[Reader], _Dims] = attrs.field(repr=False)


@attrs.frozen
class Header:
    """What a probe read from a file's header."""

    format: Format
    width: int
    height: int
    duration: float | None
    """Seconds, for a video whose header states it; None otherwise."""


def probe(reader: Reader) -> Header:
    """Identify the data by its magic bytes, then read its size (and duration) from the header."""
    fmt = sniff(reader.read_at(0, SNIFF_BYTES))
    try:
        width, height, duration = fmt.parse(reader)
    except ProbeError as exc:
        raise ProbeError(f"not a valid {fmt.name} file: {exc}") from None
    if width == 0 or height == 0:
        raise ProbeError(f"not a valid {fmt.name} file: the header gives a zero width or height")
    return Header(fmt, width, height, duration)


def _need(reader: Reader, offset: int, count: int, what: str) -> bytes:
    """Exactly ``count`` bytes at ``offset``, or a ProbeError saying the ``what`` is cut off."""
    data = reader.read_at(offset, count) if offset + count <= reader.size else b""
    if len(data) < count:
        raise ProbeError(f"truncated: the {what} at byte {offset:,} is cut off")
    return data


def _read_in(reader: Reader, start: int, stop: int, offset: int, count: int, what: str) -> bytes:
    """``count`` bytes at ``offset`` inside the box or chunk spanning ``start..stop``."""
    if start + offset + count > stop:
        raise ProbeError(f"the {what} is too short ({stop - start} bytes)")
    return _need(reader, start + offset, count, what)


def require_end(reader: Reader, start: int, marker: bytes, what: str) -> None:
    """Fail unless ``marker`` occurs in the last bytes of the data (but not before ``start``)."""
    if start > reader.size:
        raise ProbeError(f"truncated: {reader.size:,} bytes end inside the header")
    begin = max(start, reader.size - _TAIL)
    if marker not in reader.read_at(begin, reader.size - begin):
        raise ProbeError(f"truncated: it does not end with {what}")


def _name(fourcc: bytes) -> str:
    return repr(fourcc.decode("latin-1"))


# --- images -------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"\x00\x00\x00\x00IEND\xae\x42\x60\x82"
_PNG_IHDR_END = 33
"""Signature (8) + IHDR chunk (length 4, type 4, data 13, CRC 4)."""


def _png(reader: Reader) -> _Dims:
    head = _need(reader, 0, 24, "IHDR chunk")
    if head[12:16] != b"IHDR":
        raise ProbeError("the first chunk is not IHDR")
    width, height = struct.unpack_from(">II", head, 16)
    require_end(reader, _PNG_IHDR_END, PNG_IEND, "an IEND chunk")
    return width, height, None


_JPEG_SOF = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
"""Start-of-frame markers: baseline, extended, progressive, lossless (Huffman and arithmetic)."""
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})
"""Markers without a length field: TEM, RST0..7, SOI."""
JPEG_EOI = b"\xff\xd9"


def _jpeg(reader: Reader) -> _Dims:
    pos = 2  # after SOI
    for _ in range(_MAX_WALK):
        marker = _need(reader, pos, 2, "marker")
        if marker[0] != 0xFF:
            raise ProbeError(f"expected a marker at byte {pos:,}")
        code = marker[1]
        if code == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if code in _JPEG_STANDALONE:
            pos += 2
            continue
        if code in (0xD9, 0xDA):  # EOI or start of scan before any frame header
            raise ProbeError("no frame header (SOF) before the image data")
        (length,) = struct.unpack(">H", _need(reader, pos + 2, 2, "segment length"))
        if length < 2:
            raise ProbeError(f"segment at byte {pos:,} has an impossible length {length}")
        if code in _JPEG_SOF:
            _precision, height, width = struct.unpack(
                ">BHH", _need(reader, pos + 4, 5, "frame header")
            )
            require_end(reader, pos + 2 + length, JPEG_EOI, "an end-of-image marker")
            return width, height, None
        pos += 2 + length  # skip APPn (EXIF, ICC), DQT, DHT, COM, ...
    raise ProbeError(f"no frame header (SOF) in the first {_MAX_WALK} markers")


def _riff_end(reader: Reader) -> int:
    """Where the RIFF container ends; fails if the data is shorter than the RIFF header says."""
    end: int = 8 + struct.unpack("<I", _need(reader, 4, 4, "RIFF header"))[0]
    if end > reader.size:
        raise ProbeError(
            f"truncated: the RIFF header says {end:,} bytes but there are {reader.size:,}"
        )
    return end


def _webp(reader: Reader) -> _Dims:
    _riff_end(reader)
    fourcc = _need(reader, 12, 4, "first chunk")
    if fourcc == b"VP8 ":  # lossy: a key frame header
        frame = _need(reader, 20, 10, "VP8 frame header")
        if frame[0] & 1 or frame[3:6] != b"\x9d\x01\x2a":
            raise ProbeError("the VP8 data does not start with a key frame")
        width, height = struct.unpack_from("<HH", frame, 6)
        return width & 0x3FFF, height & 0x3FFF, None
    if fourcc == b"VP8L":  # lossless: 14-bit width-1 and height-1 after a signature byte
        head = _need(reader, 20, 5, "VP8L header")
        if head[0] != 0x2F:
            raise ProbeError("the VP8L signature byte is wrong")
        (bits,) = struct.unpack_from("<I", head, 1)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, None
    if fourcc == b"VP8X":  # extended: 24-bit canvas width-1 and height-1
        head = _need(reader, 20, 10, "VP8X header")
        return (
            int.from_bytes(head[4:7], "little") + 1,
            int.from_bytes(head[7:10], "little") + 1,
            None,
        )
    raise ProbeError(f"unknown first chunk {_name(fourcc)}")


# --- videos -------------------------------------------------------------------------------


def _riff_chunks(reader: Reader, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """The RIFF chunks between ``start`` and ``end``: (fourcc, data start, data end)."""
    pos = start
    for _ in range(_MAX_WALK):
        if end - pos < 8:
            return
        fourcc, size = struct.unpack("<4sI", _need(reader, pos, 8, "chunk header"))
        stop = pos + 8 + size
        if stop > end:
            raise ProbeError(f"truncated: chunk {_name(fourcc)} at byte {pos:,} runs past its end")
        yield fourcc, pos + 8, stop
        pos = stop + (size & 1)  # chunks are padded to an even length
    raise ProbeError(f"more than {_MAX_WALK} chunks in one list")


def _avi(reader: Reader) -> _Dims:
    for fourcc, start, stop in _riff_chunks(reader, 12, _riff_end(reader)):
        if fourcc == b"LIST" and _read_in(reader, start, stop, 0, 4, "LIST chunk") == b"hdrl":
            for sub, sub_start, sub_stop in _riff_chunks(reader, start + 4, stop):
                if sub == b"avih":
                    main = _read_in(reader, sub_start, sub_stop, 0, 40, "avih header")
                    micros, _, _, _, frames, _, _, _, width, height = struct.unpack("<10I", main)
                    duration = micros * frames / 1_000_000 if micros and frames else None
                    return width, height, duration
            raise ProbeError("the hdrl list has no avih header")
    raise ProbeError("no hdrl header list")


@attrs.frozen
class BoxHeader:
    """An ISO BMFF box as its header gives it: its ``kind`` (type), where its content starts
    (``body``: after 8 header bytes, 16 with a 64-bit size) and where the box ends (``end``)."""

    kind: bytes
    body: int
    end: int


@attrs.frozen
class BoxShortfall:
    """Why the header at ``start`` gives no box that fits its container: the data stops before
    byte ``needed`` inside the ``part`` named (``box header`` or ``64-bit box size``, each 8
    bytes), or the ``box`` of ``kind`` and ``size`` runs past the container (``needed``: where
    it ends) or is smaller than its own header (``needed`` None: no more data would mend it)."""

    start: int
    part: str
    needed: int | None
    kind: bytes = b""
    size: int = 0


BOX_HEADER_BYTES = 16
"""The most bytes a box header takes (a 64-bit size follows the type): what ``box_header`` reads."""


def box_header(head: bytes, start: int, end: int) -> BoxHeader | BoxShortfall:
    """The box whose header ``head`` holds (the up to ``BOX_HEADER_BYTES`` at ``start``) in a
    container ending at ``end``, or why there is none. The header is a 32-bit size and the type;
    size 1 means a 64-bit size follows, size 0 that the box runs to the container's end."""
    if len(head) < 8:
        return BoxShortfall(start, "box header", start + 8)
    size, kind = struct.unpack_from(">I4s", head)
    body = start + 8
    if size == 1:
        if len(head) < 16:
            return BoxShortfall(start, "64-bit box size", start + 16, kind)
        (size,) = struct.unpack_from(">Q", head, 8)
        body += 8
    elif size == 0:
        size = end - start
    if size < body - start:
        return BoxShortfall(start, "box", None, kind, size)
    if start + size > end:
        return BoxShortfall(start, "box", start + size, kind, size)
    return BoxHeader(kind, body, start + size)


def _boxes(reader: Reader, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """The ISO BMFF boxes between ``start`` and ``end``: (type, content start, box end)."""
    pos = start
    for _ in range(_MAX_WALK):
        if pos == end:
            return
        if end - pos < 8:
            raise ProbeError(f"truncated: {end - pos} stray bytes at byte {pos:,}")
        box = box_header(reader.read_at(pos, min(BOX_HEADER_BYTES, reader.size - pos)), pos, end)
        if isinstance(box, BoxShortfall):
            raise _box_error(box, end)
        yield box.kind, box.body, box.end
        pos = box.end
    raise ProbeError(f"more than {_MAX_WALK} boxes in one container")


def _box_error(short: BoxShortfall, end: int) -> ProbeError:
    """What a probe says of a box header that gives no box in a container ending at ``end``."""
    at, kind = short.start, _name(short.kind)
    if short.needed is None:
        return ProbeError(f"box {kind} at byte {at:,} has an impossible size {short.size:,}")
    if short.part == "box":
        return ProbeError(
            f"truncated: box {kind} at byte {at:,} needs {short.size:,} bytes, "
            f"only {end - at:,} remain"
        )
    return ProbeError(f"truncated: the {short.part} at byte {short.needed - 8:,} is cut off")


def _mvhd_duration(reader: Reader, start: int, stop: int) -> float | None:
    """The movie duration in seconds, or None when the header leaves it unknown."""
    if _read_in(reader, start, stop, 0, 1, "mvhd box")[0] == 1:
        fields = _read_in(reader, start, stop, 4, 28, "mvhd box")
        _created, _modified, timescale, duration = struct.unpack(">QQIQ", fields)
        unknown = 2**64 - 1
    else:
        timescale, duration = struct.unpack(">II", _read_in(reader, start, stop, 12, 8, "mvhd box"))
        unknown = 2**32 - 1
    if timescale == 0 or duration in (0, unknown):
        return None
    return float(duration / timescale)


def _track_size(reader: Reader, start: int, stop: int) -> tuple[int, int] | None:
    """A track's width and height (16.16 fixed point in ``tkhd``); None for a non-visual track."""
    for kind, box_start, box_stop in _boxes(reader, start, stop):
        if kind == b"tkhd":
            version = _read_in(reader, box_start, box_stop, 0, 1, "tkhd box")[0]
            at = 88 if version == 1 else 76
            fixed = _read_in(reader, box_start, box_stop, at, 8, "tkhd box")
            width, height = (value >> 16 for value in struct.unpack(">II", fixed))
            return (width, height) if width and height else None
    return None


def _mp4(reader: Reader) -> _Dims:
    # Every top-level box is walked (cheap: one seek each) so a cut-off file is caught even when
    # the moov box comes before the media data.
    moov = None
    for kind, start, stop in _boxes(reader, 0, reader.size):
        if kind == b"moov" and moov is None:
            moov = (start, stop)
    if moov is None:
        raise ProbeError("no moov box (the file is cut off or was not finished writing)")
    duration: float | None = None
    size = None
    for kind, start, stop in _boxes(reader, *moov):
        if kind == b"mvhd":
            duration = _mvhd_duration(reader, start, stop)
        elif kind == b"trak" and size is None:
            size = _track_size(reader, start, stop)
    if size is None:
        raise ProbeError("no video track (no track has a width and height)")
    return size[0], size[1], duration


# --- sniffing ------------------------------------------------------------------------------

PNG = Format("PNG", "image", "image/png", _png)
JPEG = Format("JPEG", "image", "image/jpeg", _jpeg)
WEBP = Format("WebP", "image", "image/webp", _webp)
MP4 = Format("MP4", "video", "video/mp4", _mp4)
MOV = Format("MOV", "video", "video/quicktime", _mp4)
AVI = Format("AVI", "video", "video/x-msvideo", _avi)

_QUICKTIME_TOP_BOXES = frozenset({b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"})
"""Old QuickTime files have no ``ftyp`` and start with one of these."""
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"mif1", b"msf1", b"avif", b"avis"})
_UNSUPPORTED = (
    (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"BM", "a BMP image"),
    (b"\x1a\x45\xdf\xa3", "a Matroska / WebM video"),
)
_SUPPORTED_TEXT = "PNG, JPEG or WebP image, nor an MP4, MOV or AVI video"


def sniff(prefix: bytes) -> Format:
    """The format of data starting with ``prefix`` (its first ``SNIFF_BYTES``), from magic bytes."""
    if not prefix:
        raise ProbeError("it is empty")
    if prefix.startswith(_PNG_SIGNATURE):
        return PNG
    if prefix.startswith(b"\xff\xd8\xff"):
        return JPEG
    if prefix.startswith(b"RIFF") and prefix[8:12] == b"WEBP":
        return WEBP
    if prefix.startswith(b"RIFF") and prefix[8:12] == b"AVI ":
        return AVI
    if prefix[4:8] == b"ftyp":
        brand = prefix[8:12]
        if brand in _HEIF_BRANDS:
            raise ProbeError(f"it is a HEIF / AVIF image, not a {_SUPPORTED_TEXT}")
        return MOV if brand == b"qt  " else MP4
    if prefix[4:8] in _QUICKTIME_TOP_BOXES:
        return MOV
    for magic, name in _UNSUPPORTED:
        if prefix.startswith(magic):
            raise ProbeError(f"it looks like {name}, not a {_SUPPORTED_TEXT}")
    raise ProbeError(f"unrecognised format: not a {_SUPPORTED_TEXT}")
