"""The command line's process-wide garbage-collector settings, tuned for a long batch.

A batch allocates many short-lived containers per create (futures, tasks, parsed answers, journal
records). With CPython's defaults the collector then runs hundreds of times per thousand creates,
and each full collection walks every object the imports made (tens of thousands, never garbage):
pauses of 20-60 ms in the event loop, and 5-8% of the process's CPU per create (measured:
``benchmarks/README.md``, section 1). Only the ``vidu-async`` process itself does this: a
library must not change its host application's collector.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 7000
"""Container allocations (net of frees) between collections of the youngest generation:
ten times CPython's default, so a batch's cycles (failed tasks' tracebacks) wait a little
longer to be freed, at most a few MB, in exchange for a tenth of the collections."""


def tune_for_a_batch() -> None:
    """Move every object alive now (the imports) out of the collector's sight for good, and
    collect the youngest generation less often. Call once, after the imports."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)
