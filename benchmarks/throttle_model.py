"""A discrete-event model of the batch's pacing: no sockets, no sleeping.

C workers share one ``vidu_async.throttle.Throttle`` on a simulated clock; each asks it when to
send, the request reaches the server after half a round trip, and the answer comes back after the
other half. The server answers 429 at random with a given probability (noise), and/or beyond a
token bucket (R a second, bursts of B, a whole-seconds ``Retry-After``). The model runs in a
fraction of a second, so it is how ``throttle.py`` was tuned; the figures to quote come from
``goodput.py`` against the real simulator.

Each worker loops as the batch does: wait while ``max_in_flight`` requests are on their way (for
one's answer), ask ``next_send``, sleep what it says, ask again, send; on a 429 sleep what
``throttled`` returns, then ask again.

    python benchmarks/throttle_model.py
"""

from __future__ import annotations

import heapq
import itertools
import math
import random

from _common import table

from vidu_async.throttle import Throttle

SCENARIOS = [  # name, jobs, bucket (R, B) or None, random 429 share, configured rate, round trip
    ("clean", 1000, None, 0.0, None, 0.05),
    ("5% random 429s", 1000, None, 0.05, None, 0.05),
    ("bucket 30/s", 600, (30.0, 1), 0.0, None, 0.003),
    ("bucket 30/s, rate=30", 600, (30.0, 1), 0.0, 30.0, 0.003),
    ("bucket 20/s burst 20", 300, (20.0, 20), 0.0, None, 0.003),
    ("bucket 5/s", 300, (5.0, 1), 0.0, None, 0.003),
    ("bucket 100/s burst 10", 3000, (100.0, 10), 0.0, None, 0.003),
    ("bucket 30/s + 5% random", 600, (30.0, 1), 0.05, None, 0.003),
    ("bucket 30/s, 50 ms round trip", 600, (30.0, 1), 0.0, None, 0.05),
]

START_RATES = [None, 10.0]


def run(
    jobs: int,
    bucket: tuple[float, int] | None,
    noise: float,
    rate: float | None,
    rtt: float,
    start_rate: float | None = None,
    workers: int = 16,
    seed: int = 1,
) -> tuple[float, int, int]:
    """(seconds, requests, 429s) to get ``jobs`` creates through."""
    rng = random.Random(seed)
    now = 0.0
    throttle = Throttle(
        max_rate=rate, clock=lambda: now, start_rate=start_rate, rng=random.Random(seed)
    )
    limit, burst = bucket if bucket is not None else (math.inf, 1)
    tokens, updated = float(burst), 0.0
    events: list[tuple[float, int, str, float | None, float]] = []
    counter = 0

    def at(when: float, kind: str, retry_after: float | None = None, sent: float = 0.0) -> None:
        nonlocal counter
        counter += 1
        heapq.heappush(events, (when, counter, kind, retry_after, sent))

    for _ in range(workers):
        at(0.0, "want")
    todo, done, requests, refused, in_flight, blocked = jobs, 0, 0, 0, 0, 0
    while events and done < jobs:
        now, _, kind, retry_after, sent = heapq.heappop(events)
        late = rng.uniform(0, 0.0005)  # timers fire a little late
        if kind in ("ok", "429"):
            in_flight -= 1
            for _ in range(blocked):  # waiting for an answer: ask again
                at(now, "want")
            blocked = 0
        if kind == "want" and todo:
            window = throttle.max_in_flight
            if window is not None and in_flight >= window:
                blocked += 1
                continue
            wait = throttle.next_send()
            if wait > 0:
                at(now + wait + late, "want")
                continue
            todo -= 1
            in_flight += 1
            at(now + late, "send", sent=now)
        elif kind == "send":
            requests += 1
            arrival = now + rtt / 2 + rng.uniform(0, 0.0003)
            if bucket is not None:
                tokens = min(float(burst), tokens + (arrival - updated) * limit)
                updated = arrival
            if bucket is not None and tokens < 1:
                at(now + rtt, "429", math.ceil((1 - tokens) / limit), sent)
            elif rng.random() < noise:
                at(now + rtt, "429", sent=sent)
            else:
                tokens -= 1
                at(now + rtt, "ok", sent=sent)
        elif kind == "ok":
            throttle.succeeded(sent)
            done += 1
            at(now, "want")
        elif kind == "429":
            refused += 1
            todo += 1
            at(now + throttle.throttled(retry_after, sent), "want")
    return now, requests, refused


def main() -> None:
    rows = []
    clean = None
    for (name, jobs, bucket, noise, rate, rtt), start in itertools.product(SCENARIOS, START_RATES):
        seconds, requests, refused = run(jobs, bucket, noise, rate, rtt, start)
        if name == "clean":
            clean = seconds
        if bucket is None:
            assert clean is not None  # "clean" is the first scenario
            versus = f"{seconds / clean:.2f}x clean"
        else:
            versus = f"{jobs / bucket[0] / seconds:.3f} of ideal"
        rows.append(
            [name, "-" if start is None else f"{start:g}", jobs,
             "-" if rate is None else f"{rate:g}", f"{seconds:.2f}", versus, refused,
             f"{refused / requests:.1%}"]
        )
    headers = ["scenario", "start_rate", "jobs", "rate", "seconds", "result", "429s", "429 share"]
    print(table(headers, rows))


if __name__ == "__main__":
    main()
