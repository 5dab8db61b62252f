"""The ``vidu-async`` command line: parse arguments, build objects, print. No logic of its own.

Exit codes: 0 all good, 1 some job failed or was invalid, 2 usage error, 3 missing or rejected
API key before any job ran, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shlex
import signal
import sys
import time
import warnings
from collections import Counter
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import attrs

from vidu_async import capabilities as caps
from vidu_async import demo
from vidu_async._http import DEFAULT_BASE_URL, normalize_base_url
from vidu_async._version import __version__
from vidu_async.batch import BatchOptions
from vidu_async.client import ViduClient
from vidu_async.dryrun import dry_run, render
from vidu_async.errors import (
    APIConnectionError,
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    JournalError,
    ViduError,
    ViduWarning,
)
from vidu_async.jobs import FORMATS, JobsFileError, check_jobs_file, read_jobs
from vidu_async.media import is_local
from vidu_async.progress import ProgressReporter, ProgressState
from vidu_async.requests import KINDS
from vidu_async.retry import RetryPolicy
from vidu_async.submit import Listener, count_lines, report_line, submit_jobs_file
from vidu_async.tasks import TaskResult

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse's usage errors and --help
        return int(exc.code or 0)
    args.argv = None if argv is None else list(argv)
    try:
        with warnings.catch_warnings():
            # The commands print each line's warnings themselves, with the line number.
            warnings.simplefilter("ignore", ViduWarning)
            code: int = args.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidu-async",
        description="Validate, submit and follow Vidu reference-to-video jobs.",
    )
    parser.add_argument("--version", action="version", version=f"vidu-async {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser(
        "validate",
        help="check every line of a jobs file offline",
        description="Check every line of a jobs file against the model capability table, "
        "without any network. Exit 0 when every line is valid, 1 otherwise.",
    )
    add_jobs_arguments(validate)
    validate.add_argument(
        "--json", action="store_true", help="print one JSON object per input line on stdout"
    )
    validate.set_defaults(run=run_validate)

    submit = commands.add_parser(
        "submit",
        help="submit every job of a jobs file (resumable)",
        description="Submit every valid line of a jobs file, paying for each exactly once. "
        "Rerun the same command after any interruption: the journal makes it resume.",
        epilog="The API key comes from VIDU_API_KEY (VIDU_API_KEYS=k1,k2 spreads jobs over "
        "several accounts). Exit codes: 0 every job succeeded (or was submitted, without "
        "--wait); 1 some job failed, was invalid or was not submitted; 2 usage error; 3 no key "
        "or a rejected key; 130 interrupted.",
    )
    add_jobs_arguments(submit)
    add_account_arguments(submit)
    batch = submit.add_argument_group("batch")
    batch.add_argument("--concurrency", type=int, default=8, help="creates in flight at once (8)")
    batch.add_argument("--rate", type=float, help="creates per second at most (default: no cap)")
    batch.add_argument(
        "--journal", type=Path,
        help="journal file that makes reruns resume (default: JOBS.journal.jsonl beside JOBS)",
    )
    batch.add_argument(
        "--batch-id", metavar="NAME",
        help="the batch's identity, from which every job's correlation key derives (default: "
        "the jobs file's name). A rerun with a new or lost journal looks for the tasks an "
        "earlier run of the same batch made before paying again",
    )
    batch.add_argument(
        "--fresh", action="store_true",
        help="start a new batch of the same jobs on purpose: new correlation keys, no search "
        "for earlier tasks; needs a journal that does not exist yet",
    )
    batch.add_argument("--results", type=Path, help="results JSONL file (default: stdout)")
    batch.add_argument("--wait", action="store_true", help="follow every task to its end")
    batch.add_argument(
        "--download", type=Path, metavar="DIR", help="download results into DIR (implies --wait)"
    )
    batch.add_argument(
        "--max-credits", type=int, metavar="N",
        help="a hard cap on the credits of this batch's tasks, across every rerun of its "
        "journal (0 sends nothing)",
    )
    batch.add_argument(
        "--poll-interval", type=float, default=5.0, help="seconds between status rounds (5)"
    )
    batch.add_argument(
        "--visibility-lag", type=float, metavar="SECONDS",
        help="how long a new task may take to appear in the task list: a create whose answer "
        f"was lost counts as not made only this long after it could last have arrived "
        f"({RetryPolicy().visibility_lag:g})",
    )
    batch.add_argument(
        "--listen", metavar="HOST:PORT",
        help="with --wait and --callback-url: receive Vidu's callbacks on HOST:PORT (e.g. "
        "0.0.0.0:8080), POSTs to the callback URL's path, verified with the account keys; they "
        f"finish the tasks, and a status round every {_SAFETY_NET:g} s only catches lost ones. "
        "Default: the "
        "URL's own host and port when it is an http:// URL on this machine (127.0.0.1, ::1, "
        "localhost); any other URL needs --listen. Lines with a callback_url of their own are "
        "polled",
    )
    batch.add_argument("--quiet", action="store_true", help="no progress display on stderr")
    batch.add_argument(
        "--dry-run", action="store_true",
        help="create nothing: check every line, the key, the journal and the paths, and print "
        "what would be sent and what it costs where known",
    )
    submit.set_defaults(run=run_submit)

    for name, text in (
        ("status", "show a task's state and results"),
        ("wait", "wait until a task finishes"),
        ("cancel", "cancel a task that has not started"),
        ("download", "download a finished task's videos"),
        ("credits", "show each account's credits, concurrency and queue"),
    ):
        single = commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        if name != "credits":
            single.add_argument("task_id", metavar="TASK_ID")
        single.add_argument("--json", action="store_true",
                            help="print the API's answer as JSON instead of a summary")
        add_account_arguments(single)
        if name == "wait":
            single.add_argument("--timeout", type=float, default=1800.0, help="seconds (1800)")
        if name == "download":
            single.add_argument("--dest", type=Path, default=Path("."), help="folder (.)")
        single.set_defaults(run=run_single, action=name)

    demo = commands.add_parser(
        "demo",
        help="run a small batch end to end against the embedded simulator",
        description="Write a sample jobs file with generated reference images, start the "
        "simulator in this process, and run the file with --wait --download.",
    )
    demo.add_argument(
        "--dir", type=Path, default=Path("vidu-demo"), help="where to write everything (vidu-demo)"
    )
    demo.add_argument("--quiet", action="store_true", help="no progress display")
    demo.set_defaults(run=run_demo)

    from vidu_async.testing import serve

    serve_parser = commands.add_parser(
        "serve",
        help="run the embedded Vidu simulator on this machine",
        description="Run the embedded Vidu simulator until Ctrl-C; prints the URL and key to use.",
    )
    serve.add_arguments(serve_parser)
    serve_parser.set_defaults(run=serve.run)
    return parser


def add_jobs_arguments(parser: argparse.ArgumentParser) -> None:
    """The jobs file and the flags that give defaults for fields a line leaves out."""
    parser.add_argument(
        "jobs",
        type=Path,
        metavar="JOBS",
        help=f"jobs file: {', '.join(FORMATS)} (JSONL: one object per line with request "
        "fields and an optional custom_id; CSV: a header of field names; text: one prompt a line)",
    )
    parser.add_argument(
        "--strict", action="store_true",
        help="refuse a model this version's capability tables lack (default: warn and send)",
    )
    group = parser.add_argument_group("defaults for fields a line leaves out")
    group.add_argument(
        "--type", choices=KINDS,
        help="endpoint of lines naming no type (default: by their fields: subjects means the "
        "subject form of reference2video, no media text2video, other media reference2video)",
    )
    group.add_argument(
        "--model", help=f"model name, e.g. {', '.join(caps.MODELS)} (reference2video)"
    )
    group.add_argument(
        "--image", dest="images", action="append", metavar="IMAGE",
        help="reference image: URL, data URI or path (repeatable)",
    )
    group.add_argument(
        "--video", dest="videos", action="append", metavar="VIDEO",
        help="reference video (viduq2-pro only; repeatable)",
    )
    group.add_argument("--duration", type=int, help="seconds")
    group.add_argument("--resolution", help="e.g. 720p")
    group.add_argument("--aspect-ratio", help="e.g. 16:9, or W:H / auto on q2 and q3 models")
    group.add_argument("--movement-amplitude", choices=caps.MOVEMENT_AMPLITUDES)
    group.add_argument("--seed", type=int, help="0 means random")
    group.add_argument("--bgm", action=argparse.BooleanOptionalAction, help="background music")
    group.add_argument("--audio", action=argparse.BooleanOptionalAction, help="q3 models")
    group.add_argument("--off-peak", action=argparse.BooleanOptionalAction)
    group.add_argument("--watermark", action=argparse.BooleanOptionalAction)
    group.add_argument("--wm-position", type=int, choices=caps.WM_POSITIONS)
    group.add_argument("--wm-url")
    group.add_argument("--meta-data", help="a JSON object, as a string")
    group.add_argument(
        "--callback-url", metavar="URL",
        help="URL Vidu calls on each state change (submit --wait: received here, see --listen)",
    )
    group.add_argument("--payload")


def add_account_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the API is; the key itself only ever comes from the environment (not argv)."""
    group = parser.add_argument_group("account (key from VIDU_API_KEY)")
    group.add_argument("--base-url", help="API host (default: VIDU_BASE_URL or api.vidu.com)")
    group.add_argument("--auth-scheme", help="Token (default) or Bearer (some gateways)")


