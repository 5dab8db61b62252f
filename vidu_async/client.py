"""``ViduClient``: every task endpoint of one account, with retries that never pay twice.

A create carries a correlation key in its ``payload`` (see ``tasks``: the user's own payload
travels after it and comes back unchanged). When a create's answer is lost (read timeout, reset
after sending, 5xx, an unreadable answer) the client does not resend blindly: it lists the
account's tasks created around the attempt and matches the key.

- Found: that task is returned as if the create had answered. It is built from the list item,
  which carries fewer fields than a create answer (``type``, ``style``, ``seed`` and the like
  keep their empty defaults; the list item's other fields are in ``raw``).
- Absent: the list can lag a just-created task, so absence counts as proven only after
  ``RetryPolicy.absence_checks`` lookups (``absence_check_interval`` apart) all miss; then the
  create is resent with the same key, within the same attempts and time budget. (Absence is as
  certain as the list: a server that commits the lost request only after those checks would
  still make a second task; the checks' spacing is the guard.)
- The lookup failed too: ``AmbiguousCreateError`` carrying the key; nothing is resent.

The lookup window runs from ``LOOKUP_SLACK`` before the first attempt to ``LOOKUP_SLACK`` after
now, which absorbs clock skew between this machine and the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import urllib.parse
from collections.abc import AsyncGenerator, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, overload

import aiohttp

from vidu_async._http import Account, SessionPool, call_name, send
from vidu_async.capabilities import PAYLOAD_MAX_CHARS
from vidu_async.download import download_creation, file_stem
from vidu_async.errors import (
    AmbiguousCreateError,
    APIError,
    ConfigurationError,
    DownloadError,
    FieldProblem,
    ResponseFormatError,
    TaskTimeoutError,
    ValidationError,
    ViduError,
)
from vidu_async.media import is_url
from vidu_async.requests import ReferenceToVideoRequest, dumps_body
from vidu_async.retry import CallKind, RetryPolicy, Verdict, decide, poll_wait, retrying
from vidu_async.tasks import (
    CORRELATION_OVERHEAD,
    Creation,
    Credits,
    Task,
    TaskPage,
    TaskResult,
    TaskState,
    new_correlation_key,
    wrap_payload,
)

__all__ = ["LOOKUP_SLACK", "MAX_PAGE_SIZE", "ViduClient"]

logger = logging.getLogger("vidu_async.client")

LOOKUP_SLACK = dt.timedelta(minutes=5)
"""How far the correlation lookup window reaches beyond the create's own time, both ways."""
MAX_PAGE_SIZE = 100
"""The API's largest list page, and the most ``task_ids`` one list call may filter on."""


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


def _prepared_body(request: ReferenceToVideoRequest, payload: str) -> bytes:
    """Validate, build and serialize the body, with ``payload`` (the correlation envelope)."""
    request.validate()
    fields = request.to_payload()
    fields["payload"] = payload
    return dumps_body(fields)


def _only_urls(request: ReferenceToVideoRequest) -> bool:
    """No local file, bytes or data URI to read, decode or encode: preparing is cheap."""
    media = (*request.images, *request.videos)
    return all(is_url(m) for m in media)


def _task_from_result(result: TaskResult) -> Task:
    """A ``Task`` from a list item: what the item carries, empty defaults for the rest."""
    fields = {key: value for key, value in result.raw.items() if key != "id"}
    return Task.from_dict({**fields, "task_id": result.id})


