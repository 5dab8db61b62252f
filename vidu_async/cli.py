"""The ``vidu-async`` command line: parse arguments, build objects, print. No logic of its own.

Exit codes: 0 all good, 1 some job failed or was invalid, 2 usage error, 3 missing or rejected
API key before any job ran, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from vidu_async import capabilities as caps
from vidu_async._version import __version__
from vidu_async.jobs import FORMATS, JobLine, detect_format, read_jobs

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse's usage errors and --help
        return int(exc.code or 0)
    try:
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
    group = parser.add_argument_group("defaults for fields a line leaves out")
    group.add_argument("--model", choices=list(caps.MODELS), help="model name")
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
    group.add_argument("--callback-url")
    group.add_argument("--payload")


_DEFAULT_FIELDS = (
    "model", "images", "videos", "duration", "resolution", "aspect_ratio", "movement_amplitude",
    "seed", "bgm", "audio", "off_peak", "watermark", "wm_position", "wm_url", "meta_data",
    "callback_url", "payload",
)


def request_defaults(args: argparse.Namespace) -> dict[str, Any]:
    """The request fields given as flags, local media paths made absolute (from the cwd)."""
    found = {n: getattr(args, n) for n in _DEFAULT_FIELDS if getattr(args, n) is not None}
    for key in ("images", "videos"):
        if key in found:
            found[key] = [_absolute_if_local(item) for item in found[key]]
    return found


def _absolute_if_local(item: str) -> str:
    if item.lower().startswith(("http://", "https://", "data:")):
        return item
    return str(Path(item).expanduser().resolve())


def jobs_or_usage_error(args: argparse.Namespace) -> str | None:
    """Why the jobs file cannot be read at all (a usage error), or None."""
    path: Path = args.jobs
    try:
        detect_format(path)
    except ValueError as exc:
        return str(exc)
    if not path.is_file():
        return f"{path}: no such file"
    return None


def report_line(item: JobLine, path: Path, out: TextIO) -> None:
    """One line's problems and warnings, for people: ``jobs.jsonl:3: duration: ...``."""
    for problem in item.errors:
        print(f"{path}:{item.line}: error: {problem}", file=out)
    for warning in item.warnings:
        print(f"{path}:{item.line}: warning: {warning}", file=out)


def run_validate(args: argparse.Namespace) -> int:
    problem = jobs_or_usage_error(args)
    if problem:
        print(f"vidu-async validate: {problem}", file=sys.stderr)
        return EXIT_USAGE
    total = invalid = 0
    for item in read_jobs(args.jobs, defaults=request_defaults(args)):
        total += 1
        invalid += not item.ok
        report_line(item, args.jobs, sys.stderr)
        if args.json:
            print(json.dumps(item.to_dict(), ensure_ascii=False), flush=True)
    print(
        f"{args.jobs}: {total} job{'s' if total != 1 else ''}, "
        f"{total - invalid} valid, {invalid} invalid",
        file=sys.stderr,
    )
    return EXIT_FAILED if invalid else EXIT_OK