_SAFETY_NET = BatchOptions().callback_poll_interval
"""Seconds between the status rounds that catch lost callbacks (the library's default)."""

_DEFAULT_FIELDS = (
    "type", "model", "images", "videos", "duration", "resolution", "aspect_ratio",
    "movement_amplitude", "seed", "bgm", "audio", "off_peak", "watermark", "wm_position",
    "wm_url", "meta_data", "callback_url", "payload",
)


def request_defaults(args: argparse.Namespace) -> dict[str, Any]:
    """The request fields given as flags, local media paths made absolute (from the cwd), and
    ``strict`` when ``--strict`` is given (``read_jobs`` takes it from there)."""
    found = {n: getattr(args, n) for n in _DEFAULT_FIELDS if getattr(args, n) is not None}
    if getattr(args, "strict", False):
        found["strict"] = True
    for key in ("images", "videos"):
        if key in found:
            found[key] = [_absolute_if_local(item) for item in found[key]]
    return found


def _absolute_if_local(item: str) -> str:
    if not is_local(item):
        return item
    return str(Path(item).expanduser().resolve())


def jobs_or_usage_error(args: argparse.Namespace) -> str | None:
    """Why the jobs file cannot be run at all (a usage error: missing, a directory, no jobs in
    it, a CSV file without a header...), or None."""
    try:
        check_jobs_file(args.jobs)
    except JobsFileError as exc:
        return str(exc)
    return None


