"""``vidu-async batch status|cancel|download|results JOURNAL``: a batch asked about through its
journal (the decisions are ``batch_view``'s; this module reads, asks the API and prints).

None of them takes the journal's lock, so each works while a ``submit`` of the batch runs: they
read what the journal holds at that moment (``journal.read_journal``) and never write it. With a
run in progress, ``cancel`` cancels the tasks made so far (the run sees them end as cancelled
and records it) but not those it creates afterwards, so it says so; ``results`` writes a
snapshot. A task's account is found by the label the journal recorded, among the keys of
``VIDU_API_KEY`` / ``VIDU_API_KEYS``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vidu_async._files import replaced_whole
from vidu_async.batch import account_label
from vidu_async.batch.refresh import read_tasks
from vidu_async.batch_view import JobView, counts, result_records, to_read, view
from vidu_async.cli.common import (
    EXIT_AUTH,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Commands,
    add_account_arguments,
    clients_or_exit,
    rejection,
)
from vidu_async.cli.names import add_name_arguments, download_names
from vidu_async.client import ViduClient
from vidu_async.download import DownloadNames
from vidu_async.errors import (
    AuthenticationError,
    InvalidRequestError,
    JournalError,
    ViduError,
)
from vidu_async.journal import JobRecord, is_in_use, read_journal
from vidu_async.tasks import TaskResult, is_cancellable

_SHOWN = 20
"""Jobs listed one a line in a human summary before the rest are only counted."""


def add_parsers(commands: Commands) -> None:
    """``batch`` and its subcommands, on the command line's subcommands."""
    batch = commands.add_parser(
        "batch", help="ask about a batch through its journal",
        description="Ask about a batch through its journal (JOBS.journal.jsonl by default). "
        "These commands never take the journal's lock: they work while a submit runs.",
    )
    actions = batch.add_subparsers(dest="batch_command", required=True, metavar="ACTION")
    for name, text in (
        ("status", "counts by state, credits spent, the jobs still running (asked of the API)"),
        ("cancel", "cancel every task of the batch that has not started"),
        ("download", "download every finished video, with fresh links"),
        ("results", "write the results file again from the journal (no network)"),
    ):
        action = actions.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        action.add_argument("journal", type=Path, metavar="JOURNAL")
        if name == "download":
            action.add_argument("dest", type=Path, metavar="DIR")
            add_name_arguments(action)
        if name == "results":
            action.add_argument("--out", type=Path, metavar="PATH",
                                help="write there (replaced whole) instead of stdout")
        else:
            action.add_argument("--json", action="store_true", help="print JSON for machines")
            add_account_arguments(action)
        action.set_defaults(run=run_batch, action=name)


def run_batch(args: argparse.Namespace) -> int:
    command = f"vidu-async batch {args.action}"
    try:
        names = download_names(args) if args.action == "download" else None
        contents = read_journal(args.journal)
    except (ValueError, JournalError) as error:
        print(f"{command}: {error}", file=sys.stderr)
        return EXIT_USAGE
    records = list(contents.jobs)
    if args.action == "results":
        return _results(args, [view(r, {}) for r in records])
    clients = clients_or_exit(args, command)
    if isinstance(clients, int):
        return clients
    try:
        return asyncio.run(_run(args, clients, records, contents.spent, names))
    except ViduError as error:
        print(f"{command}: {error}", file=sys.stderr)
        return EXIT_FAILED


async def _run(args: argparse.Namespace, clients: list[ViduClient], records: list[JobRecord],
               spent: int, names: DownloadNames | None) -> int:
    async with clients[0]:
        try:
            for client in clients:  # a refused key is named here, not read as "unknown" tasks
                await client.get_credits()
            if args.action == "download":
                assert names is not None
                return await _download(args, clients, records, names)
            read = await _read(clients, to_read(records))
            jobs = [view(r, read) for r in records]
            if args.action == "cancel":
                return await _cancel(args, clients, jobs)
            return _status(args, clients, jobs, spent)
        except AuthenticationError as error:
            print(f"vidu-async batch {args.action}: {await rejection(clients, error)}",
                  file=sys.stderr)
            return EXIT_AUTH


async def _read(clients: list[ViduClient], records: list[JobRecord]) -> dict[str, TaskResult]:
    """The tasks of ``records``, each asked of its own account (100 a request)."""
    found: dict[str, TaskResult] = {}
    for client, ids in _by_account(clients, records).items():
        found |= await read_tasks(client, ids)
    return found


def _by_account(clients: list[ViduClient], records: Sequence[JobRecord]
                ) -> dict[ViduClient, list[str]]:
    """Task ids by the client of the account that made them; a task made with a key not given
    now is left out (it reads as ``unknown``)."""
    grouped: dict[ViduClient, list[str]] = {}
    for record in records:
        client = _client_of(clients, record.account)
        if client is not None and record.task_id is not None:
            grouped.setdefault(client, []).append(record.task_id)
    return grouped


def _client_of(clients: list[ViduClient], account: str | None) -> ViduClient | None:
    """The client of the account the journal names (by its label); the first for a journal
    that names none; None when that account's key is not given now."""
    if account is None:
        return clients[0]
    return next((c for c in clients if account_label(c) == account), None)


