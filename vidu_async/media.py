"""Reference media entries (images, videos): what each is, whether Vidu takes it, how to send it.

An entry is an http(s) URL (checked for form only: Vidu fetches it, we never do), an ``ssupload:``
URI naming an uploaded image (sent as is, never probed), a ``data:`` URI, a local file path or raw
bytes. Data URIs, files and bytes are probed from their headers (see
``_probe``) and checked against the media rules in ``capabilities``; files and bytes are sent inline
as base64 data URIs whose content type comes from the magic bytes, never from a file extension.

Local entries are prepared once per process, not once per use (``MediaCache``): a file is keyed by
its resolved path, size and modification (and change) time, so an edited file is read again; bytes
by the object itself. Its header probe and its full read (SHA-256 digest and data URI together)
are each made once, concurrent users waiting for the one making, and kept in a byte-bounded LRU.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import functools
import hashlib
import os
import re
import stat
import threading
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, Literal, TypeVar

import attrs

from vidu_async._probe import (
    SNIFF_BYTES,
    BytesReader,
    FileReader,
    Format,
    Header,
    MediaKind,
    ProbeError,
    Reader,
    probe,
    sniff,
)
from vidu_async.capabilities import (
    BODY_MAX_BYTES,
    CONTENT_TYPE_ALIASES,
    IMAGE_CONTENT_TYPES,
    IMAGE_MIN_SIDE,
    MEDIA_MAX_RATIO,
    VIDEO_CONTENT_TYPES,
    VIDEO_DECODED_MAX_BYTES,
    VIDEO_FILE_MAX_BYTES,
)
from vidu_async.errors import FieldProblem, ValidationError

__all__ = [
    "CACHE_MAX_BYTES",
    "CacheStats",
    "MediaCache",
    "MediaInfo",
    "MediaKind",
    "MediaSource",
    "encode_media",
    "inspect_media",
    "is_local",
    "is_upload_uri",
    "is_url",
    "media_cache",
    "media_digest",
]

MediaSource = str | os.PathLike[str] | bytes
"""An http(s) URL, a ``data:`` URI, a local path (``str`` or ``PathLike``) or the raw bytes."""
Origin = Literal["url", "upload", "data_uri", "file", "bytes"]

_UPLOAD_PREFIX = "ssupload:"
"""What the upload API's ``finish`` answers (``ssupload:?id=...``): valid wherever images go."""
_URL_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
"""Any ``scheme://`` string is taken as a URL (then refused unless http or https), not a path."""
_LABEL_MAX = 120
_ISO_BMFF_TYPES = frozenset({"video/mp4", "video/quicktime"})
"""One container family: a MOV sent as ``video/mp4`` (as the API docs show) needs no warning."""
_CONTENT_TYPES: dict[MediaKind, tuple[str, ...]] = {
    "image": IMAGE_CONTENT_TYPES,
    "video": VIDEO_CONTENT_TYPES,
}
_A_KIND: dict[MediaKind, str] = {"image": "an image", "video": "a video"}
_DURATION_UNKNOWN = "the duration could not be read from the header; the server will check it"


@attrs.frozen
class MediaInfo:
    """What ``inspect_media`` learned about one entry that passed every check."""

    kind: MediaKind
    origin: Origin
    label: str
    """How errors and warnings name the entry: the path, the URL, or a short description."""
    content_type: str | None
    """From the magic bytes; None for URLs."""
    width: int | None
    height: int | None
    duration: float | None
    """Seconds, for a video whose header states it."""
    size: int | None
    """Raw (decoded) byte length; None for URLs."""
    encoded_length: int
    """``len()`` of the string sent for this entry (the URL, or the data URI)."""
    warnings: tuple[str, ...]


class _Rejected(Exception):
    """Problems with an entry, before they are given the request field's name."""

    def __init__(self, *messages: str) -> None:
        self.messages = messages
        super().__init__(*messages)