def run_validate(args: argparse.Namespace) -> int:
    problem = jobs_or_usage_error(args)
    if problem:
        print(f"vidu-async validate: {problem}", file=sys.stderr)
        return EXIT_USAGE
    total = invalid = 0
    kinds: Counter[str] = Counter()
    for item in read_jobs(args.jobs, defaults=request_defaults(args)):
        total += 1
        invalid += not item.ok
        kinds[item.kind or "unknown type"] += item.ok
        report_line(item, args.jobs, sys.stderr)
        if args.json:
            print(json.dumps(item.to_dict(), ensure_ascii=False), flush=True)
    print(
        f"{args.jobs}: {total} job{'s' if total != 1 else ''}, "
        f"{total - invalid} valid, {invalid} invalid"
        + "".join(f"\n  {kind}: {n} valid" for kind, n in sorted(kinds.items()) if n),
        file=sys.stderr,
    )
    return EXIT_FAILED if invalid else EXIT_OK


class UsageError(ValueError):
    """A command line (or environment) that cannot work as given: exit 2, one line."""


def clients_from_env(args: argparse.Namespace) -> list[ViduClient]:
    """One client per key in ``VIDU_API_KEYS`` (comma-separated), else one for ``VIDU_API_KEY``.

    Raises ``UsageError`` for a malformed base URL (``--base-url`` or ``VIDU_BASE_URL``), and
    ``ConfigurationError`` naming the variables to set when there is no key.
    """
    try:
        normalize_base_url(args.base_url or os.environ.get("VIDU_BASE_URL") or DEFAULT_BASE_URL)
    except ConfigurationError as error:
        raise UsageError(str(error)) from None
    keys = [k.strip() for k in os.environ.get("VIDU_API_KEYS", "").split(",") if k.strip()]
    if not keys and not os.environ.get("VIDU_API_KEY"):
        raise ConfigurationError(
            "no API key: set VIDU_API_KEY (or VIDU_API_KEYS=key1,key2 for several accounts); "
            "keys are never taken from the command line"
        )
    lag = getattr(args, "visibility_lag", None)
    retry = None if lag is None else RetryPolicy(visibility_lag=lag)
    first = ViduClient(keys[0] if keys else None, base_url=args.base_url,
                       auth_scheme=args.auth_scheme, retry=retry)
    return [first, *(first.for_account(attrs.evolve(first.account, api_key=k))
                     for k in keys[1:])]


