"""Local images of a batch go up once and travel as short ``ssupload:`` URIs.

The common batch uses one set of reference images (a character, a product) for every prompt;
inlining them costs every create the same megabytes of base64. Instead, each distinct local image
(keyed by its content, per account) is uploaded once through the upload API, every job that uses
it shares that one upload (concurrent jobs wait for the same one), and the URI is remembered in
the journal so a rerun within the URI's lifetime uploads nothing. An image the upload API refuses
(over 10 MB, say), or an upload that fails, is inlined as before: uploading is an optimisation,
never a reason for a job to fail.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import cast

from vidu_async.client import ViduClient
from vidu_async.errors import ViduError
from vidu_async.media import MediaKind, MediaSource, is_local, media_digest
from vidu_async.requests import Request

__all__ = ["URI_LIFETIME", "Uploads"]

logger = logging.getLogger("vidu_async.batch")

URI_LIFETIME = 6 * 24 * 3600.0
"""How long a remembered URI is reused: uploads are deleted after about 7 days (API.md 8)."""


class Uploads:
    """The uploads of one run: ``await uploads.applied(request, client, account)`` is the
    request with its local images replaced by their URIs."""

    def __init__(
        self,
        remembered: Mapping[str, tuple[str, float]],
        remember: Callable[[str, str], Awaitable[None]] | None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        now = clock()
        self._remember = remember
        self._known: dict[str, asyncio.Future[str | None]] = {}
        loop = asyncio.get_running_loop()
        for media, (uri, at) in remembered.items():
            if now - at < URI_LIFETIME:
                self._known[media] = loop.create_future()
                self._known[media].set_result(uri)
        self.uploaded = 0
        """Images uploaded by this run (a figure for tests and benchmarks)."""

    async def applied(
        self, request: Request, client: ViduClient, account: str,
        known: Mapping[MediaSource, str] | None = None,
    ) -> Request:
        """``request`` with each local image (path or bytes) sent as its ``ssupload:`` URI;
        ``known``: digests already taken (the job's fingerprint took them), not taken again."""
        local = [s for s, kind in request.media_entries() if kind == "image" and is_local(s)]
        if not local:
            return request
        uris: dict[int, str] = {}
        known = known or {}
        if all(s in known for s in local):
            digests = [known[s] for s in local]
        else:
            digests = await asyncio.to_thread(
                lambda: [known.get(s) or media_digest(s, "image") for s in local]
            )
        for source, digest in zip(local, digests, strict=True):
            uri = await self._uri(f"{account}/{digest}", source, client)
            if uri is not None:
                uris[id(source)] = uri

        def send_as(source: MediaSource, kind: MediaKind) -> str:
            return uris.get(id(source), cast(str, source))  # the entry as given, else its URI

        if not uris:
            return request
        return type(request).from_dict(request.body_with(send_as))

    async def _uri(self, media: str, source: MediaSource, client: ViduClient) -> str | None:
        """The URI of ``media``, uploading it the first time (shared by concurrent callers);
        None when it cannot be uploaded (the image is then inlined)."""
        known = self._known.get(media)
        if known is None:
            known = self._known[media] = asyncio.get_running_loop().create_future()
            try:
                uri: str | None = await client.upload_image(source)
            except ViduError as error:
                logger.info("%s is sent inline: uploading it failed (%s)", media, error)
                uri = None
            known.set_result(uri)
            if uri is not None:
                self.uploaded += 1
                if self._remember is not None:
                    await self._remember(media, uri)
        return await asyncio.shield(known)

