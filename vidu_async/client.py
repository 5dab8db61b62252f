"""``ViduClient``: every task endpoint of one account, with retries that never pay twice.

A create carries a correlation key in its ``payload`` (see ``tasks``: the user's own payload
travels after it and comes back unchanged). When a create's answer is lost (read timeout, reset
after sending, 5xx, 409 ``Conflict``, an unreadable answer) the client does not resend blindly:
the account's ``Reconciler`` (``reconcile``) looks the key up in the task list, on the server's
clock (``server_clock``), sharing scans between every create waiting at the same time.

- Found: that task is returned as if the create had answered. It is built from the list item,
  which carries fewer fields than a create answer (``type``, ``style``, ``seed`` and the like
  keep their empty defaults; the list item's other fields are in ``raw``).
- Absent (proven only after ``RetryPolicy.visibility_lag``): the create is resent with the same
  key, within the same attempts and time budget.
- Unknown, or the lookup failed too: ``AmbiguousCreateError`` carrying the key; nothing is
  resent.

``create`` sends any request to its endpoint (``request.route``); ``create_text2video`` and the
other named helpers do the same for one request type. A create cancelled or left ambiguous is
remembered by key (the last 1,024 such keys, ``_keys.REMEMBERED``): calling ``create`` again with
the same ``correlation_key``, or ``find_task_by_correlation_key``, looks it up first, and a
task found so for another request is a ``ValueError``. ``upload_image`` uploads an image once for
an ``ssupload:`` URI that many creates can name.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import logging
import math
import os
import urllib.parse
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar, overload

import aiohttp
import attrs

from vidu_async._http import (
    API_PREFIX,
    Account,
    SessionPool,
    call_name,
    read_bounded,
    send,
    status_error,
)
from vidu_async._keys import KeyGuard, Recent
from vidu_async._loops import PerLoop
from vidu_async.download import (
    DownloadNames,
    Link,
    download_creation,
    file_stem,
    link_folder,
)
from vidu_async.errors import (
    AmbiguousCreateError,
    APIConnectionError,
    APIError,
    APIStatusError,
    ConfigurationError,
    DownloadError,
    FieldProblem,
    RateLimitError,
    ResponseFormatError,
    TaskTimeoutError,
    ValidationError,
    ViduError,
)
from vidu_async.media import MediaSource, is_upload_uri, is_url
from vidu_async.reconcile import WINDOW_SLACK, Found, Reconciler, ScanLimits, Unknown
from vidu_async.requests import (
    ImageToVideoRequest,
    ReferenceToVideoRequest,
    Request,
    StartEndToVideoRequest,
    SubjectsToVideoRequest,
    TextToVideoRequest,
    dumps_body,
)
from vidu_async.requests.dispatch import expect_request
from vidu_async.retry import CallKind, RetryPolicy, Verdict, decide, poll_wait, retried
from vidu_async.server_clock import ServerClock
from vidu_async.tasks import (
    MAX_PAGE_SIZE,
    Creation,
    Credits,
    Task,
    TaskPage,
    TaskResult,
    TaskState,
    new_correlation_key,
    wrap_payload,
)
from vidu_async.upload import UPLOAD_SCENE, read_upload_image, upload_uri

__all__ = ["LOOKUP_SLACK", "MAX_PAGE_SIZE", "TOOLS_PREFIX", "ViduClient"]

logger = logging.getLogger("vidu_async.client")

_Turn = TypeVar("_Turn")
"""What a pacer gives a request (``ViduClient.paced``), handed back once it is answered."""

TOOLS_PREFIX = "/tools/v2"
"""Where the upload API lives on the API host (beside ``/ent/v2``)."""
LOOKUP_SLACK = WINDOW_SLACK
"""How far before a caller's ``created_after`` a lookup window starts (``WINDOW_SLACK``)."""
LAST_POLL = 5.0
"""Seconds ``wait_for_task``'s poll made at its deadline may take to be answered."""
SCAN_RETRY_WAIT = 0.1
"""The first backoff's ceiling for a failed page of a lookup's scan (then doubling as usual):
every key waiting on the scan waits with it, and a page is a read, safe to ask again."""


def _segment(task_id: str) -> str:
    """``task_id`` as one URL path segment (so no id can change the path)."""
    if not task_id:
        raise ValueError("task_id must be a non-empty string")
    return urllib.parse.quote(task_id, safe="")


