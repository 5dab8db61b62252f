"""``validate`` and ``submit``: a jobs file checked offline, or run as a resumable batch."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import secrets
import shlex
import signal
import stat
import sys
import threading
import time
from collections import Counter
from collections.abc import Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import attrs

from vidu_async.batch import BatchOptions
from vidu_async.cli.common import (
    DAY,
    EXIT_AUTH,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    EXIT_USAGE,
    HOUR,
    Commands,
    JobsInput,
    add_account_arguments,
    add_jobs_arguments,
    as_flag,
    clients_or_exit,
    jobs_input,
    jobs_or_usage_error,
    key_names,
    key_names_in_logs,
    reads_stdin,
    rejection,
    request_defaults,
    with_key_names,
    within,
)
from vidu_async.cli.names import add_name_arguments, download_names, name_flags_given
from vidu_async.client import ViduClient
from vidu_async.dryrun import (
    DryRun,
    dry_run,
    has_records,
    missing_folder,
    needs_confirmation,
    over_budget,
    render,
    resume_line,
)
from vidu_async.errors import (
    APIConnectionError,
    AuthenticationError,
    ConfigurationError,
    JournalError,
    ViduError,
)
from vidu_async.failures import SHOWN, Failure, shown_id, write_errors_file
from vidu_async.failures import render as render_failures
from vidu_async.jobs import read_jobs
from vidu_async.journal import lock_path
from vidu_async.progress import ProgressReporter, ProgressState
from vidu_async.retry import RetryPolicy
from vidu_async.submit import (
    Listener,
    SubmitSummary,
    count_lines,
    report_line,
    submit_jobs_file,
)

_SAFETY_NET = BatchOptions().callback_poll_interval
"""Seconds between the status rounds that catch lost callbacks (the library's default)."""
CONFIRM_OVER = 1000
"""Credits above which ``submit`` on a terminal asks before sending (``--confirm-over``): about
twenty 5-second viduq2 videos."""


def add_parsers(commands: Commands) -> None:
    """``validate`` and ``submit``, on the command line's subcommands."""
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
        "--wait); 1 some job failed, was invalid or was not submitted, or the run could not "
        "finish (results or journal unwritable); 2 usage error, nothing sent; 3 no key or a "
        "rejected key; 130 interrupted (Ctrl-C); 143 terminated (SIGTERM).",
    )
    add_jobs_arguments(submit)
    add_account_arguments(submit)
    batch = submit.add_argument_group("batch")
    batch.add_argument("--concurrency", type=int, default=8, help="creates in flight at once (8)")
    batch.add_argument(
        "--rate", type=within(0.001, 10000, "requests per second"), metavar="R",
        help="API requests per second at most, every request of the batch taking a turn "
        "(creates, status rounds, lookups, uploads, the credits check); default: no cap",
    )
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
    batch.add_argument(
        "--results", type=Path,
        help="results JSONL file (default: stdout; JOBS.results.jsonl when it is a terminal)",
    )
    batch.add_argument("--wait", action="store_true", help="follow every task to its end")
    batch.add_argument(
        "--download", type=Path, metavar="DIR", help="download results into DIR (implies --wait)"
    )
    add_name_arguments(submit)  # --name, --covers, --watermarked (with --download)
    batch.add_argument(
        "--max-credits", type=int, metavar="N",
        help="a hard cap on the credits of this batch's tasks, across every rerun of its "
        "journal (0 sends nothing)",
    )
    batch.add_argument(
        "--poll-interval", type=within(0.01, HOUR, "seconds (an hour)"), default=5.0,
        metavar="SECONDS", help="seconds between status rounds (5; an hour at most)",
    )
    batch.add_argument(
        "--visibility-lag", type=within(0, DAY, "seconds (a day)"), metavar="SECONDS",
        help="how long a new task may take to appear in the task list: a create whose answer "
        f"was lost counts as not made only this long after it could last have arrived "
        f"({RetryPolicy().visibility_lag:g}; a day at most)",
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
    batch.add_argument("-q", "--quiet", action="store_true", help="no progress display on stderr")
    batch.add_argument(
        "--dry-run", action="store_true",
        help="create nothing: check every line, the key, the journal and the paths, and print "
        "what would be sent and what it costs where known",
    )
    ahead = submit.add_argument_group("asking first, and what a run shows")
    ahead.add_argument(
        "--yes", action="store_true",
        help="do not ask before sending (on a terminal, submit shows the dry run's summary and "
        "asks when the estimate is over --confirm-over; elsewhere it never asks)",
    )
    ahead.add_argument(
        "--confirm-over", type=int, metavar="CREDITS", default=CONFIRM_OVER,
        help=f"ask first when the estimate is over CREDITS or unknown ({CONFIRM_OVER})",
    )
    ahead.add_argument(
        "-v", "--verbose", action="count", default=0,
        help="log retries, pauses, lookups and their reasons on stderr (-vv: every request)",
    )
    after = submit.add_argument_group("after a run")
    after.add_argument(
        "--errors", type=Path, metavar="PATH",
        help="also write the jobs that did not succeed and may be sent again (invalid, failed "
        "on Vidu, not sent) to PATH as a JSONL jobs file, submittable as is",
    )
    after.add_argument(
        "--retry-failed", action="store_true",
        help="send each job whose task failed on Vidu again, as a new task (billed again), "
        "under a new key the journal records; every other job is replayed or followed",
    )
    submit.set_defaults(run=run_submit)


def run_validate(args: argparse.Namespace) -> int:
    with jobs_input(args, sys.stderr) as jobs:
        return _validate(args, jobs)


def _validate(args: argparse.Namespace, jobs: JobsInput) -> int:
    problem = jobs_or_usage_error(jobs, request_defaults(args))
    if problem:
        print(f"vidu-async validate: {problem}", file=sys.stderr)
        return EXIT_USAGE
    total = invalid = 0
    kinds: Counter[str] = Counter()
    lines = read_jobs(jobs.path, defaults=request_defaults(args), fmt=jobs.fmt,
                      base_dir=jobs.base_dir)
    for item in lines:
        total += 1
        invalid += not item.ok
        kinds[item.kind or "unknown type"] += item.ok
        report_line(item, Path(jobs.name), sys.stderr)
        if args.json:
            print(json.dumps(item.to_dict(), ensure_ascii=False), flush=True)
    print(
        f"{jobs.name}: {total} job{'s' if total != 1 else ''}, "
        f"{total - invalid} valid, {invalid} invalid"
        + "".join(f"\n  {kind}: {n} valid" for kind, n in sorted(kinds.items()) if n),
        file=sys.stderr,
    )
    return EXIT_FAILED if invalid else EXIT_OK


def run_submit(args: argparse.Namespace) -> int:
    if reads_stdin(args) and args.journal is None:
        print("vidu-async submit: jobs from - need --journal FILE: it is the batch's memory "
              "and, with no file name, its identity (the batch id defaults to "
              "stdin:JOURNAL_NAME); rerun with the same --journal and the same input to resume "
              "without paying twice", file=sys.stderr)
        return EXIT_USAGE
    with jobs_input(args, sys.stderr) as jobs:
        return _run_submit(args, jobs)


def _run_submit(args: argparse.Namespace, jobs: JobsInput) -> int:
    problem = jobs_or_usage_error(jobs, request_defaults(args))
    if problem:
        print(f"vidu-async submit: {problem}", file=sys.stderr)
        return EXIT_USAGE
    journal = args.journal or args.jobs.with_name(args.jobs.name + ".journal.jsonl")
    shared = shared_file([
        ("the jobs file", None if reads_stdin(args) else jobs.path), ("the journal", journal),
        ("the journal's lock file", lock_path(journal)), ("--results", args.results),
        ("--errors", args.errors),
    ])
    if shared:
        print(f"vidu-async submit: {shared}: give each its own path (nothing was sent)",
              file=sys.stderr)
        return EXIT_USAGE
    default_id = f"stdin:{journal.name}" if reads_stdin(args) else args.jobs.name
    batch_id = args.batch_id or default_id
    if args.fresh:
        if has_records(journal):
            print(f"vidu-async submit: --fresh starts a new batch, but the journal {journal} "
                  "already records one: to resume that batch, rerun without --fresh (the "
                  "journal keeps its id); only to run the jobs again on purpose (new tasks, "
                  "billed again), give --journal a new file", file=sys.stderr)
            return EXIT_USAGE
        batch_id = f"{batch_id}#{secrets.token_hex(6)}"
    wait = args.wait or args.download is not None
    try:
        if args.download is None and (naming := name_flags_given(args)):
            one = len(naming) == 1
            raise ValueError(f"{', '.join(naming)} only appl{'ies' if one else 'y'} with "
                             "--download DIR: give --download (it implies --wait), or leave "
                             f"{'it' if one else 'them'} out")
        listener = callback_listener(args, wait)
        options = BatchOptions(
            concurrency=args.concurrency,
            rate=args.rate,
            wait=wait,
            download=args.download,
            names=download_names(args),
            max_credits=args.max_credits,
            journal=journal,
            batch_id=batch_id,
            poll_interval=args.poll_interval,
            callback_url=listener.url if listener else None,
            retry_failed=args.retry_failed,
        )
    except ValueError as error:  # the options' own checks name the option: say it as a flag
        print(f"vidu-async submit: {as_flag(str(error))}", file=sys.stderr)
        return EXIT_USAGE
    clients = clients_or_exit(args, "vidu-async submit")
    if isinstance(clients, int):
        return clients
    if args.dry_run:
        return asyncio.run(_dry_run(args, jobs, clients, options))
    if args.results is None and sys.stdout.isatty():  # results would garble the terminal
        named = journal if reads_stdin(args) else args.jobs
        args.results = named.with_name(named.name + ".results.jsonl")
        print(f"results: {args.results} (stdout is a terminal; --results names another file)",
              file=sys.stderr)
    ask = not args.yes and _interactive()
    try:
        with key_names_in_logs(clients):
            return asyncio.run(
                _terminable(_submit(args, jobs, clients, options, listener, ask=ask,
                                    journal=journal))
            )
    except (KeyboardInterrupt, Terminated) as stop:
        signal_name = "SIGTERM" if isinstance(stop, Terminated) else "Ctrl-C"
        named = shlex.quote(str(journal))
        print(
            f"\ninterrupted ({signal_name}); the journal {journal} is saved. Tasks already "
            "created keep running on Vidu and are billed: a rerun follows them. To cancel the "
            f"ones that have not started: vidu-async batch cancel {named} (vidu-async batch "
            f"status {named} lists the running ones and their task ids). Resume with:\n"
            f"  vidu-async {_resume_args(args, journal)}",
            file=sys.stderr,
        )
        return EXIT_TERMINATED if isinstance(stop, Terminated) else EXIT_INTERRUPTED


def shared_file(paths: Sequence[tuple[str, Path | None]]) -> str | None:
    """Which two of a run's files are one (``--results`` naming the jobs file would empty it
    while it is read, naming the journal would replace it), or None. Paths are compared
    resolved, existing files by inode (a hard link too); a device or a pipe may be shared."""
    seen: dict[object, tuple[str, Path]] = {}
    for role, path in paths:
        if path is None or (identity := _identity(path)) is None:
            continue
        if identity in seen:
            first, where = seen[identity]
            return f"{role} {path} is {first} {where}"
        seen[identity] = (role, path)
    return None


def _identity(path: Path) -> object:
    """What makes ``path`` the same file as another: its device and inode, or where it would
    be made; None for what is not a regular file (``/dev/null``, a pipe)."""
    try:
        found = path.stat()
    except FileNotFoundError:
        return path.resolve()
    except OSError:  # unreadable, a symlink loop: the run says so when it opens the file
        return None
    return (found.st_dev, found.st_ino) if stat.S_ISREG(found.st_mode) else None


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


async def _submit(args: argparse.Namespace, jobs: JobsInput, clients: list[ViduClient],
                  options: BatchOptions, listener: Listener | None, *, ask: bool,
                  journal: Path) -> int:
    try:
        if args.errors:  # found unwritable before anything is paid, not after
            args.errors.open("a", encoding="utf-8").close()
    except OSError as error:
        print(f"vidu-async submit: cannot write the errors file {args.errors}: "
              f"{missing_folder(args.errors.parent) or error.strerror}", file=sys.stderr)
        return EXIT_USAGE
    with _logging(args.verbose) as log:
        try:
            async with clients[0]:
                try:
                    found = await _look_ahead(args, jobs, clients, options, ask)
                    if found is not None and ask and needs_confirmation(found, args.confirm_over):
                        if not _confirmed(found):
                            print("nothing was sent", file=sys.stderr)
                            return EXIT_FAILED
                    elif found is not None and (over := over_budget(found)):
                        print(f"vidu-async submit: {over}", file=sys.stderr)
                    summary = await _run(args, jobs, clients, options, listener, log,
                                         reported=found is not None)
                except AuthenticationError as error:  # named by position and last four
                    print(f"vidu-async submit: {await rejection(clients, error)}",
                          file=sys.stderr)
                    return EXIT_AUTH
        except APIConnectionError as error:  # before any job: nothing was sent
            print(f"vidu-async submit: cannot reach {clients[0].account.base_url} ({error}); "
                  "nothing was sent: check the network and --base-url, then rerun",
                  file=sys.stderr)
            return EXIT_FAILED
        except (ConfigurationError, JournalError) as error:  # a path, the receiver, the journal
            print(f"vidu-async submit: {error}", file=sys.stderr)
            return EXIT_USAGE
        except ViduError as error:  # the start-up search for an earlier run's tasks
            print(f"vidu-async submit: {with_key_names(str(error), key_names(clients))}",
                  file=sys.stderr)
            return EXIT_FAILED
    if summary.stop_reason is not None:
        reason = summary.stop_reason
        print(f"stopped submitting: {reason.reason}: "
              f"{with_key_names(reason.message, key_names(clients))}", file=sys.stderr)
    if summary.results_lost is not None:
        print(f"results: {args.results or 'stdout'} lacks the results after writing failed "
              f"({summary.results_lost}); the journal keeps every end: vidu-async batch results "
              f"{shlex.quote(str(journal))} --out PATH writes them all", file=sys.stderr)
    elif args.results:
        print(f"results: {args.results}", file=sys.stderr)
    _report_failures(args, jobs, summary.failures)
    if summary.broken is not None:
        print(f"vidu-async submit: the run stopped: {summary.broken}. Tasks already created keep "
              "running on Vidu and are billed; the journal holds every create sent, so a rerun "
              "follows them and sends the rest, each job paid once. Once the journal can be "
              f"written, resume with:\n  vidu-async {_resume_args(args, journal)}",
              file=sys.stderr)
    return EXIT_OK if summary.all_ok else EXIT_FAILED


async def _look_ahead(args: argparse.Namespace, jobs: JobsInput, clients: list[ViduClient],
                      options: BatchOptions, ask: bool) -> DryRun | None:
    """A dry run before the run, when there is something to say before paying: the summary a
    person is asked about, the jobs a resumed batch finds done, a ``--max-credits`` the
    estimate exceeds. It checks the paths as a dry run does (the run checks them again) and
    asks the accounts for credits only when it may ask the person. None: not needed, or jobs
    that cannot be read twice."""
    resumed = options.journal is not None and has_records(options.journal)
    if not (ask or resumed or options.max_credits is not None):
        return None
    found = await dry_run(jobs.path, clients, options, defaults=request_defaults(args),
                          results=args.results, messages=sys.stderr, balances=ask,
                          fmt=jobs.fmt, base_dir=jobs.base_dir, shown_as=jobs.name)
    if (resuming := resume_line(found)) is not None:
        print(resuming, file=sys.stderr)
    return found


def _confirmed(found: DryRun) -> bool:
    """Show the summary on the terminal and ask; only an explicit yes sends (Ctrl-C, end of
    input or anything else is a no)."""
    print("\n".join(render(found, heading=f"about to submit {found.jobs}:")), file=sys.stderr)
    known, unknown = found.estimate()
    cost = f"about {known} credits" + (f" and {unknown} of unknown price" if unknown else "")
    print(f"Send {found.sending} creates, {cost}? [y/N] ", end="", file=sys.stderr, flush=True)
    return _answer().strip().lower() in ("y", "yes")


def _answer() -> str:
    """A line from stdin, read while nothing else runs. Ctrl-C answers no at once (asyncio's
    own handler would only cancel the run once the line is complete)."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler) if main else None
    try:
        return sys.stdin.readline()
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return ""
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)


def _interactive() -> bool:
    """A person is there to answer: stdin and stderr are a terminal."""
    return all(stream is not None and stream.isatty() for stream in (sys.stdin, sys.stderr))


async def _run(args: argparse.Namespace, jobs: JobsInput, clients: list[ViduClient],
               options: BatchOptions, listener: Listener | None,
               log: logging.StreamHandler[TextIO], *, reported: bool) -> SubmitSummary:
    """The batch itself, results to their file (or stdout) and progress, messages and logging
    on stderr, around the live bar."""
    try:
        # Appending, not truncating: a second run refused by the journal's lock must not empty
        # the first one's results. The first result written starts the file afresh.
        results = args.results.open("a", encoding="utf-8") if args.results else sys.stdout
    except OSError as error:
        raise ConfigurationError(
            f"cannot write the results file {args.results}: "
            f"{missing_folder(args.results.parent) or error.strerror}"
        ) from None
    progress = ProgressReporter(
        ProgressState(time.monotonic(), total=count_lines(jobs.path, jobs.fmt)), sys.stderr,
        quiet=args.quiet,
    )
    log.setStream(progress.messages)
    try:
        summary = await submit_jobs_file(
            jobs.path, clients, options, defaults=request_defaults(args),
            results=results, messages=progress.messages, progress=progress, listener=listener,
            fresh_results=args.results is not None, reported=reported, fmt=jobs.fmt,
            base_dir=jobs.base_dir, shown_as=jobs.name,
        )
    finally:
        progress.close()
        log.setStream(sys.stderr)
        unsaved = _close(results)
    if unsaved is not None and summary.results_lost is None:
        summary = attrs.evolve(summary, results_lost=unsaved)
    return summary


def _close(results: TextIO) -> str | None:
    """Close a results file (not stdout); why its last lines could not be written, or None.
    A stream that failed earlier fails again here, with what it still held."""
    if results is sys.stdout:
        return None
    try:
        results.close()
    except OSError as error:
        return error.strerror or str(error)
    return None


@contextlib.contextmanager
def _logging(verbose: int) -> Iterator[logging.StreamHandler[TextIO]]:
    """The library's log on stderr while a run lasts: warnings, ``-v`` adds the reasons of
    retries, pauses and lookups, ``-vv`` every request. The handler's stream can be moved."""
    logger = logging.getLogger("vidu_async")
    handler = logging.StreamHandler(sys.stderr)
    if verbose:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    before = logger.level
    logger.setLevel(level)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before)


