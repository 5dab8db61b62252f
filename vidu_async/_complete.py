"""Whether a downloaded media file is whole, from its headers and end alone.

A file host may end a response early without any error (chunked encoding, no
``Content-Length``, a proxy), so such a download is checked before it is published where its
format says how long it is (one with a ``Content-Length`` the body matched is whole and is not
checked). The format comes from the magic bytes (``_probe.sniff``). An MP4 or MOV (ISO BMFF) is
a sequence of top-level boxes (32-bit size and type; size 1: a 64-bit size follows; size 0: to
the end of the file) that must include ``moov`` and ``mdat`` (in any order; fragmented files
add ``moof`` boxes) and end within the file. Once both are read, the rest of the file is a
trailer (padding, a camera's or editor's notes) unless it starts with a box of a type that
follows them in real files (``_LATER_BOXES``), which must then end within the file too. A PNG
ends with its ``IEND`` chunk, a JPEG with its end marker ``FF D9`` (within its last KiB, as
validation reads images); a WebP or AVI is at least as long as its RIFF header says. A file
shorter than the ``SNIFF_BYTES`` (16) that tell formats apart is never whole: no media file is
that small. Any other format (GIF, WebM, HEIF, text) cannot be checked and passes. Only a box
header per top-level box and the last bytes are read, through a ``Reader`` that seeks, so a
file of several GB costs a few small reads.

A ``Shortfall`` is a ``cut`` only when a box or the RIFF data runs past the file's end (or a
box header does); a missing box or end marker, or an impossible box size, says what is wrong
without claiming one. Limits: a fragmented MP4 cut exactly at a ``moof``/``mdat`` boundary
(or inside the next box's first 8 bytes), or whose last box has size 0 ("to the end of the
file"), cannot be told from a whole one, and passes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import attrs

from vidu_async._probe import (
    BOX_HEADER_BYTES,
    JPEG_EOI,
    PNG_IEND,
    SNIFF_BYTES,
    BoxShortfall,
    ProbeError,
    Reader,
    box_header,
    require_end,
    sniff,
)

__all__ = ["Shortfall", "shortfall"]

_NEEDED_BOXES = (b"moov", b"mdat")
_LATER_BOXES = frozenset(
    {b"moof", b"mdat", b"mfra", b"sidx", b"ssix", b"styp", b"emsg", b"prft", b"free", b"skip",
     b"uuid", b"meta", b"udta"}
)
"""The top-level boxes that may follow ``moov`` and ``mdat`` (fragments, their indexes, free
space, metadata): past both, bytes that start with no such box are a trailer."""


@attrs.frozen
class Shortfall:
    """Why a file of ``size`` bytes is not whole: ``problem``, and whether it was ``cut``
    (something in it runs past its end) rather than malformed; shown as ``<size> bytes, ...``."""

    size: int
    problem: str
    cut: bool

    def __str__(self) -> str:
        return f"{self.size} bytes, {self.problem}"


def shortfall(reader: Reader) -> Shortfall | None:
    """Why the file in ``reader`` is not whole, or None when it is whole or of a format that
    cannot be checked (see the module docstring)."""
    if reader.size < SNIFF_BYTES:
        return Shortfall(reader.size, "too few for any media file", cut=False)
    try:
        name = sniff(reader.read_at(0, SNIFF_BYTES)).name
    except ProbeError:  # a format we cannot check
        return None
    return _CHECKS[name](reader)


def _iso_bmff(reader: Reader, name: str) -> Shortfall | None:
    """Why the top-level boxes run past the file's end, or lack ``moov`` or ``mdat``."""
    pos, seen = 0, set[bytes]()
    while pos < reader.size:
        head = reader.read_at(pos, BOX_HEADER_BYTES)
        if seen.issuperset(_NEEDED_BOXES) and head[4:8] not in _LATER_BOXES:
            return None  # a trailer after a whole file
        box = box_header(head, pos, reader.size)
        if isinstance(box, BoxShortfall) and box.needed is None:
            kind = box.kind.decode("latin-1")
            problem = f"the {name}'s box '{kind}' at byte {pos} has an impossible size {box.size}"
            return Shortfall(reader.size, problem, cut=False)
        if isinstance(box, BoxShortfall):
            return Shortfall(reader.size, f"the {name}'s boxes need {box.needed}", cut=True)
        seen.add(box.kind)
        pos = box.end
    missing = [kind.decode() for kind in _NEEDED_BOXES if kind not in seen]
    problem = f"the {name} has no {' or '.join(missing)} box"
    return Shortfall(reader.size, problem, cut=False) if missing else None


def _ends_with(marker: bytes, problem: str) -> Callable[[Reader], Shortfall | None]:
    """A check that ``marker`` is among the file's last bytes, as validation reads an image (a
    few bytes after it, padding, are allowed), saying ``problem`` when not."""

    def check(reader: Reader) -> Shortfall | None:
        try:
            require_end(reader, 0, marker, problem)
        except ProbeError:
            return Shortfall(reader.size, problem, cut=False)
        return None

    return check


def _riff(name: str) -> Callable[[Reader], Shortfall | None]:
    """A check that the file is as long as its RIFF header says (``sniff`` saw 12 bytes)."""

    def check(reader: Reader) -> Shortfall | None:
        needed = 8 + int.from_bytes(reader.read_at(4, 4), "little")
        if needed <= reader.size:
            return None
        return Shortfall(reader.size, f"the {name}'s RIFF header says {needed}", cut=True)

    return check


_CHECKS: dict[str, Callable[[Reader], Shortfall | None]] = {
    "MP4": functools.partial(_iso_bmff, name="MP4"),
    "MOV": functools.partial(_iso_bmff, name="MOV"),
    "PNG": _ends_with(PNG_IEND, "the PNG does not end with its IEND chunk"),
    "JPEG": _ends_with(JPEG_EOI, "the JPEG does not end with its end marker FF D9"),
    "WebP": _riff("WebP"),
    "AVI": _riff("AVI"),
}
"""The completeness check of each format ``sniff`` returns, by its name."""
