"""The files a simulated task produces, and the expiring signed links that serve them.

The video is a small MP4 built in code (``ftyp`` and a ``moov`` whose ``mvhd``/``tkhd`` carry the
task's duration and frame size; there are no frames), enough for a header probe or a download
check; a ``free`` box says it is the simulator's placeholder for its task, so the files of two
tasks differ. The cover is a real 160x90 baseline JPEG.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct

import attrs

__all__ = ["COVER_JPEG", "FILE_NAMES", "LinkSigner", "frame_size", "tiny_mp4"]

COVER_JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDACgcHiMeGSgjISMtKygwPGRBPDc3PHtYXUlkkYCZlo+AjIqgtObDoKrarY"
    "qMyP/L2u71////m8H////6/+b9//j/2wBDASstLTw1PHZBQXb4pYyl+Pj4+Pj4+Pj4+Pj4+Pj4+Pj4+Pj4+Pj4+Pj4"
    "+Pj4+Pj4+Pj4+Pj4+Pj4+Pj4+Pj4+Pj/wAARCABaAKADASIAAhEBAxEB/8QAFQABAQAAAAAAAAAAAAAAAAAAAAT/xA"
    "AUEAEAAAAAAAAAAAAAAAAAAAAA/8QAFQEBAQAAAAAAAAAAAAAAAAAAAAP/xAAUEQEAAAAAAAAAAAAAAAAAAAAA/9oA"
    "DAMBAAIRAxEAPwCYBZIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB//Z"
)
"""A 160x90 JPEG, served as every task's cover."""

FILE_NAMES = {
    "video.mp4": "video/mp4",
    "cover.jpg": "image/jpeg",
    "video-watermarked.mp4": "video/mp4",
}
"""The files of a creation, by the name its link ends in, with their content types."""

_UNITY_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def tiny_mp4(seconds: float, width: int, height: int, note: str = "") -> bytes:
    """A header-only MP4 (a few hundred bytes) declaring ``seconds`` and ``width`` x ``height``,
    with ``note`` in a ``free`` box (players skip it; ``strings`` shows it)."""
    timescale, duration = 1000, round(seconds * 1000)
    ftyp = _box(b"ftyp", b"isom" + struct.pack(">I", 0x200) + b"isomiso2avc1mp41")
    mvhd = _box(
        b"mvhd",
        struct.pack(">I4I", 0, 0, 0, timescale, duration)
        + struct.pack(">IH10x", 0x10000, 0x100)
        + _UNITY_MATRIX
        + bytes(24)
        + struct.pack(">I", 2),
    )
    tkhd = _box(
        b"tkhd",
        struct.pack(">I5I8x4H", 3, 0, 0, 1, 0, duration, 0, 0, 0, 0)
        + _UNITY_MATRIX
        + struct.pack(">II", width << 16, height << 16),
    )
    free = _box(b"free", note.encode()) if note else b""
    return ftyp + _box(b"moov", mvhd + _box(b"trak", tkhd)) + free + _box(b"mdat", b"")


def frame_size(resolution: str, aspect_ratio: str) -> tuple[int, int]:
    """Width and height for ``720p`` at ``16:9`` (the short side is the resolution's number)."""
    short = int(resolution.rstrip("p")) if resolution.rstrip("p").isdigit() else 720
    w_text, _, h_text = aspect_ratio.partition(":")
    w, h = (int(w_text), int(h_text)) if w_text.isdigit() and h_text.isdigit() else (16, 9)
    if w >= h:
        return 2 * round(short * w / h / 2), short
    return short, 2 * round(short * h / w / 2)


@attrs.frozen
class LinkSigner:
    """Makes and checks the signed, expiring tokens in ``/_sim/files/<token>/<name>`` links.

    A token carries the task id and the expiry time on the simulator's clock, signed with a
    per-simulator secret, so a link cannot be forged or extended.
    """

    secret: bytes = attrs.field(factory=lambda: secrets.token_bytes(16), repr=False)

    def token(self, task_id: str, name: str, expires: float) -> str:
        stamp = f"{task_id}.{round(expires * 1000)}"
        return f"{stamp}.{self._sign(stamp, name)}"

    def check(self, token: str, name: str, now: float) -> str:
        """The task id in a valid, unexpired ``token`` for file ``name``; ``ValueError`` if not."""
        task_id, _, rest = token.partition(".")
        expires_ms, _, signature = rest.partition(".")
        stamp = f"{task_id}.{expires_ms}"
        if not expires_ms.isdigit() or not hmac.compare_digest(signature, self._sign(stamp, name)):
            raise ValueError("the link's signature does not match")
        if now * 1000 >= int(expires_ms):
            raise ValueError("the link has expired; query the task again for a fresh link")
        return task_id

    def _sign(self, stamp: str, name: str) -> str:
        mac = hmac.new(self.secret, f"{stamp}/{name}".encode(), hashlib.sha256)
        return mac.hexdigest()[:32]