def run_submit(args: argparse.Namespace) -> int:
    problem = jobs_or_usage_error(args)
    if problem:
        print(f"vidu-async submit: {problem}", file=sys.stderr)
        return EXIT_USAGE
    journal = args.journal or args.jobs.with_name(args.jobs.name + ".journal.jsonl")
    batch_id = args.batch_id or args.jobs.name
    if args.fresh:
        if journal.exists() and journal.stat().st_size > 0:
            print(f"vidu-async submit: --fresh starts a new batch, but the journal {journal} "
                  "already records one: give --journal a new file (or remove that one)",
                  file=sys.stderr)
            return EXIT_USAGE
        batch_id = f"{batch_id}#{secrets.token_hex(6)}"
    wait = args.wait or args.download is not None
    try:
        listener = callback_listener(args, wait)
        options = BatchOptions(
            concurrency=args.concurrency,
            rate=args.rate,
            wait=wait,
            download=args.download,
            max_credits=args.max_credits,
            journal=journal,
            batch_id=batch_id,
            poll_interval=args.poll_interval,
            callback_url=listener.url if listener else None,
        )
    except ValueError as error:  # the options' own checks name the option: say it as a flag
        print(f"vidu-async submit: {_flag(str(error))}", file=sys.stderr)
        return EXIT_USAGE
    try:
        clients = clients_from_env(args)
    except ConfigurationError as error:
        print(f"vidu-async submit: {error}", file=sys.stderr)
        return EXIT_AUTH
    except ValueError as error:  # the base URL, --visibility-lag
        print(f"vidu-async submit: {_flag(str(error))}", file=sys.stderr)
        return EXIT_USAGE
    if args.dry_run:
        return asyncio.run(_dry_run(args, clients, options))
    try:
        return asyncio.run(_terminable(_submit(args, clients, options, listener)))
    except (KeyboardInterrupt, Terminated) as stop:
        signal_name = "SIGTERM" if isinstance(stop, Terminated) else "Ctrl-C"
        print(
            f"\ninterrupted ({signal_name}); the journal {journal} is saved. Tasks already "
            "created keep running on Vidu and are billed: a rerun follows them. To cancel one "
            "that has not started: vidu-async cancel TASK_ID (task ids are in the results and "
            f"the journal). Resume with:\n  vidu-async {_resume_args(args, journal)}",
            file=sys.stderr,
        )
        return EXIT_TERMINATED if isinstance(stop, Terminated) else EXIT_INTERRUPTED


def _flag(message: str) -> str:
    """An option check's message (``'poll_interval' must be ...``) with the option named as
    its command-line flag (``--poll-interval must be ...``)."""
    return re.sub(r"^'?(\w+)'? must", lambda m: f"--{m[1].replace('_', '-')} must", message)


class Terminated(Exception):
    """The process was asked to stop (SIGTERM: ``docker stop``, a CI cancel, ``kill``)."""


