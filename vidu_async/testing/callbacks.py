"""The simulator's callback sender: signed POSTs of a task's state, delivered and redelivered.

Callbacks are signed exactly as Vidu signs them (spec section 6), by ``vidu_async.callbacks``:
the one implementation of the signing string, shared by the simulator and the verifier.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import attrs

from vidu_async.callbacks import sign_callback
from vidu_async.testing.stats import SimStats

__all__ = ["CallbackSender", "Delivery"]

logger = logging.getLogger("vidu_async.testing.callbacks")


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
        headers = sign_callback(delivery.api_key, delivery.url)
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
