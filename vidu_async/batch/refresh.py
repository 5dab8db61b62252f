"""Reading many tasks at once: one filtered list request per 100 ids, one query per task the
list did not show. Shared by a running batch's follower and ``vidu-async batch status``.

A 404 on a task this batch made is not an end: a gateway answering ``404 page not found`` for a
few seconds, or a read path that lags behind a create, says nothing of a task known to exist.
``query_one`` reports it as ``NotFound`` and the caller asks again later (the follower gives up
only after long proof, ``follow.Schedule.missed``; never as a failure that a retry would pay).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

import attrs

from vidu_async.client import MAX_PAGE_SIZE, ViduClient
from vidu_async.errors import APIError, NotFoundError
from vidu_async.tasks import TaskResult

__all__ = ["NotFound", "list_states", "query_one", "read_tasks"]

logger = logging.getLogger("vidu_async.batch")

_REFRESH_READ_LIMIT = 5 * MAX_PAGE_SIZE
"""Items one refresh of at most 100 ids reads before it gives up on the list (it should need
one page; a server paging forever must not hold the batch)."""


async def list_states(client: ViduClient, task_ids: Sequence[str]) -> dict[str, TaskResult]:
    """The tasks ``task_ids`` (at most 100) as one filtered list request reads them; it stops
    paging as soon as every one was seen (a server that pages forever cannot hold us)."""
    wanted = set(task_ids)
    found: dict[str, TaskResult] = {}
    try:
        async with contextlib.aclosing(client.list_tasks(task_ids=task_ids)) as listed:
            read = 0
            async for result in listed:
                read += 1
                if result.id in wanted:
                    found[result.id] = result
                if len(found) == len(wanted):
                    break
                if read >= _REFRESH_READ_LIMIT:
                    logger.warning("the task list answered %d items for %d ids and went "
                                   "on; reading the rest one by one", read, len(task_ids))
                    break
    except APIError as error:
        logger.info("bulk refresh of %d tasks failed (%s); querying one by one",
                    len(task_ids), error)
    return found


@attrs.frozen
class NotFound:
    """The API answered 404 to a task's own query: not known *now* (ask again later)."""

    task_id: str
    reason: str


async def query_one(client: ViduClient, task_id: str) -> TaskResult | NotFound | None:
    """One task by its own query; ``NotFound`` when the API answered 404 (never read as an end:
    see the module docstring); None when the query failed otherwise (try again later)."""
    try:
        return await client.get_task(task_id)
    except NotFoundError as error:
        logger.info("task %s was not found (%s); will ask again", task_id, error)
        return NotFound(task_id, error.reason or f"HTTP{error.status}")
    except APIError as error:
        logger.info("refreshing %s failed (%s); will try again", task_id, error)
        return None


async def read_tasks(client: ViduClient, task_ids: Sequence[str]) -> dict[str, TaskResult]:
    """Every task of ``task_ids`` that could be read: listed 100 at a time, the ones the list
    did not show (or showed without a state) queried one by one. A task missing from the
    answer could not be read (the API did not answer, or answered 404): the caller names it."""
    found: dict[str, TaskResult] = {}
    for start in range(0, len(task_ids), MAX_PAGE_SIZE):
        chunk = task_ids[start:start + MAX_PAGE_SIZE]
        seen = await list_states(client, chunk)
        for task_id in chunk:
            listed = seen.get(task_id)
            result = listed if listed and listed.state else await query_one(client, task_id)
            if isinstance(result, TaskResult):
                found[task_id] = result
    return found
