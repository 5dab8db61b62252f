"""Downloading result files: one name per job, whole files only, retried transfers.

Names. A file is named after a job's text (its ``custom_id``, else the task id), so that text
must become one safe path component, and two jobs must never share a file. The text is NFC
normalised; letters, marks and digits of any script stay, and so do spaces, ``_``, ``-`` and
``.``; every run of other characters (path separators, controls, other white space,
``<>:"|?*``, emoji) becomes ``_``; runs of dots become one; leading spaces, dots, ``_`` and
dashes and trailing spaces and dots are removed; a reserved Windows device name (``CON``,
``NUL``, ``COM1``... also before a dot) gets a ``_`` in front. A name is at most
``MAX_STEM_BYTES`` bytes of UTF-8 (file systems count bytes, not characters). The text keeps
its exact name only when all that changed nothing, the name is case-stable (no letter that case
folding changes, so ``Cat`` and ``cat`` cannot meet on a case-insensitive disk) and it does not
end like a suffix; otherwise the name is the cleaned, shortened text plus ``-`` and 12 hex of
the SHA-256 of the original text. So ``cat-1`` and ``猫-1`` stay as they are, while ``Cat``,
``a/b`` and ``..`` get suffixes, and distinct texts give distinct names, even ignoring case
(exact names never look suffixed; suffixed ones differ by hash). A task with several creations
names each file after the pair (text, creation id), always suffixed from the pair, so it meets
no single job's name either.

Templates. ``DownloadNames.template`` (the CLI's ``--name``) makes the text from ``{custom_id}``,
``{task_id}``, ``{line}`` and ``{index}`` (a creation's position, from 1); the text then follows
the rules above. A template must name ``{custom_id}``, ``{task_id}`` or ``{line}``, each unique
to a job, so that distinct jobs keep distinct texts. Two jobs can still make one text when fields
run together (``{custom_id}{line}``: ``a1`` on line 2 and ``a`` on line 12 both make ``a12``):
a template with two fields of any text (``{custom_id}``, ``{task_id}``), or a number field
(``{line}``, ``{index}``) beside another field or a digit, names each file from its fields'
values instead: its text, always suffixed from the values (``a12-<12 hex>``). Covers and
watermarked videos go to the ``covers/`` and ``watermarked/`` folders under the same stems, so
they meet no video's name.

Files. A file is streamed into ``.<name>.part`` beside its target, flushed to disk, then renamed
over the target: a reader never sees half a file, and a failed or cancelled download leaves
nothing behind. The partial name is fixed, so a run killed mid-download leaves a file the next
attempt replaces (``remove_partial_files`` sweeps a whole folder). Downloads of one target in
one process take turns (a lock per target); a partial file replaced by another process is never
published. An existing target is this job's earlier download and is replaced. A body that
matched its ``Content-Length`` (aiohttp checks that) is whole and is published as received. A
host may end a body without one early and without any error (chunked, a proxy), so before the
rename such a file's headers are checked where its format tells its length (``_complete``: an
MP4's or MOV's boxes end within it and hold ``moov`` and ``mdat``, bytes after both being a
trailer; a PNG ends with ``IEND``, a JPEG with ``FF D9``, a WebP's RIFF size; no media file is
under 16 bytes); a file that fails is retried as a truncated body, said to be "ended early" only
when something in it runs past its end. Files of other formats (GIF, WebM, unknown) cannot be
checked and are published as received.

Transfers. A connection error, a timeout, a truncated body, a 429 or a 5xx from the file host is
retried with the client's ``RetryPolicy``; a 403/404 (an expired signed link) is refreshed once.
An answer that is clearly no media file (``text/*``, JSON, XML: an error page served with a
200) is not retried and nothing of it is written; it is refreshed once too (an expired link's
page). Each attempt has a deadline that grows with the bytes received (``DownloadPace``:
``grace`` seconds plus one per ``min_rate`` bytes; one that runs out is not retried), besides
the stall bound (``sock_read``: no byte for that long). Errors and logs
name the link without its query (signed links carry secrets there). File hosts are not the API:
requests to them carry no ``Authorization``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import re
import time
import unicodedata
import urllib.parse
import weakref
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path, PurePosixPath
from string import Formatter
from typing import BinaryIO, Literal, TypeVar

import aiohttp
import attrs

from vidu_async._complete import shortfall
from vidu_async._probe import FileReader
from vidu_async.errors import DownloadError
from vidu_async.retry import RetryPolicy, backoff_wait, stop_reason
from vidu_async.tasks import Creation

__all__ = [
    "MAX_STEM_BYTES",
    "DownloadNames",
    "DownloadPace",
    "Link",
    "download_creation",
    "extension_for",
    "file_stem",
    "is_error_page",
    "link_folder",
    "partial_path",
    "remove_partial_files",
    "retryable",
    "safe_stem",
]

Link = Literal["url", "cover_url", "watermarked_url"]
"""Which file of a creation: its video, its cover, its watermarked video."""

logger = logging.getLogger("vidu_async.download")

MAX_STEM_BYTES = 200
"""The longest file stem in UTF-8 bytes: with an extension and ``.``/``.part`` around it, a
partial file's name stays under the common 255-byte limit."""

