"""What the commands share: the account and its key, the jobs file and its default fields, the
exit codes, and how an option's error reads as a flag."""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO, TypeAlias

import attrs

from vidu_async import capabilities as caps
from vidu_async._http import Account
from vidu_async.batch import account_label
from vidu_async.client import ViduClient
from vidu_async.errors import AuthenticationError, ConfigurationError, ViduError
from vidu_async.jobs import (
    FORMATS,
    JobFormat,
    JobsFileError,
    JsonArrayError,
    check_jobs_file,
    defaults_not_taken,
    sniff_format,
)
from vidu_async.media import is_local
from vidu_async.requests import KINDS
from vidu_async.retry import RetryPolicy

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

HOUR, DAY, WEEK = 3600.0, 86400.0, 604800.0
"""Seconds, for the bounds of the duration flags (``within``)."""


class OneLineParser(argparse.ArgumentParser):
    """A parser whose usage errors are one line on stderr, as the README promises, not the
    usage block: ``prog: error: message (see prog --help)``, exit 2. Subcommands inherit it."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


Commands: TypeAlias = "argparse._SubParsersAction[OneLineParser]"
"""The parser's subcommands, where each module adds its own."""


def add_jobs_arguments(parser: argparse.ArgumentParser) -> None:
    """The jobs file and the flags that give defaults for fields a line leaves out."""
    parser.add_argument(
        "jobs",
        type=Path,
        metavar="JOBS",
        help=f"jobs file: {', '.join(FORMATS)} (JSONL: one object per line with request "
        "fields and an optional custom_id; CSV: a header of field names; text: one prompt a "
        "line), or - for standard input",
    )
    parser.add_argument(
        "--format", choices=("jsonl", "csv", "txt"),
        help="the jobs' format (default: by the file's extension; for - sniffed: { first is "
        "JSONL, a header of field names CSV, else one prompt a line)",
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
    group = parser.add_argument_group("account (key from VIDU_API_KEY or VIDU_API_KEYS)")
    group.add_argument("--base-url", help="API host (default: VIDU_BASE_URL or api.vidu.com)")
    group.add_argument("--auth-scheme", help="the Authorization header's scheme: Token or Bearer "
                       "(some gateways); default: VIDU_AUTH_SCHEME, else Token")


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


@attrs.frozen
class JobsInput:
    """Where a command reads its jobs: a file, or standard input spooled to one (read once:
    a batch reads its jobs twice, to count them and to run them)."""

    path: Path
    fmt: JobFormat | None
    base_dir: Path | None
    """Where relative media paths resolve: None for the file's folder (stdin: the cwd)."""
    name: str
    """How messages name the jobs: the path as given, or ``<stdin>``."""


STDIN = "<stdin>"


def reads_stdin(args: argparse.Namespace) -> bool:
    """Whether the jobs come from standard input (``-``; a file named so is ``./-``)."""
    return str(args.jobs) == "-"


@contextlib.contextmanager
def jobs_input(args: argparse.Namespace, messages: TextIO) -> Iterator[JobsInput]:
    """The command's jobs; for ``-``, standard input spooled to a temporary file (removed
    after), its format from ``--format`` or sniffed (and said on ``messages``)."""
    if not reads_stdin(args):
        yield JobsInput(args.jobs, args.format, None, str(args.jobs))
        return
    with tempfile.TemporaryDirectory(prefix="vidu-stdin-") as folder:
        spool = Path(folder) / "stdin"
        with spool.open("wb") as out:
            shutil.copyfileobj(sys.stdin.buffer, out)
        fmt = args.format
        if fmt is None:
            with spool.open("rb") as handle:
                fmt, why = sniff_format(handle.read(64 * 1024))
            print(f"reading {STDIN} as {fmt}: {why} (--format chooses)", file=messages)
        yield JobsInput(spool, fmt, Path.cwd(), STDIN)


def jobs_or_usage_error(jobs: JobsInput, defaults: Mapping[str, Any]) -> str | None:
    """Why the jobs cannot be run at all (a usage error: missing, a directory, no jobs in
    it, a CSV file without a header, a default flag that ``--type`` never takes...), or None."""
    if unused := defaults_not_taken(defaults):
        return (f"--type {defaults['type']} takes no {', '.join(unused)}: no line would get "
                "it (lines of other endpoints can name their own type)")
    try:
        check_jobs_file(jobs.path, jobs.fmt)
    except JobsFileError as exc:
        if isinstance(exc, JsonArrayError) and jobs.name == STDIN:
            return exc.piped(STDIN)
        return str(exc).replace(str(jobs.path), jobs.name)
    return None


class UsageError(ValueError):
    """A command line (or environment) that cannot work as given: exit 2, one line."""


_SETTINGS = (("base_url", "--base-url", "VIDU_BASE_URL"),
             ("auth_scheme", "--auth-scheme", "VIDU_AUTH_SCHEME"))
"""The account's settings a flag or a variable gives: (its name, its flag, its variable)."""
_ANY_KEY = "placeholder"
"""A key to check the other settings of an account with (the account is never used)."""


def settings_error(args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    """Why the base URL or the auth scheme cannot work, named as the flag or the variable it
    came from (a usage error, not a key's); None when both can."""
    for setting, flag, variable in _SETTINGS:
        given = getattr(args, setting)
        value = given or environ.get(variable)
        if not value:
            continue
        try:
            Account(_ANY_KEY, **{setting: value})
        except ConfigurationError as error:
            name, why = flag if given else variable, str(error)
            return name + why[len(setting):] if why.startswith(setting) else f"{name}: {why}"
    return None


def distinct_keys(keys: Sequence[str]) -> tuple[list[str], list[str]]:
    """``keys`` without repeats or empty entries, and a note on each repeat dropped (by its
    position as given, empty entries counted; never the key): a key given twice is one
    account, whose concurrency and credits it does not double."""
    kept: list[str] = []
    notes: list[str] = []
    for position, key in enumerate(keys, start=1):
        if key and key in kept:
            notes.append(f"VIDU_API_KEYS: key {position} repeats key {keys.index(key) + 1}: "
                         "one account, used once")
        elif key:
            kept.append(key)
    return kept, notes


def clients_from_env(args: argparse.Namespace) -> tuple[list[ViduClient], list[str]]:
    """One client per distinct key in ``VIDU_API_KEYS`` (comma-separated), else one for
    ``VIDU_API_KEY``; and the notes to say on the keys (``distinct_keys``).

    Raises ``UsageError`` for a malformed base URL or auth scheme (``settings_error``), and
    ``ConfigurationError`` naming the variables to set when there is no key.
    """
    if problem := settings_error(args, os.environ):
        raise UsageError(problem)
    keys, notes = distinct_keys([k.strip() for k in os.environ.get("VIDU_API_KEYS", "").split(",")])
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
                     for k in keys[1:])], notes