def inspect_media(source: MediaSource, kind: MediaKind, *, field: str) -> MediaInfo:
    """Check one ``kind`` entry against Vidu's media rules, reading headers only, never the network.

    Raises ``ValidationError`` listing every problem found with the entry, each under ``field``
    (e.g. ``images[2]``) and naming the file or URL.
    """
    try:
        if isinstance(source, bytes):
            return _inspect_reader(BytesReader(source), kind, "bytes", _bytes_label(source))
        if isinstance(source, str) and _URL_PREFIX.match(source):
            return _inspect_url(source, kind)
        if is_upload_uri(source):
            return _inspect_upload_uri(str(source), kind)
        if isinstance(source, str) and _is_data_uri(source):
            return _inspect_data_uri(source, kind)
        return _inspect_file(_path_text(source), kind)
    except _Rejected as exc:
        raise ValidationError(FieldProblem(field, message) for message in exc.messages) from None


def is_url(source: object) -> bool:
    """Whether an entry is a URL (any ``scheme://``; only http(s) pass validation)."""
    return isinstance(source, str) and _URL_PREFIX.match(source) is not None


def is_upload_uri(source: object) -> bool:
    """Whether an entry is an ``ssupload:`` URI from the upload API (an uploaded image)."""
    return isinstance(source, str) and source.startswith(_UPLOAD_PREFIX)


def is_local(source: object) -> bool:
    """Whether an entry names a local file or is raw bytes (not a URL, upload or data URI)."""
    return not (
        is_url(source)
        or is_upload_uri(source)
        or (isinstance(source, str) and _is_data_uri(source))
    )


def encode_media(source: MediaSource, kind: MediaKind) -> str:
    """The string to send for an entry: URLs and data URIs as given, files and bytes as data URIs.

    Blocking (it reads the whole file the first time, see ``MediaCache``): async code calls it
    through ``asyncio.to_thread``. Raises ``ValidationError`` (field ``images`` / ``videos``) if
    the data is not a ``kind``.
    """
    if isinstance(source, str) and not is_local(source):
        return source
    try:
        if isinstance(source, bytes):
            label, prepared = _bytes_label(source), _CACHE.prepared(source)
        else:
            label = _path_text(source)
            prepared = _CACHE.prepared(label)
        if prepared.format is None:
            raise _Rejected(f"{label}: {prepared.problem}")
        if prepared.format.kind != kind:
            raise _Rejected(f"{label}: {_wrong_kind(prepared.format, kind)}")
        if prepared.data_uri is not None:
            return prepared.data_uri
        return _data_uri(prepared.format, _read_file(label))  # too large to keep
    except _Rejected as exc:
        raise ValidationError(
            FieldProblem(f"{kind}s", message) for message in exc.messages
        ) from None


def media_digest(source: MediaSource, kind: MediaKind) -> str:
    """The entry as it stands in a fingerprint: ``sha256:<hex>`` of a file's or bytes' content,
    ``missing:<path>`` for a file that cannot be read, anything else as given.

    Blocking like ``encode_media``, and sharing its read of the file.
    """
    if not is_local(source):
        return str(source)
    if isinstance(source, bytes):
        return _CACHE.prepared(source).digest
    try:
        return _CACHE.prepared(_path_text(source)).digest
    except _Rejected:  # validation reports it; the fingerprint just differs
        return f"missing:{os.fspath(source)}"


def _is_data_uri(text: str) -> bool:
    return text[:5].lower() == "data:"


def _path_text(source: object) -> str:
    """A local path entry as a ``str``; anything else that reaches here is the wrong type."""
    if not isinstance(source, str | os.PathLike):
        raise _Rejected(
            f"expected a URL, a data URI, a file path or bytes, got {type(source).__name__}"
        )
    path = os.fsdecode(source)
    if not path:
        raise _Rejected("empty string: expected a URL, a data URI or a file path")
    return path