_CHUNK = 1 << 20
_EXPIRED = (403, 404, 200)
"""A file host's answers that a fresh link may cure: an expired signed link's 403 or 404, or an
error page served with a 200 (an expired link's page)."""
_HASH_HEX = 12
_LOOKS_SUFFIXED = re.compile(rf"-[0-9a-f]{{{_HASH_HEX}}}\Z")
_RESERVED = re.compile(r"(?i)(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³])\Z")
_URL_QUERY = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s?#'\"<>]*)[?#][^\s'\"<>]*", re.IGNORECASE)
_SAFE_EXTENSIONS = frozenset(
    {".mp4", ".mov", ".webm", ".avi", ".mkv", ".jpg", ".jpeg", ".png", ".webp", ".gif"}
)
_CONTENT_TYPES = {
    "video/mp4": ".mp4",
    "video/quicktime": ".mov",
    "video/webm": ".webm",
    "video/x-msvideo": ".avi",
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/webp": ".webp",
    "image/gif": ".gif",
}
_DEFAULT_EXTENSION = ".mp4"  # a creation's ``url`` is its video
_PAGE_TYPES = frozenset({"text", "multipart", "message"})
_PAGE_SUBTYPES = frozenset(
    {"json", "xml", "html", "xhtml+xml", "javascript", "ecmascript", "x-www-form-urlencoded"}
)
_EMPTY = "download"

_writers: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = weakref.WeakValueDictionary()


def safe_stem(text: str) -> str:
    """The file stem of a job named ``text``: ``text`` itself when it is already safe, else its
    cleaned form plus a suffix from ``text`` (the rules are in the module docstring)."""
    return _stem(text, _utf8(text), exact=True)


def file_stem(base: str | None, creation: Creation, index: int, *, several: bool) -> str:
    """The file stem of a creation: ``safe_stem(base)``, or from the pair ``(base, creation id)``
    when a task has ``several`` creations (or there is no base), shown as ``<base>_<id>``.
    The creation's position stands in for a missing creation id."""
    parts = [base] if base else []
    if several or not base:
        parts.append(creation.id or str(index))
    if len(parts) == 1:
        return safe_stem(parts[0])
    # 0xFF never occurs in UTF-8: the key is unambiguous and unlike any single text's key.
    return _stem("_".join(parts), b"\xff".join(_utf8(part) for part in parts), exact=False)


_FIELDS = ("custom_id", "task_id", "line", "index")
_IDENTIFYING = ("custom_id", "task_id", "line")
_FOLDERS: dict[Link, str] = {"url": "", "cover_url": "covers", "watermarked_url": "watermarked"}


