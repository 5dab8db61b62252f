"""A discrete-event model of the batch's pacing against a token bucket: no sockets, no sleeping.

C workers share one ``vidu_async.throttle.Throttle`` on a simulated clock; each asks it when to
send, the request reaches a token bucket (R a second, bursts of B, a 429 with a whole-seconds
``Retry-After`` beyond) after half a round trip, and the answer comes back after the other
half. The model runs in a fraction of a second, so it is how ``throttle.py`` was tuned; the
figures to quote come from ``goodput.py`` against the real simulator, which they track closely.

Each worker loops as ``batch.py`` does: ask ``next_send``, sleep what it says, ask again (so a
pause or a rate change that happens meanwhile is followed), then send.

    python benchmarks/throttle_model.py
"""

from __future__ import annotations

import heapq
import math
import random

from _common import table

from vidu_async.throttle import Throttle

SCENARIOS = [  # jobs, limit R, burst B, configured rate
    (300, 20.0, 1, None),
    (300, 20.0, 20, None),
    (300, 20.0, 1, 20.0),
    (1000, 5.0, 1, None),
    (1000, 50.0, 1, None),
    (3000, 100.0, 10, None),
]


def run(
    jobs: int,
    limit: float,
    burst: int,
    rate: float | None,
    workers: int = 16,
    rtt: float = 0.002,
    seed: int = 1,
) -> tuple[float, int, int]:
    """(seconds, requests, 429s) to get ``jobs`` creates through."""
    rng = random.Random(seed)
    now = 0.0
    throttle = Throttle(max_rate=rate, clock=lambda: now, rng=random.Random(seed))
    tokens, updated = float(burst), 0.0
    events: list[tuple[float, int, str, float | None]] = []
    counter = 0

    def at(when: float, kind: str, retry_after: float | None = None) -> None:
        nonlocal counter
        counter += 1
        heapq.heappush(events, (when, counter, kind, retry_after))

    for _ in range(workers):
        at(0.0, "want")
    todo, done, requests, refused = jobs, 0, 0, 0
    while events and done < jobs:
        now, _, kind, retry_after = heapq.heappop(events)
        jitter = rng.uniform(0, 0.001)  # timers fire a little late
        if kind == "want" and todo:
            wait = throttle.next_send()
            if wait > 0:
                at(now + wait + jitter, "want")
                continue
            todo -= 1
            at(now + jitter, "send")
        elif kind == "send":
            requests += 1
            arrival = now + rtt / 2
            tokens = min(float(burst), tokens + (arrival - updated) * limit)
            updated = arrival
            if tokens >= 1:
                tokens -= 1
                at(now + rtt, "ok")
            else:
                at(now + rtt, "429", math.ceil((1 - tokens) / limit))
        elif kind == "ok":
            throttle.succeeded()
            done += 1
            at(now, "want")
        elif kind == "429":
            refused += 1
            throttle.throttled(retry_after)
            todo += 1
            at(now, "want")
    return now, requests, refused


def main() -> None:
    rows = []
    for jobs, limit, burst, rate in SCENARIOS:
        seconds, requests, refused = run(jobs, limit, burst, rate)
        rows.append(
            [
                jobs,
                f"{limit:g}",
                burst,
                "-" if rate is None else f"{rate:g}",
                f"{seconds / (jobs / limit):.2f}x",
                refused,
                f"{refused / requests:.1%}",
            ]
        )
    print(table(["jobs", "limit R/s", "burst", "rate", "vs ideal", "429s", "429 share"], rows))


if __name__ == "__main__":
    main()