async def _terminable(work: Coroutine[Any, Any, int]) -> int:
    """Run ``work``; on SIGTERM cancel it (as Ctrl-C does: every task stopped, the journal
    closed) and raise ``Terminated``."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    terminated = False

    def terminate() -> None:
        nonlocal terminated
        terminated = True
        task.cancel()

    try:
        loop.add_signal_handler(signal.SIGTERM, terminate)
    except (RuntimeError, ValueError):  # not the main thread (an embedding program's signals)
        return await task
    try:
        return await task
    except asyncio.CancelledError:
        if terminated:
            raise Terminated() from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def callback_listener(args: argparse.Namespace, wait: bool) -> Listener | None:
    """Where to receive callbacks: only when following tasks to a ``--callback-url``."""
    if not (wait and args.callback_url):
        if args.listen is not None:
            raise ValueError("--listen receives callbacks to follow tasks: it needs --wait (or "
                             "--download) and --callback-url")
        return None
    return Listener.parse(args.callback_url, args.listen)


async def _submit(args: argparse.Namespace, clients: list[ViduClient], options: BatchOptions,
                  listener: Listener | None) -> int:
    try:
        # Appending, not truncating: a second run refused by the journal's lock must not
        # empty the first one's results. The first result written starts the file afresh.
        results = args.results.open("a", encoding="utf-8") if args.results else sys.stdout
    except OSError as error:
        print(f"vidu-async submit: cannot write the results file {args.results}: "
              f"{error.strerror}", file=sys.stderr)
        return EXIT_USAGE
    progress = ProgressReporter(
        ProgressState(time.monotonic(), total=count_lines(args.jobs)), sys.stderr,
        quiet=args.quiet,
    )
    try:
        async with clients[0]:
            summary = await submit_jobs_file(
                args.jobs, clients, options, defaults=request_defaults(args),
                results=results, messages=sys.stderr, progress=progress, listener=listener,
                fresh_results=args.results is not None,
            )
    except AuthenticationError as error:
        print(f"vidu-async submit: {error}", file=sys.stderr)
        return EXIT_AUTH
    except APIConnectionError as error:  # before any job: nothing was sent
        print(f"vidu-async submit: cannot reach {clients[0].account.base_url} ({error}); "
              "nothing was sent: check the network and --base-url, then rerun", file=sys.stderr)
        return EXIT_FAILED
    except (ConfigurationError, JournalError) as error:  # the receiver's address, the journal
        print(f"vidu-async submit: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ViduError as error:  # the start-up search for an earlier run's tasks
        print(f"vidu-async submit: {error}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        progress.close()
        if results is not sys.stdout:
            results.close()
    if summary.stop_reason is not None:
        reason = summary.stop_reason
        print(f"stopped submitting: {reason.reason}: {reason.message}", file=sys.stderr)
    if args.results:
        print(f"results: {args.results}", file=sys.stderr)
    return EXIT_OK if summary.all_ok else EXIT_FAILED


async def _dry_run(args: argparse.Namespace, clients: list[ViduClient],
                   options: BatchOptions) -> int:
    """``submit --dry-run``: the summary on stdout; exit codes as a run's would be."""
    try:
        async with clients[0]:
            found = await dry_run(args.jobs, clients, options, defaults=request_defaults(args),
                                  results=args.results, messages=sys.stderr)
    except AuthenticationError as error:
        print(f"vidu-async submit: {error}", file=sys.stderr)
        return EXIT_AUTH
    except APIConnectionError as error:
        print(f"vidu-async submit: cannot reach {clients[0].account.base_url} ({error})",
              file=sys.stderr)
        return EXIT_FAILED
    except (ConfigurationError, JournalError) as error:
        print(f"vidu-async submit: {error}", file=sys.stderr)
        return EXIT_USAGE
    print("\n".join(render(found)))
    return EXIT_OK if found.ok else EXIT_FAILED


def _resume_args(args: argparse.Namespace, journal: Path) -> str:
    """The arguments of this run, with the journal made explicit (shell-quoted)."""
    argv = list(sys.argv[1:]) if args.argv is None else list(args.argv)
    if "--journal" not in argv:
        argv += ["--journal", str(journal)]
    return shlex.join(argv)


def run_single(args: argparse.Namespace) -> int:
    try:
        clients = clients_from_env(args)
    except ConfigurationError as error:
        print(f"vidu-async {args.action}: {error}", file=sys.stderr)
        return EXIT_AUTH
    except ValueError as error:  # the base URL
        print(f"vidu-async {args.action}: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.action == "credits":
            return asyncio.run(_credits(clients, args))
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
            files = [str(p) for p in await client.download(result, args.dest)]
        if args.json:
            # The user's own payload, without the client's correlation prefix.
            answer = {**result.raw, "payload": result.payload} if "payload" in result.raw \
                else result.raw
            print(json.dumps({**answer, "files": files} if files else answer,
                             ensure_ascii=False))
        else:
            print(task_summary(result, files))
        return EXIT_FAILED if args.action == "wait" and not result.succeeded else EXIT_OK


async def _cancel(client: ViduClient, args: argparse.Namespace) -> int:
    """Cancel, or say why not: a task that has started (or ended) cannot be cancelled."""
    try:
        await client.cancel_task(args.task_id)
    except InvalidRequestError as error:
        state = (await client.get_task(args.task_id)).state
        print(f"vidu-async cancel: task {args.task_id} is {state}: only a task that has not "
              f"started can be cancelled ({error.message})", file=sys.stderr)
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


async def _credits(clients: list[ViduClient], args: argparse.Namespace) -> int:
    """Each account's balance, concurrency and queue (keys named by position, last four)."""
    async with clients[0]:
        for position, client in enumerate(clients, start=1):
            credits = await client.get_credits()
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


def run_demo(args: argparse.Namespace) -> int:
    return asyncio.run(demo.run(args.dir, quiet=args.quiet, out=sys.stderr))