_NUMBERS = ("line", "index")
"""The fields whose values are numbers (digits only); the others may hold any text."""
_FIELDS_KEY = b"\xfe"
"""Starts the key of a name from its fields' values: 0xFE never occurs in UTF-8, so the key is
unlike any text's or pair's key (see ``file_stem``)."""


def _template_fields(template: str) -> set[str]:
    """The fields ``template`` names; ``ValueError`` for a malformed or formatted field."""
    return {piece for piece in _pieces(template) if isinstance(piece, _Field)}


class _Field(str):
    """A field of a template, told apart from its literal text."""


def _pieces(template: str) -> list[str]:
    """``template`` as its literal texts (merged, none empty) and ``_Field`` names, in order;
    ``ValueError`` for a malformed or formatted field."""
    try:
        parsed = list(Formatter().parse(template))
    except ValueError as error:
        raise ValueError(f"name template {template!r}: {error}") from None
    if any(spec or conv for _, name, spec, conv in parsed if name is not None):
        raise ValueError(f"name template {template!r}: fields take no format (write {{line}}, "
                         "not {line:04d})")
    pieces: list[str] = []
    for literal, name, _, _ in parsed:
        if literal and pieces and not isinstance(pieces[-1], _Field):
            pieces[-1] += literal
        elif literal:
            pieces.append(literal)
        if name is not None:
            pieces.append(_Field(name))
    return pieces


def _unambiguous(pieces: list[str]) -> bool:
    """Whether the texts a template (its ``_pieces``) makes tell its fields' values apart: at
    most one field of any text (``{custom_id}``, ``{task_id}``), and each number field between
    the template's ends or literal text that is no digit. ``{custom_id}{line}`` is not: ``a1``
    on line 2 and ``a`` on line 12 both make ``a12``; ``{line}-{custom_id}`` is."""
    fields = [n for n, piece in enumerate(pieces) if isinstance(piece, _Field)]
    if sum(pieces[n] not in _NUMBERS for n in fields) > 1:
        return False
    return all(_apart(pieces, n - 1, -1) and _apart(pieces, n + 1, 0)
               for n in fields if pieces[n] in _NUMBERS)


def _apart(pieces: list[str], n: int, end: int) -> bool:
    """Whether the piece at ``n`` (beside a number field) is the template's end or literal
    text whose character there (``end``: its first or last) is no digit."""
    if not 0 <= n < len(pieces):
        return True
    return not isinstance(pieces[n], _Field) and not pieces[n][end].isdigit()


def _check_template(_: object, __: object, template: str) -> None:
    fields = _template_fields(template)
    unknown = fields - set(_FIELDS)
    if unknown or "" in fields:
        raise ValueError(f"name template {template!r}: unknown field "
                         f"{{{sorted(unknown)[0] if unknown else ''}}}; use "
                         + ", ".join(f"{{{f}}}" for f in _FIELDS))
    if not fields & set(_IDENTIFYING):
        raise ValueError(f"name template {template!r} must name {{custom_id}}, {{task_id}} or "
                         "{line}: two jobs would share a file otherwise")


