"""What a simulated task costs: a small per-model, per-second table (not Vidu's real prices).

``viduq2`` at 9 credits a second makes the seed's 5-second example cost its 45 credits.
Off-peak tasks cost half, rounded up.
"""

from __future__ import annotations

import math

__all__ = ["CREDITS_PER_SECOND", "task_cost"]

CREDITS_PER_SECOND: dict[str, int] = {
    "viduq3-mix": 10,
    "viduq3": 8,
    "viduq2-pro": 10,
    "viduq2": 9,
    "viduq1": 8,
    "vidu2.0": 5,
}


def task_cost(model: str, duration: int, *, off_peak: bool) -> int:
    """The credits one task of ``model`` lasting ``duration`` seconds costs."""
    full = CREDITS_PER_SECOND[model] * duration
    return math.ceil(full / 2) if off_peak else full