def _short(text: str) -> str:
    return text if len(text) <= _LABEL_MAX else text[: _LABEL_MAX - 1] + "…"


def _bytes_label(data: bytes) -> str:
    return f"<{len(data):,} bytes>"


def _data_uri_prefix(content_type: str) -> str:
    return f"data:{content_type};base64,"


def _data_uri(fmt: Format, data: bytes) -> str:
    return _data_uri_prefix(fmt.content_type) + base64.b64encode(data).decode("ascii")


def _data_uri_length(content_type: str, size: int) -> int:
    """``len()`` of the data URI ``encode_media`` makes of ``size`` bytes, without encoding them."""
    return len(_data_uri_prefix(content_type)) + 4 * ((size + 2) // 3)


@functools.lru_cache(maxsize=1024)  # pure: a batch's jobs mostly share their URLs
def _inspect_url(url: str, kind: MediaKind) -> MediaInfo:
    label = _short(url)
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise _Rejected(f"{label}: not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise _Rejected(f"{label}: only http:// and https:// URLs are accepted")
    if not parts.hostname:
        raise _Rejected(f"{label}: the URL has no host")
    return MediaInfo(kind, "url", label, None, None, None, None, None, len(url), ())


def _inspect_upload_uri(uri: str, kind: MediaKind) -> MediaInfo:
    label = _short(uri)
    if kind != "image":
        raise _Rejected(f"{label}: an ssupload: URI names an uploaded image, not {_A_KIND[kind]}")
    return MediaInfo(kind, "upload", label, None, None, None, None, None, len(uri), ())


def _inspect_data_uri(uri: str, kind: MediaKind) -> MediaInfo:
    head, comma, payload = uri.partition(",")
    media_type, *params = (part.strip().lower() for part in head[len("data:") :].split(";"))
    label = f"<data URI, {_short(media_type) or 'no content type'}, {len(uri):,} characters>"
    if not comma or "base64" not in params:
        raise _Rejected(f"{label}: not a base64 data URI (expected data:<type>;base64,<data>)")
    try:
        data = base64.b64decode(payload, validate=True)
    except ValueError:  # binascii.Error, or non-ASCII characters
        raise _Rejected(f"{label}: the data is not valid base64") from None
    return _inspect_reader(BytesReader(data), kind, "data_uri", label, uri=uri, declared=media_type)


@contextlib.contextmanager
def _file_errors(path: str) -> Iterator[None]:
    """Turn an OSError while reading ``path`` into a problem that names the file."""
    try:
        yield
    except FileNotFoundError:
        raise _Rejected(f"file not found: {path}") from None
    except OSError as exc:
        raise _Rejected(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    except ValueError as exc:  # the OS refuses the path itself: a NUL character in it
        raise _Rejected(f"{path!r}: not a usable file path ({exc})") from None


def _inspect_file(path: str, kind: MediaKind) -> MediaInfo:
    return _judge(_CACHE.probed(path), kind, "file", path)


def _read_file(path: str) -> bytes:
    with _file_errors(path), open(path, "rb") as file:
        return file.read()


def _file_key(path: str) -> _FileKey:
    """What identifies a file's content within a run: resolved path, size, modification time
    (and inode and change time, which catch a file replaced by one of equal size and mtime)."""
    with _file_errors(path):
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise _Rejected(f"{path}: not a regular file")
        return os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns


def _inspect_reader(
    reader: Reader,
    kind: MediaKind,
    origin: Origin,
    label: str,
    *,
    uri: str | None = None,
    declared: str | None = None,
) -> MediaInfo:
    """Probe the data and apply every rule (``_judge``)."""
    return _judge(_probe_outcome(reader), kind, origin, label, uri=uri, declared=declared)


def _judge(
    probed: _Probed,
    kind: MediaKind,
    origin: Origin,
    label: str,
    *,
    uri: str | None = None,
    declared: str | None = None,
) -> MediaInfo:
    """Apply every rule to what a probe found, collecting all problems before failing.

    ``uri`` and ``declared`` are given for a data URI: the URI itself and its stated content type.
    """
    problems: list[str] = []
    warnings: list[str] = []
    if kind == "video":
        problems += _video_size_problems(probed.size)
    header = probed.header
    if probed.problem is not None:
        problems.append(probed.problem)
    if header is not None and header.format.kind != kind:
        problems.append(_wrong_kind(header.format, kind))
    elif header is not None:
        problems += _shape_problems(header.width, header.height)
        if kind == "video" and header.duration is None:
            warnings.append(_DURATION_UNKNOWN)
    if declared is not None and declared in CONTENT_TYPE_ALIASES:
        standard = CONTENT_TYPE_ALIASES[declared]
        warnings.append(f"{declared} is not the standard content type ({standard} is); sent as is")
        declared = standard
    if declared is not None and declared not in _CONTENT_TYPES[kind]:
        problems.append(
            f"the data URI content type {_short(declared) or '(none)'!r} is not one of "
            + ", ".join(_CONTENT_TYPES[kind])
        )
    elif declared is not None and header is not None:
        actual = header.format.content_type
        if actual != declared and not {actual, declared} <= _ISO_BMFF_TYPES:
            warnings.append(f"the data URI says {declared} but the data is {actual}")
    if problems or header is None:
        raise _Rejected(*(f"{label}: {problem}" for problem in problems))
    return MediaInfo(
        kind=kind,
        origin=origin,
        label=label,
        content_type=header.format.content_type,
        width=header.width,
        height=header.height,
        duration=header.duration,
        size=probed.size,
        encoded_length=(
            len(uri)
            if uri is not None
            else _data_uri_length(header.format.content_type, probed.size)
        ),
        warnings=tuple(f"{label}: {warning}" for warning in warnings),
    )


def _wrong_kind(fmt: Format, kind: MediaKind) -> str:
    return f"this is {_A_KIND[fmt.kind]} ({fmt.name}), not {_A_KIND[kind]}"


def _megabytes(size: int) -> str:
    return f"{size / 1_048_576:.1f} MB ({size:,} bytes)"


def _video_size_problems(size: int) -> list[str]:
    problems = []
    if size > VIDEO_FILE_MAX_BYTES:
        problems.append(
            f"the video is {_megabytes(size)}; videos may be at most "
            f"{_megabytes(VIDEO_FILE_MAX_BYTES)}"
        )
    if size >= VIDEO_DECODED_MAX_BYTES:
        problems.append(
            f"the video is {_megabytes(size)}; a video sent inline must be under "
            f"{_megabytes(VIDEO_DECODED_MAX_BYTES)}: upload it somewhere and pass its URL instead"
        )
    return problems


def _shape_problems(width: int, height: int) -> list[str]:
    """The size and aspect-ratio rules shared by images and videos, in integer arithmetic."""
    problems = []
    if width < IMAGE_MIN_SIDE or height < IMAGE_MIN_SIDE:
        problems.append(
            f"{width}x{height} pixels is too small: both sides must be at least {IMAGE_MIN_SIDE}"
        )
    if not (width < height * MEDIA_MAX_RATIO and height < width * MEDIA_MAX_RATIO):
        problems.append(
            f"the aspect ratio {width}x{height} is not strictly between "
            f"1:{MEDIA_MAX_RATIO} and {MEDIA_MAX_RATIO}:1"
        )
    return problems


# --- the cache of prepared local media ------------------------------------------------------

CACHE_MAX_BYTES = 64 * 1024 * 1024
"""The most bytes of prepared media (data URIs, and the bytes entries they hold) kept at once:
the shared references of a batch fit many times over, and a long-lived service holds no more."""
_KEEP_MAX_BYTES = BODY_MAX_BYTES
"""A larger file cannot be sent inline: it is hashed in blocks and nothing of it is kept."""
_PROBES_MAX = 65_536
"""The most header probes kept (each a few hundred bytes)."""
_BLOCK = 1 << 20

_FileKey = tuple[str, int, int, int, int]
_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


@attrs.frozen
class _Probed:
    """What a header probe of a local entry found: its size, and its header or why it has none."""

    size: int
    header: Header | None
    problem: str | None


@attrs.define
class _Prepared:
    """A local entry read whole: its content digest, and the data URI it is sent as, encoded
    on first use (once; a batch that uploads its images never encodes them, and base64 holds
    the GIL: the event loop would wait for it)."""

    digest: str
    """``sha256:<hex>`` of the content, as fingerprints and upload keys name it."""
    format: Format | None
    """From the magic bytes; None when they name no supported format (``problem`` says why)."""
    problem: str | None
    _content: bytes | None = attrs.field(default=None, repr=False)
    """The content until it is encoded; None when ``format`` is, or for a file too large to
    keep."""
    source: bytes | None = attrs.field(default=None, repr=False)
    """A bytes entry itself: held so that its ``id``, its key, names no other object meanwhile."""
    _uri: str | None = attrs.field(default=None, init=False, repr=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    weight: int = attrs.field(default=0, init=False, repr=False)
    """What it holds once encoded (its data URI, and a bytes entry itself): fixed when it is
    made, for the cache's bound."""

    @property
    def data_uri(self) -> str | None:
        """The data URI to send (None when ``format`` is, or for a file too large to keep)."""
        with self._lock:
            if self._uri is None and self._content is not None and self.format is not None:
                self._uri, self._content = _data_uri(self.format, self._content), None
            return self._uri

    def __attrs_post_init__(self) -> None:
        encoded = 0
        if self.format is not None and self._content is not None:
            encoded = _data_uri_length(self.format.content_type, len(self._content))
        self.weight = encoded + len(self.source or b"")


@attrs.frozen
class CacheStats:
    """What a ``MediaCache`` did (counts since it was made or cleared) and holds."""

    probes: int
    """Header probes made: of a file (a few small reads), or of an entry read whole anyway."""
    reads: int
    """Entries read whole, hashed and encoded."""
    hits: int
    """Uses served by an earlier (or concurrent) probe or read."""
    evictions: int
    held_bytes: int


class _Memo(Generic[_K, _V]):
    """A thread-safe LRU of values made once per key, bounded by their total weight.

    Concurrent callers of one key share one making (one future); a making that raises is not
    kept, so the next caller tries again. A value heavier than the bound is returned, not kept.
    """

    def __init__(self, limit: int, weigh: Callable[[_V], int]) -> None:
        self._limit = limit
        self._weigh = weigh
        self._lock = threading.Lock()
        self._slots: OrderedDict[_K, concurrent.futures.Future[_V]] = OrderedDict()
        self._weights: dict[_K, int] = {}
        self.held = self.made = self.hits = self.evictions = 0

    def get(self, key: _K, make: Callable[[], _V]) -> _V:
        """The value of ``key``: kept, being made by another thread (waited for), or made now."""
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = concurrent.futures.Future()
                mine = True
            else:
                self._slots.move_to_end(key)
                self.hits += 1
                mine = False
        if not mine:
            return slot.result()
        try:
            value = make()
        except BaseException as exc:
            with self._lock:
                if self._slots.get(key) is slot:
                    del self._slots[key]
            slot.set_exception(exc)
            raise
        slot.set_result(value)
        with self._lock:
            self.made += 1
            if self._slots.get(key) is slot:
                self._weights[key] = weight = self._weigh(value)
                self.held += weight
                self._evict()
        return value

    def _evict(self) -> None:
        """Drop the least recently used values (not those still being made) over the bound."""
        while self.held > self._limit:
            key = next(k for k in self._slots if k in self._weights)
            del self._slots[key]
            self.held -= self._weights.pop(key)
            self.evictions += 1

    def clear(self) -> None:
        with self._lock:
            for key in self._weights:
                del self._slots[key]
            self._weights.clear()
            self.held = self.made = self.hits = self.evictions = 0


class MediaCache:
    """Local media entries (files, bytes) probed once and read once while they stay unchanged.

    A file is keyed by its resolved path, size, modification time, inode and change time, so an
    edited or replaced file is read again; a bytes entry by the object itself (hashing it to look
    it up would cost more than encoding it again). A header probe (validation) reads a few bytes;
    a full read (a body or a fingerprint) yields the digest and the data URI at once, and the
    probe for free. Kept entries are bounded by ``max_bytes`` of data URIs, least recently used
    first out. Blocking and thread-safe: callers in worker threads asking for one entry wait for
    one preparation.
    """

    def __init__(self, max_bytes: int = CACHE_MAX_BYTES) -> None:
        self._probes: _Memo[_FileKey, _Probed] = _Memo(_PROBES_MAX, lambda _: 1)
        self._prepared: _Memo[Hashable, _Prepared] = _Memo(max_bytes, lambda p: p.weight)

    def stats(self) -> CacheStats:
        """What this cache did and holds (for tests and benchmarks)."""
        probes, prepared = self._probes, self._prepared
        return CacheStats(
            probes.made, prepared.made, probes.hits + prepared.hits,
            probes.evictions + prepared.evictions, prepared.held,
        )

    def clear(self) -> None:
        """Forget every entry (the memory is freed once no body refers to it) and the counts."""
        self._probes.clear()
        self._prepared.clear()

    def probed(self, path: str) -> _Probed:
        """The header probe of the file ``path``; ``_Rejected`` when it cannot be read."""
        key = _file_key(path)

        def probe_file() -> _Probed:
            with _file_errors(path), open(path, "rb") as file:
                return _probe_outcome(FileReader(file, key[1]))

        return self._probes.get(key, probe_file)

    def prepared(self, source: str | bytes) -> _Prepared:
        """The file at the path ``source``, or the bytes ``source``, read whole; ``_Rejected``
        when the file cannot be read."""
        if isinstance(source, bytes):
            return self._prepared.get(("bytes", id(source)), lambda: _prepare(source, source))
        key = _file_key(source)
        if key[1] > _KEEP_MAX_BYTES:
            return self._prepared.get(key, lambda: _prepare_large(source))

        def read() -> _Prepared:
            data = _read_file(source)
            self._probes.get(key, lambda: _probe_outcome(BytesReader(data)))
            return _prepare(data)

        return self._prepared.get(key, read)


def _probe_outcome(reader: Reader) -> _Probed:
    try:
        return _Probed(reader.size, probe(reader), None)
    except ProbeError as exc:
        return _Probed(reader.size, None, str(exc))


def _prepare(data: bytes, source: bytes | None = None) -> _Prepared:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    try:
        fmt = sniff(data[:SNIFF_BYTES])
    except ProbeError as exc:
        return _Prepared(digest, None, str(exc), None, source)
    return _Prepared(digest, fmt, None, data, source)


def _prepare_large(path: str) -> _Prepared:
    """A file too large to send inline: hashed in blocks, its format sniffed, no data URI."""
    digest = hashlib.sha256()
    with _file_errors(path), open(path, "rb") as file:
        prefix = file.read(SNIFF_BYTES)
        digest.update(prefix)
        for block in iter(lambda: file.read(_BLOCK), b""):
            digest.update(block)
    try:
        fmt: Format | None = sniff(prefix)
        problem = None
    except ProbeError as exc:
        fmt, problem = None, str(exc)
    return _Prepared("sha256:" + digest.hexdigest(), fmt, problem, None)


_CACHE = MediaCache()


def media_cache() -> MediaCache:
    """The process's cache of prepared local media, which every body, probe and fingerprint
    shares (its ``stats()`` say how much was read; ``clear()`` frees it after a run)."""
    return _CACHE
