"""The simulator's aiohttp application: Vidu's endpoints, auth, error shape and fault injection.

One middleware does what every API request shares: count it (``SimStats``), advance the state
machine, check the ``Authorization`` header, apply the rate limit and the drawn fault, and turn
any refusal into Vidu's error body. The handlers only do their endpoint's work.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import random
import re
from collections.abc import Awaitable, Callable
from email.utils import format_datetime
from typing import Any

import attrs
from aiohttp import web

from vidu_async.capabilities import BODY_MAX_BYTES
from vidu_async.testing.answers import SimError, error_body
from vidu_async.testing.config import ENDPOINTS, Quirks, finite
from vidu_async.testing.faults import FaultInjector
from vidu_async.testing.media import COVER_JPEG, FILE_NAMES, LinkSigner, frame_size, tiny_mp4
from vidu_async.testing.render import Links, create_response, format_timestamp, result_body
from vidu_async.testing.state import (
    STATES,
    SUCCESS,
    ListQuery,
    Simulation,
    parse_page_token,
)
from vidu_async.testing.stats import NO_ANSWER, SimStats
from vidu_async.testing.validation import ROUTES, parse_create_body, too_large

__all__ = ["SimSettings", "build_app"]

logger = logging.getLogger("vidu_async.testing")

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_THROTTLES = {
    "quota_exceeded": ("QuotaExceeded", "the account's concurrency quota is exceeded"),
    "too_many_requests": ("TooManyRequests", "too many requests"),
    "system_throttling": ("SystemThrottling", "the system is busy, try again later"),
}
_AFTER_HANDLING = ("truncated", "commit_then_drop", "error_after_commit")
"""The faults that strike once the request was handled (a create's task made and billed)."""
_UPLOAD_ENDPOINTS = ("upload_start", "upload_finish")
"""The upload API: authenticated like the task endpoints, never faulted."""
_UPLOAD_TTL = 3600.0
"""Seconds a ``put_url`` stays valid."""
_UPLOAD_MAX_BYTES = 10 * 1024 * 1024
_UPLOAD_TYPES = ("image/png", "image/jpeg", "image/webp")
_LIST_WINDOW_NS = 7 * 24 * 3600 * 1_000_000_000
_MAX_TASK_IDS = 100
_MAX_PAGE_SIZE = 100
_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})"
)


@attrs.frozen
class SimSettings:
    """What the application needs to know besides the simulation: auth, links, seed."""

    auth_scheme: str
    link_ttl: float = attrs.field(validator=[finite, attrs.validators.ge(0.0)])
    seed: int
    signer: LinkSigner = attrs.field(factory=LinkSigner)
    quirks: Quirks = attrs.field(factory=Quirks)

    def links(self, base_url: str, now: float) -> Links:
        """Links made at ``now`` (simulator clock) on the simulator at ``base_url``."""
        return Links(base_url=base_url, signer=self.signer, expires=now + self.link_ttl)


def build_app(
    sim: Simulation, faults: FaultInjector, stats: SimStats, settings: SimSettings
) -> web.Application:
    """The aiohttp application serving ``sim`` under ``/ent/v2`` (plus ``/_sim`` helpers)."""
    api = _Api(sim, faults, stats, settings)
    app = web.Application(middlewares=[api.middleware], client_max_size=BODY_MAX_BYTES)
    routes = "|".join(ROUTES)
    app.router.add_post(f"/ent/v2/{{route:{routes}}}", api.create, name="create")
    app.router.add_post("/tools/v2/files/uploads", api.start_upload, name="upload_start")
    app.router.add_put(
        "/tools/v2/files/uploads/{upload_id}/finish", api.finish_upload, name="upload_finish"
    )
    app.router.add_put("/_sim/storage/{token}", api.store, name="storage")
    app.router.add_get("/ent/v2/tasks/{task_id}/creations", api.query, name="query")
    app.router.add_post("/ent/v2/tasks/{task_id}/cancel", api.cancel, name="cancel")
    app.router.add_get("/ent/v2/tasks", api.list_tasks, name="list_tasks")
    app.router.add_get("/ent/v2/credits", api.credits, name="credits")
    app.router.add_get("/_sim/files/{token}/{name}", api.files, name="files")
    app.router.add_get("/_sim/stats", api.stats_json, name="stats")
    return app