@attrs.frozen
class DownloadNames:
    """How downloaded files are named and which are fetched: ``template`` (see the module
    docstring; ``ValueError`` when it is unusable), and covers / watermarked videos too."""

    template: str = attrs.field(default="{custom_id}", validator=_check_template)
    covers: bool = False
    watermarked: bool = False

    @property
    def links(self) -> tuple[Link, ...]:
        """The files to fetch of each creation, the video first."""
        return ("url", *(("cover_url",) if self.covers else ()),
                *(("watermarked_url",) if self.watermarked else ()))

    def stems(self, creations: Sequence[Creation], *, custom_id: str | None, task_id: str,
              line: int | None) -> list[str]:
        """The file stem of each of a task's ``creations``.

        A field without a value (no ``custom_id``, an unknown ``line``) reads as the task id.
        Without ``{index}``, a task with several creations has each file named after the pair
        (text, creation id), as ``file_stem`` does. A template whose text could be made by two
        jobs (``{custom_id}{line}``) names every file from its fields' values instead, shown
        as its text with a suffix."""
        several = len(creations) > 1
        pieces = _pieces(self.template)
        fields = [p for p in pieces if isinstance(p, _Field)]
        per_creation = "index" in fields
        plain = _unambiguous(pieces)
        stems = []
        for index, creation in enumerate(creations):
            values = {"custom_id": custom_id or task_id, "task_id": task_id,
                      "line": task_id if line is None else str(line), "index": str(index + 1)}
            text = self.template.format_map(values)
            if plain:
                stems.append(safe_stem(text) if per_creation
                             else file_stem(text, creation, index, several=several))
                continue
            parts = [values[f] for f in fields]
            if several and not per_creation:
                parts.append(creation.id or str(index))
                text = f"{text}_{parts[-1]}"
            stems.append(_stem(text, _FIELDS_KEY + b"\xff".join(map(_utf8, parts)), exact=False))
        return stems


def link_folder(dest: Path, link: Link) -> Path:
    """Where the files of kind ``link`` go under ``dest``: videos in it, the others below."""
    return dest / _FOLDERS[link] if _FOLDERS[link] else dest


def _stem(text: str, key: bytes, *, exact: bool) -> str:
    cleaned = _clean(text)
    if exact and cleaned == text and _keeps_its_name(cleaned):
        return cleaned
    suffix = "-" + hashlib.sha256(key).hexdigest()[:_HASH_HEX]
    return _truncate(cleaned, MAX_STEM_BYTES - len(suffix)) + suffix


def _clean(text: str) -> str:
    """``text`` NFC normalised, unsafe runs made ``_``, bad ends trimmed, reserved names escaped."""
    marked = "".join(c if _allowed(c) else "\x00" for c in unicodedata.normalize("NFC", text))
    cleaned = re.sub(r"\.{2,}", ".", re.sub("\x00+", "_", marked)).lstrip(" ._-").rstrip(" .")
    cleaned = cleaned or _EMPTY
    return "_" + cleaned if _RESERVED.match(cleaned.split(".")[0].rstrip(" ")) else cleaned


def _allowed(char: str) -> bool:
    """Letters, marks and digits of any script, space and ``_-.``; not the invisible variation
    selectors (marks that follow emoji)."""
    if "\ufe00" <= char <= "\ufe0f" or "\U000e0100" <= char <= "\U000e01ef":
        return False
    return char in " _-." or unicodedata.category(char)[0] in "LMN"


def _keeps_its_name(name: str) -> bool:
    """Whether a clean name may be used as it is: short enough, case-stable, not suffix-like."""
    return (
        len(_utf8(name)) <= MAX_STEM_BYTES
        and name == name.casefold() == name.upper().casefold()
        and not _LOOKS_SUFFIXED.search(name)
    )


