"""``CallbackReceiver``: Vidu's callbacks in, verified and confirmed task events out (aiohttp).

For each callback POST the handler, before it answers:

1. verifies the signature, the ``Date`` window and the nonce (``callbacks.verify_callback``)
   against the keys of its clients (401 with the reason when that fails);
2. parses the body (400 when it is not a task);
3. drops a duplicate delivery of the same ``(task_id, state)``, or any callback about a task it
   already saw finish (200: Vidu must not send it again);
4. queues the rest (503 when the queue is full, so Vidu delivers again later) and answers 200.

Workers then turn each queued callback into a ``CallbackEvent``. The body is not signed, so a
callback that claims an end state (``success`` or ``failed``) is confirmed by reading the task
with the client of the account that signed it, and the event reports what that read says.
``processing`` is passed on as sent; so is everything with ``ReceiverOptions(confirm=False)``,
for a consumer that reads the tasks itself, in bulk. Everything is bounded: the nonces, the
``(task_id, state)`` pairs and the finished tasks remembered (``remember`` each), both queues.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence

import attrs
from aiohttp import web

from vidu_async.callbacks import (
    DEFAULT_MAX_SKEW,
    CallbackVerificationError,
    NonceCache,
    verify_callback,
)
from vidu_async.client import ViduClient
from vidu_async.errors import ConfigurationError, ViduError
from vidu_async.tasks import TaskResult, TaskState

__all__ = ["DEFAULT_CALLBACK_PATH", "CallbackEvent", "CallbackReceiver", "ReceiverOptions"]

logger = logging.getLogger("vidu_async.receiver")

DEFAULT_CALLBACK_PATH = "/vidu/callback"
_MAX_BODY = 8 * 2**20
"""Largest callback body ``serve()`` accepts: a ``payload`` may hold 1,048,576 characters,
JSON-escaped up to 6 bytes each (aiohttp's default limit is 1 MiB)."""


@attrs.frozen
class ReceiverOptions:
    """How a receiver checks and buffers callbacks.

    ``path_prefix`` is the leading part of the public callback path that a proxy strips before
    the request reaches us (Vidu signed the public path). ``max_skew`` is the ``Date`` window,
    either way. ``max_pending`` bounds the callbacks waiting to be confirmed, and the events
    waiting for their consumer. ``remember`` bounds each of: nonces (kept ``2 * max_skew``),
    ``(task_id, state)`` pairs (kept ``duplicate_window`` seconds) and finished tasks.
    ``clock`` (POSIX seconds) checks ``Date``; ``monotonic`` ages what is remembered.

    ``confirm=False`` passes end states on unconfirmed, as sent, for a consumer that reads the
    tasks itself (a batch refreshing 100 tasks per list request): one read per task saved.
    """

    path_prefix: str = attrs.field(default="")
    max_skew: float = attrs.field(default=DEFAULT_MAX_SKEW, validator=attrs.validators.gt(0))
    max_pending: int = attrs.field(default=1000, validator=attrs.validators.ge(1))
    confirm_concurrency: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    remember: int = attrs.field(default=10_000, validator=attrs.validators.ge(1))
    duplicate_window: float = attrs.field(default=3600.0, validator=attrs.validators.gt(0))
    confirm: bool = True
    clock: Callable[[], float] = attrs.field(default=time.time, eq=False, repr=False)
    monotonic: Callable[[], float] = attrs.field(default=time.monotonic, eq=False, repr=False)

    @path_prefix.validator
    def _check_prefix(self, _: object, value: str) -> None:
        if value and (not value.startswith("/") or value.endswith("/") or "?" in value):
            raise ValueError(
                f"path_prefix must be empty or a path such as '/hooks' (a leading '/', no "
                f"trailing '/'), got {value!r}"
            )


@attrs.frozen
class CallbackEvent:
    """A verified callback: task ``task_id`` said to be ``claimed``.

    ``result`` is the task as read back with the client when ``confirmed`` (every callback
    claiming an end state, unless the receiver's ``confirm`` is off; the read wins when it
    disagrees), else the callback's own body: a claim to check, or a ``processing`` notice.
    """

    task_id: str
    claimed: TaskState | str
    result: TaskResult
    confirmed: bool

    @property
    def is_terminal(self) -> bool:
        """Whether the task is known (by reading it) to have finished."""
        return self.confirmed and self.result.is_terminal


@attrs.frozen
class _Claim:
    body: TaskResult
    client: ViduClient = attrs.field(repr=False)

    @property
    def key(self) -> str:
        return f"{self.body.id}\n{self.body.state}"


class CallbackReceiver:
    """Receives Vidu's callbacks for the tasks of ``clients`` (one per account).

    Serve it with ``async with receiver.serve(host, port) as url``, or mount ``receiver.handler``
    on your own aiohttp app and keep ``async with receiver.running():`` open while it serves.
    Take events with ``async for event in receiver.events()`` (one consumer), or pass
    ``on_event`` (awaited for each event, in place of ``events()``; it should be quick). A slow
    consumer holds the queues back, and callbacks beyond ``max_pending`` are answered 503.
    ``finished(task_id)`` looks up a task whose end a callback already brought.
    """

    def __init__(
        self,
        clients: ViduClient | Sequence[ViduClient],
        options: ReceiverOptions | None = None,
        *,
        on_event: Callable[[CallbackEvent], Awaitable[None]] | None = None,
    ) -> None:
        group = [clients] if isinstance(clients, ViduClient) else list(clients)
        if not group:
            raise ConfigurationError("CallbackReceiver needs the client of at least one account")
        self.options = opts = options or ReceiverOptions()
        self._clients = {client.account.api_key: client for client in group}
        self._keys = tuple(self._clients)
        self._on_event = on_event
        self._nonces = NonceCache(
            ttl=2 * opts.max_skew, max_size=opts.remember, clock=opts.monotonic
        )
        self._claims = NonceCache(
            ttl=opts.duplicate_window, max_size=opts.remember, clock=opts.monotonic
        )
        self._finished: collections.OrderedDict[str, TaskResult] = collections.OrderedDict()
        self._pending: asyncio.Queue[_Claim] = asyncio.Queue(opts.max_pending)
        self._events: asyncio.Queue[CallbackEvent] = asyncio.Queue(opts.max_pending)
        self._running = False

    def __repr__(self) -> str:
        return f"<CallbackReceiver accounts={len(self._keys)} running={self._running}>"

    # --- what callers use ---------------------------------------------------------------------

    def finished(self, task_id: str) -> TaskResult | None:
        """The confirmed end of ``task_id`` if a callback brought it (among the last ``remember``).

        A batch that registers a task after its callback arrived finds the result here.
        """
        return self._finished.get(task_id)

    async def events(self) -> AsyncGenerator[CallbackEvent, None]:
        """Every event, as workers produce it, until the consumer stops iterating."""
        if self._on_event is not None:
            raise RuntimeError("this receiver hands its events to on_event, not to events()")
        while True:
            yield await self._events.get()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the workers that confirm callbacks; the handler answers 503 outside this block.

        The workers are cancelled and awaited on the way out; callbacks still queued then are
        dropped and forgotten (Vidu was answered 200: a batch's safety-net poll finds them).
        """
        if self._running:
            raise RuntimeError("this CallbackReceiver is already running")
        self._running = True
        workers = [
            asyncio.create_task(self._work()) for _ in range(self.options.confirm_concurrency)
        ]
        try:
            yield
        finally:
            self._running = False
            for worker in workers:
                worker.cancel()
            await asyncio.wait(workers)
            while not self._pending.empty():
                self._claims.discard(self._pending.get_nowait().key)

    @contextlib.asynccontextmanager
    async def serve(
        self, host: str = "127.0.0.1", port: int = 0, *, path: str = DEFAULT_CALLBACK_PATH
    ) -> AsyncIterator[str]:
        """Run a small server of its own on ``host:port`` (0: any free port) for POSTs to
        ``path``; yields the local callback URL (behind a proxy, give Vidu the public one)."""
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_post(path, self.handler)
        async with self.running():
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            try:
                await web.TCPSite(runner, host, port).start()
                bound_host, bound_port = runner.addresses[0][:2]
                shown = f"[{bound_host}]" if ":" in bound_host else bound_host
                logger.info("receiving Vidu callbacks on %s:%d%s", shown, bound_port, path)
                yield f"http://{shown}:{bound_port}{path}"
            finally:
                await runner.cleanup()

    async def handler(self, request: web.Request) -> web.Response:
        """The aiohttp handler for Vidu's callback POSTs (see the module docstring)."""
        if not self._running:
            return web.Response(status=503, text="the callback receiver is not running")
        try:
            key = verify_callback(
                request.method,
                request.raw_path,
                request.headers,
                self._keys,
                now=self.options.clock(),
                max_skew=self.options.max_skew,
                seen_nonces=self._nonces,
                path_prefix=self.options.path_prefix,
            )
        except CallbackVerificationError as error:
            logger.warning("refused a callback to %s: %s", request.raw_path, error)
            return web.Response(status=401, text=str(error))
        try:
            claim = _Claim(_parse_body(await request.read()), self._clients[key])
        except ValueError as error:  # bad JSON or UTF-8, or ResponseFormatError naming a field
            logger.warning("a verified callback has a bad body: %s", error)
            return web.Response(status=400, text=f"the body is not a task: {error}")
        if claim.body.id in self._finished:
            return web.Response(text="ignored: the task has already finished")
        if not self._claims.add(claim.key):
            return web.Response(text="ignored: a duplicate delivery")
        try:
            self._pending.put_nowait(claim)
        except asyncio.QueueFull:
            self._claims.discard(claim.key)
            logger.warning(
                "too many callbacks waiting; asked Vidu to deliver task %s's again", claim.body.id
            )
            return web.Response(status=503, text="too many callbacks waiting; deliver it later")
        return web.Response(text="accepted")

    # --- the workers --------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            event = await self._confirm(await self._pending.get())
            if event is None:
                continue
            if self._on_event is None:
                await self._events.put(event)
                continue
            try:
                await self._on_event(event)
            except Exception:  # the caller's bug: report it, keep receiving
                logger.exception(
                    "on_event failed on the %s event of task %s", event.claimed, event.task_id
                )

    async def _confirm(self, claim: _Claim) -> CallbackEvent | None:
        """The event for ``claim``, end states read back first; None when there is nothing new."""
        body = claim.body
        if not (body.is_terminal and self.options.confirm):
            if body.id in self._finished:  # overtaken by the task's end
                return None
            return CallbackEvent(body.id, body.state, body, confirmed=False)
        try:
            result = await claim.client.get_task(body.id)
        except ViduError as error:
            self._claims.discard(claim.key)  # a redelivery may confirm it
            logger.warning("could not confirm that task %s is %s: %s", body.id, body.state, error)
            return None
        if result.state != body.state:
            self._claims.discard(claim.key)  # the true callback for that state is still to come
            logger.warning(
                "a callback said task %s is %s; reading it says %s",
                body.id,
                body.state,
                result.state,
            )
        if body.id in self._finished:
            return None
        if result.is_terminal:
            self._finished[body.id] = result
            if len(self._finished) > self.options.remember:
                self._finished.popitem(last=False)
        return CallbackEvent(body.id, body.state, result, confirmed=True)


def _parse_body(raw: bytes) -> TaskResult:
    """The task a callback body describes; ``ValueError`` saying what is wrong with it."""
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    return TaskResult.from_dict(data)
