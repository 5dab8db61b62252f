"""The progress display of ``vidu-async submit``: counts, credits, rate, elapsed time and ETA.

Sans-IO at the core. ``ProgressState`` is fed the batch's events (a task created, a task state
seen while polling, a job settled) and ``render_line`` / ``render_bar`` / ``render_summary`` turn it
into text for a given ``now``, so every figure is tested without a clock or a terminal.
``ProgressReporter`` owns the output: a live bar redrawn in place on a terminal (at most
``max_redraws_per_second`` times a second), one plain line every ``interval`` seconds otherwise,
and a summary on ``close()``. ``quiet=True`` silences everything, the summary included: the
results file and the exit status already say how the batch went. There are no threads and no
tasks: the caller calls ``update()`` after each event (and may on a timer), the reporter decides
from its clock whether to draw.

Credits are counted once per job: provisionally when its task is created, replaced by the figure
the job settles with when that is known (a failed task may be refunded). ``rate`` is settled jobs
per elapsed second over the whole run; the ETA divides the jobs still to settle by it, and exists
only when the total is known.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Callable
from typing import TextIO

import attrs

from vidu_async.outcome import STATUSES, Status
from vidu_async.tasks import TaskState

__all__ = [
    "ProgressReporter",
    "ProgressState",
    "render_bar",
    "render_line",
    "render_summary",
]

_LIVE_ORDER = (TaskState.CREATED, TaskState.QUEUEING, TaskState.PROCESSING)
_CLEAR_LINE = "\r\x1b[2K"


@attrs.define
class _Tracked:
    """A task of a job not yet settled: its last state seen and the credits counted for it."""

    state: str
    credits: int | None


@attrs.define
class ProgressState:
    """What the display knows about a run; mutable, since it accumulates events as they come.

    ``started`` is a reading of the same clock that ``now`` comes from in the render functions.
    ``total`` is the number of jobs when known up front (a counted jobs file), else ``None``.
    ``by_status`` counts settled jobs; ``by_task_state`` counts the tasks of unsettled jobs by
    their last state seen; ``credits`` is the credits spent so far.
    """

    started: float
    total: int | None = None
    by_status: Counter[str] = attrs.field(init=False, factory=Counter)
    by_task_state: Counter[str] = attrs.field(init=False, factory=Counter)
    credits: int = attrs.field(init=False, default=0)
    _tasks: dict[str, _Tracked] = attrs.field(init=False, factory=dict, repr=False)

    @property
    def settled(self) -> int:
        """How many jobs have settled, whatever their status."""
        return self.by_status.total()

    def job_created(self, task_id: str, credits: int | None) -> None:
        """A task was created for a job; ``credits`` is its cost as the create answered it."""
        self._move(task_id, TaskState.CREATED)
        self._set_credits(self._tasks[task_id], credits)

    def task_state(self, task_id: str, state: TaskState | str) -> None:
        """A task was seen in ``state`` (while polling, or from a callback)."""
        self._move(task_id, str(state))

    def job_settled(self, status: Status, credits: int | None, task_id: str | None = None) -> None:
        """A job reached its end for this run. Pass ``task_id`` whenever the job has a task, so
        that its credits are not counted twice and it leaves the live counts."""
        self.by_status[status] += 1
        tracked = self._tasks.pop(task_id, None) if task_id is not None else None
        if tracked is None:
            tracked = _Tracked(state="", credits=None)
        else:
            self.by_task_state[tracked.state] -= 1
        self._set_credits(tracked, credits)

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

    def _move(self, task_id: str, state: str) -> None:
        tracked = self._tasks.get(task_id)
        if tracked is None:
            self._tasks[task_id] = _Tracked(state=state, credits=None)
        else:
            self.by_task_state[tracked.state] -= 1
            tracked.state = state
        self.by_task_state[state] += 1

    def _set_credits(self, tracked: _Tracked, credits: int | None) -> None:
        """Make ``credits`` the figure counted for ``tracked``, replacing any earlier one."""
        if credits is None:
            return
        self.credits += credits - (tracked.credits or 0)
        tracked.credits = credits


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


def _settled_part(state: ProgressState) -> str:
    head = f"{state.settled}" if state.total is None else f"{state.settled}/{state.total}"
    counts = _counts(state.by_status, STATUSES)
    return f"{head} done ({counts})" if counts else f"{head} done"


def render_line(state: ProgressState, now: float) -> str:
    """One line of progress, e.g.
    ``12/300 done (10 succeeded, 2 failed) | running 9 (3 queueing, 6 processing) |
    450 credits | rate 2.1/min | elapsed 5:42 | ETA 2:15:00`` (on one line).

    The running part appears only while tasks are in flight, the ETA only when the total is known.
    """
    parts = [_settled_part(state)]
    running = state.by_task_state.total()
    if running:
        parts.append(f"running {running} ({_counts(state.by_task_state, _LIVE_ORDER)})")
    parts += [
        f"{state.credits} credits",
        f"rate {_rate(state.rate(now))}",
        f"elapsed {_duration(now - state.started)}",
    ]
    if state.total is not None:
        eta = state.eta(now)
        parts.append(f"ETA {'-' if eta is None else _duration(eta)}")
    return " | ".join(parts)


def render_bar(state: ProgressState, now: float, width: int) -> str:
    """``render_line`` behind a ``[####------]`` bar when the total is known, cut to fit a
    terminal ``width`` columns wide (at most ``width - 1`` characters, so the line never wraps
    and ``\\r`` can redraw it)."""
    line = render_line(state, now)
    if state.total:
        cells = max(10, min(30, width // 4))
        filled = min(cells, cells * state.settled // state.total)
        line = f"[{'#' * filled}{'-' * (cells - filled)}] {line}"
    return line[: max(width - 1, 0)]


def render_summary(state: ProgressState, now: float) -> str:
    """The closing line, e.g. ``300 jobs in 1:02:03 (290 succeeded, 10 failed) | 13050 credits |
    rate 4.8/min``; a run that stopped early says ``120 of 300 jobs``."""
    jobs = f"{state.settled}"
    if state.total is not None and state.total != state.settled:
        jobs += f" of {state.total}"
    text = f"{jobs} jobs in {_duration(now - state.started)}"
    counts = _counts(state.by_status, STATUSES)
    if counts:
        text += f" ({counts})"
    return f"{text} | {state.credits} credits | rate {_rate(state.rate(now))}"


class ProgressReporter:
    """Writes a ``ProgressState`` to a text stream (stderr) when the clock says it is time.

    On a terminal (``is_tty``, by default ``stream.isatty()``) a live bar is redrawn in place with
    ``\\r`` and an ANSI clear-line, at most ``max_redraws_per_second`` times a second; elsewhere a
    plain line is written every ``interval`` seconds, the first one ``interval`` after the start.
    ``clock`` must be the clock ``state.started`` was read from. ``width`` fixes the terminal
    width; by default it is asked of the terminal at each redraw, so resizing works.

    Its ``job_created`` / ``task_state`` / ``job_settled`` feed the state and call ``update()``,
    so the reporter can be handed to a batch as its observer.
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

    def job_created(self, task_id: str, credits: int | None) -> None:
        """``state.job_created``, then ``update()``: the reporter is a ``BatchObserver``."""
        self.state.job_created(task_id, credits)
        self.update()

    def task_state(self, task_id: str, state: TaskState | str) -> None:
        """``state.task_state``, then ``update()``."""
        self.state.task_state(task_id, state)
        self.update()

    def job_settled(self, status: Status, credits: int | None, task_id: str | None = None) -> None:
        """``state.job_settled``, then ``update()``."""
        self.state.job_settled(status, credits, task_id)
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
        self._stream.write(render_summary(self.state, now) + "\n")
        self._stream.flush()

    def _draw(self, now: float) -> None:
        if self._tty:
            width = self._width or shutil.get_terminal_size().columns
            self._stream.write(_CLEAR_LINE + render_bar(self.state, now, width))
        else:
            self._stream.write(render_line(self.state, now) + "\n")
        self._stream.flush()
