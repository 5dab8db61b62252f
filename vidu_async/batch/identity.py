"""Who a job is, across runs and journals: its request's fingerprint, its correlation key, its
cost class.

A job's correlation key is derived, not drawn: ``sha256(batch id, job id, fingerprint,
attempt)``. A rerun of the same batch (same jobs file, or the same explicit ``batch_id``) thus
puts the same key on the same request even when its journal is gone, which lets a batch find
the tasks an earlier run made before paying again. The first 8 hex digits of every key are the
batch's own tag, so the tasks of one batch can be told from all others in the account's list.

The fingerprint is what the job asks for: the body it would send, without ``payload`` (our
correlation envelope travels there), with each local
file or bytes entry standing as the SHA-256 of its content. Two runs agree on it exactly when
they would send the same request.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
from collections.abc import Callable
from typing import Any

from vidu_async.batch.plan import JobFacts
from vidu_async.jobs import Job
from vidu_async.media import MediaKind, MediaSource, is_local, media_digest
from vidu_async.requests import Request, SubjectsToVideoRequest

__all__ = [
    "batch_tag",
    "belongs_to",
    "cost_class",
    "fingerprint",
    "job_facts",
    "job_key",
]

_TAG_LENGTH = 8
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
"""The canonical JSON a fingerprint hashes (one encoder, not one built per job)."""


@functools.lru_cache(maxsize=64)
def batch_tag(batch_id: str) -> str:
    """The first 8 hex digits of every correlation key of the batch ``batch_id``."""
    return hashlib.sha256(f"batch\0{batch_id}".encode()).hexdigest()[:_TAG_LENGTH]


def job_key(batch_id: str, job_id: str, fingerprint: str, attempt: int = 0) -> str:
    """The correlation key (32 lowercase hex digits) of one job's ``attempt``-th task.

    ``attempt`` is 0 for a job's first task; a deliberate retry of a failed task (a new,
    billed task on purpose) takes the next number, so its key differs.
    """
    material = f"job\0{batch_id}\0{job_id}\0{fingerprint}\0{attempt}".encode()
    rest = hashlib.sha256(material).hexdigest()[: 32 - _TAG_LENGTH]
    return batch_tag(batch_id) + rest


def belongs_to(key: str | None, batch_id: str) -> bool:
    """Whether a correlation key was made by the batch ``batch_id``."""
    return key is not None and len(key) == 32 and key.startswith(batch_tag(batch_id))


def cost_class(request: Request) -> str:
    """The fields a task's price may depend on, as one string: tasks of one class cost the same.

    Defaults stay ``-`` rather than being filled in from the capability table: a class is only
    a name to learn a price under, and the same request always gets the same name.
    """
    videos = any(kind == "video" for _, kind in request.media_entries())
    is_rec = getattr(request, "is_rec", None)
    parts = (
        "subjects" if isinstance(request, SubjectsToVideoRequest) else request.kind,
        request.model,
        request.duration,
        request.resolution,
        bool(request.off_peak),
        getattr(request, "audio", None),
        videos,
        *(() if is_rec is None else ("is_rec" if is_rec else "no_rec",)),
    )
    return "/".join("-" if part is None else str(part) for part in parts)


def fingerprint(
    request: Request,
    media: Callable[[MediaSource, MediaKind], str] | None = None,
) -> str:
    """The SHA-256 (hex) of what ``request`` asks for; see the module docstring.

    Blocking when the request has local media (it reads them): call it in a thread.
    """
    body: dict[str, Any] = request.body_with(media or media_digest)
    body.pop("payload", None)
    if request.route != "/reference2video":  # the seed's jobs keep their old fingerprints
        body["(route)"] = request.route
    canonical = _canonical(body)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def job_facts(job: Job, batch_id: str, attempt: int) -> JobFacts:
    """A job's fingerprint, its key for ``attempt`` in batch ``batch_id``, and the digests of
    its local media (hashed in a thread; a request of URLs only is hashed at once, cheaper than
    the hop)."""
    local: dict[MediaSource, str] = {}

    def noted(source: MediaSource, kind: MediaKind) -> str:
        digest = media_digest(source, kind)
        if is_local(source):
            local[source] = digest
        return digest

    if any(is_local(m) for m in job.request.media()):
        print_ = await asyncio.to_thread(fingerprint, job.request, noted)
    else:
        print_ = fingerprint(job.request, noted)
    key = job_key(batch_id, job.custom_id, print_, attempt)
    return JobFacts(job.custom_id, print_, key, local)
