"""``FakeVidu``: the simulator as an async context manager serving on a real local port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Self

from aiohttp import web

from vidu_async.testing.app import SimSettings, build_app
from vidu_async.testing.callbacks import CallbackSender, Delivery
from vidu_async.testing.config import Account, Faults, Quirks, Timeline
from vidu_async.testing.faults import FaultInjector
from vidu_async.testing.render import result_body
from vidu_async.testing.state import (
    FAILED,
    PROCESSING,
    SUCCESS,
    Clock,
    SimTask,
    Simulation,
)
from vidu_async.testing.stats import SimStats

__all__ = ["DEFAULT_API_KEY", "FakeVidu"]

logger = logging.getLogger("vidu_async.testing")

DEFAULT_API_KEY = "vidu-sim-key"
_CALLBACK_RETRIES = {PROCESSING: 0, SUCCESS: 3, FAILED: 3}
"""Callbacks are sent on these states; success and failed are redelivered up to 3 times."""


class FakeVidu:
    """A Vidu API on ``127.0.0.1`` for tests, demos and benchmarks::

        async with FakeVidu(api_key="k", faults=Faults(...)) as sim:
            ...  # point a client at sim.url with sim.api_key; read sim.stats

    ``accounts`` maps API keys to ``Account`` (credits, concurrency limit) for several accounts
    (``api_key`` then names the one ``sim.api_key`` and the helpers default to, the first if it
    is not among them); by default there is one, for ``api_key``, with ``credits`` and
    ``concurrency_limit``. Tasks with a ``callback_url`` are called back on ``processing``,
    ``success`` and ``failed``, failed deliveries retried ``callback_retry_delay`` seconds apart.
    ``clock`` (monotonic seconds, default the event loop's) drives the task timeline, link expiry
    and the rate limit; pass a ``ManualClock`` to step time by hand. ``seed`` makes faults, task
    outcomes and ids repeat from run to run. ``poll_interval`` is how often (in real seconds) the
    background scheduler advances tasks; every request also advances them first. ``quirks``
    picks the reading of the docs' uncertain points to play (list lag, clock skew, ...).
    """

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        *,
        accounts: Mapping[str, Account] | None = None,
        credits: int = 100_000,
        concurrency_limit: int = 5,
        faults: Faults | None = None,
        timeline: Timeline | None = None,
        seed: int = 0,
        auth_scheme: str = "Token",
        link_ttl: float = 24 * 3600.0,
        clock: Clock | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        callback_retry_delay: float = 1.0,
        poll_interval: float = 0.02,
        quirks: Quirks | None = None,
    ) -> None:
        if accounts is None:
            accounts = {api_key: Account(credits=credits, concurrency_limit=concurrency_limit)}
        if not accounts:
            raise ValueError("FakeVidu needs at least one account")
        self.api_key = api_key if api_key in accounts else next(iter(accounts))
        self.stats = SimStats()
        self._accounts = dict(accounts)
        self._faults = faults or Faults()
        self._timeline = timeline or Timeline()
        self._seed = seed
        self._quirks = quirks or Quirks()
        self._settings = SimSettings(
            auth_scheme=auth_scheme, link_ttl=link_ttl, seed=seed, quirks=self._quirks
        )
        self._clock = clock
        self._host = host
        self._port = port
        self._poll_interval = poll_interval
        self._callbacks = CallbackSender(self.stats, retry_delay=callback_retry_delay)
        self._sim: Simulation | None = None
        self._runner: web.AppRunner | None = None
        self._background: asyncio.Task[None] | None = None
        self._url: str | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        clock = self._clock or asyncio.get_running_loop().time
        self._sim = Simulation(
            self._accounts,
            timeline=self._timeline,
            clock=clock,
            seed=self._seed,
            stats=self.stats,
            on_change=self._state_changed,
            clock_skew=self._quirks.clock_skew,
            list_lag=self._quirks.list_lag,
        )
        faults = FaultInjector(self._faults, seed=self._seed, clock=clock)
        self._runner = web.AppRunner(
            build_app(self._sim, faults, self.stats, self._settings),
            access_log=None,
            handle_signals=False,
        )
        await self._runner.setup()
        try:
            site = web.TCPSite(self._runner, self._host, self._port)
            await site.start()
            host, port = self._runner.addresses[0][:2]
            self._url = f"http://{_url_host(host)}:{port}"
            self._background = asyncio.create_task(self._run_background())
        except BaseException:
            await self._runner.cleanup()
            raise
        logger.info("simulated Vidu API listening on %s", self._url)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._background is not None:
                self._background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._background
        finally:
            if self._sim is not None:
                self._sim.drop_held()
            if self._runner is not None:
                await self._runner.cleanup()

    async def _run_background(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._callbacks.run())
            tg.create_task(self._schedule())

    async def _schedule(self) -> None:
        while True:
            self.simulation.tick()
            await asyncio.sleep(self._poll_interval)

    def _state_changed(self, task: SimTask) -> None:
        callback_url = task.request.get("callback_url")
        retries = _CALLBACK_RETRIES.get(task.state)
        if callback_url and retries is not None:
            links = self._settings.links(self.url, self.simulation.now())
            self._callbacks.submit(
                Delivery(callback_url, task.api_key, result_body(task, links), retries)
            )

    # --- what tests read and do --------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:54321`` (paths are under ``/ent/v2``)."""
        if self._url is None:
            raise RuntimeError("FakeVidu is not running; use it as 'async with FakeVidu() as sim'")
        return self._url

    @property
    def simulation(self) -> Simulation:
        if self._sim is None:
            raise RuntimeError("FakeVidu is not running; use it as 'async with FakeVidu() as sim'")
        return self._sim

    @property
    def tasks(self) -> Mapping[str, SimTask]:
        """Every task of every account by id (read them; do not modify)."""
        return self.simulation.tasks

    def balance(self, api_key: str | None = None) -> int:
        """The credits left on the account of ``api_key`` (default: ``self.api_key``)."""
        return self.simulation.balance(api_key or self.api_key)

    def top_up(self, credits: int, api_key: str | None = None) -> None:
        """Add ``credits`` to the account of ``api_key`` (default: ``self.api_key``)."""
        self.simulation.top_up(api_key or self.api_key, credits)

    def tick(self) -> None:
        """Apply every task transition due by the clock now (after advancing a ManualClock)."""
        self.simulation.tick()

    async def callbacks_settled(self) -> None:
        """Wait until every callback due so far has been delivered or given up."""
        await self._callbacks.settled()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