def _truncate(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 form fits in ``max_bytes`` (whole characters)."""
    return _utf8(text)[:max_bytes].decode("utf-8", "ignore")


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # lone surrogates can come from JSON


def extension_for(url: str, content_type: str | None) -> str:
    """The file extension: the link's own if it is a known media type, else the content type's,
    else ``.mp4``."""
    suffix = PurePosixPath(urllib.parse.urlsplit(url).path).suffix.lower()
    if suffix in _SAFE_EXTENSIONS:
        return suffix
    media_type = (content_type or "").split(";")[0].strip().lower()
    return _CONTENT_TYPES.get(media_type, _DEFAULT_EXTENSION)


def is_error_page(content_type: str | None) -> bool:
    """Whether a file host's ``Content-Type`` is clearly no media file: ``text/*``, JSON, XML,
    a form (an error page answered 200: an expired link's page, a captive portal, a proxy).
    Video, images, ``application/octet-stream``, ``binary/octet-stream`` and no type pass."""
    top, _, sub = (content_type or "").split(";")[0].strip().lower().partition("/")
    return top in _PAGE_TYPES or (
        top == "application" and (sub in _PAGE_SUBTYPES or sub.endswith(("+json", "+xml")))
    )


@attrs.frozen
class DownloadPace:
    """How long one download attempt may take: ``grace`` seconds (None: no limit) plus one
    second for every ``min_rate`` bytes received so far, from the request to the last byte.

    Only bytes received count, never the announced ``Content-Length`` (a host announcing 640
    MiB and sending a byte a second would otherwise have hours), so a host that sends slower
    than ``min_rate`` bytes a second on average is cut off about ``grace`` seconds after
    falling behind, however big the file. ``ViduClient`` takes ``grace`` from its
    ``ClientTimeout.total`` (300 s by default; None: no deadline).
    """

    grace: float | None = attrs.field(default=300.0)
    min_rate: float = attrs.field(default=65536.0, validator=attrs.validators.gt(0.0))  # 64 KiB/s

    @grace.validator
    def _check_grace(self, _: object, value: float | None) -> None:
        if value is not None and not value > 0:
            raise ValueError(f"grace must be None or > 0, got {value!r}")

    def limit(self, received: int) -> float | None:
        """The seconds an attempt that has received ``received`` bytes may take so far; None
        for no limit."""
        return None if self.grace is None else self.grace + received / self.min_rate


def partial_path(target: Path) -> Path:
    """The temporary file a download of ``target`` is written to: ``.<name>.part`` beside it."""
    return target.with_name(f".{target.name}.part")


def remove_partial_files(
    folder: str | os.PathLike[str], *, before: float | None = None
) -> tuple[Path, ...]:
    """Remove the partial files (``.*.part``) in ``folder`` last written before the time
    ``before`` (``time.time()`` scale; default now), e.g. at the start of a run; return them.

    Blocking: call it through ``asyncio.to_thread`` from a running event loop.
    """
    cutoff = time.time() if before is None else before
    removed = []
    for entry in os.scandir(folder):
        if not (entry.name.startswith(".") and entry.name.endswith(".part")):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except FileNotFoundError:  # removed meanwhile
            continue
    return tuple(removed)


def retryable(error: DownloadError) -> bool:
    """Whether a failed download attempt may be tried again: a 429 or 5xx from the file host,
    or no whole answer (connection refused or reset, a timeout, a body cut short); not an
    attempt that ran out of its ``DownloadPace`` (it had its whole time: no ``__cause__``)."""
    if error.status is not None:
        return error.status == 429 or error.status >= 500
    cause = error.__cause__
    return isinstance(cause, aiohttp.ClientError | TimeoutError) and not isinstance(
        cause, aiohttp.InvalidURL
    )


def _public(url: str) -> str:
    """The link without its query and fragment, fit for messages and logs."""
    return urllib.parse.urlsplit(url)._replace(query="", fragment="").geturl()


def _reason(error: BaseException) -> str:
    """Why an attempt failed, with the query of any link in the text cut off."""
    return _URL_QUERY.sub(r"\1", f"{type(error).__name__}: {error}")


def _create(partial: Path) -> BinaryIO:
    """Open ``partial`` as a new file, replacing one left by an interrupted run.

    Only this process's lock holder writes ``partial``, so an existing one is a leftover (or
    another process's, which then cannot publish it: see ``_publish``).
    """
    partial.unlink(missing_ok=True)
    return partial.open("x+b")  # read too: its headers are checked before it is published


def _finish(file: BinaryIO) -> None:
    """Flush ``file`` to disk and close it (a failure here is the disk's)."""
    file.flush()
    os.fsync(file.fileno())
    file.close()


_T = TypeVar("_T")


async def _on_disk(target: Path, call: Callable[[], _T]) -> _T:
    """``call()`` in a thread; a disk's error (a full disk) names the file being written,
    which the system's error leaves out."""
    try:
        return await asyncio.to_thread(call)
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(target)) from None


def _is_ours(partial: Path, identity: tuple[int, int]) -> bool:
    try:
        stat = partial.stat()
    except FileNotFoundError:
        return False
    return (stat.st_dev, stat.st_ino) == identity


async def _check_whole(target: Path, file: BinaryIO, received: int) -> None:
    """Raise ``ClientPayloadError`` (retried like a body cut short with a ``Content-Length``)
    when the ``received`` bytes in ``file`` are no whole file of their format."""
    problem = await _on_disk(target, lambda: shortfall(FileReader(file, received)))
    if problem is not None:
        what = "the file host ended the file early" if problem.cut else "the file is not whole"
        raise aiohttp.ClientPayloadError(f"{what}: {problem}")


async def _save(
    content: aiohttp.StreamReader,
    target: Path,
    url: str,
    progress: Callable[[int], None],
    *,
    whole: bool,
) -> None:
    """Stream ``content`` into the partial file of ``target``, then rename it over ``target``;
    ``progress`` is told the bytes received so far after each chunk. Unless the body is known
    to be ``whole`` (it matched its ``Content-Length``), its format is checked first."""
    partial = partial_path(target)
    file = _create(partial)  # not in a thread: a cancellation must not orphan the new file
    stat = os.fstat(file.fileno())
    identity = (stat.st_dev, stat.st_ino)
    received = 0
    try:
        try:
            async for chunk in content.iter_chunked(_CHUNK):
                received += len(chunk)
                progress(received)
                await _on_disk(target, functools.partial(file.write, chunk))
            if not whole:
                await _check_whole(target, file, received)
            await _on_disk(target, functools.partial(_finish, file))
        finally:  # after a failure: closing fails again on what the file still holds
            with contextlib.suppress(OSError):
                file.close()
        if not _is_ours(partial, identity):
            raise DownloadError(
                f"downloading {_public(url)}: {partial} was replaced by another process",
                url=_public(url),
            )
        partial.replace(target)
    except BaseException:
        if _is_ours(partial, identity):
            partial.unlink(missing_ok=True)
        raise


def _not_media(response: aiohttp.ClientResponse) -> str | None:
    """What came back, when the answer is an error page rather than the file (else None)."""
    if not is_error_page(response.headers.get("Content-Type")):
        return None
    size = "" if response.content_length is None else f", {response.content_length} bytes"
    return (f"the file host answered {response.content_type}{size}, not a media file (an "
            "error page: an expired link, a proxy or a captive portal?)")


async def _fetch(
    session: aiohttp.ClientSession,
    url: str,
    dest: Path,
    stem: str,
    client_timeout: aiohttp.ClientTimeout,
    pace: DownloadPace,
) -> Path:
    """One attempt, within ``pace``: stream ``url`` into ``dest/<stem><ext>``; return the path."""
    started = asyncio.get_running_loop().time()
    announced = received = 0

    def progress(count: int) -> None:
        nonlocal received
        received = count
        limit = pace.limit(received)
        deadline.reschedule(None if limit is None else started + limit)

    deadline = asyncio.timeout_at(None)
    try:
        async with deadline:
            progress(0)
            async with session.get(url, timeout=client_timeout) as response:
                if response.status != 200:
                    raise DownloadError(
                        f"downloading {_public(url)}: the file host answered HTTP "
                        f"{response.status}",
                        url=_public(url),
                        status=response.status,
                    )
                page = _not_media(response)
                if page is not None:  # status 200: refreshed like an expired link, not retried
                    raise DownloadError(f"downloading {_public(url)}: {page}", url=_public(url),
                                        status=response.status)
                announced = response.content_length or 0
                target = dest / (stem + extension_for(url, response.content_type))
                whole = response.content_length is not None  # aiohttp raises on a shorter body
                await _save(response.content, target, url, progress, whole=whole)
    except (aiohttp.ClientError, TimeoutError) as exc:
        if not deadline.expired():
            raise DownloadError(
                f"downloading {_public(url)}: {_reason(exc)}", url=_public(url)
            ) from exc
        elapsed = asyncio.get_running_loop().time() - started
        of = f" of {announced}" if announced else ""
        raise DownloadError(  # no cause: not retried, the attempt had its whole time
            f"downloading {_public(url)}: too slow: {received}{of} bytes in {elapsed:.1f} s (an "
            f"attempt may take {pace.grace:g} s plus 1 s per {pace.min_rate:g} bytes received)",
            url=_public(url),
        ) from None
    logger.debug("downloaded %s to %s", _public(url), target)
    return target


async def _fetch_retrying(fetch: Callable[[], Awaitable[Path]], policy: RetryPolicy) -> Path:
    """``fetch()`` until it succeeds, fails for good, or ``policy`` says stop waiting."""
    started = policy.clock()
    attempt = 0
    while True:
        attempt += 1
        try:
            return await fetch()
        except DownloadError as error:
            if not retryable(error):
                raise
            wait = backoff_wait(attempt, policy)
            stop = stop_reason(attempt, policy.clock() - started, wait, policy)
            if stop is not None:
                raise DownloadError(
                    f"{error}; gave up: {stop}", url=error.url, status=error.status
                ) from error.__cause__
            logger.info(
                "%s; retrying in %.2fs (attempt %d of %d)",
                error,
                wait,
                attempt + 1,
                policy.max_attempts,
            )
        await policy.sleep(wait)


def _writer_lock(dest: Path, stem: str) -> asyncio.Lock:
    """The lock that makes downloads to ``dest/<stem>.*`` in this process take turns."""
    key = (os.path.abspath(dest), stem)
    lock = _writers.get(key)
    if lock is None:
        lock = _writers[key] = asyncio.Lock()
    return lock


async def download_creation(
    session: aiohttp.ClientSession,
    creation: Creation,
    dest: Path,
    stem: str,
    *,
    client_timeout: aiohttp.ClientTimeout,
    refresh: Callable[[], Awaitable[str]] | None = None,
    retry: RetryPolicy | None = None,
    pace: DownloadPace | None = None,
) -> Path:
    """Download ``creation``'s video into ``dest`` as ``<stem><ext>``; return the path.

    ``client_timeout`` bounds connecting and each read (a stall); its ``total`` is no bound on
    the transfer (a big file takes longer) but the ``grace`` of the default ``pace``. Each
    attempt must end within ``pace`` (one that does not fails for good); other failed transfers
    are retried under ``retry`` (default ``RetryPolicy()``). When the file host answers 403 or
    404 (signed links expire after about a day), or an error page, and ``refresh`` is given, it
    is awaited once for a fresh link, which is tried (with retries) once.
    """
    if not creation.url:
        raise DownloadError(f"creation {creation.id or '(no id)'} has no url", url="")
    policy = retry or RetryPolicy()
    bound = pace or DownloadPace(grace=client_timeout.total or None)  # aiohttp: 0 is none
    per_read = attrs.evolve(client_timeout, total=None)

    async def attempt(url: str) -> Path:
        return await _fetch_retrying(
            lambda: _fetch(session, url, dest, stem, per_read, bound), policy
        )

    async with _writer_lock(dest, stem):
        try:
            return await attempt(creation.url)
        except DownloadError as error:
            if error.status not in _EXPIRED or refresh is None:
                raise
            logger.info("link %s answered HTTP %d%s; asking for a fresh one", error.url,
                        error.status, " with an error page" if error.status == 200 else "")
        return await attempt(await refresh())
