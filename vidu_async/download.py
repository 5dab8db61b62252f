"""Downloading result files: safe names, whole files only, and one refresh of an expired link.

File names come from server data (task and creation ids), so they are reduced to a safe
alphabet and can never leave the destination folder. A file is streamed into a hidden temporary
file beside its target, flushed to disk, then renamed over the target: a reader never sees half
a file, and a failed or cancelled download leaves nothing behind. An existing file of the same
name is replaced. File hosts are not the API: requests to them carry no ``Authorization``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import aiohttp

from vidu_async.errors import DownloadError
from vidu_async.tasks import Creation

__all__ = ["download_creation", "extension_for", "file_stem", "safe_stem"]

logger = logging.getLogger("vidu_async.download")

_CHUNK = 1 << 20
_MAX_STEM = 120
_EXPIRED = (403, 404)
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


def safe_stem(text: str, *, max_length: int = _MAX_STEM) -> str:
    """``text`` made safe as (part of) a file name: ASCII letters, digits, ``.``, ``_``, ``-``.

    Path separators, control characters and anything else become ``_``; leading and trailing
    dots are removed and runs of dots collapsed (no ``..``, no hidden file); the result is at
    most ``max_length`` characters and never empty.
    """
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text)
    cleaned = re.sub(r"\.{2,}", ".", cleaned).strip("._-")
    return cleaned[:max_length].rstrip("._-") or "download"


def file_stem(base: str | None, creation: Creation, index: int, *, several: bool) -> str:
    """The file name (without extension) of a creation, each part made safe: ``<base>``, or
    ``<base>_<creation id>`` when a task has ``several`` creations (or there is no base).
    The creation's position stands in for a missing creation id."""
    parts = [base or ""]
    if several or not base:
        parts.append(creation.id or str(index))
    return "_".join(safe_stem(part, max_length=_MAX_STEM // 2) for part in parts if part)


def extension_for(url: str, content_type: str | None) -> str:
    """The file extension: the link's own if it is a known media type, else the content type's,
    else ``.mp4``."""
    suffix = PurePosixPath(urllib.parse.urlsplit(url).path).suffix.lower()
    if suffix in _SAFE_EXTENSIONS:
        return suffix
    media_type = (content_type or "").split(";")[0].strip().lower()
    return _CONTENT_TYPES.get(media_type, _DEFAULT_EXTENSION)


def _public(url: str) -> str:
    """The link without its query and fragment, fit for messages and logs."""
    return urllib.parse.urlsplit(url)._replace(query="", fragment="").geturl()


def _finish(file: BinaryIO) -> None:
    file.flush()
    os.fsync(file.fileno())


async def _fetch(
    session: aiohttp.ClientSession,
    url: str,
    dest: Path,
    stem: str,
    client_timeout: aiohttp.ClientTimeout,
) -> Path:
    """Stream ``url`` into ``dest/<stem><ext>`` through a temporary file; return the path."""
    try:
        async with session.get(url, timeout=client_timeout) as response:
            if response.status != 200:
                raise DownloadError(
                    f"downloading {_public(url)}: the file host answered HTTP {response.status}",
                    url=_public(url),
                    status=response.status,
                )
            target = dest / (stem + extension_for(url, response.content_type))
            partial = dest / f".{stem}.{secrets.token_hex(4)}.part"
            try:
                with partial.open("xb") as file:
                    async for chunk in response.content.iter_chunked(_CHUNK):
                        await asyncio.to_thread(file.write, chunk)
                    await asyncio.to_thread(_finish, file)
                partial.replace(target)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    partial.unlink()
                raise
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise DownloadError(
            f"downloading {_public(url)}: {type(exc).__name__}: {exc}", url=_public(url)
        ) from exc
    logger.debug("downloaded %s to %s", _public(url), target)
    return target


async def download_creation(
    session: aiohttp.ClientSession,
    creation: Creation,
    dest: Path,
    stem: str,
    *,
    client_timeout: aiohttp.ClientTimeout,
    refresh: Callable[[], Awaitable[str]] | None = None,
) -> Path:
    """Download ``creation``'s video into ``dest`` as ``<stem><ext>``; return the path.

    When the file host answers 403 or 404 (signed links expire after about a day) and
    ``refresh`` is given, it is awaited once for a fresh link, which is tried once.
    """
    if not creation.url:
        raise DownloadError(f"creation {creation.id or '(no id)'} has no url", url="")
    try:
        return await _fetch(session, creation.url, dest, stem, client_timeout)
    except DownloadError as error:
        if error.status not in _EXPIRED or refresh is None:
            raise
        logger.info("link %s answered HTTP %d; asking for a fresh one", error.url, error.status)
    return await _fetch(session, await refresh(), dest, stem, client_timeout)
