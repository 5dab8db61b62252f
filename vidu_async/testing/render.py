"""The JSON the simulator answers about a task: the create response, and the query body
(also a list item and a callback body)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs

from vidu_async.testing.media import LinkSigner
from vidu_async.testing.state import SUCCESS, SimTask

__all__ = ["Links", "create_response", "format_timestamp", "result_body"]

_WM_POSITIONS = {1: "top_left", 2: "top_right", 3: "bottom_right", 4: "bottom_left"}
"""How the create response names ``wm_position`` (a string; the seed shows ``unspecified``)."""


def format_timestamp(ns: int) -> str:
    """RFC 3339 in UTC with nanoseconds and ``Z``, as Vidu writes ``created_at``."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    moment = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{fraction:09d}Z"


_TYPES = {"reference2video": "character2video", "subjects": "character2video"}
"""The ``type`` a create answer names, where it is not the route's own name (the seed's)."""


def create_response(task: SimTask) -> dict[str, Any]:
    """Every field of the seed's response example, with the seed's JSON types."""
    body = task.request
    echoed = {"subjects": body["subjects"]} if "subjects" in body else {}
    return {
        **echoed,
        "task_id": task.task_id,
        "type": _TYPES.get(task.kind, task.kind),
        "state": task.state,
        "model": task.model,
        "style": "general",
        "prompt": body.get("prompt", ""),
        "images": list(body.get("images", [])),
        "duration": task.duration,
        "seed": task.seed,
        "aspect_ratio": task.aspect_ratio,
        "resolution": task.resolution,
        "movement_amplitude": body.get("movement_amplitude", "auto"),
        "created_at": format_timestamp(task.created_ns),
        "credits": task.credits,
        "payload": task.payload,
        "cus_priority": 0,
        "off_peak": bool(body.get("off_peak", False)),
        "watermark": bool(body.get("watermark", False)),
        "is_rec": bool(body.get("is_rec", False)),
        "wm_position": _WM_POSITIONS.get(body.get("wm_position", 0), "unspecified"),
        "wm_url": body.get("wm_url", ""),
        "meta_data": body.get("meta_data", ""),
        "client_request_id": "",
    }


@attrs.frozen
class Links:
    """How to build a finished task's file links: where the simulator is, and for how long."""

    base_url: str
    signer: LinkSigner
    expires: float
    """When links made now expire, on the simulator's clock."""

    def url(self, task: SimTask, name: str) -> str:
        token = self.signer.token(task.task_id, name, self.expires)
        return f"{self.base_url}/_sim/files/{token}/{name}"


def result_body(task: SimTask, links: Links) -> dict[str, Any]:
    """The query answer (section 2), also a list item and a callback body; fresh links each time."""
    creations: list[dict[str, Any]] = []
    if task.state == SUCCESS:
        creation = {
            "id": f"{task.task_id}1",
            "url": links.url(task, "video.mp4"),
            "cover_url": links.url(task, "cover.jpg"),
        }
        if task.request.get("watermark"):
            creation["watermarked_url"] = links.url(task, "video-watermarked.mp4")
        creations.append(creation)
    return {
        "id": task.task_id,
        "state": task.state,
        "err_code": task.err_code,
        "credits": task.credits,
        "payload": task.payload,
        "bgm": bool(task.request.get("bgm", False)),
        "off_peak": bool(task.request.get("off_peak", False)),
        "creations": creations,
        "model": task.model,
        "prompt": task.request.get("prompt", ""),
        "created_at": format_timestamp(task.created_ns),
    }
