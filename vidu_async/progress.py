"""The progress display of ``vidu-async submit``: counts, credits, rate, elapsed time and ETA.

Sans-IO at the core. ``ProgressState`` holds what the batch says of itself, its
``BatchSubmitter.snapshot()`` (every job by stage or outcome) and the credits spent, and
``render_line`` / ``render_bar`` / ``render_summary`` turn it into text for a given ``now``, so
every figure is tested without a clock or a terminal. ``ProgressReporter`` owns the output: a
live bar redrawn in place on a terminal (at most ``max_redraws_per_second`` times a second), one
plain line every ``interval`` seconds otherwise, and a summary on ``close()``. ``quiet=True``
silences everything, the summary included: the results file and the exit status already say how
the batch went. There are no threads and no tasks: the caller calls ``show(snapshot, credits)``
after each event (and on a timer), the reporter decides from its clock whether to draw.

``rate`` is settled jobs per elapsed second over the whole run; the ETA divides the jobs still to
settle by it, and exists only when the total is known. On a narrow terminal the bar shortens its
other parts before the ETA, and ``ProgressReporter.messages`` is where other lines go, so that a
message never lands on the bar's line.
"""

from __future__ import annotations

import io
import shutil
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TextIO

import attrs

from vidu_async.outcome import STATUSES

__all__ = [
    "ProgressReporter",
    "ProgressState",
    "render_bar",
    "render_line",
    "render_summary",
]

_JOB_STATUSES = tuple(s for s in STATUSES if s != "duplicate")
"""The statuses a job settles with (a ``duplicate`` record is about an extra task, not a job)."""
_LIVE_ORDER = (
    "preparing", "reconciling", "waiting", "creating", "created", "queueing", "processing",
    "downloading",
)
_CLEAR_LINE = "\r\x1b[2K"


@attrs.define
class ProgressState:
    """What the display knows about a run: the batch's latest ``snapshot`` and credits.

    ``started`` is a reading of the same clock that ``now`` comes from in the render functions.
    ``total`` is the number of jobs when known up front (a counted jobs file), else ``None``.
    """

    started: float
    total: int | None = None
    by_status: Counter[str] = attrs.field(init=False, factory=Counter)
    """Settled jobs by status (and ``duplicate`` records)."""
    running: Counter[str] = attrs.field(init=False, factory=Counter)
    """Jobs not settled, by stage: ``waiting``, ``creating``, a task state..."""
    credits: int = attrs.field(init=False, default=0)
    """Credits of the tasks this run created."""
    batch_credits: int | None = attrs.field(init=False, default=None)
    """Credits of every task of the batch, earlier runs' included, when told."""

    def observe(self, snapshot: Mapping[str, int], credits: int,
                batch_credits: int | None = None) -> None:
        """Take the batch's ``snapshot()``, the credits this run spent and (optionally) the
        batch's total across runs."""
        self.by_status = Counter({k: n for k, n in snapshot.items() if k in STATUSES and n})
        self.running = Counter({k: n for k, n in snapshot.items() if k not in STATUSES and n})
        self.credits = credits
        self.batch_credits = batch_credits

    @property
    def settled(self) -> int:
        """How many jobs have settled, whatever their status."""
        return sum(self.by_status[s] for s in _JOB_STATUSES)

    def rate(self, now: float) -> float | None:
        """Settled jobs per second since the start, or ``None`` before the first one."""
        elapsed = now - self.started
        if self.settled == 0 or elapsed <= 0:
            return None
        return self.settled / elapsed

    def eta(self, now: float) -> float | None:
        """Seconds until every job has settled at the current rate; ``None`` when unknowable."""
        if self.total is None:
            return None
        remaining = max(self.total - self.settled, 0)
        if remaining == 0:
            return 0.0
        rate = self.rate(now)
        return None if rate is None else remaining / rate


