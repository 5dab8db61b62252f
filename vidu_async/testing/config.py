"""How a simulated Vidu behaves: accounts, the task timeline, and the faults it injects on demand.

All configuration is frozen attrs data; the simulator reads it and never changes it.
"""

from __future__ import annotations

import math

import attrs

__all__ = [
    "ENDPOINTS",
    "FAULT_KINDS",
    "Account",
    "EndpointFaults",
    "Faults",
    "Quirks",
    "RateLimit",
    "Timeline",
    "finite",
]

ENDPOINTS = ("create", "query", "cancel", "list_tasks", "credits")
"""The API endpoints faults can be configured on (``files`` and ``/_sim`` never fault)."""

FAULT_KINDS = (
    "quota_exceeded",
    "too_many_requests",
    "system_throttling",
    "server_error",
    "reset",
    "truncated",
    "commit_then_drop",
    "error_after_commit",
)
"""The mutually exclusive faults, in the order a draw walks them; see ``EndpointFaults``."""

_probability = [attrs.validators.ge(0.0), attrs.validators.le(1.0)]
_non_negative = attrs.validators.ge(0.0)


def finite(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    """An attrs validator: ``value`` is a finite number (``inf`` would mean "no limit" or "never"
    where a bound is meant, and sums with it turn into ``nan``)."""
    if not math.isfinite(value):
        raise ValueError(f"'{attribute.name}' must be a finite number: {value}")


@attrs.frozen
class Account:
    """One API key's account: its credit balance and how many tasks may process at once."""

    credits: int = attrs.field(default=100_000, validator=attrs.validators.ge(0))
    concurrency_limit: int = attrs.field(default=5, validator=attrs.validators.ge(1))


@attrs.frozen
class Timeline:
    """How long a task spends in each state (seconds of the simulator's clock) and how it ends.

    A task waits ``created`` seconds before it queues, then starts as soon as one of its account's
    ``concurrency_limit`` slots is free, and processes for ``processing`` seconds. It then fails
    with probability ``failure_rate``, its ``err_code`` drawn from ``failure_codes``.
    """

    created: float = attrs.field(default=0.1, validator=_non_negative)
    processing: float = attrs.field(default=0.8, validator=_non_negative)
    failure_rate: float = attrs.field(default=0.0, validator=_probability)
    failure_codes: tuple[str, ...] = attrs.field(
        default=("InternalServiceFailure", "CreationPolicyViolation"),
        validator=attrs.validators.min_len(1),
    )


@attrs.frozen
class EndpointFaults:
    """Faults injected on one endpoint, each a probability per request.

    At most one of the ``FAULT_KINDS`` fires on a request, so their sum must not exceed 1:

    - ``quota_exceeded``, ``too_many_requests``, ``system_throttling``: 429 with that reason,
      with a ``Retry-After: <retry_after>`` header when ``retry_after`` is set;
    - ``server_error``: 500 ``InternalServiceFailure``, the request not handled;
    - ``reset``: the connection is closed before the request is handled (no answer);
    - ``truncated``: the request is handled, then the answer's body is cut short (the
      ``Content-Length`` promises more than is sent) and the connection closed;
    - ``commit_then_drop`` (create only): the task is created and billed, then the connection is
      closed without an answer;
    - ``error_after_commit``: the request is handled (a create's task made and billed), then
      answered 500 ``InternalServiceFailure`` as if it had failed.

    Independently, ``latency`` seconds (real time, not the simulator's clock) are added before
    handling with probability ``latency_rate``.

    ``hold`` (create only) plays a server that commits a create it received ``hold`` seconds
    (simulator clock) later, whether or not the client is still waiting: the body is read at
    once, the task made and billed once the clock reaches the end of the hold (by a request or
    ``FakeVidu.tick``, stamped with that moment), and only then answered (counted as such even
    to a client that hung up meanwhile: a timeout, a cancel, a crash; its task exists all the
    same).
    """

    quota_exceeded: float = attrs.field(default=0.0, validator=_probability)
    too_many_requests: float = attrs.field(default=0.0, validator=_probability)
    system_throttling: float = attrs.field(default=0.0, validator=_probability)
    server_error: float = attrs.field(default=0.0, validator=_probability)
    reset: float = attrs.field(default=0.0, validator=_probability)
    truncated: float = attrs.field(default=0.0, validator=_probability)
    commit_then_drop: float = attrs.field(default=0.0, validator=_probability)
    error_after_commit: float = attrs.field(default=0.0, validator=_probability)
    retry_after: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(_non_negative)
    )
    latency: float = attrs.field(default=0.0, validator=_non_negative)
    latency_rate: float = attrs.field(default=0.0, validator=_probability)
    hold: float = attrs.field(default=0.0, validator=_non_negative)

    def __attrs_post_init__(self) -> None:
        total = sum(self.rate(kind) for kind in FAULT_KINDS)
        if total > 1.0 + 1e-9:
            raise ValueError(f"fault probabilities add up to {total:g}, more than 1")

    def rate(self, kind: str) -> float:
        """The probability of the fault named ``kind`` (one of ``FAULT_KINDS``)."""
        value: float = getattr(self, kind)
        return value


