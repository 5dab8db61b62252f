"""The ISO BMFF box header parser that MP4 / MOV probes and completeness checks share: each
header form read, and each header that gives no box says why and how many bytes it needs."""

from __future__ import annotations

import struct

import pytest

from vidu_async._probe import BOX_HEADER_BYTES, BoxHeader, BoxShortfall, box_header

GIB = 1 << 30


def small(size: int, kind: bytes = b"mdat") -> bytes:
    """A header with a 32-bit size field (0: to the end; 1 announces a 64-bit size)."""
    return struct.pack(">I4s", size, kind)


def large(size: int, kind: bytes = b"mdat") -> bytes:
    """A header whose size field is 1, the 64-bit size following the type."""
    return struct.pack(">I4sQ", 1, kind, size)


@pytest.mark.parametrize(
    ("head", "start", "end", "expected"),
    [
        pytest.param(small(24, b"moov"), 0, 100, BoxHeader(b"moov", 8, 24), id="32-bit"),
        pytest.param(small(24, b"moov"), 40, 100, BoxHeader(b"moov", 48, 64), id="32-bit-later"),
        pytest.param(small(8), 92, 100, BoxHeader(b"mdat", 100, 100), id="32-bit-empty-box"),
        pytest.param(small(60), 40, 100, BoxHeader(b"mdat", 48, 100), id="32-bit-to-the-byte"),
        pytest.param(small(24) + b"next", 0, 100, BoxHeader(b"mdat", 8, 24),
                     id="32-bit-bytes-after-the-header-unread"),
        pytest.param(large(50), 10, 100, BoxHeader(b"mdat", 26, 60), id="64-bit"),
        pytest.param(large(16), 0, 16, BoxHeader(b"mdat", 16, 16), id="64-bit-empty-box"),
        pytest.param(large(5 * GIB), 0, 6 * GIB, BoxHeader(b"mdat", 16, 5 * GIB),
                     id="64-bit-past-4-gib"),
        pytest.param(small(0), 30, 100, BoxHeader(b"mdat", 38, 100), id="size-0-to-the-end"),
        pytest.param(small(0), 92, 100, BoxHeader(b"mdat", 100, 100),
                     id="size-0-only-a-header-left"),
    ],
)
def test_each_header_form_gives_its_box(
    head: bytes, start: int, end: int, expected: BoxHeader
) -> None:
    assert len(head) <= BOX_HEADER_BYTES
    assert box_header(head, start, end) == expected


@pytest.mark.parametrize(
    ("head", "start", "end", "expected"),
    [
        pytest.param(b"", 0, 100, BoxShortfall(0, "box header", 8), id="no-header"),
        pytest.param(small(24)[:7], 20, 100, BoxShortfall(20, "box header", 28),
                     id="header-cut"),
        pytest.param(large(50)[:8], 5, 100, BoxShortfall(5, "64-bit box size", 21, b"mdat"),
                     id="64-bit-size-missing"),
        pytest.param(large(50)[:15], 5, 100, BoxShortfall(5, "64-bit box size", 21, b"mdat"),
                     id="64-bit-size-cut"),
        pytest.param(small(4, b"moov"), 24, 100, BoxShortfall(24, "box", None, b"moov", 4),
                     id="32-bit-below-its-header"),
        pytest.param(small(7), 0, 100, BoxShortfall(0, "box", None, b"mdat", 7),
                     id="32-bit-one-below-its-header"),
        pytest.param(large(15), 0, 100, BoxShortfall(0, "box", None, b"mdat", 15),
                     id="64-bit-below-its-header"),
        pytest.param(large(0), 0, 100, BoxShortfall(0, "box", None, b"mdat", 0),
                     id="64-bit-size-0-is-not-to-the-end"),
        pytest.param(small(0), 96, 100, BoxShortfall(96, "box", None, b"mdat", 4),
                     id="size-0-in-less-than-a-header"),
        pytest.param(small(100), 10, 50, BoxShortfall(10, "box", 110, b"mdat", 100),
                     id="32-bit-past-the-end"),
        pytest.param(small(61), 40, 100, BoxShortfall(40, "box", 101, b"mdat", 61),
                     id="32-bit-one-past-the-end"),
        pytest.param(large(5 * GIB), 8, 5 * GIB,
                     BoxShortfall(8, "box", 5 * GIB + 8, b"mdat", 5 * GIB),
                     id="64-bit-past-the-end"),
    ],
)
def test_a_header_giving_no_box_says_why_and_what_it_needs(
    head: bytes, start: int, end: int, expected: BoxShortfall
) -> None:
    assert box_header(head, start, end) == expected