def _rfc3339(value: dt.datetime, field: str) -> str:
    if value.tzinfo is None:
        raise ValidationError(
            [FieldProblem(field, "must be timezone-aware (e.g. datetime.now(UTC))")]
        )
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _prepared_body(request: Request, payload: str, strict: bool) -> bytes:
    """Validate, build and serialize the body, with ``payload`` (the correlation envelope)."""
    request.validate(strict=strict)
    return request.to_body(payload=payload)


def _only_urls(request: Request) -> bool:
    """No local file, bytes or data URI to read, decode or encode: preparing is cheap
    (``ssupload:`` URIs are sent as they are)."""
    return all(is_url(m) or is_upload_uri(m) for m in request.media())


def _expect(request: object, *classes: type) -> None:
    """``TypeError`` when a named create helper is handed another endpoint's request."""
    if not isinstance(request, classes):
        names = " or ".join(cls.__name__ for cls in classes)
        raise TypeError(f"expected a {names}, got {type(request).__name__}: use create()")


def _upload_slot(answer: Any) -> tuple[str, str]:
    """The ``id`` and ``put_url`` of the upload API's first answer."""
    upload_id = answer.get("id") if isinstance(answer, dict) else None
    put_url = answer.get("put_url") if isinstance(answer, dict) else None
    if not (isinstance(upload_id, str) and upload_id):
        raise ResponseFormatError("the upload API answered without an id", field="id")
    if not (isinstance(put_url, str) and is_url(put_url)):
        raise ResponseFormatError("the upload API answered without a put_url", field="put_url")
    return upload_id, put_url


def _page_size(size: int) -> list[tuple[str, str]]:
    """The page size in both spellings the docs use (API.md section 7): one of them is read."""
    return [("pager.pagesz", str(size)), ("paper.pagesz", str(size))]


@attrs.frozen
class _Sent:
    """A create whose outcome is unknown: when it was first sent and last settled (local clock
    readings of ``ServerClock.local_now``), and what candidates look like."""

    first_sent: dt.datetime | None
    settled: dt.datetime
    model: str | None = None
    prompt: str | None = None
    call: str = "a create"
    """How messages name the call, e.g. ``POST /ent/v2/text2video``."""


@attrs.frozen
class _CutOff:
    """A create of this client cancelled or left ambiguous: when it was sent, and the
    fingerprint (``hash``) of its body, which names the request its key was sent for."""

    sent: _Sent
    fingerprint: int


def _task_from_result(result: TaskResult) -> Task:
    """A ``Task`` from a list item: what the item carries, empty defaults for the rest."""
    fields = {key: value for key, value in result.raw.items() if key != "id"}
    return Task.from_dict({**fields, "task_id": result.id})