def _report_failures(args: argparse.Namespace, jobs: JobsInput,
                     failures: tuple[Failure, ...]) -> None:
    """The jobs that did not succeed and what to do; with ``--errors``, those that may be
    sent again written there as a jobs file."""
    for line in render_failures(failures, errors=args.errors):
        print(line, file=sys.stderr)
    if not args.errors:
        return
    try:
        written = write_errors_file(args.errors, jobs.path, failures,
                                    defaults=request_defaults(args), fmt=jobs.fmt,
                                    base_dir=jobs.base_dir)
    except OSError as error:
        print(f"vidu-async submit: cannot write {args.errors}: {error.strerror or error}",
              file=sys.stderr)
        return
    print(f"errors: {written.written} job{'s' if written.written != 1 else ''} to send again "
          f"written to {args.errors} (submit it as is: vidu-async submit {args.errors} ...)",
          file=sys.stderr)
    for failure, why in written.left_out[:SHOWN]:
        print(f"  not in it: {shown_id(failure.custom_id)}: {why}", file=sys.stderr)
    if len(written.left_out) > SHOWN:
        print(f"  and {len(written.left_out) - SHOWN} more not in it", file=sys.stderr)


async def _dry_run(args: argparse.Namespace, jobs: JobsInput, clients: list[ViduClient],
                   options: BatchOptions) -> int:
    """``submit --dry-run``: the summary on stdout; exit codes as a run's would be."""
    try:
        async with clients[0]:
            try:
                found = await dry_run(jobs.path, clients, options,
                                      defaults=request_defaults(args), results=args.results,
                                      messages=sys.stderr, fmt=jobs.fmt, base_dir=jobs.base_dir,
                                      shown_as=jobs.name, errors=args.errors)
            except AuthenticationError as error:  # named by position and last four
                print(f"vidu-async submit: {await rejection(clients, error)}", file=sys.stderr)
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
    """The arguments of this run, with the journal made explicit (shell-quoted), and without
    ``--fresh`` once the journal records the batch: it keeps the fresh batch's id, and
    ``--fresh`` would refuse it (a rerun resumes that batch, paying each job once)."""
    argv = list(sys.argv[1:]) if args.argv is None else list(args.argv)
    if "--journal" not in argv:
        argv += ["--journal", str(journal)]
    if has_records(journal):
        end = argv.index("--") if "--" in argv else len(argv)
        argv = [a for a in argv[:end] if not _means_fresh(a)] + argv[end:]
    return shlex.join(argv)


def _means_fresh(arg: str) -> bool:
    """``--fresh`` as argparse reads it, abbreviations included (``--fr``: no other flag
    starts so)."""
    return arg.startswith("--fr") and "--fresh".startswith(arg)