class ViduClient:
    """An asyncio client for one Vidu account: ``async with ViduClient() as client: ...``.

    ``api_key``, ``base_url`` and ``auth_scheme`` fall back to ``VIDU_API_KEY``,
    ``VIDU_BASE_URL`` (then ``https://api.vidu.com``) and ``VIDU_AUTH_SCHEME`` (then ``Token``).
    ``timeout``, ``limit`` and ``limit_per_host`` configure the sessions (see
    ``aiohttp.ClientTimeout`` and ``aiohttp.TCPConnector``); ``retry`` how hard calls try.
    Clients for other accounts share this one's sessions through ``for_account``; the client
    that created the pool closes every session on exit.
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
    ) -> None:
        self._account = Account.from_env(api_key, base_url=base_url, auth_scheme=auth_scheme)
        self._retry = retry or RetryPolicy()
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

    @property
    def account(self) -> Account:
        return self._account

    @property
    def retry(self) -> RetryPolicy:
        return self._retry

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
    ) -> Any:
        retrier = retrying(self._retry, kind, call_name(method, path))
        return await retrier(
            send, self._pool, self._account, method, path, params=params, body=body
        )

    # --- endpoints ---------------------------------------------------------------------------

    async def prepare_create_body(
        self, request: ReferenceToVideoRequest, *, correlation_key: str
    ) -> bytes:
        """The exact body ``create_reference2video`` sends: validated (``ValidationError``),
        local media inlined, the correlation envelope in ``payload``.

        Requests with inline media are prepared in a thread, a few at a time, so the event loop
        never waits on file reads, base64 or JSON.
        """
        sent_payload = wrap_payload(correlation_key, request.payload or "")
        if len(sent_payload) > PAYLOAD_MAX_CHARS:
            problem = FieldProblem(
                "payload",
                f"at most {PAYLOAD_MAX_CHARS - CORRELATION_OVERHEAD} characters through this "
                f"client (the API's {PAYLOAD_MAX_CHARS} less {CORRELATION_OVERHEAD} for the "
                f"correlation key), got {len(request.payload or '')}",
            )
            raise ValidationError([problem], model=request.model)
        if _only_urls(request):
            # Microseconds of work: a thread hop would cost more than it saves.
            return _prepared_body(request, sent_payload)
        # Reading, base64 and JSON of inline media hold the GIL: off the event loop, and only
        # a few at once, or the threads together still starve the loop.
        async with self._pool.preparing:
            return await asyncio.to_thread(_prepared_body, request, sent_payload)

    async def create_reference2video(
        self,
        request: ReferenceToVideoRequest,
        *,
        correlation_key: str | None = None,
        retry_rate_limits: bool = True,
    ) -> Task:
        """Create a reference-to-video task (``POST /ent/v2/reference2video``).

        Validates first (``ValidationError``, nothing sent); local media are read and encoded
        off the event loop. ``correlation_key`` (32 lowercase hex digits; fresh by default) marks
        the task so a lost answer can be reconciled: see the module docstring.
        ``retry_rate_limits=False`` raises a 429 (``RateLimitError``) at once instead of waiting,
        for callers that pace their own requests.
        """
        key = correlation_key or new_correlation_key()
        body = await self.prepare_create_body(request, correlation_key=key)
        path = "/reference2video"
        first_sent = dt.datetime.now(dt.UTC)

        async def attempt() -> Task:
            try:
                return Task.from_dict(
                    await send(self._pool, self._account, "POST", path, body=body)
                )
            except APIError as error:
                if decide(error, CallKind.CREATE) is not Verdict.LOOKUP:
                    raise
                found = await self._find_lost_create(key, first_sent, error)
                if found is None:
                    raise  # proven absent: the retrier may resend it
                return _task_from_result(found)

        retrier = retrying(
            self._retry,
            CallKind.CREATE,
            call_name("POST", path),
            retry_rate_limits=retry_rate_limits,
        )
        return await retrier(attempt)

    async def _find_lost_create(
        self, key: str, first_sent: dt.datetime, error: APIError
    ) -> TaskResult | None:
        """The task a create with an unknown outcome made, None if proven absent, or raise
        ``AmbiguousCreateError`` when the lookup fails."""
        logger.info("create answer lost (%s); looking up correlation key %s", error, key)
        for check in range(self._retry.absence_checks):
            if check:
                await self._retry.sleep(self._retry.absence_check_interval)
            try:
                found = await self.find_task_by_correlation_key(
                    key,
                    created_after=first_sent - LOOKUP_SLACK,
                    created_before=dt.datetime.now(dt.UTC) + LOOKUP_SLACK,
                )
            except ViduError as lookup_error:
                raise AmbiguousCreateError(
                    f"POST /ent/v2/reference2video: the answer was lost ({error}) and the "
                    f"lookup failed too ({lookup_error}); the task may exist and be billed. "
                    f"Reconcile with find_task_by_correlation_key({key!r}) before sending "
                    "it again",
                    correlation_key=key,
                    cause=error,
                ) from lookup_error
            if found is not None:
                logger.info("found task %s by correlation key %s", found.id, key)
                return found
        logger.info(
            "no task has correlation key %s after %d lookups", key, self._retry.absence_checks
        )
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
        params.append(("pager.pagesz", str(page_size)))
        return self._pages(params)

    async def _pages(self, params: list[tuple[str, str]]) -> AsyncGenerator[TaskResult, None]:
        token = ""
        seen: set[str] = set()
        while True:
            query = [*params, ("pager.page_token", token)] if token else params
            page = TaskPage.from_dict(
                await self._call("GET", "/tasks", CallKind.QUERY, params=query)
            )
            for task in page.tasks:
                yield task
            token = page.next_page_token
            if not token or not page.tasks:
                return
            if token in seen:
                raise ResponseFormatError(
                    f"the server sent page token {token!r} twice", field="next_page_token"
                )
            seen.add(token)

    async def find_task_by_correlation_key(
        self, key: str, *, created_after: dt.datetime, created_before: dt.datetime
    ) -> TaskResult | None:
        """The task created between the two times whose payload carries ``key``, or None."""
        async with contextlib.aclosing(
            self.list_tasks(created_after=created_after, created_before=created_before)
        ) as tasks:
            async for task in tasks:
                if task.correlation_key == key:
                    return task
        return None

    async def wait_for_task(
        self,
        task_id: str,
        *,
        timeout: float = 900.0,  # noqa: ASYNC109 - the task's deadline, not one call's
        poll_interval: float = 2.0,
        max_interval: float = 30.0,
    ) -> TaskResult:
        """Poll a task until it succeeds or fails, and return it (a failed task is returned, not
        raised: read ``err_code``).

        Pauses grow from ``poll_interval`` to ``max_interval`` seconds, jittered. After
        ``timeout`` seconds raises ``TaskTimeoutError`` whose ``last`` is the last state seen.
        """
        deadline = self._retry.clock() + timeout
        polls = 0
        while True:
            polls += 1
            result = await self.get_task(task_id)
            if result.is_terminal:
                return result
            remaining = deadline - self._retry.clock()
            if remaining <= 0:
                raise TaskTimeoutError(
                    f"task {task_id} is still {result.state or 'unknown'} after {timeout:g}s",
                    task_id=task_id,
                    last=result,
                )
            pause = poll_wait(polls, poll_interval, max_interval, self._retry)
            await self._retry.sleep(min(pause, remaining))

    @overload
    async def download(
        self, item: TaskResult, dest: str | os.PathLike[str], *, stem: str | None = None
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
    ) -> tuple[Path, ...] | Path:
        """Download a finished task's videos (one path per creation), or one creation's video,
        into the folder ``dest`` (created if missing).

        A file is named after ``stem`` (default: the task id), followed by ``_<creation id>``
        when the task has several creations, all made safe (see ``download.file_stem``). An
        expired link is refreshed once by querying the task, which needs the task id (pass
        ``task_id`` with a bare ``Creation``).
        """
        folder = Path(dest)
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        if isinstance(item, Creation):
            name = file_stem(stem or task_id, item, 0, several=False)
            return await self._download(item, folder, name, task_id, 0)
        if not item.succeeded or not item.creations:
            raise DownloadError(
                f"task {item.id} is {item.state or 'unknown'}: it has nothing to download",
                url="",
            )
        several = len(item.creations) > 1
        return tuple(
            [
                await self._download(
                    creation,
                    folder,
                    file_stem(stem or item.id, creation, index, several=several),
                    item.id,
                    index,
                )
                for index, creation in enumerate(item.creations)
            ]
        )

    async def _download(
        self, creation: Creation, folder: Path, name: str, task_id: str | None, index: int
    ) -> Path:
        async def fresh_link() -> str:
            assert task_id is not None
            result = await self.get_task(task_id)
            same = [c for c in result.creations if c.id == creation.id] if creation.id else []
            if same:
                return same[0].url
            if not creation.id and index < len(result.creations):
                return result.creations[index].url
            raise DownloadError(
                f"task {task_id} no longer lists creation {creation.id or index}", url=""
            )

        timeout = self._pool.timeout
        return await download_creation(
            self._pool.session(None),
            creation,
            folder,
            name,
            client_timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=timeout.sock_connect, sock_read=timeout.sock_read
            ),
            refresh=fresh_link if task_id else None,
            retry=self._retry,
        )