class _Api:
    def __init__(
        self, sim: Simulation, faults: FaultInjector, stats: SimStats, settings: SimSettings
    ) -> None:
        self.sim = sim
        self.faults = faults
        self.stats = stats
        self.settings = settings
        self._traces = random.Random(f"{settings.seed}:traces")

    # --- what every request shares ---------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        endpoint = request.match_info.route.name or "unknown"
        if endpoint == "stats":
            return await handler(request)
        self.stats.request_started()
        status = NO_ANSWER
        try:
            response, status = await self._answer(request, handler, endpoint)
            if not response.prepared:
                response.headers["Date"] = self._date()
            return response
        finally:
            self.stats.request_finished(endpoint, status, request.content_length or 0)

    async def _answer(
        self, request: web.Request, handler: _Handler, endpoint: str
    ) -> tuple[web.StreamResponse, int]:
        try:
            if endpoint not in (*ENDPOINTS, *_UPLOAD_ENDPOINTS):
                response = await handler(request)
                return response, response.status
            self._authenticate(request)
            self.sim.tick()
            if endpoint in _UPLOAD_ENDPOINTS:
                response = await handler(request)
                return response, response.status
            return await self._with_faults(request, handler, endpoint)
        except SimError as exc:
            return self._error(exc), exc.status
        except web.HTTPException as exc:
            reason = exc.reason.replace(" ", "")
            return self._error(SimError(exc.status, reason, exc.text or exc.reason)), exc.status
        except ConnectionResetError:  # the client went away mid-request (a timeout around
            return self._drop(request), NO_ANSWER  # its call): nobody to answer, nothing wrong
        except Exception:
            logger.exception("the simulator failed handling %s %s", request.method, request.path)
            return self._error(SimError(500, "InternalServiceFailure", "simulator error")), 500

    async def _with_faults(
        self, request: web.Request, handler: _Handler, endpoint: str
    ) -> tuple[web.StreamResponse, int]:
        wait = self.faults.throttle(_api_key(request))
        if wait is not None:
            self.stats.faults["rate_limited"] += 1
            raise SimError(
                429,
                "TooManyRequests",
                "request rate limit exceeded",
                headers={"Retry-After": str(wait)},
            )
        draw = self.faults.draw(endpoint)
        if draw.latency:
            self.stats.faults["latency"] += 1
            await asyncio.sleep(draw.latency)
        kind = draw.kind
        if kind is not None and kind not in _AFTER_HANDLING:
            self.stats.faults[kind] += 1
            if kind == "reset":
                return self._drop(request), NO_ANSWER
            if kind == "server_error":
                raise SimError(500, "InternalServiceFailure", "internal service failure")
            reason, message = _THROTTLES[kind]
            retry_after = self.faults.faults.for_endpoint(endpoint).retry_after
            headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
            raise SimError(429, reason, message, headers=headers)
        response = await handler(request)
        if kind == "commit_then_drop":
            self.stats.faults[kind] += 1
            return self._drop(request), NO_ANSWER
        if kind == "error_after_commit":
            self.stats.faults[kind] += 1
            raise SimError(500, "InternalServiceFailure", "internal service failure")
        if kind == "truncated" and isinstance(response, web.Response):
            self.stats.faults[kind] += 1
            return await self._truncate(request, response), response.status
        return response, response.status

    def _authenticate(self, request: web.Request) -> None:
        """401 unless the request carries ``Authorization: <scheme> <a known key>``."""
        scheme = self.settings.auth_scheme
        header = request.headers.get("Authorization")
        if header is None:
            raise SimError(401, "Unauthorized", "missing the Authorization header")
        if header.partition(" ")[0].lower() != scheme.lower():
            raise SimError(
                401,
                "Unauthorized",
                f"the Authorization header must read '{scheme} <api key>'",
            )
        if self.sim.account(_api_key(request)) is None:
            raise SimError(401, "Unauthorized", "the API key is not valid")

    def _date(self) -> str:
        """The ``Date`` header: the simulator's (possibly skewed) wall clock."""
        return format_datetime(
            dt.datetime.fromtimestamp(self.sim.now_ns() / 1e9, dt.UTC), usegmt=True
        )

    def _error(self, exc: SimError) -> web.Response:
        trace_id = f"{self._traces.getrandbits(128):032x}"
        body = error_body(exc.status, exc.reason, exc.message, trace_id)
        return web.json_response(body, status=exc.status, headers=exc.headers)

    @staticmethod
    def _drop(request: web.Request) -> web.Response:
        """Close the connection without answering (aiohttp then skips writing the response)."""
        if request.transport is not None:
            request.transport.close()
        return web.Response()

    async def _truncate(self, request: web.Request, response: web.Response) -> web.StreamResponse:
        """Send ``response`` with its full ``Content-Length`` but half its body, then hang up."""
        body = response.body
        assert isinstance(body, bytes)
        cut = web.StreamResponse(status=response.status)
        cut.content_type = response.content_type
        cut.content_length = len(body)
        cut.headers["Date"] = self._date()
        await cut.prepare(request)
        await cut.write(body[: len(body) // 2])
        self._drop(request)
        return cut

    def _links(self, request: web.Request) -> Links:
        return self.settings.links(str(request.url.origin()), self.sim.now())

    # --- the endpoints ---------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > BODY_MAX_BYTES:
            raise too_large(request.content_length)
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise too_large(None) from None
        api_key = _api_key(request)
        body = await asyncio.to_thread(
            parse_create_body, raw, request.match_info["route"], self.sim.uploaded(api_key)
        )
        hold = self.faults.faults.create.hold
        if not hold:
            task = self.sim.create(api_key, body)
        else:
            self.stats.faults["hold"] += 1
            task = await self.sim.hold(api_key, body, hold)  # answered even to a client gone
        logger.debug("created task %s (%s)", task.task_id, task.model)
        return web.json_response(create_response(task))

    async def start_upload(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        if body.get("scene") != "vidu":
            raise SimError(400, "FieldInvalid", f"scene: must be 'vidu', got {body.get('scene')!r}")
        upload = self.sim.start_upload(_api_key(request), _UPLOAD_TTL)
        token = self.settings.signer.token(upload.upload_id, "upload", upload.expires_at)
        expires_ns = self.sim.now_ns() + round(_UPLOAD_TTL * 1e9)
        return web.json_response({
            "id": upload.upload_id,
            "put_url": f"{request.url.origin()}/_sim/storage/{token}",
            "expires_at": format_timestamp(expires_ns),
        })

    async def store(self, request: web.Request) -> web.Response:
        """The pre-signed storage ``PUT``: the URL is the credential, so an ``Authorization``
        header is refused (as object stores refuse two auth mechanisms)."""
        if "Authorization" in request.headers:
            self.stats.storage_auth_refused += 1
            raise SimError(400, "InvalidArgument", "only one auth mechanism allowed: the URL "
                           "is pre-signed, send no Authorization header")
        try:
            upload_id = self.settings.signer.check(
                request.match_info["token"], "upload", self.sim.now()
            )
        except ValueError as exc:
            raise SimError(403, "AccessDenied", str(exc)) from None
        upload = self.sim.upload(upload_id)
        if upload is None or upload.finished:
            raise SimError(403, "AccessDenied", "this upload is not open")
        if request.content_type not in _UPLOAD_TYPES:
            raise SimError(400, "InvalidArgument",
                           f"Content-Type must be one of {', '.join(_UPLOAD_TYPES)}")
        data = await request.read()
        if len(data) >= _UPLOAD_MAX_BYTES:
            raise SimError(400, "EntityTooLarge", "an upload must be under 10 MB")
        upload.data, upload.content_type = data, request.content_type
        upload.etag = f'"{hashlib.md5(data).hexdigest()}"'  # noqa: S324 - an ETag, not security
        return web.Response(headers={"ETag": upload.etag})

    async def finish_upload(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        upload = self.sim.upload(request.match_info["upload_id"])
        if upload is None or upload.api_key != _api_key(request):
            raise SimError(404, "NotFound", "no such upload")
        if upload.etag is None or body.get("etag") != upload.etag:
            raise SimError(400, "FieldInvalid", "etag: does not match the stored file")
        upload.finished = True
        return web.json_response({"uri": upload.uri})

    async def query(self, request: web.Request) -> web.Response:
        task = self.sim.task(_api_key(request), request.match_info["task_id"])
        return web.json_response(result_body(task, self._links(request)))

    async def cancel(self, request: web.Request) -> web.Response:
        task_id = request.match_info["task_id"]
        raw = await request.read()
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError:
                raise SimError(400, "BadRequest", "the body is not valid JSON") from None
            given = body.get("id", task_id) if isinstance(body, dict) else None
            if given != task_id:
                raise SimError(
                    400, "FieldInvalid", f"id: the body names task {given!r}, the path {task_id}"
                )
        self.sim.cancel(_api_key(request), task_id)
        return web.json_response({})

    async def list_tasks(self, request: web.Request) -> web.Response:
        tasks, last = self.sim.list_tasks(_api_key(request), self._list_query(request))
        links = self._links(request)
        items = [result_body(task, links) for task in tasks]
        if self.settings.quirks.list_without_payload:
            for item in items:
                del item["payload"]
        return web.json_response({"tasks": items, "next_page_token": last or ""})

    def _list_query(self, request: web.Request) -> ListQuery:
        params = request.query
        until = _param_time(params, "created_at.to", self.sim.now_ns())
        since = _param_time(params, "created_at.from", until - _LIST_WINDOW_NS)
        task_ids = params.getall("task_ids", [])
        if len(task_ids) > _MAX_TASK_IDS:
            raise SimError(
                400,
                "FieldItemCountOutOfRange",
                f"task_ids: at most {_MAX_TASK_IDS} per request, got {len(task_ids)}",
            )
        states = params.getall("states", [])
        unknown = [s for s in states if s not in STATES]
        if unknown:
            raise SimError(
                400, "FieldInvalid", f"states: unknown {unknown}; expected some of {STATES}"
            )
        spelling = "paper" if self.settings.quirks.paper_paging else "pager"
        pagesz = _param_int(params, f"{spelling}.pagesz", 10)
        if not 1 <= pagesz <= _MAX_PAGE_SIZE:
            raise SimError(
                400,
                "PageSizeOutOfRange",
                f"{spelling}.pagesz must be 1..{_MAX_PAGE_SIZE}, got {pagesz}",
            )
        page = _param_int(params, f"{spelling}.page", 0)
        if page < 0:
            raise SimError(400, "FieldInvalid", f"{spelling}.page must be 0 or more, got {page}")
        token = params.get("pager.page_token", "")
        try:
            after = parse_page_token(token) if token else None
        except ValueError as exc:
            raise SimError(400, "FieldInvalid", f"pager.page_token: {exc}") from None
        return ListQuery(since, until, frozenset(task_ids), frozenset(states), page, pagesz, after)

    async def credits(self, request: web.Request) -> web.Response:
        account = self.sim.account(_api_key(request))
        assert account is not None  # authenticated
        remain = {
            "type": "metered",
            "credit_remain": account.balance,
            "concurrency_limit": account.config.concurrency_limit,
            "current_concurrency": len(account.processing),
            "queue_count": len(account.queue) + len(account.created),
        }
        return web.json_response({"remains": [remain], "packages": []})

    async def files(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in FILE_NAMES:
            raise SimError(404, "CreationNotFound", f"no file named {name!r}")
        try:
            task_id = self.settings.signer.check(request.match_info["token"], name, self.sim.now())
        except ValueError as exc:
            raise SimError(403, "Forbidden", str(exc)) from None
        task = self.sim.tasks.get(task_id)
        watermarked = name == "video-watermarked.mp4"
        if (
            task is None
            or task.state != SUCCESS
            or (watermarked and not task.request.get("watermark"))
        ):
            raise SimError(404, "CreationNotFound", f"task {task_id} has no {name}")
        if name == "cover.jpg":
            data = COVER_JPEG
        else:
            width, height = frame_size(task.resolution, task.aspect_ratio)
            note = f"vidu-async simulator placeholder video of task {task_id}" + (
                " (watermarked)" if watermarked else "")
            data = tiny_mp4(task.duration, width, height, note)
        return web.Response(body=data, content_type=FILE_NAMES[name])

    async def stats_json(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.to_dict())


async def _json_object(request: web.Request) -> dict[str, Any]:
    """The request's body, which must be a JSON object (``BadRequest`` otherwise)."""
    try:
        body = json.loads(await request.read())
    except ValueError:
        raise SimError(400, "BadRequest", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise SimError(400, "BadRequest", "the body must be a JSON object")
    return body


def _api_key(request: web.Request) -> str:
    """The key in an ``Authorization`` header the middleware has already checked."""
    return request.headers["Authorization"].partition(" ")[2].strip()


def _param_int(params: Any, name: str, default: int) -> int:
    text = params.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise SimError(400, "FieldInvalid", f"{name} must be an integer, got {text!r}") from None


def _param_time(params: Any, name: str, default: int) -> int:
    """An RFC 3339 query parameter as nanoseconds since the epoch (9 fraction digits allowed)."""
    text = params.get(name)
    if text is None:
        return default
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise SimError(400, "FieldInvalid", f"{name} must be an RFC 3339 time, got {text!r}")
    date, clock, fraction, offset = match.groups()
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        moment = dt.datetime.fromisoformat(f"{date}T{clock}{offset}")
    except ValueError as exc:
        raise SimError(400, "FieldInvalid", f"{name}: {exc}") from None
    return int(moment.timestamp()) * 1_000_000_000 + int((fraction or "").ljust(9, "0"))
