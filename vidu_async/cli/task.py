"""One task or one account: ``status``, ``wait``, ``cancel``, ``download`` and ``credits``; and
``tasks``, the account's recent tasks."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vidu_async.cli.common import (
    EXIT_AUTH,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    WEEK,
    Commands,
    add_account_arguments,
    clients_or_exit,
    rejection,
    within,
)
from vidu_async.cli.names import add_name_arguments, download_names
from vidu_async.client import MAX_PAGE_SIZE, ViduClient
from vidu_async.errors import (
    AuthenticationError,
    InvalidRequestError,
    ViduError,
)
from vidu_async.tasks import TaskResult, TaskState


def add_parsers(commands: Commands) -> None:
    """The single-task commands and ``credits``, on the command line's subcommands."""
    for name, text in (
        ("status", "show a task's state and results"),
        ("wait", "wait until a task finishes"),
        ("cancel", "cancel a task that has not started"),
        ("download", "download a finished task's videos"),
        ("credits", "show each account's credits, concurrency and queue"),
    ):
        single = commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        if name != "credits":
            single.add_argument("task_id", type=task_id, metavar="TASK_ID")
        single.add_argument("--json", action="store_true",
                            help="print the API's answer as JSON instead of a summary")
        add_account_arguments(single)
        if name == "wait":
            single.add_argument(
                "--timeout", type=within(0, WEEK, "seconds (a week)", above=True),
                default=1800.0, help="seconds (1800; a week at most)",
            )
        if name == "download":
            single.add_argument("--dest", type=Path, default=Path("."), help="folder (.)")
            add_name_arguments(single)
        single.set_defaults(run=run_single, action=name)
    add_tasks_parser(commands)


def add_tasks_parser(commands: Commands) -> None:
    """``tasks``: the account's recent tasks, filtered, newest as the API lists them."""
    listing = commands.add_parser(
        "tasks", help="list recent tasks (filter by state, date, ids)",
        description="List the account's tasks, one a line (the API's default window is the "
        "last 7 days; --since reaches further).",
    )
    listing.add_argument("--state", dest="states", action="append",
                         choices=[str(s) for s in TaskState], help="only this state (repeatable)")
    listing.add_argument("--since", type=_when, metavar="WHEN",
                         help="created at or after: 2026-05-01, 2026-05-01T12:00, or an age "
                         "such as 3h or 2d (local time unless it names an offset)")
    listing.add_argument("--until", type=_when, metavar="WHEN", help="created before (as --since)")
    listing.add_argument("--id", dest="ids", action="append", type=task_id, metavar="TASK_ID",
                         help="only this task (repeatable, 100 at most)")
    listing.add_argument("--limit", type=int, default=50, help="at most this many tasks (50)")
    listing.add_argument("--json", action="store_true", help="one JSON object (the API's) a line")
    add_account_arguments(listing)
    listing.set_defaults(run=run_single, action="tasks")


