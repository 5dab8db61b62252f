"""Signed callbacks (spec section 6): the signature, and a sender that delivers and redelivers.

The signing string for a POST to ``http://host/vidu/callback?name=james&age=36`` is::

    POST\\n/vidu/callback\\nname=james&age=36\\nvidu\\n<Date>\\nDate:<Date>\\nx-request-nonce:<nonce>\\n

and the signature is ``base64(HMAC-SHA256(api_key, signing_string))``, the API key being the one
the task was created with. The body is not signed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import uuid
from collections.abc import Mapping
from email.utils import formatdate
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import attrs

from vidu_async.testing.stats import SimStats

__all__ = [
    "ACCESS_KEY",
    "SIGNED_HEADERS",
    "CallbackSender",
    "Delivery",
    "callback_headers",
    "sign_callback",
    "signing_string",
]

logger = logging.getLogger("vidu_async.testing.callbacks")

ACCESS_KEY = "vidu"
SIGNED_HEADERS = ("Date", "x-request-nonce")


def signing_string(method: str, url: str, headers: Mapping[str, str]) -> str:
    """What is signed: method, path, raw query, access key, Date, then each signed header."""
    parts = urlsplit(url)
    text = f"{method}\n{parts.path or '/'}\n{parts.query}\n{ACCESS_KEY}\n{headers['Date']}\n"
    return text + "".join(f"{name}:{headers[name]}\n" for name in SIGNED_HEADERS)


def sign_callback(api_key: str, method: str, url: str, headers: Mapping[str, str]) -> str:
    """``base64(HMAC-SHA256(api_key, signing_string))`` for a callback to ``url``."""
    text = signing_string(method, url, headers)
    digest = hmac.new(api_key.encode(), text.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def callback_headers(api_key: str, url: str, *, date: str, nonce: str) -> dict[str, str]:
    """Every header of a callback POST to ``url``, signature included."""
    headers = {"Date": date, "x-request-nonce": nonce}
    return {
        **headers,
        "X-HMAC-SIGNED-HEADERS": ";".join(SIGNED_HEADERS),
        "X-HMAC-ALGORITHM": "hmac-sha256",
        "X-HMAC-ACCESS-KEY": ACCESS_KEY,
        "X-HMAC-SIGNATURE": sign_callback(api_key, "POST", url, headers),
    }


@attrs.frozen
class Delivery:
    """One callback to send: the task's query body, to ``url``, signed with ``api_key``.

    ``retries`` is how many times it is sent again after a failed attempt (3 for ``success``
    and ``failed``, 0 for ``processing``).
    """

    url: str
    api_key: str = attrs.field(repr=False)
    body: dict[str, Any] = attrs.field(repr=False)
    retries: int


class CallbackSender:
    """Delivers callbacks from a queue with a few workers; ``run()`` until cancelled.

    An attempt fails on a connection error, a timeout or a non-2xx answer; the next attempt
    comes ``retry_delay`` seconds later. Deliveries run side by side, so a task's callbacks may
    arrive out of order (a receiver reads the task itself before acting, as the spec advises).
    """

    def __init__(
        self,
        stats: SimStats,
        *,
        retry_delay: float,
        timeout: float = 10.0,
        workers: int = 4,
    ) -> None:
        self._stats = stats
        self._retry_delay = retry_delay
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._workers = workers
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue()

    def submit(self, delivery: Delivery) -> None:
        self._queue.put_nowait(delivery)

    async def settled(self) -> None:
        """Wait until every callback submitted so far is delivered or given up."""
        await self._queue.join()

    async def run(self) -> None:
        async with (
            aiohttp.ClientSession(timeout=self._timeout) as session,
            asyncio.TaskGroup() as tg,
        ):
            for _ in range(self._workers):
                tg.create_task(self._work(session))

    async def _work(self, session: aiohttp.ClientSession) -> None:
        while True:
            delivery = await self._queue.get()
            try:
                await self._deliver(session, delivery)
            finally:
                self._queue.task_done()

    async def _deliver(self, session: aiohttp.ClientSession, delivery: Delivery) -> None:
        for attempt in range(1 + delivery.retries):
            if attempt:
                await asyncio.sleep(self._retry_delay)
            if await self._attempt(session, delivery):
                self._stats.callbacks_delivered += 1
                return
            self._stats.callback_attempts_failed += 1
        logger.warning(
            "gave up delivering the %s callback of task %s after %d attempts",
            delivery.body.get("state"),
            delivery.body.get("id"),
            1 + delivery.retries,
        )

    async def _attempt(self, session: aiohttp.ClientSession, delivery: Delivery) -> bool:
        headers = callback_headers(
            delivery.api_key,
            delivery.url,
            date=formatdate(usegmt=True),
            nonce=str(uuid.uuid4()),
        )
        try:
            async with session.post(delivery.url, json=delivery.body, headers=headers) as resp:
                await resp.read()
                ok = 200 <= resp.status < 300
                if not ok:
                    logger.debug("callback to %s answered %d", delivery.url, resp.status)
                return ok
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.debug("callback to %s failed: %r", delivery.url, exc)
            return False
