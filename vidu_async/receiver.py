"""``CallbackReceiver``: Vidu's callbacks in, verified and confirmed task events out (aiohttp).

For each callback POST the handler, before it answers:

1. verifies the signature, the ``Date`` window and the nonce (``callbacks.verify_callback``)
   against the keys of its clients (401 with the reason when that fails);
2. parses the body (400 when it is not a task);
3. drops a duplicate delivery of the same ``(task_id, state)``, or any callback about a task it
   already saw finish (200: Vidu must not send it again);
4. queues the rest (503 when the queue is full, so Vidu delivers again later) and answers 200.

A nonce is used up only by a callback answered 200: Vidu delivers a refused one (400, 408, 503)
again with the same signed headers, and that redelivery is no replay.

Workers then turn each queued callback into a ``CallbackEvent``. The body is not signed, so a
callback that claims an end state (``success`` or ``failed``) is confirmed by reading the task
with the client of the account that signed it, and the event reports what that read says.
``processing`` is passed on as sent; so is everything with ``ReceiverOptions(confirm=False)``,
for a consumer that reads the tasks itself, in bulk. Vidu was answered 200 already, so a claimed
end is never dropped for a failed read: the read is tried again in the background with backoff
(``confirm_retry``), and if it still fails (or fails for good, e.g. a 401) the end is passed on
unconfirmed, as sent, for the consumer to check later. Only a read answering 404 (not a task of
that account) drops the claim. Everything is bounded: the nonces, the ``(task_id, state)`` pairs
and the finished tasks remembered (``remember`` each), both queues, the claims being retried.

Under abuse ``serve()`` stays up: it holds at most ``max_connections`` connections (more are
answered 503 and closed), closes one whose request does not arrive within ``read_timeout``
(slowloris), answers a body nested too deeply 400, and logs each kind of problem at most once per
``LOG_INTERVAL`` seconds with a count of the repeats held back. A worker hit by an unexpected
error logs it and goes on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import attrs
from aiohttp import web

from vidu_async._http import call_name
from vidu_async.callbacks import (
    DEFAULT_MAX_SKEW,
    CallbackVerificationError,
    NonceCache,
    check_nonce,
    verify_callback,
)
from vidu_async.client import ViduClient
from vidu_async.errors import APITimeoutError, ConfigurationError, NotFoundError, ViduError
from vidu_async.loglimit import LogLimiter
from vidu_async.retry import CallKind, RetryPolicy, Verdict, backoff_wait, decide, stop_reason
from vidu_async.tasks import TaskResult, TaskState

__all__ = [
    "CONFIRM_RETRY",
    "DEFAULT_CALLBACK_PATH",
    "MAX_CALLBACK_BODY",
    "CallbackEvent",
    "CallbackReceiver",
    "ReceiverOptions",
]

logger = logging.getLogger("vidu_async.receiver")

DEFAULT_CALLBACK_PATH = "/vidu/callback"
MAX_CALLBACK_BODY = 16 * 2**20
"""The largest callback body to accept: a ``payload`` may hold 1,048,576 characters, each up to
12 bytes JSON-escaped (two ``\\uXXXX`` for one outside the BMP), and a task more besides.
``serve()`` takes this much; an aiohttp app of your own that mounts ``handler`` must be made
with ``web.Application(client_max_size=MAX_CALLBACK_BODY)`` (aiohttp's default is 1 MiB)."""
_MAX_DEPTH = 32
"""Deepest nesting of a callback body accepted: a task is 4 levels deep (creations)."""
_JSON_KINDS = {type(None): "null", list: "an array", str: "a string", bool: "a boolean",
               int: "a number", float: "a number"}
"""How a refused body is described: what ``json.loads`` made of it, in JSON's words."""
CONFIRM_RETRY = RetryPolicy(max_attempts=10, initial_wait=1.0, max_wait=60.0, budget=600.0)
"""How a claimed end whose read failed is read again: up to 10 reads over at most 10 minutes,
each with the client's own retries (about 2 minutes of waits in all, on average), the last cut
short where the 10 minutes end."""
_REFUSAL = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@attrs.frozen
class ReceiverOptions:
    """How a receiver checks and buffers callbacks.

    ``path_prefix`` is the leading part of the public callback path that a proxy strips before
    the request reaches us (Vidu signed the public path). ``max_skew`` is the ``Date`` window,
    either way. ``max_pending`` bounds the callbacks waiting to be confirmed, and the events
    waiting for their consumer. ``remember`` bounds each of: nonces (kept ``2 * max_skew``),
    ``(task_id, state)`` pairs (kept ``duplicate_window`` seconds) and finished tasks.
    ``clock`` (POSIX seconds) checks ``Date``; ``monotonic`` ages what is remembered and
    spaces the log lines.

    ``serve()`` holds at most ``max_connections`` connections at once, and gives a request
    ``read_timeout`` seconds for its headers (from the connection's start or the previous
    answer) and as many again for its body; a callback takes milliseconds.

    ``confirm=False`` passes end states on unconfirmed, as sent, for a consumer that reads the
    tasks itself (a batch refreshing 100 tasks per list request): one read per task saved.
    ``confirm_retry`` says how a claimed end whose read failed is read again (its attempts,
    backoff, time budget and ``sleep``), at most ``max_pending`` such claims at once: past that,
    or once it gives up, the end is passed on unconfirmed.
    """

    path_prefix: str = attrs.field(default="")
    max_skew: float = attrs.field(default=DEFAULT_MAX_SKEW, validator=attrs.validators.gt(0))
    max_pending: int = attrs.field(default=1000, validator=attrs.validators.ge(1))
    confirm_concurrency: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    remember: int = attrs.field(default=10_000, validator=attrs.validators.ge(1))
    duplicate_window: float = attrs.field(default=3600.0, validator=attrs.validators.gt(0))
    confirm: bool = True
    confirm_retry: RetryPolicy = CONFIRM_RETRY
    max_connections: int = attrs.field(default=256, validator=attrs.validators.ge(1))
    read_timeout: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
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
    claiming an end state, unless the receiver's ``confirm`` is off or the task could not be
    read; the read wins when it disagrees), else the callback's own body: a claim to check
    (``result.is_terminal`` without ``is_terminal``), or a ``processing`` notice.
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
    on your own aiohttp app (made with ``client_max_size=MAX_CALLBACK_BODY``) and keep
    ``async with receiver.running():`` open while it serves.
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
        self._retrying: dict[asyncio.Task[None], _Claim] = {}
        self._log = LogLimiter(clock=opts.monotonic)

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

        The workers and the reads being retried are cancelled and awaited on the way out;
        callbacks still queued or being confirmed then are dropped and forgotten (Vidu was
        answered 200: a batch's safety-net poll finds them).
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
            dropped = [*self._retrying.values()]
            tasks = [*workers, *self._retrying]
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
            while not self._pending.empty():
                dropped.append(self._pending.get_nowait())
            for claim in dropped:
                self._claims.discard(claim.key)

    @contextlib.asynccontextmanager
    async def serve(
        self, host: str = "127.0.0.1", port: int = 0, *, path: str = DEFAULT_CALLBACK_PATH
    ) -> AsyncIterator[str]:
        """Run a small server of its own on ``host:port`` (0: any free port) for POSTs to
        ``path``; yields the local callback URL (behind a proxy, give Vidu the public one)."""
        app = web.Application(client_max_size=MAX_CALLBACK_BODY)
        app.router.add_post(path, self.handler)
        opts = self.options
        async with self.running():
            runner = web.AppRunner(
                app,
                access_log=None,
                handle_signals=False,
                keepalive_timeout=opts.read_timeout,  # idle, or half a request, after an answer
                lingering_time=opts.read_timeout,  # the unread rest of a refused request's body
            )
            await runner.setup()
            assert runner.server is not None  # set up above
            gate = _Gate(runner.server, opts.max_connections, opts.read_timeout, self._warn)
            server = await asyncio.get_running_loop().create_server(gate, host, port)
            try:
                bound_host, bound_port = server.sockets[0].getsockname()[:2]
                shown = f"[{bound_host}]" if ":" in bound_host else bound_host
                logger.info("receiving Vidu callbacks on %s:%d%s", shown, bound_port, path)
                yield f"http://{shown}:{bound_port}{path}"
            finally:
                server.close()
                await runner.cleanup()
                await server.wait_closed()

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
                record_nonce=False,  # recorded below, once accepted: a refusal comes back
                path_prefix=self.options.path_prefix,
            )
        except CallbackVerificationError as error:
            return self._unverified(request, error)
        try:
            async with asyncio.timeout(self.options.read_timeout):
                raw = await request.read()
        except TimeoutError:
            self._warn("slow body", "a callback's body took over %g s", self.options.read_timeout)
            return web.Response(status=408, text="the body took too long to arrive")
        try:
            claim = _Claim(_parse_body(raw), self._clients[key])
        except ValueError as error:  # bad JSON or UTF-8, or ResponseFormatError naming a field
            self._warn("bad body", "a verified callback has a bad body: %s", error)
            return web.Response(status=400, text=f"the body is not a task: {error}")
        try:
            # Taken only now (a twin may have been accepted while this body arrived).
            nonce = check_nonce(self._nonces, request.headers)
        except CallbackVerificationError as error:
            return self._unverified(request, error)
        if claim.body.id in self._finished:
            return web.Response(text="ignored: the task has already finished")
        if not self._claims.add(claim.key):
            return web.Response(text="ignored: a duplicate delivery")
        try:
            self._pending.put_nowait(claim)
        except asyncio.QueueFull:
            self._claims.discard(claim.key)
            self._nonces.discard(nonce)
            self._warn(
                "queue full",
                "too many callbacks waiting; asked Vidu to deliver task %s's again",
                claim.body.id,
            )
            return web.Response(status=503, text="too many callbacks waiting; deliver it later")
        return web.Response(text="accepted")

    def _unverified(self, request: web.Request, error: CallbackVerificationError) -> web.Response:
        self._warn("unverified", "refused a callback to %s: %s", request.raw_path, error)
        return web.Response(status=401, text=str(error))

    # --- the workers --------------------------------------------------------------------------

    def _warn(self, kind: str, message: str, *args: object, exc_info: bool = False) -> None:
        """Log a warning about a ``kind`` of problem, unless one was logged a moment ago."""
        held = self._log.allow(kind)
        if held is None:
            return
        if held:
            message += " (and %d more like it since the last report)"
            args = (*args, held)
        logger.warning(message, *args, exc_info=exc_info)

    async def _work(self) -> None:
        """One worker: each claim in turn; an error on one is logged and the next one comes."""
        while True:
            claim = await self._pending.get()
            await self._guarded(claim, self._hand_on(claim))

    async def _guarded(self, claim: _Claim, step: Awaitable[None]) -> None:
        """Await ``step``, the handling of ``claim``; an unexpected error is logged, not raised."""
        try:
            await step
        except Exception:  # a bug, ours or a dependency's: report it, keep receiving
            self._claims.discard(claim.key)  # a redelivery may get through
            self._warn(
                "unexpected",
                "handling the %s callback of task %s failed unexpectedly",
                claim.body.state,
                claim.body.id,
                exc_info=True,
            )

    async def _hand_on(self, claim: _Claim) -> None:
        body = claim.body
        if not (body.is_terminal and self.options.confirm):
            if body.id not in self._finished:  # else overtaken by the task's end
                await self._deliver(CallbackEvent(body.id, body.state, body, confirmed=False))
            return
        try:
            result = await claim.client.get_task(body.id)
        except ViduError as error:
            if not self._retry_later(claim, error):
                await self._deliver(self._unconfirmed(claim, error))
            return
        await self._deliver(self._read_back(claim, result))

    async def _deliver(self, event: CallbackEvent | None) -> None:
        """Hand ``event`` (if any) to ``events()`` or ``on_event``."""
        if event is None:
            return
        if self._on_event is None:
            await self._events.put(event)
            return
        try:
            await self._on_event(event)
        except Exception:  # the caller's bug: report it, keep receiving
            self._warn(
                "on_event",
                "on_event failed on the %s event of task %s",
                event.claimed,
                event.task_id,
                exc_info=True,
            )

    def _retry_later(self, claim: _Claim, error: ViduError) -> bool:
        """Start reading ``claim``'s task again in the background, if ``error`` may pass and
        fewer than ``max_pending`` claims are being retried; whether it was started."""
        if decide(error, CallKind.QUERY) is not Verdict.RETRY:
            return False
        if len(self._retrying) >= self.options.max_pending:
            return False
        self._warn(
            "unconfirmed",
            "could not confirm that task %s is %s (%s); reading it again in the background",
            claim.body.id,
            claim.body.state,
            error,
        )
        task = asyncio.create_task(self._guarded(claim, self._confirm_again(claim, error)))
        self._retrying[task] = claim
        task.add_done_callback(self._retrying.pop)
        return True

    async def _confirm_again(self, claim: _Claim, error: ViduError) -> None:
        """Read ``claim``'s task again as ``confirm_retry`` says, and hand on what comes of it:
        the event as read, or the claim unconfirmed once the policy gives up. A read (with the
        client's own retries and timeouts) is cut short where it would overrun the budget."""
        policy = self.options.confirm_retry
        started = policy.clock()
        attempt = 1
        while decide(error, CallKind.QUERY) is Verdict.RETRY:
            wait = backoff_wait(attempt, policy)
            if stop_reason(attempt, policy.clock() - started, wait, policy) is not None:
                break
            await policy.sleep(wait)
            attempt += 1
            try:
                async with asyncio.timeout(policy.budget - (policy.clock() - started)):
                    result = await claim.client.get_task(claim.body.id)
            except ViduError as failed:
                error = failed
                continue
            except TimeoutError:
                message = f"no answer within the {policy.budget:g}s budget"
                call = call_name("GET", f"/tasks/{claim.body.id}/creations")
                error = APITimeoutError(message, call=call)
                break
            await self._deliver(self._read_back(claim, result))
            return
        await self._deliver(self._unconfirmed(claim, error, reads=attempt))

    def _unconfirmed(
        self, claim: _Claim, error: ViduError, *, reads: int = 1
    ) -> CallbackEvent | None:
        """The claim's event, unconfirmed, once reading its task failed; None after a 404 (no
        such task for that account) or when the task's end is known already."""
        body = claim.body
        self._claims.discard(claim.key)  # a redelivery may confirm it
        dropped = isinstance(error, NotFoundError)
        self._warn(
            "not found" if dropped else "gave up",
            "could not confirm that task %s is %s (%d read%s, %s): %s",
            body.id,
            body.state,
            reads,
            "" if reads == 1 else "s",
            error,
            "dropped, not a task of that account" if dropped else "passed on unconfirmed",
        )
        if dropped or body.id in self._finished:
            return None
        return CallbackEvent(body.id, body.state, body, confirmed=False)

    def _read_back(self, claim: _Claim, result: TaskResult) -> CallbackEvent | None:
        """The event for ``claim`` given its task as read; None when its end is known already."""
        body = claim.body
        if result.state != body.state:
            self._claims.discard(claim.key)  # the true callback for that state is still to come
            self._warn(
                "contradicted",
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
    too_deep = False
    try:
        data = json.loads(raw)
    except RecursionError:
        too_deep = True  # reported below, outside the except (a short error, no deep traceback)
    if too_deep or _deeper_than(data, _MAX_DEPTH):
        raise ValueError(f"the JSON is nested deeper than {_MAX_DEPTH} levels")
    if not isinstance(data, dict):
        raise ValueError(f"the body must be a JSON object, got {_JSON_KINDS[type(data)]}")
    return TaskResult.from_dict(data)


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether JSON ``value`` nests arrays and objects more than ``limit`` levels (no recursion)."""
    level = [value]
    for _ in range(limit):
        level = [
            child
            for item in level
            if isinstance(item, dict | list)
            for child in (item.values() if isinstance(item, dict) else item)
        ]
        if not level:
            return False
    return any(isinstance(item, dict | list) for item in level)


class _Gate:
    """The protocol factory of ``serve()``: aiohttp's protocol for each connection, guarded by a
    header deadline, while fewer than ``limit`` are open; beyond, a 503 and a close."""

    def __init__(
        self,
        server: web.Server,
        limit: int,
        deadline: float,
        warn: Callable[..., None],
    ) -> None:
        self._server = server
        self._limit = limit
        self.deadline = deadline
        self.warn = warn
        self.open: weakref.WeakSet[_Guarded] = weakref.WeakSet()
        """Connections not yet lost (one whose transport never came is collected)."""

    def __call__(self) -> asyncio.Protocol:
        if len(self.open) >= self._limit:
            self.warn("connections", "refused a connection: %d are open already", self._limit)
            return _Refused()
        guarded = _Guarded(self._server(), self)
        self.open.add(guarded)
        return guarded


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, closed unless the first request's headers end
    (a blank line) within the gate's deadline; aiohttp's keep-alive timeout guards the next."""

    def __init__(self, inner: asyncio.Protocol, gate: _Gate) -> None:
        self._inner = inner
        self._gate = gate
        self._tail = b""
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._gate.deadline, self._expire)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._timer is not None:
            seen = self._tail + data
            if b"\r\n\r\n" in seen:
                self._timer.cancel()
                self._timer = None
            self._tail = seen[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._gate.open.discard(self)
        self._inner.connection_lost(exc)

    def _expire(self) -> None:
        self._timer = None
        self._gate.warn(
            "slow headers", "closed a connection that sent no request in %g s", self._gate.deadline
        )
        assert self._transport is not None  # the timer starts with the connection
        self._transport.close()


class _Refused(asyncio.Protocol):
    """A connection beyond the cap: answered 503 (Vidu delivers again later) and ended. What the
    client sends is read and dropped (closing on unread data would reset the answer away), for a
    second at most."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_REFUSAL)
        transport.write_eof()
        asyncio.get_running_loop().call_later(1.0, transport.abort)

    def data_received(self, data: bytes) -> None:
        pass  # dropped: the answer is already on its way

    def eof_received(self) -> bool:
        return False  # the transport closes itself
