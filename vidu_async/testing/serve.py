"""``vidu-async serve``: run the simulator on this machine until Ctrl-C.

It prints the base URL and the key to use as shell exports, e.g.
``export VIDU_BASE_URL=http://127.0.0.1:8123 VIDU_API_KEY=vidu-sim-key``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable
from typing import TextIO

from vidu_async.cli.common import as_flag, finite_float
from vidu_async.testing.config import (
    FAULT_KINDS,
    Account,
    EndpointFaults,
    Faults,
    RateLimit,
    Timeline,
)
from vidu_async.testing.server import DEFAULT_API_KEY, FakeVidu

__all__ = ["add_arguments", "faults_from_args", "run", "serve"]

_MAX_PORT = 65535
_FLAGS = {
    "credits": "--credits",
    "concurrency_limit": "--concurrency-limit",
    "processing": "--processing-seconds",
    "failure_rate": "--failure-rate",
    "retry_after": "--retry-after",
    "latency": "--latency",
    "latency_rate": "--latency-rate",
    "link_ttl": "--link-ttl",
    **{kind: f"--fault {kind}=P: P" for kind in FAULT_KINDS},
}
"""The option that sets each configuration field ``serve`` fills."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``serve``: where to listen, the account, the timeline and the faults."""
    where = parser.add_argument_group("server")
    where.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    where.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (0)")
    where.add_argument("--api-key", default=DEFAULT_API_KEY, help="the key clients must send")
    where.add_argument(
        "--auth-scheme", default="Token", help="Authorization scheme: Token (default) or Bearer"
    )
    where.add_argument("--seed", type=int, default=0, help="seed of faults and outcomes (0)")

    account = parser.add_argument_group("account and tasks")
    account.add_argument("--credits", type=int, default=Account().credits, help="credit balance")
    account.add_argument(
        "--concurrency-limit",
        type=int,
        default=Account().concurrency_limit,
        help="tasks processing at once; the rest queue (5)",
    )
    account.add_argument(
        "--processing-seconds",
        type=finite_float,
        default=Timeline().processing,
        help="how long a task processes (0.8)",
    )
    account.add_argument(
        "--failure-rate", type=finite_float, default=0.0,
        help="share of tasks that end failed (0)"
    )
    account.add_argument(
        "--link-ttl", type=finite_float, default=24 * 3600.0,
        help="seconds download links stay valid"
    )

    faults = parser.add_argument_group("faults (on every endpoint)")
    faults.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KIND=P",
        help=f"inject fault KIND with probability P; KIND is one of {', '.join(FAULT_KINDS)} "
        "(commit_then_drop applies to create only); repeatable",
    )
    faults.add_argument(
        "--retry-after", type=finite_float, default=None,
        help="Retry-After seconds on injected 429s"
    )
    faults.add_argument(
        "--latency", type=finite_float, default=0.0, help="seconds of added latency"
    )
    faults.add_argument(
        "--latency-rate", type=finite_float, default=1.0, help="share of requests delayed (1.0)"
    )
    faults.add_argument(
        "--rate-limit",
        default=None,
        metavar="RATE[/BURST]",
        help="token bucket per key: RATE requests a second, bursts of BURST (1)",
    )


def faults_from_args(args: argparse.Namespace) -> Faults:
    """The ``Faults`` the fault options describe; ``ValueError`` naming a bad option."""
    rates: dict[str, float] = {}
    for item in args.fault:
        kind, sep, value = item.partition("=")
        if not sep or kind not in FAULT_KINDS:
            raise ValueError(f"--fault {item!r}: expected KIND=P with KIND one of {FAULT_KINDS}")
        try:
            rates[kind] = float(value)
        except ValueError:
            raise ValueError(f"--fault {item!r}: {value!r} is not a probability") from None
    try:
        endpoint = EndpointFaults(
            retry_after=args.retry_after,
            latency=args.latency,
            latency_rate=args.latency_rate,
            **rates,
        )
    except ValueError as exc:  # one probability out of range, or their sum
        named = as_flag(str(exc), _FLAGS)
        given = " ".join(f"--fault {item}" for item in args.fault)  # a sum names no option
        raise ValueError(named if named != str(exc) else f"{given}: {exc}") from None
    return Faults.everywhere(endpoint, rate_limit=_rate_limit(args.rate_limit))


def _simulator(args: argparse.Namespace) -> FakeVidu:
    """The simulator the options describe (not started); ``ValueError`` naming a bad option."""
    if not 0 <= args.port <= _MAX_PORT:
        raise ValueError(f"--port must be 0..{_MAX_PORT} (0 picks a free one), got {args.port}")
    faults = faults_from_args(args)
    try:
        return FakeVidu(
            args.api_key,
            credits=args.credits,
            concurrency_limit=args.concurrency_limit,
            faults=faults,
            timeline=Timeline(processing=args.processing_seconds,
                              failure_rate=args.failure_rate),
            seed=args.seed,
            auth_scheme=args.auth_scheme,
            link_ttl=args.link_ttl,
            host=args.host,
            port=args.port,
        )
    except ValueError as exc:
        raise ValueError(as_flag(str(exc), _FLAGS)) from None


def _rate_limit(text: str | None) -> RateLimit | None:
    if text is None:
        return None
    rate, _, burst = text.partition("/")
    try:
        return RateLimit(rate=float(rate), burst=int(burst or 1))
    except ValueError as exc:
        named = as_flag(str(exc), {"rate": "RATE", "burst": "BURST"})
        raise ValueError(f"--rate-limit {text!r}: expected RATE[/BURST], {named}") from None


async def serve(
    args: argparse.Namespace,
    *,
    out: TextIO = sys.stdout,
    on_ready: Callable[[FakeVidu], None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run until cancelled (Ctrl-C) or until ``stop`` is set; ``on_ready`` sees the running sim."""
    try:
        sim = _simulator(args)
    except ValueError as exc:
        print(f"vidu-async serve: {exc}", file=sys.stderr)
        return 2
    try:
        await sim.__aenter__()
    except OSError as exc:  # the port is taken, or the host is not this machine's
        print(f"vidu-async serve: cannot listen on {args.host}:{args.port}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 2
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_exit(sim)
        print(f"Simulated Vidu API on {sim.url} (auth: {args.auth_scheme} <key>)", file=out)
        print(f"export VIDU_BASE_URL={sim.url} VIDU_API_KEY={sim.api_key}", file=out)
        print("Press Ctrl-C to stop.", file=out, flush=True)
        if on_ready is not None:
            on_ready(sim)
        await (stop or asyncio.Event()).wait()
    return 0


def run(args: argparse.Namespace) -> int:
    """The ``serve`` command: ``serve(args)`` in a fresh event loop; Ctrl-C stops it cleanly."""
    try:
        return asyncio.run(serve(args))
    except KeyboardInterrupt:
        return 0
