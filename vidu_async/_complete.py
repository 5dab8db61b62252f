"""Whether a downloaded media file is whole, from its headers and end alone.

A file host may end a response early without any error (chunked encoding, no
``Content-Length``, a proxy), so a download is checked before it is published where its format
says how long it is. The format comes from the magic bytes (``_probe.sniff``). An MP4 or MOV
(ISO BMFF) is a sequence of top-level boxes (32-bit size and type; size 1: a 64-bit size
follows; size 0: to the end of the file) that must add up exactly to the file's length and
include ``moov`` and ``mdat`` (in any order; fragmented files add ``moof`` boxes). A PNG ends
with its ``IEND`` chunk, a JPEG with its end marker ``FF D9`` (within its last KiB, as
validation reads images); a WebP or AVI is at least as long as its RIFF header says. A file
shorter than the ``SNIFF_BYTES`` (16) that tell formats apart is never whole: no media file
is that small. Any other format (GIF, WebM, HEIF, text) cannot be checked and passes. Only a
box header per top-level box and the last bytes are read, through a ``Reader`` that seeks, so
a file of several GB costs a few small reads.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable

from vidu_async._probe import (
    JPEG_EOI,
    PNG_IEND,
    SNIFF_BYTES,
    ProbeError,
    Reader,
    require_end,
    sniff,
)

__all__ = ["shortfall"]

_NEEDED_BOXES = (b"moov", b"mdat")


def shortfall(reader: Reader) -> str | None:
    """Why the file in ``reader`` is not whole (``<size> bytes, the MP4's boxes need <M>``), or
    None when it is whole or of a format that cannot be checked (see the module docstring)."""
    if reader.size < SNIFF_BYTES:
        return f"{reader.size} bytes, too few for any media file"
    try:
        name = sniff(reader.read_at(0, SNIFF_BYTES)).name
    except ProbeError:  # a format we cannot check
        return None
    problem = _CHECKS[name](reader)
    return None if problem is None else f"{reader.size} bytes, {problem}"


def _iso_bmff(reader: Reader, name: str) -> str | None:
    """Why the top-level boxes do not add up to the file or lack ``moov`` or ``mdat``."""
    pos, seen = 0, set()
    while pos < reader.size:
        head = reader.read_at(pos, 16)
        if len(head) < 8:
            return f"the {name}'s boxes need {pos + 8}"
        size, kind = struct.unpack_from(">I4s", head)
        header = 8
        if size == 1:
            if len(head) < 16:
                return f"the {name}'s boxes need {pos + 16}"
            (size,), header = struct.unpack_from(">Q", head, 8), 16
        elif size == 0:
            size = reader.size - pos
        if size < header:
            kind_text = kind.decode("latin-1")
            return f"the {name}'s box '{kind_text}' at byte {pos} has an impossible size {size}"
        seen.add(kind)
        pos += size
    if pos > reader.size:
        return f"the {name}'s boxes need {pos}"
    missing = [kind.decode() for kind in _NEEDED_BOXES if kind not in seen]
    return f"the {name} has no {' or '.join(missing)} box" if missing else None


def _ends_with(marker: bytes, problem: str) -> Callable[[Reader], str | None]:
    """A check that ``marker`` is among the file's last bytes, as validation reads an image (a
    few bytes after it, padding, are allowed), saying ``problem`` when not."""

    def check(reader: Reader) -> str | None:
        try:
            require_end(reader, 0, marker, problem)
        except ProbeError:
            return problem
        return None

    return check


def _riff(name: str) -> Callable[[Reader], str | None]:
    """A check that the file is as long as its RIFF header says (``sniff`` saw 12 bytes)."""

    def check(reader: Reader) -> str | None:
        needed = 8 + int.from_bytes(reader.read_at(4, 4), "little")
        return f"the {name}'s RIFF header says {needed}" if needed > reader.size else None

    return check


_CHECKS: dict[str, Callable[[Reader], str | None]] = {
    "MP4": functools.partial(_iso_bmff, name="MP4"),
    "MOV": functools.partial(_iso_bmff, name="MOV"),
    "PNG": _ends_with(PNG_IEND, "the PNG does not end with its IEND chunk"),
    "JPEG": _ends_with(JPEG_EOI, "the JPEG does not end with its end marker FF D9"),
    "WebP": _riff("WebP"),
    "AVI": _riff("AVI"),
}
"""The completeness check of each format ``sniff`` returns, by its name."""
