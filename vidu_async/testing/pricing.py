"""What a simulated task costs: made-up tables, per model per second plus a flat fee per call
(not Vidu's real prices; only their shape matters to tests: known at creation, per task).

``viduq2`` at 9 credits a second makes the seed's 5-second reference2video example cost its 45
credits (that call has no flat fee). Off-peak tasks cost half, rounded up; ``is_rec`` (Vidu
writes the prompt) adds 10 credits, as the img2video page says.
"""

from __future__ import annotations

import math

__all__ = ["CREDITS_PER_SECOND", "IS_REC_CREDITS", "ROUTE_FEES", "task_cost"]

CREDITS_PER_SECOND: dict[str, int] = {
    "viduq3-mix": 10,
    "viduq3": 8,
    "viduq2-pro": 10,
    "viduq2": 9,
    "viduq1": 8,
    "vidu2.0": 5,
    "viduq3-pro": 12,
    "viduq3-turbo": 7,
    "viduq2-turbo": 6,
}
ROUTE_FEES: dict[str, int] = {
    "reference2video": 0,
    "subjects": 5,
    "text2video": 3,
    "img2video": 2,
    "start-end2video": 4,
}
"""The flat fee of each call (``subjects``: reference2video's subject form), in credits."""
IS_REC_CREDITS = 10


def task_cost(
    model: str,
    duration: int,
    *,
    off_peak: bool,
    route: str = "reference2video",
    is_rec: bool = False,
) -> int:
    """The credits one task of ``model`` lasting ``duration`` seconds costs on ``route``."""
    full = CREDITS_PER_SECOND[model] * duration + ROUTE_FEES[route]
    full += IS_REC_CREDITS if is_rec else 0
    return math.ceil(full / 2) if off_peak else full