class ViduClient:
    """An asyncio client for one Vidu account: ``async with ViduClient() as client: ...``.

    ``api_key``, ``base_url`` and ``auth_scheme`` fall back to ``VIDU_API_KEY``,
    ``VIDU_BASE_URL`` (then ``https://api.vidu.com``) and ``VIDU_AUTH_SCHEME`` (then ``Token``).
    ``timeout``, ``limit`` and ``limit_per_host`` configure the sessions (see
    ``aiohttp.ClientTimeout`` and ``aiohttp.TCPConnector``); ``retry`` how hard calls try;
    ``scan_limits`` bounds the task-list scans that reconcile lost creates.
    Clients for other accounts share this one's sessions through ``for_account``; the client
    that created the pool closes every session on exit.

    A client belongs to one event loop at a time: its sessions are closed as that loop shuts
    down (``asyncio.run`` ends), and a new loop used once the old one is closed (a module-level
    client and several ``asyncio.run`` calls, a loop per test) gets new ones. Used from two
    open loops (two threads), it raises ``RuntimeError``: make one client per loop.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        auth_scheme: str | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
        limit: int | None = None,
        limit_per_host: int | None = None,
        retry: RetryPolicy | None = None,
        pool: SessionPool | None = None,
        scan_limits: ScanLimits | None = None,
    ) -> None:
        self._account = Account.from_env(api_key, base_url=base_url, auth_scheme=auth_scheme)
        self._retry = retry or RetryPolicy()
        self._server_clock = ServerClock(self._retry.clock)
        self._scan_retry = attrs.evolve(
            self._retry, initial_wait=min(self._retry.initial_wait, SCAN_RETRY_WAIT)
        )
        self._reconciler = Reconciler(
            pages=self._scan_pages,
            get_task=self.get_task,
            clock=self._server_clock,
            policy=self._retry,
            limits=scan_limits,
        )
        self._forgotten: set[str] = set()
        """Keys of cut-off creates ``_unsettled`` no longer holds (only the key: a few dozen
        bytes each): looked up before a resend all the same, from the list's whole window."""
        self._unsettled: Recent[str, _CutOff] = Recent(dropped=self._forgotten.add)
        self._keys = KeyGuard()
        self._learning_clock = PerLoop(asyncio.Lock)
        self._pacer: Callable[[], Awaitable[Any]] | None = None
        self._refused: Callable[[float | None], None] | None = None
        self._answered: Callable[[Any], None] | None = None
        self._owns_pool = pool is None
        if pool is None:
            pool = SessionPool(
                timeout=timeout,
                limit=100 if limit is None else limit,
                limit_per_host=0 if limit_per_host is None else limit_per_host,
            )
        elif (timeout, limit, limit_per_host) != (None, None, None):
            raise ConfigurationError(
                "timeout, limit and limit_per_host belong to the pool: set them on the "
                "SessionPool passed as pool"
            )
        self._pool = pool

    def __repr__(self) -> str:
        return f"<ViduClient {self._account.base_url} auth_scheme={self._account.auth_scheme}>"

    @contextlib.contextmanager
    def paced(
        self, pacer: Callable[[], Awaitable[_Turn]],
        refused: Callable[[float | None], None] | None = None,
        answered: Callable[[_Turn], None] | None = None,
    ) -> Iterator[None]:
        """While it lasts, every API request of this client but a create (queries, lists,
        cancels, credits, and their retries) first awaits ``pacer()``: a batch that paces its
        creates against the account's rate limit paces the account's other requests with
        them, instead of leaving them to meet the limit's 429s. ``refused(retry_after)``
        hears of each of them answered 429 (not ``QuotaExceeded``): the pacing learns of the
        limit from them too (the client retries the request itself, after the server's wait).
        ``answered(turn)`` hears of each answered otherwise (a success or another error), with
        what its ``pacer()`` returned: the request has reached the server by then."""
        before = self._pacer, self._refused, self._answered
        self._pacer, self._refused, self._answered = pacer, refused, answered
        try:
            yield
        finally:
            self._pacer, self._refused, self._answered = before

    @property
    def account(self) -> Account:
        return self._account

    @property
    def retry(self) -> RetryPolicy:
        return self._retry

    @property
    def server_clock(self) -> ServerClock:
        """The account's clock, learned from the ``Date`` header of every answer."""
        return self._server_clock

    @property
    def reconciler(self) -> Reconciler:
        """The account's reconciler: correlation-key lookups and shared task-list scans."""
        return self._reconciler

    @property
    def create_horizon(self) -> float:
        """The longest (seconds) one create call can keep sending: the retry budget plus the
        pool's total request timeout (infinite without one)."""
        total = self._pool.timeout.total
        return self._retry.budget + (math.inf if total is None else total)

    def for_account(self, account: Account) -> ViduClient:
        """A client for another account, sharing this client's sessions and retry policy.

        Close this client (not the new one) to close the sessions.
        """
        return ViduClient(
            account.api_key,
            base_url=account.base_url,
            auth_scheme=account.auth_scheme,
            retry=self._retry,
            pool=self._pool,
            scan_limits=self._reconciler.limits,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the sessions if this client created them (clients from ``for_account`` do not)."""
        if self._owns_pool:
            await self._pool.close()

    async def _call(
        self,
        method: str,
        path: str,
        kind: CallKind,
        *,
        params: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
        prefix: str = API_PREFIX,
        retry: RetryPolicy | None = None,
    ) -> Any:
        async def attempt() -> Any:
            turn = None if self._pacer is None else await self._pacer()
            answered = self._answered
            try:
                result = await send(self._pool, self._account, method, path, params=params,
                                    body=body, on_date=self._server_clock.observer(),
                                    prefix=prefix)
            except RateLimitError as error:
                if self._refused is not None and error.reason != "QuotaExceeded":
                    self._refused(error.retry_after)
                raise
            except APIStatusError:
                if answered is not None:
                    answered(turn)
                raise
            if answered is not None:
                answered(turn)
            return result

        return await retried(attempt, retry or self._retry, kind,
                             call_name(method, path, prefix), no_answer=self._pool.no_answer)

    # --- endpoints ---------------------------------------------------------------------------

    async def prepare_create_body(
        self, request: Request, *, correlation_key: str, strict: bool = False
    ) -> bytes:
        """The exact body ``create`` sends: validated (``ValidationError``; ``strict`` refuses a
        model the tables lack), local media inlined, the correlation envelope in ``payload``.

        Requests with inline media are prepared in a thread, a few at a time, so the event loop
        never waits on file reads, base64 or JSON.
        """
        expect_request(request, "request")
        sent_payload = wrap_payload(correlation_key, request.payload or "")
        if _only_urls(request):
            # Microseconds of work: a thread hop would cost more than it saves.
            return _prepared_body(request, sent_payload, strict)
        # Reading, base64 and JSON of inline media hold the GIL: off the event loop, and only
        # a few at once, or the threads together still starve the loop.
        async with self._pool.preparing.get():
            return await asyncio.to_thread(_prepared_body, request, sent_payload, strict)

    async def create(
        self,
        request: Request,
        *,
        correlation_key: str | None = None,
        retry_rate_limits: bool = True,
        strict: bool = False,
    ) -> Task:
        """Create a task on the request's endpoint (``POST /ent/v2`` + ``request.route``).

        Validates first (``ValidationError``, nothing sent; a model the capability tables lack
        is a ``ViduWarning``, or an error with ``strict=True``); local media are read and
        encoded off the event loop, ``ssupload:`` URIs sent as they are. ``correlation_key``
        (32 lowercase hex digits; fresh by default) marks the task so a lost answer can be
        reconciled: see the module docstring; calls sharing a key wait for each other, and a
        key that made a task returns it again (``ValueError`` for another request under it).
        ``retry_rate_limits=False`` raises a 429 (``RateLimitError``) at once instead of
        waiting, for callers that pace themselves.
        """
        key = correlation_key or new_correlation_key()
        body = await self.prepare_create_body(request, correlation_key=key, strict=strict)
        fingerprint = hash(body)
        await self._keys.take(key)  # another call with this key settles first: see ``_keys``
        try:
            if (task := self._keys.made(key, fingerprint)) is None:
                task = await self._create_once(request, key, body, fingerprint,
                                               retry_rate_limits)
                self._keys.remember(key, fingerprint, task)
            return task
        finally:
            self._keys.give_back(key)

    async def _create_once(
        self, request: Request, key: str, body: bytes, fingerprint: int,
        retry_rate_limits: bool,
    ) -> Task:
        """``create``'s call, its key held: look first if it was cut off before (``ValueError``
        if that made a task for another request), send, retry, reconcile a lost answer."""
        path = request.route
        earlier = self._unsettled.get(key)
        if earlier is None and key in self._forgotten:  # cut off long ago: when and what, unknown
            earlier = _CutOff(_Sent(None, self._server_clock.local_now(), request.model,
                                    request.prompt, call_name("POST", path)), fingerprint)
        if earlier is not None:  # cancelled or ambiguous before: look before sending again
            found = await self._lookup(key, earlier.sent, cause=None)
            self._forgotten.discard(key)
            if found is not None:
                self._unsettled.pop(key, None)
                task = _task_from_result(found)
                self._keys.remember(key, earlier.fingerprint, task)
                self._keys.made(key, fingerprint)  # ValueError: made for another request
                return task
        clock = self._server_clock
        first_sent = clock.local_now()

        def sent() -> _Sent:
            return _Sent(
                first_sent, clock.local_now(), request.model, request.prompt,
                call_name("POST", path),
            )

        async def attempt() -> Task:
            nonlocal first_sent
            named: object = None
            try:
                answer = await send(
                    self._pool, self._account, "POST", path, body=body, on_date=clock.observer()
                )
                named = answer.get("task_id") if isinstance(answer, dict) else None
                return Task.from_dict(answer)
            except APIError as error:
                if decide(error, CallKind.CREATE) is not Verdict.LOOKUP:
                    raise
                logger.info("create answer lost (%s); looking up correlation key %s", error, key)
                found = await self._lookup(key, sent(), cause=error)
                if found is None and named:  # an answer naming its task: never sent again
                    raise AmbiguousCreateError(
                        f"{sent().call} answered with task {named!r} in a shape the client "
                        f"cannot read ({error}), and the task list does not show correlation "
                        f"key {key!r}: the task exists and is billed; it is not sent again",
                        correlation_key=key, cause=error,
                    ) from error
                if found is None:  # proven absent: the retrier may resend it, and only
                    first_sent = clock.local_now()  # the attempts from now on can make a task
                    raise
                return _task_from_result(found)

        try:
            task = await retried(attempt, self._retry, CallKind.CREATE, call_name("POST", path),
                                 retry_rate_limits=retry_rate_limits,
                                 no_answer=self._pool.no_answer)
        except AmbiguousCreateError:
            self._unsettled[key] = _CutOff(sent(), fingerprint)
            raise
        except ViduError:
            self._unsettled.pop(key, None)  # refused, or proven absent
            raise
        except BaseException:  # cancelled: the request may still be on its way
            self._unsettled[key] = _CutOff(sent(), fingerprint)
            raise
        self._unsettled.pop(key, None)
        return task

    async def create_text2video(
        self,
        request: TextToVideoRequest,
        *,
        correlation_key: str | None = None,
        retry_rate_limits: bool = True,
        strict: bool = False,
    ) -> Task:
        """``create`` for a text-to-video request (``POST /ent/v2/text2video``)."""
        _expect(request, TextToVideoRequest)
        return await self.create(
            request, correlation_key=correlation_key, retry_rate_limits=retry_rate_limits,
            strict=strict,
        )

    async def create_img2video(
        self,
        request: ImageToVideoRequest,
        *,
        correlation_key: str | None = None,
        retry_rate_limits: bool = True,
        strict: bool = False,
    ) -> Task:
        """``create`` for an image-to-video request (``POST /ent/v2/img2video``)."""
        _expect(request, ImageToVideoRequest)
        return await self.create(
            request, correlation_key=correlation_key, retry_rate_limits=retry_rate_limits,
            strict=strict,
        )

    async def create_start_end2video(
        self,
        request: StartEndToVideoRequest,
        *,
        correlation_key: str | None = None,
        retry_rate_limits: bool = True,
        strict: bool = False,
    ) -> Task:
        """``create`` for a start-and-end-frames request (``POST /ent/v2/start-end2video``)."""
        _expect(request, StartEndToVideoRequest)
        return await self.create(
            request, correlation_key=correlation_key, retry_rate_limits=retry_rate_limits,
            strict=strict,
        )

    async def create_reference2video(
        self,
        request: ReferenceToVideoRequest | SubjectsToVideoRequest,
        *,
        correlation_key: str | None = None,
        retry_rate_limits: bool = True,
        strict: bool = False,
    ) -> Task:
        """``create`` for a reference-to-video request, in either form: reference images and
        videos, or ``subjects`` (``POST /ent/v2/reference2video``)."""
        _expect(request, ReferenceToVideoRequest, SubjectsToVideoRequest)
        return await self.create(
            request, correlation_key=correlation_key, retry_rate_limits=retry_rate_limits,
            strict=strict,
        )

    async def upload_image(self, image: MediaSource) -> str:
        """Upload one image (a local path or its bytes) and return its ``ssupload:`` URI, usable
        in ``images`` of any create for about 7 days (API.md section 8).

        The image is checked first (``ValidationError``: png, jpeg or webp, under 10 MB, ratio
        within 1:4..4:1). The bytes go to the pre-signed storage URL on the keyless session, so
        the API key never reaches the storage host.
        """
        data, content_type = await asyncio.to_thread(read_upload_image, image)
        start = await self._call(
            "POST", "/files/uploads", CallKind.QUERY, body=dumps_body({"scene": UPLOAD_SCENE}),
            prefix=TOOLS_PREFIX,
        )
        upload_id, put_url = _upload_slot(start)
        etag = await self._put_to_storage(put_url, data, content_type)
        finish = await self._call(
            "PUT", f"/files/uploads/{_segment(upload_id)}/finish", CallKind.QUERY,
            body=dumps_body({"etag": etag}), prefix=TOOLS_PREFIX,
        )
        return upload_uri(finish, upload_id)

    async def _put_to_storage(self, url: str, data: bytes, content_type: str) -> str:
        """PUT ``data`` to a pre-signed storage URL (no ``Authorization``); its ``ETag``."""
        call = "PUT <upload URL>"

        async def attempt() -> str:
            try:
                async with self._pool.session(None).put(  # streamed, 64 KB a step: no stall
                    url, data=io.BytesIO(data), headers={"Content-Type": content_type},
                    allow_redirects=False,
                ) as response:
                    content = await read_bounded(response, call)
                    etag = response.headers.get("ETag", "")
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise APIConnectionError(f"storage upload failed: {exc}", call=call) from None
            if not 200 <= response.status < 300:
                raise status_error(
                    response.status, response.reason or "", response.headers, content, call,
                    dt.datetime.now(dt.UTC),
                )
            if not etag:
                raise ResponseFormatError(f"{call}: the answer has no ETag header", field="ETag")
            return etag

        return await retried(attempt, self._retry, CallKind.QUERY, call)

    async def _lookup(
        self, key: str, sent: _Sent, *, cause: APIError | None, own: bool = True
    ) -> TaskResult | None:
        """The task carrying ``key``, None if proven absent; ``AmbiguousCreateError`` when the
        list cannot tell or the lookup fails. ``own``: ``sent`` holds this client's
        ``local_now()`` readings (not a caller's)."""
        clock = self._server_clock
        what = f"the answer was lost ({cause})" if cause else "its outcome is unknown"
        try:
            async with self._learning_clock.get():
                if not clock.learned:
                    await self.get_credits()  # any answer teaches the server's clock
            verdict = await self._reconciler.lookup(
                key,
                model=sent.model,
                prompt=sent.prompt,
                sent_at=None if sent.first_sent is None else clock.to_server(sent.first_sent),
                settled_at=clock.to_server(sent.settled),
                own_readings=own,
            )
        except ViduError as lookup_error:
            raise AmbiguousCreateError(
                f"{sent.call}: {what} and the lookup failed too "
                f"({lookup_error}); the task may exist and be billed. Reconcile with "
                f"find_task_by_correlation_key({key!r}) before sending it again",
                correlation_key=key,
                cause=cause,
            ) from lookup_error
        if isinstance(verdict, Unknown):
            raise AmbiguousCreateError(
                f"{sent.call}: {what} and {verdict.reason}; the task may "
                f"exist and be billed: do not send correlation key {key!r} again blindly",
                correlation_key=key,
                cause=cause,
            )
        if isinstance(verdict, Found):
            if verdict.others:
                logger.warning(
                    "correlation key %s is carried by %d tasks: %s",
                    key,
                    1 + len(verdict.others),
                    ", ".join(t.id for t in (verdict.task, *verdict.others)),
                )
            logger.info("found task %s by correlation key %s", verdict.task.id, key)
            return verdict.task
        logger.info("no task has correlation key %s: proven absent", key)
        return None

    async def get_task(self, task_id: str) -> TaskResult:
        """A task's state and results (``GET /ent/v2/tasks/{id}/creations``)."""
        data = await self._call("GET", f"/tasks/{_segment(task_id)}/creations", CallKind.QUERY)
        return TaskResult.from_dict(data)

    async def cancel_task(self, task_id: str) -> None:
        """Cancel a task that has not started (``POST /ent/v2/tasks/{id}/cancel``)."""
        body = dumps_body({"id": task_id})
        await self._call("POST", f"/tasks/{_segment(task_id)}/cancel", CallKind.CANCEL, body=body)

    async def get_credits(self) -> Credits:
        """The account's credits and concurrency (``GET /ent/v2/credits``)."""
        return Credits.from_dict(await self._call("GET", "/credits", CallKind.QUERY))

    def list_tasks(
        self,
        *,
        created_after: dt.datetime | None = None,
        created_before: dt.datetime | None = None,
        states: Iterable[TaskState | str] = (),
        task_ids: Iterable[str] = (),
        page_size: int = MAX_PAGE_SIZE,
    ) -> AsyncGenerator[TaskResult, None]:
        """Every task matching the filters, fetching page after page (``GET /ent/v2/tasks``).

        Without ``created_after`` the server lists only the last 7 days. Datetimes must be
        timezone-aware; at most 100 ``task_ids`` per call; ``page_size`` is 1..100. Arguments
        are checked here, before iteration starts.
        """
        ids = list(task_ids)
        problems = []
        if len(ids) > MAX_PAGE_SIZE:
            problems.append(
                FieldProblem("task_ids", f"at most {MAX_PAGE_SIZE} per call, got {len(ids)}")
            )
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            problems.append(
                FieldProblem("page_size", f"must be 1..{MAX_PAGE_SIZE}, got {page_size}")
            )
        if problems:
            raise ValidationError(problems)
        params: list[tuple[str, str]] = []
        if created_after is not None:
            params.append(("created_at.from", _rfc3339(created_after, "created_after")))
        if created_before is not None:
            params.append(("created_at.to", _rfc3339(created_before, "created_before")))
        params += [("states", str(state)) for state in states]
        params += [("task_ids", task_id) for task_id in ids]
        return self._items([*params, *_page_size(page_size)])

    async def _items(self, params: list[tuple[str, str]]) -> AsyncGenerator[TaskResult, None]:
        async with contextlib.aclosing(self._pages(params)) as pages:
            async for page in pages:
                for task in page.tasks:
                    yield task

    def _scan_pages(
        self, since: dt.datetime | None, until: dt.datetime | None
    ) -> AsyncGenerator[TaskPage, None]:
        """The reconciler's view of the list: every task from ``since`` to ``until`` (None: the
        server's now, no ``created_at.to`` sent), the largest pages, a failed page retried soon
        (``SCAN_RETRY_WAIT``)."""
        params = [] if since is None else [("created_at.from", _rfc3339(since, "since"))]
        if until is not None:
            params.append(("created_at.to", _rfc3339(until, "until")))
        return self._pages([*params, *_page_size(MAX_PAGE_SIZE)], self._scan_retry)

    async def _pages(
        self, params: list[tuple[str, str]], retry: RetryPolicy | None = None
    ) -> AsyncGenerator[TaskPage, None]:
        """Page after page, following ``next_page_token`` (whatever page size comes back)."""
        token = ""
        seen: set[str] = set()
        while True:
            query = [*params, ("pager.page_token", token)] if token else params
            page = TaskPage.from_dict(
                await self._call("GET", "/tasks", CallKind.QUERY, params=query, retry=retry)
            )
            yield page
            token = page.next_page_token
            if not token or not page.tasks:
                return
            if token in seen:
                raise ResponseFormatError(
                    f"the server sent page token {token!r} twice", field="next_page_token"
                )
            seen.add(token)

    async def find_task_by_correlation_key(
        self,
        key: str,
        *,
        created_after: dt.datetime | None = None,
        created_before: dt.datetime | None = None,
        settled_at: dt.datetime | None = None,
    ) -> TaskResult | None:
        """The task whose payload carries ``key``; None when proven absent (sending it again with
        the same key is then safe); ``AmbiguousCreateError`` when the list cannot tell.

        A create of this client that was cancelled or ambiguous is looked up with what the
        client remembers of it. Otherwise, on this machine's clock, ``created_after`` is when the
        create was first sent (None: the list's 7-day window) and ``settled_at`` the latest it
        could still have been sending (default: now; see ``create_horizon``); absence is proven
        only ``RetryPolicy.visibility_lag`` after that. ``created_before`` is ignored (the
        window ends at the server's own now); it remains for existing callers.
        """
        del created_before
        clock = self._server_clock
        local_settled = clock.local_now() if settled_at is None else settled_at
        since = None if created_after is None else created_after - LOOKUP_SLACK
        earlier = self._unsettled.get(key)
        if earlier is not None:
            return await self._lookup(key, earlier.sent, cause=None)
        # A caller's times are readings of its own clocks: compared as the server's times.
        own = created_after is None and settled_at is None
        return await self._lookup(key, _Sent(since, local_settled), cause=None, own=own)

    async def wait_for_task(
        self,
        task_id: str,
        *,
        timeout: float = 900.0,  # noqa: ASYNC109 - the task's deadline, not one call's
        poll_interval: float = 2.0,
        max_interval: float = 30.0,
        on_poll: Callable[[TaskResult], None] | None = None,
    ) -> TaskResult:
        """Poll a task until it succeeds or fails, and return it (a failed task is returned, not
        raised: read ``err_code``).

        Pauses grow from ``poll_interval`` to ``max_interval`` seconds, jittered. After
        ``timeout`` seconds raises ``TaskTimeoutError`` whose ``last`` is the last state seen
        (None if no poll was answered): a poll still waiting for its answer (or retrying) at
        the deadline is cut off there; the one made at the deadline has ``LAST_POLL`` seconds
        (a task that ended just then is returned). ``on_poll`` sees every answer as it comes.
        """
        deadline = self._retry.clock() + timeout
        polls = 0
        result: TaskResult | None = None

        def timed_out(why: str = "") -> TaskTimeoutError:
            state = (result.state if result is not None else None) or "unknown"
            return TaskTimeoutError(f"task {task_id} is still {state} after {timeout:g}s{why}",
                                    task_id=task_id, last=result)

        while True:
            polls += 1
            remaining = deadline - self._retry.clock()
            poll = asyncio.timeout(remaining if remaining > 0 else LAST_POLL)
            try:
                async with poll:
                    result = await self.get_task(task_id)
            except TimeoutError:
                if not poll.expired():
                    raise  # not the deadline's
                raise timed_out(" (a poll got no answer before the deadline)") from None
            if on_poll is not None:
                on_poll(result)
            if result.is_terminal:
                return result
            remaining = deadline - self._retry.clock()
            if remaining <= 0:
                raise timed_out()
            pause = poll_wait(polls, poll_interval, max_interval, self._retry)
            await self._retry.sleep(min(pause, remaining))

    @overload
    async def download(
        self,
        item: TaskResult,
        dest: str | os.PathLike[str],
        *,
        stem: str | None = None,
        names: DownloadNames | None = None,
        line: int | None = None,
    ) -> tuple[Path, ...]: ...

    @overload
    async def download(
        self,
        item: Creation,
        dest: str | os.PathLike[str],
        *,
        stem: str | None = None,
        task_id: str | None = None,
    ) -> Path: ...

    async def download(
        self,
        item: TaskResult | Creation,
        dest: str | os.PathLike[str],
        *,
        stem: str | None = None,
        task_id: str | None = None,
        names: DownloadNames | None = None,
        line: int | None = None,
    ) -> tuple[Path, ...] | Path:
        """Download a finished task's videos (one path per creation, then its covers and
        watermarked videos if ``names`` asks), or one creation's video, into the folder ``dest``
        (created if missing).

        A file is named after ``stem`` (default: the task id), followed by ``_<creation id>``
        when the task has several creations, all made safe (see ``download.file_stem``);
        ``names`` gives a template instead, where ``stem`` is the ``{custom_id}`` and ``line``
        the ``{line}``. An expired link is refreshed once by querying the task, which needs the
        task id (pass ``task_id`` with a bare ``Creation``).
        """
        folder = Path(dest)
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        if isinstance(item, Creation):
            name = file_stem(stem or task_id, item, 0, several=False)
            return await self._download(item, folder, name, task_id, 0, "url")
        if not item.succeeded or not item.creations:
            raise DownloadError(
                f"task {item.id} is {item.state or 'unknown'}: it has nothing to download",
                url="",
            )
        chosen = names or DownloadNames()
        stems = chosen.stems(item.creations, custom_id=stem, task_id=item.id, line=line)
        paths = []
        for link in chosen.links:  # the videos first; a creation may lack a cover or watermark
            into = link_folder(folder, link)
            wanted = [(index, creation, name) for index, (creation, name)
                      in enumerate(zip(item.creations, stems, strict=True))
                      if link == "url" or getattr(creation, link)]
            if wanted:  # no empty covers/ or watermarked/ folder for a task without them
                await asyncio.to_thread(into.mkdir, exist_ok=True)
            for index, creation, name in wanted:
                paths.append(await self._download(creation, into, name, item.id, index, link))
        return tuple(paths)

    async def _download(
        self, creation: Creation, folder: Path, name: str, task_id: str | None, index: int,
        link: Link,
    ) -> Path:
        async def fresh_link() -> str:
            assert task_id is not None
            result = await self.get_task(task_id)
            same = [c for c in result.creations if c.id == creation.id] if creation.id else []
            if same:
                return str(getattr(same[0], link))
            if not creation.id and index < len(result.creations):
                return str(getattr(result.creations[index], link))
            raise DownloadError(
                f"task {task_id} no longer lists creation {creation.id or index}", url=""
            )

        timeout = self._pool.timeout
        return await download_creation(
            self._pool.session(None),
            attrs.evolve(creation, url=getattr(creation, link)),
            folder,
            name,
            client_timeout=aiohttp.ClientTimeout(
                total=timeout.total, sock_connect=timeout.sock_connect, sock_read=timeout.sock_read
            ),  # total: the grace of the download's deadline, which grows with the file
            refresh=fresh_link if task_id else None,
            retry=self._retry,
        )