@attrs.frozen
class Quirks:
    """Which reading of the docs' uncertain points (API.md section 7) the simulator plays; each
    switch is off by default (the documented, most convenient reading).

    - ``list_lag``: seconds (simulator clock) a new task stays out of ``GET /tasks``; it is
      visible to ``GET /tasks/{id}/creations`` at once;
    - ``clock_skew``: seconds added to the server's clock: the ``Date`` header and every
      ``created_at`` it reports or filters by;
    - ``list_without_payload``: list items carry no ``payload`` key;
    - ``paper_paging``: the list reads its page size and page from ``paper.pagesz`` /
      ``paper.page`` (default page size 10) and ignores ``pager.pagesz`` / ``pager.page``; the
      token stays ``pager.page_token``.
    """

    list_lag: float = attrs.field(default=0.0, validator=_non_negative)
    clock_skew: float = 0.0
    list_without_payload: bool = False
    paper_paging: bool = False


@attrs.frozen
class RateLimit:
    """A token bucket per account: ``rate`` requests a second on average, bursts of ``burst``.

    A request finding the bucket empty gets 429 ``TooManyRequests`` with a ``Retry-After`` header.
    """

    rate: float = attrs.field(validator=[finite, attrs.validators.gt(0.0)])
    burst: int = attrs.field(default=1, validator=attrs.validators.ge(1))


_CREATE_ONLY = ("commit_then_drop", "hold")
"""The ``EndpointFaults`` fields that only a create can meet."""


def _create_only(
    instance: Faults, attribute: attrs.Attribute[EndpointFaults], value: EndpointFaults
) -> None:
    for name in _CREATE_ONLY:
        if getattr(value, name):
            raise ValueError(f"{name} only applies to create, not {attribute.name}")


@attrs.frozen
class Faults:
    """Faults per endpoint (see ``EndpointFaults``) and an optional request-rate limit."""

    create: EndpointFaults = EndpointFaults()
    query: EndpointFaults = attrs.field(default=EndpointFaults(), validator=_create_only)
    cancel: EndpointFaults = attrs.field(default=EndpointFaults(), validator=_create_only)
    list_tasks: EndpointFaults = attrs.field(default=EndpointFaults(), validator=_create_only)
    credits: EndpointFaults = attrs.field(default=EndpointFaults(), validator=_create_only)
    rate_limit: RateLimit | None = None

    @classmethod
    def everywhere(cls, faults: EndpointFaults, *, rate_limit: RateLimit | None = None) -> Faults:
        """The same faults on every endpoint (``commit_then_drop`` and ``hold`` on create only)."""
        others = attrs.evolve(faults, **dict.fromkeys(_CREATE_ONLY, 0.0))
        return cls(
            create=faults,
            query=others,
            cancel=others,
            list_tasks=others,
            credits=others,
            rate_limit=rate_limit,
        )

    def for_endpoint(self, endpoint: str) -> EndpointFaults:
        """The faults of ``endpoint`` (one of ``ENDPOINTS``)."""
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {ENDPOINTS}")
        faults: EndpointFaults = getattr(self, endpoint)
        return faults
