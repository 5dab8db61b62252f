"""An embedded Vidu API simulator for tests, demos and benchmarks (it never imports the client).

``FakeVidu`` serves Vidu's endpoints on a local port with a fast, clock-driven task timeline,
credits, expiring download links, signed callbacks and faults injected on demand (``Faults``),
and counts what happened (``SimStats``). The pytest plugin gives the ``fake_vidu`` fixture;
``vidu-async serve`` runs one from the command line.
"""

from vidu_async.testing.config import (
    ENDPOINTS,
    FAULT_KINDS,
    Account,
    EndpointFaults,
    Faults,
    Quirks,
    RateLimit,
    Timeline,
)
from vidu_async.testing.pricing import CREDITS_PER_SECOND, task_cost
from vidu_async.testing.server import DEFAULT_API_KEY, FakeVidu
from vidu_async.testing.state import CANCELED, ManualClock, SimTask
from vidu_async.testing.stats import NO_ANSWER, SimStats

__all__ = [
    "CANCELED",
    "CREDITS_PER_SECOND",
    "DEFAULT_API_KEY",
    "ENDPOINTS",
    "FAULT_KINDS",
    "NO_ANSWER",
    "Account",
    "EndpointFaults",
    "FakeVidu",
    "Faults",
    "ManualClock",
    "Quirks",
    "RateLimit",
    "SimStats",
    "SimTask",
    "Timeline",
    "task_cost",
]
