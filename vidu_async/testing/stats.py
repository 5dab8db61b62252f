"""Counters of what happened inside a simulator, for tests to read (also ``GET /_sim/stats``)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import attrs

__all__ = ["NO_ANSWER", "SimStats"]

NO_ANSWER = 0
"""The status recorded for a request whose connection was dropped without an answer."""


@attrs.define
class SimStats:
    """Live counters, updated by the simulator as it runs; read them, do not modify them.

    ``requests`` counts (endpoint, HTTP status) pairs, ``NO_ANSWER`` (0) standing for a dropped
    connection; ``payloads`` counts the tasks created per non-empty ``payload`` value, so a
    create sent twice shows up in ``duplicate_payloads()``; ``faults`` counts injected faults by
    kind (the ``FAULT_KINDS``, ``latency``, ``rate_limited`` and ``hold``, creates held).
    """

    tasks_created: int = 0
    payloads: Counter[str] = attrs.field(factory=Counter)
    requests: Counter[tuple[str, int]] = attrs.field(factory=Counter)
    faults: Counter[str] = attrs.field(factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    max_processing: int = 0
    """The most tasks one account had processing at the same time."""
    callbacks_delivered: int = 0
    callback_attempts_failed: int = 0
    storage_auth_refused: int = 0
    """Upload ``PUT``s to the pre-signed storage URL refused for carrying ``Authorization``."""
    body_bytes: Counter[str] = attrs.field(factory=Counter)
    """Request body bytes received, by endpoint (what a client's creates cost on the wire)."""

    def duplicate_payloads(self) -> dict[str, int]:
        """The ``payload`` values that more than one created task carried, with their counts."""
        return {payload: n for payload, n in self.payloads.items() if n > 1}

    def requests_to(self, endpoint: str) -> int:
        """How many requests reached ``endpoint``, whatever their answer."""
        return sum(n for (name, _status), n in self.requests.items() if name == endpoint)

    def request_started(self) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def request_finished(self, endpoint: str, status: int, body: int = 0) -> None:
        self.in_flight -= 1
        self.requests[(endpoint, status)] += 1
        self.body_bytes[endpoint] += body

    def to_dict(self) -> dict[str, Any]:
        """The counters as JSON-ready data; ``requests`` nests status under endpoint."""
        requests: dict[str, dict[str, int]] = {}
        for (endpoint, status), n in sorted(self.requests.items()):
            requests.setdefault(endpoint, {})[str(status)] = n
        return {
            "tasks_created": self.tasks_created,
            "payloads": dict(self.payloads),
            "duplicate_payloads": self.duplicate_payloads(),
            "requests": requests,
            "faults": dict(self.faults),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "max_processing": self.max_processing,
            "callbacks_delivered": self.callbacks_delivered,
            "callback_attempts_failed": self.callback_attempts_failed,
            "storage_auth_refused": self.storage_auth_refused,
            "body_bytes": dict(self.body_bytes),
        }