def task_id(text: str) -> str:
    """An argparse ``type`` for a task id: any text but an empty one (it names no task)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("a task id cannot be empty")
    return text


_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])\Z")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_when(text: str, now: dt.datetime) -> dt.datetime:
    """A moment for ``--since``/``--until``: an age before ``now`` (``90m``, ``2d``), or an ISO
    date or date-time, in local time unless it names its offset. ``ValueError`` otherwise."""
    age = _AGE.match(text.strip())
    if age:
        return now - dt.timedelta(seconds=float(age[1]) * _SECONDS[age[2]])
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not a date, a date-time or an age (3h, 2d): {text!r}") from None
    return moment if moment.tzinfo else moment.astimezone()


def empty_window(since: dt.datetime | None, until: dt.datetime | None) -> str | None:
    """Why ``--since`` and ``--until`` select no moment at all (``--since 2d --until 3d``: the
    ages read backwards), or None."""
    if since is None or until is None or since < until:
        return None
    return (f"--since ({since.astimezone():%Y-%m-%d %H:%M}) must be before --until "
            f"({until.astimezone():%Y-%m-%d %H:%M}): an age counts back from now, so "
            "--since 3d --until 2d is the day before yesterday")


def _when(text: str) -> dt.datetime:
    try:
        return parse_when(text, dt.datetime.now(dt.UTC))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def run_single(args: argparse.Namespace) -> int:
    try:
        if args.action == "download":
            download_names(args)  # a template that cannot work fails before any request
        if args.action == "tasks" and not (args.limit >= 1 and len(args.ids or ()) <= 100):
            raise ValueError("--limit must be 1 or more, and --id given 100 times at most")
        if args.action == "tasks" and (window := empty_window(args.since, args.until)):
            raise ValueError(window)
    except ValueError as error:  # the --name template, --limit, --id, --since and --until
        print(f"vidu-async {args.action}: {error}", file=sys.stderr)
        return EXIT_USAGE
    clients = clients_or_exit(args, f"vidu-async {args.action}")
    if isinstance(clients, int):
        return clients
    try:
        if args.action == "credits":
            return asyncio.run(_credits(clients, args))
        if args.action == "tasks":
            return asyncio.run(_tasks(clients[0], args))
        return asyncio.run(_single(clients[0], args))
    except AuthenticationError as error:
        print(f"vidu-async {args.action}: {error}", file=sys.stderr)
        return EXIT_AUTH
    except ViduError as error:
        print(f"vidu-async {args.action}: {error}", file=sys.stderr)
        return EXIT_FAILED


async def _single(client: ViduClient, args: argparse.Namespace) -> int:
    async with client:
        if args.action == "cancel":
            return await _cancel(client, args)
        if args.action == "wait":
            result = await client.wait_for_task(
                args.task_id, timeout=args.timeout,
                on_poll=None if args.json else _StateChanges(time.monotonic()),
            )
        else:
            result = await client.get_task(args.task_id)
        files: list[str] = []
        if args.action == "download":
            try:
                saved = await client.download(result, args.dest, names=download_names(args))
            except OSError as error:
                print(f"vidu-async download: {not_saved(result.id, args.dest, error)}",
                      file=sys.stderr)
                return EXIT_FAILED
            files = [str(p) for p in saved]
        if args.json:
            answer = users_answer(result)
            print(json.dumps({**answer, "files": files} if files else answer,
                             ensure_ascii=False))
        else:
            print(task_summary(result, files))
        return EXIT_FAILED if args.action == "wait" and not result.succeeded else EXIT_OK


def not_saved(task: str, dest: Path, error: OSError) -> str:
    """Why a task's files could not be saved into the folder ``dest``, naming the file the
    error is about when it is not the folder itself."""
    whole = error.filename in (None, str(dest))
    why = ("it is a file, not a folder" if whole and isinstance(error, FileExistsError)
           else error.strerror or str(error))
    return (f"cannot save the files of task {task} into {dest}: "
            + (why if whole else f"{error.filename}: {why}"))


def users_answer(result: TaskResult) -> dict[str, Any]:
    """The API's answer about a task with the user's own payload, without the client's
    correlation prefix."""
    return {**result.raw, "payload": result.payload} if "payload" in result.raw else result.raw


async def _cancel(client: ViduClient, args: argparse.Namespace) -> int:
    """Cancel, or say why not: a task that has started (or ended) cannot be cancelled."""
    try:
        await client.cancel_task(args.task_id)
    except InvalidRequestError as error:
        state = (await client.get_task(args.task_id)).state
        print(f"vidu-async cancel: task {args.task_id} is {state}: only a task that has not "
              f"started can be cancelled (the API answered: {error.message})", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps({"task_id": args.task_id, "cancelled": True}) if args.json
          else f"task {args.task_id}: cancelled")
    return EXIT_OK


class _StateChanges:
    """``wait``'s progress on stderr: a line each time the task's state changes."""

    def __init__(self, started: float) -> None:
        self._started = started
        self._last = ""

    def __call__(self, result: TaskResult) -> None:
        state = str(result.state)
        if state != self._last:
            self._last = state
            print(f"{time.monotonic() - self._started:7.1f} s  {state}", file=sys.stderr)


def task_summary(result: TaskResult, files: Sequence[str] = ()) -> str:
    """A task for people: its state (and why it failed), credits, links and files."""
    head = f"task {result.id}: {result.state}"
    if result.err_code:
        head += f" ({result.err_code})"
    if result.credits is not None:
        head += f", {result.credits} credits"
    lines = [head]
    for n, creation in enumerate(result.creations, start=1):
        lines += [f"  video {n}: {creation.url}"] if creation.url else []
        lines += [f"  cover {n}: {creation.cover_url}"] if creation.cover_url else []
    lines += [f"  file: {f}" for f in files]
    return "\n".join(lines)


async def _tasks(client: ViduClient, args: argparse.Namespace) -> int:
    """The tasks the filters select, ``--limit`` at most, one a line."""
    async with client, contextlib.aclosing(client.list_tasks(
        created_after=args.since, created_before=args.until, states=args.states or (),
        task_ids=args.ids or (), page_size=min(args.limit, MAX_PAGE_SIZE),
    )) as listed:
        shown = 0
        async for task in listed:
            print(json.dumps(users_answer(task), ensure_ascii=False) if args.json
                  else task_line(task))
            shown += 1
            if shown >= args.limit:
                break
    if not args.json:
        print(f"{shown} task{'s' if shown != 1 else ''}"
              + (f" (--limit {args.limit}: there may be more)" if shown >= args.limit else ""),
              file=sys.stderr)
    return EXIT_OK


def task_line(task: TaskResult) -> str:
    """One task on one line: id, state (and why it failed), when, model, credits, prompt."""
    created = task.created_at.astimezone().strftime("%Y-%m-%d %H:%M") if task.created_at else "?"
    state = f"{task.state}({task.err_code})" if task.err_code else str(task.state or "?")
    credits = "?" if task.credits is None else str(task.credits)
    prompt = task.prompt if len(task.prompt) <= 50 else task.prompt[:49] + "…"
    return f"{task.id}  {state:<10}  {created}  {task.model or '?'}  {credits:>4} cr  {prompt}"


async def _credits(clients: list[ViduClient], args: argparse.Namespace) -> int:
    """Each account's balance, concurrency and queue (keys named by position, last four)."""
    async with clients[0]:
        for position, client in enumerate(clients, start=1):
            try:
                credits = await client.get_credits()
            except AuthenticationError as error:
                print(f"vidu-async credits: {await rejection(clients, error)}", file=sys.stderr)
                return EXIT_AUTH
            if args.json:
                print(json.dumps(credits.raw, ensure_ascii=False))
                continue
            name = f"account {position} (key ...{client.account.api_key[-4:]})"
            for remain in credits.remains or ():
                print(f"{name}: {remain.credit_remain} credits ({remain.type or 'credits'}), "
                      f"{remain.current_concurrency}/{remain.concurrency_limit} running, "
                      f"{remain.queue_count} queued")
            if not credits.remains:
                print(f"{name}: no balance reported")
    return EXIT_OK
