"""The ``vidu-async`` command line: parse arguments, build objects, print. No logic of its own.

One module per group of commands (``submit``: validate and submit a jobs file; ``task``: one
task or account, and the task list; ``batch``: a batch through its journal); ``common`` holds
what they share: the account, the jobs file's flags, exit codes; ``names`` the download names.

Exit codes: 0 all good, 1 some job failed or was invalid, 2 usage error, 3 missing or rejected
API key before any job ran, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from vidu_async import demo
from vidu_async._version import __version__
from vidu_async.cli import batch, submit, task
from vidu_async.cli._gc import tune_for_a_batch
from vidu_async.cli.common import EXIT_INTERRUPTED, EXIT_USAGE, OneLineParser
from vidu_async.errors import ConfigurationError, JournalError, ViduWarning

__all__ = ["main", "run"]


def run() -> NoReturn:
    """The ``vidu-async`` process (the console script, ``python -m vidu_async``): ``main`` on
    the command line's arguments, its garbage collector tuned for a long batch first."""
    tune_for_a_batch()
    sys.exit(main())


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
    parser = OneLineParser(
        prog="vidu-async",
        description="Validate, submit and follow Vidu video jobs: text-, image-, "
        "start-end- and reference-to-video.",
    )
    parser.add_argument("--version", action="version", version=f"vidu-async {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    submit.add_parsers(commands)
    task.add_parsers(commands)
    batch.add_parsers(commands)

    demo_parser = commands.add_parser(
        "demo",
        help="run a small batch end to end against the embedded simulator",
        description="Write a sample jobs file with generated reference images, start the "
        "simulator in this process, and run the file with --wait --download.",
    )
    demo_parser.add_argument(
        "--dir", type=Path, default=Path("vidu-demo"),
        help="where to write everything (vidu-demo): a new folder, one holding none of the "
        "files the demo writes, or an earlier demo's",
    )
    demo_parser.add_argument("--quiet", action="store_true", help="no progress display")
    demo_parser.set_defaults(run=run_demo)

    from vidu_async.testing import serve

    serve_parser = commands.add_parser(
        "serve",
        help="run the embedded Vidu simulator on this machine",
        description="Run the embedded Vidu simulator until Ctrl-C; prints the URL and key to use.",
    )
    serve.add_arguments(serve_parser)
    serve_parser.set_defaults(run=serve.run)
    return parser


def run_demo(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(demo.run(args.dir, quiet=args.quiet, out=sys.stderr))
    except (ConfigurationError, JournalError) as error:  # a folder or a journal not its own
        print(f"vidu-async demo: {error}", file=sys.stderr)
        return EXIT_USAGE