def clients_or_exit(args: argparse.Namespace, command: str) -> list[ViduClient] | int:
    """``clients_from_env`` (its notes said on stderr), or the exit code once ``command`` said
    on stderr why not: 3 with no key (or a blank one), 2 for a malformed base URL or auth
    scheme (named as its flag, or its variable)."""
    try:
        clients, notes = clients_from_env(args)
    except ConfigurationError as error:
        print(f"{command}: {error}", file=sys.stderr)
        return EXIT_AUTH
    except UsageError as error:  # the base URL, the auth scheme
        print(f"{command}: {error}", file=sys.stderr)
        return EXIT_USAGE
    for note in notes:
        print(f"{command}: {note}", file=sys.stderr)
    return clients


def key_name(position: int, total: int, key: str) -> str:
    """A key for people: its position among the keys and its last four characters."""
    return f"key {position} of {total} (...{key[-4:]})"


def key_names(clients: Sequence[ViduClient]) -> dict[str, str]:
    """Each account's label (the library's safe name for it, as journals record it) -> the
    ``key_name`` a person recognises."""
    return {account_label(c): key_name(n, len(clients), c.account.api_key)
            for n, c in enumerate(clients, start=1)}


def with_key_names(text: str, names: Mapping[str, str]) -> str:
    """``text`` with every account label in it replaced by its key's name."""
    for label, name in names.items():
        text = text.replace(label, name)
    return text


@contextlib.contextmanager
def key_names_in_logs(clients: Sequence[ViduClient]) -> Iterator[None]:
    """While it lasts, the batch's log messages (a key refused mid-run, a pause) name accounts
    as ``key_name`` does instead of by their labels."""
    names = key_names(clients)

    def rename(record: logging.LogRecord) -> bool:
        record.msg = with_key_names(str(record.msg), names)
        if isinstance(record.args, tuple):
            record.args = tuple(with_key_names(a, names) if isinstance(a, str) else a
                                for a in record.args)
        return True

    logger = logging.getLogger("vidu_async.batch")
    logger.addFilter(rename)
    try:
        yield
    finally:
        logger.removeFilter(rename)


async def rejection(clients: list[ViduClient], error: AuthenticationError) -> str:
    """What to tell a person whose key was refused: with several keys, which ones (asking each
    account's credits once), by position and last four characters; never a key's hash."""
    if len(clients) == 1:
        return str(error)
    refused = []
    for position, client in enumerate(clients, start=1):
        try:
            await client.get_credits()
        except AuthenticationError:
            refused.append(key_name(position, len(clients), client.account.api_key))
        except ViduError:
            continue  # not a refusal: this key is not the one to name
    if not refused:
        return str(error)
    verb = "was" if len(refused) == 1 else "were"
    return (f"{' and '.join(refused)} in VIDU_API_KEYS {verb} rejected "
            f"(HTTP {error.status} {error.reason}): check that key and that it belongs to this "
            "host")


def finite_float(text: str) -> float:
    """An argparse ``type`` for a number of seconds or a rate: ``inf`` and ``nan`` read as
    floats but would hang a run or break its arithmetic (argparse names the flag)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def within(low: float, high: float, unit: str, *, above: bool = False
           ) -> Callable[[str], float]:
    """An argparse ``type`` for a finite number from ``low`` (or, with ``above``, more than
    it) to ``high``: a huge poll interval or a tiny rate would hang a run without a word, a
    timeout of 0 would end a wait before it began. ``unit`` ends the range's description."""
    shown = (f"more than {low:g} and at most" if above else f"from {low:g} to") + f" {high:g}"

    def check(text: str) -> float:
        value = finite_float(text)
        if value < low or (above and value == low) or value > high:
            raise argparse.ArgumentTypeError(f"must be {shown} {unit}, got {text!r}")
        return value

    return check


def as_flag(message: str, names: Mapping[str, str] | None = None) -> str:
    """An option check's message (``'poll_interval' must be ...``) with the option named as
    its command-line flag (``--poll-interval must be ...``), or, where flags do not follow the
    field names, as ``names`` names it (a field not in ``names`` stays as it is)."""

    def flag(match: re.Match[str]) -> str:
        field = match[1]
        if names is None:
            return f"--{field.replace('_', '-')} must"
        return f"{names[field]} must" if field in names else match[0]

    return re.sub(r"^'?(\w+)'? must", flag, message)