def _status(args: argparse.Namespace, clients: list[ViduClient], jobs: list[JobView],
            spent: int) -> int:
    running = [j for j in jobs if j.running]
    unread = [j for j in jobs if j.state == "unknown"]
    asked = {j.custom_id for j in unread if _client_of(clients, j.account) is not None}
    code = EXIT_FAILED if asked else EXIT_OK  # asked and not read: named, and said so
    in_use = is_in_use(args.journal)
    if args.json:
        print(json.dumps({"journal": str(args.journal), "in_use": in_use, "jobs": len(jobs),
                          "counts": counts(jobs), "credits": spent,
                          "running": [j.to_dict() for j in running],
                          "unknown": [j.to_dict() for j in unread]}, ensure_ascii=False))
        return code
    tally = ", ".join(f"{n} {state}" for state, n in counts(jobs).items()) or "no jobs yet"
    print(f"batch {args.journal}: {len(jobs)} jobs: {tally}; {spent} credits spent"
          + ("; a run is using this journal now" if in_use else ""))
    _print_jobs("running", [(j, j.state) for j in running])
    _print_jobs("could not be read", [
        (j, "the API did not answer, or answered 404" if j.custom_id in asked
         else "its account's key is not given") for j in unread
    ])
    return code


def _print_jobs(title: str, jobs: Sequence[tuple[JobView, str]]) -> None:
    """A titled list, one job a line with a detail; the first ``_SHOWN`` only."""
    if not jobs:
        return
    print(f"{title}:")
    for job, detail in jobs[:_SHOWN]:
        print(f"  {job.custom_id}: task {job.task_id}: {detail}")
    if len(jobs) > _SHOWN:
        print(f"  ... and {len(jobs) - _SHOWN} more (--json lists them all)")


async def _cancel(args: argparse.Namespace, clients: list[ViduClient], jobs: list[JobView]
                  ) -> int:
    """Cancel the tasks not started; report every running task that could not be cancelled."""
    cancelled: list[JobView] = []
    refused: list[tuple[JobView, str]] = []
    for job in jobs:
        if not job.running and job.state != "unknown":
            continue
        client = _client_of(clients, job.account)
        if client is None or not is_cancellable(job.state):
            refused.append((job, f"{job.state}: only a task that has not started can be "
                                 "cancelled" if job.running else "its state could not be read"))
            continue
        try:
            await client.cancel_task(str(job.task_id))
        except InvalidRequestError as error:  # it started meanwhile
            state = (await client.get_task(str(job.task_id))).state
            refused.append((job, f"{state}: {error.message}"))
            continue
        cancelled.append(job)
    in_use = is_in_use(args.journal)
    if args.json:
        print(json.dumps({"cancelled": [j.task_id for j in cancelled],
                          "not_cancelled": [{**j.to_dict(), "reason": why} for j, why in refused],
                          "in_use": in_use}, ensure_ascii=False))
    else:
        print(f"cancelled {len(cancelled)} task{'s' if len(cancelled) != 1 else ''}"
              + "".join(f"\n  {j.custom_id}: task {j.task_id}" for j in cancelled[:_SHOWN]))
        _print_jobs("not cancelled", refused)
    if in_use:
        print("a run is using this journal: tasks it creates from now on are not cancelled; "
              "stop it (Ctrl-C) and cancel again to catch them", file=sys.stderr)
    return EXIT_FAILED if refused else EXIT_OK


async def _download(args: argparse.Namespace, clients: list[ViduClient],
                    records: list[JobRecord], names: DownloadNames) -> int:
    """Every finished video, from fresh links (every task read again); report the others."""
    candidates = [r for r in records if r.task_id is not None
                  and (r.final is None or r.final.get("status") == "succeeded")]
    tasks = await _read(clients, candidates)
    files: list[dict[str, Any]] = []
    problems: list[str] = []
    waiting = 0
    for record in candidates:
        task = tasks.get(str(record.task_id))
        if task is None:
            problems.append(f"{record.job_id}: task {record.task_id} could not be read")
            continue
        if not task.succeeded:
            waiting += not task.is_terminal
            continue
        line = record.final.get("line") if record.final else None
        client = _client_of(clients, record.account)
        assert client is not None  # its task was read with it
        try:
            paths = await client.download(task, args.dest, stem=record.job_id, names=names,
                                          line=line)
        except (ViduError, OSError) as error:
            problems.append(f"{record.job_id}: {error}")
            continue
        files.append({"custom_id": record.job_id, "task_id": task.id,
                      "files": [str(p) for p in paths]})
    if args.json:
        print(json.dumps({"downloaded": files, "not_finished": waiting, "failed": problems},
                         ensure_ascii=False))
    else:
        count = sum(len(f["files"]) for f in files)
        print(f"downloaded {count} file{'s' if count != 1 else ''} of {len(files)} "
              f"task{'s' if len(files) != 1 else ''} into {args.dest}"
              + (f"; {waiting} still running" if waiting else ""))
    for problem in problems:
        print(f"vidu-async batch download: {problem}", file=sys.stderr)
    return EXIT_FAILED if problems else EXIT_OK


def _results(args: argparse.Namespace, jobs: list[JobView]) -> int:
    """The journal's results, on stdout or replacing ``--out`` whole (a reader never sees half)."""
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result_records(jobs))
    if args.out is None:
        sys.stdout.write(text)
        return EXIT_OK
    try:
        with replaced_whole(args.out) as handle:
            handle.write(text)
    except OSError as error:
        print(f"vidu-async batch results: cannot write {args.out}: "
              f"{error.strerror or error}", file=sys.stderr)
        return EXIT_USAGE
    print(f"results: {args.out} ({len(jobs)} jobs)", file=sys.stderr)
    return EXIT_OK