def _duration(seconds: float) -> str:
    """``M:SS`` under an hour, ``H:MM:SS`` from there (rounded to the second)."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


def _rate(per_second: float | None) -> str:
    """Jobs per second, or per minute when under one a second."""
    if per_second is None:
        return "-"
    if per_second >= 1:
        return f"{per_second:.1f}/s"
    return f"{per_second * 60:.1f}/min"


def _counts(counter: Counter[str], order: tuple[str, ...]) -> str:
    """``"10 succeeded, 1 failed"``: the non-zero counts, known keys first in ``order``."""
    keys = [k for k in order if counter[k] > 0]
    keys += sorted(k for k, n in counter.items() if n > 0 and k not in order)
    return ", ".join(f"{counter[k]} {k}" for k in keys)


def _line_parts(state: ProgressState, now: float) -> list[tuple[str, tuple[str | None, ...]]]:
    """The line's parts, each as its name and its forms: full first, then shorter ones; a
    last form of None drops it."""
    head = f"{state.settled}" if state.total is None else f"{state.settled}/{state.total}"
    counts = _counts(state.by_status, STATUSES)
    settled = f"{head} done ({counts})" if counts else f"{head} done"
    parts: list[tuple[str, tuple[str | None, ...]]] = [("settled", (settled, f"{head} done"))]
    running = state.running.total()
    if running:
        parts.append(("running", (
            f"running {running} ({_counts(state.running, _LIVE_ORDER)})", f"running {running}",
            None,
        )))
    parts += [
        ("credits", (f"{state.credits} credits", None)),
        ("rate", (f"rate {_rate(state.rate(now))}", None)),
        ("elapsed", (f"elapsed {_duration(now - state.started)}", None)),
    ]
    if state.total is not None:
        eta = state.eta(now)
        parts.append(("eta", (f"ETA {'-' if eta is None else _duration(eta)}",)))
    return parts


_SHORTER = ("running", "settled", "rate", "elapsed", "credits", "running")
"""The steps by which a narrow terminal's line gets shorter, each one part's next form: the
ETA has no other form."""


def _join(parts: list[tuple[str, tuple[str | None, ...]]], steps: int) -> str:
    taken = _SHORTER[:steps]
    texts = (forms[min(taken.count(name), len(forms) - 1)] for name, forms in parts)
    return " | ".join(text for text in texts if text is not None)


def render_line(state: ProgressState, now: float) -> str:
    """One line of progress, e.g.
    ``12/300 done (10 succeeded, 2 failed) | running 9 (1 waiting, 2 queueing, 6 processing) |
    450 credits | rate 2.1/min | elapsed 5:42 | ETA 2:15:00`` (on one line).

    The running part appears only while jobs are under way, the ETA only when the total is
    known.
    """
    return _join(_line_parts(state, now), 0)


def render_bar(state: ProgressState, now: float, width: int) -> str:
    """``render_line`` behind a ``[####------]`` bar when the total is known, fitted to a
    terminal ``width`` columns wide (at most ``width - 1`` characters, so the line never wraps
    and ``\\r`` can redraw it): the counts' details, the rate, the elapsed time, the credits,
    the running count, then the bar give way before the ETA; only a terminal too narrow for
    the bare count and ETA cuts the line."""
    room = max(width - 1, 0)
    parts = _line_parts(state, now)
    bar = ""
    if state.total:
        cells = max(10, min(30, width // 4))
        filled = min(cells, cells * state.settled // state.total)
        bar = f"[{'#' * filled}{'-' * (cells - filled)}] "
    lines = [_join(parts, steps) for steps in range(len(_SHORTER) + 1)]
    for line in lines:
        if len(bar) + len(line) <= room:
            return bar + line
    return lines[-1][:room]


def render_summary(state: ProgressState, now: float) -> str:
    """The closing line, e.g. ``300 jobs in 1:02:03 (290 succeeded, 10 failed) | 13050 credits |
    rate 4.8/min``; a run that stopped early says ``120 of 300 jobs``, and a batch that spent
    credits in earlier runs ``450 credits this run, 13050 in the batch``."""
    jobs = f"{state.settled}"
    if state.total is not None and state.total != state.settled:
        jobs += f" of {state.total}"
    text = f"{jobs} jobs in {_duration(now - state.started)}"
    counts = _counts(state.by_status, STATUSES)
    if counts:
        text += f" ({counts})"
    credits = f"{state.credits} credits"
    if state.batch_credits is not None and state.batch_credits != state.credits:
        credits += f" this run, {state.batch_credits} in the batch"
    return f"{text} | {credits} | rate {_rate(state.rate(now))}"


class ProgressReporter:
    """Writes a ``ProgressState`` to a text stream (stderr) when the clock says it is time.

    On a terminal (``is_tty``, by default ``stream.isatty()``) a live bar is redrawn in place with
    ``\\r`` and an ANSI clear-line, at most ``max_redraws_per_second`` times a second; elsewhere a
    plain line is written every ``interval`` seconds, the first one ``interval`` after the start.
    ``clock`` must be the clock ``state.started`` was read from. ``width`` fixes the terminal
    width; by default it is asked of the terminal at each redraw, so resizing works.

    Every other line meant for the same terminal goes through ``messages``: the bar is cleared,
    the line written, and the bar drawn again below it, so the two never share a line.
    """

    def __init__(
        self,
        state: ProgressState,
        stream: TextIO,
        *,
        clock: Callable[[], float] = time.monotonic,
        is_tty: bool | None = None,
        quiet: bool = False,
        interval: float = 10.0,
        max_redraws_per_second: float = 10.0,
        width: int | None = None,
    ) -> None:
        self.state = state
        self._stream = stream
        self._clock = clock
        self._tty = stream.isatty() if is_tty is None else is_tty
        self._quiet = quiet
        self._every = 1 / max_redraws_per_second if self._tty else interval
        self._width = width
        self._last_draw: float | None = None if self._tty else state.started
        self._closed = False
        self._bar_shown = False
        self.messages: TextIO = _AroundTheBar(self)
        """A text stream for messages (and logging) on the same terminal as the bar."""

    def show(self, snapshot: Mapping[str, int], credits: int,
             batch_credits: int | None = None) -> None:
        """``state.observe``, then ``update()``."""
        self.state.observe(snapshot, credits, batch_credits)
        self.update()

    def update(self) -> None:
        """Draw if enough time has passed since the last drawing; cheap otherwise."""
        if self._quiet or self._closed:
            return
        now = self._clock()
        if self._last_draw is not None and now - self._last_draw < self._every:
            return
        self._last_draw = now
        self._draw(now)

    def close(self) -> None:
        """Finish the live line and write the summary. Later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        if self._quiet:
            return
        now = self._clock()
        if self._tty:
            self._draw(now)
            self._stream.write("\n")
            self._bar_shown = False
        self._stream.write(render_summary(self.state, now) + "\n")
        self._stream.flush()

    def say(self, lines: str) -> None:
        """Write whole ``lines`` (newline-terminated) where the bar is: above it, never on it."""
        if self._bar_shown:
            self._stream.write(_CLEAR_LINE)
        self._stream.write(lines)
        if self._bar_shown:
            self._draw(self._clock())
        self._stream.flush()

    def _draw(self, now: float) -> None:
        if self._tty:
            width = self._width or shutil.get_terminal_size().columns
            self._stream.write(_CLEAR_LINE + render_bar(self.state, now, width))
            self._bar_shown = True
        else:
            self._stream.write(render_line(self.state, now) + "\n")
        self._stream.flush()


class _AroundTheBar(io.StringIO):
    """The reporter's ``messages``: text is held until a line is complete, then handed to
    ``ProgressReporter.say`` (a ``StringIO`` only to be a ``TextIO``; it stores nothing)."""

    def __init__(self, reporter: ProgressReporter) -> None:
        super().__init__()
        self._reporter = reporter
        self._partial = ""

    def write(self, text: str) -> int:
        self._partial += text
        if "\n" in self._partial:
            lines, _, self._partial = self._partial.rpartition("\n")
            self._reporter.say(lines + "\n")
        return len(text)

    def isatty(self) -> bool:
        return self._reporter._tty
