"""Vidu's error answer, as the simulator gives it: one exception type and one body shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["SimError", "error_body"]


class SimError(Exception):
    """Raised inside the simulator to answer ``status`` with Vidu's error body.

    ``headers`` go on the answer too (``Retry-After`` on a 429).
    """

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__(f"{status} {reason}: {message}")


def error_body(status: int, reason: str, message: str, trace_id: str) -> dict[str, Any]:
    """``{"code", "reason", "message", "metadata": {"trace_id"}}``: every error Vidu answers."""
    return {
        "code": status,
        "reason": reason,
        "message": message,
        "metadata": {"trace_id": trace_id},
    }
