"""The progress display: figures from fixed states, and when the reporter draws, on a fake clock."""

from __future__ import annotations

import io

import pytest

from vidu_async.progress import (
    ProgressReporter,
    ProgressState,
    render_bar,
    render_line,
    render_summary,
)

START = 1000.0
CLEAR = "\r\x1b[2K"


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def busy_state(total: int | None = 300) -> ProgressState:
    """12 jobs settled (10 succeeded, 1 failed, 1 invalid), 9 under way, 380 credits."""
    state = ProgressState(started=START, total=total)
    state.observe(
        {"succeeded": 10, "failed": 1, "invalid": 1, "created": 1, "queueing": 3,
         "processing": 5},
        380,
    )
    return state


def settle(state: ProgressState, status: str, n: int = 1) -> None:
    """``n`` more jobs settled with ``status`` (as the next snapshot would say)."""
    counts = {**state.by_status, **state.running}
    counts[status] = counts.get(status, 0) + n
    state.observe(counts, state.credits)


BUSY_LINE = (
    "12/300 done (10 succeeded, 1 failed, 1 invalid) | "
    "running 9 (1 created, 3 queueing, 5 processing) | 380 credits | "
    "rate 2.1/min | elapsed 5:42 | ETA 2:16:48"
)


def test_a_fresh_state_renders_zeros_and_no_rate() -> None:
    state = ProgressState(started=START, total=300)
    assert render_line(state, START) == "0/300 done | 0 credits | rate - | elapsed 0:00 | ETA -"
    assert render_summary(state, START) == "0 of 300 jobs in 0:00 | 0 credits | rate -"


def test_a_busy_state_renders_every_figure() -> None:
    # 12 settled in 342 s: 2.105 jobs/min; 288 left at that rate take 288 * 28.5 s = 2:16:48.
    assert render_line(busy_state(), START + 342) == BUSY_LINE


def test_without_a_total_there_is_no_eta() -> None:
    assert render_line(busy_state(total=None), START + 342) == (
        "12 done (10 succeeded, 1 failed, 1 invalid) | "
        "running 9 (1 created, 3 queueing, 5 processing) | 380 credits | "
        "rate 2.1/min | elapsed 5:42"
    )


def test_stages_show_in_the_order_of_a_job_s_life_unknown_states_last() -> None:
    state = ProgressState(started=START)
    state.observe({"paused": 1, "processing": 1, "archived": 1, "waiting": 2, "creating": 1,
                   "downloading": 1, "zero": 0}, 0)
    assert ("running 7 (2 waiting, 1 creating, 1 processing, 1 downloading, 1 archived, "
            "1 paused)") in render_line(state, START)


@pytest.mark.parametrize(
    ("settled", "seconds", "shown"),
    [(30, 10, "3.0/s"), (10, 10, "1.0/s"), (5, 10, "30.0/min"), (1, 3600, "0.0/min")],
)
def test_rate_is_per_second_or_per_minute_when_slow(
    settled: int, seconds: float, shown: str
) -> None:
    state = ProgressState(started=START)
    settle(state, "succeeded", settled)
    assert state.rate(START + seconds) == pytest.approx(settled / seconds)
    assert f"rate {shown} |" in render_line(state, START + seconds)


def test_eta_divides_the_remaining_jobs_by_the_rate() -> None:
    state = ProgressState(started=START, total=100)
    assert state.eta(START + 10) is None  # nothing settled yet: no rate
    settle(state, "succeeded", 25)
    assert state.eta(START + 50) == pytest.approx(150.0)  # 0.5 jobs/s, 75 left
    assert "ETA 2:30" in render_line(state, START + 50)
    settle(state, "failed", 75)
    assert state.eta(START + 60) == 0.0
    assert ProgressState(started=START).eta(START + 60) is None  # total unknown


def test_long_durations_show_hours() -> None:
    state = ProgressState(started=START)
    assert "elapsed 1:00:00" in render_line(state, START + 3599.6)
    assert "elapsed 59:59" in render_line(state, START + 3599.4)
    assert "elapsed 27:46:40" in render_line(state, START + 100_000)


def test_a_duplicate_record_is_shown_but_is_no_job() -> None:
    state = ProgressState(started=START, total=2)
    state.observe({"succeeded": 2, "duplicate": 1}, 90)
    assert state.settled == 2 and state.eta(START + 1) == 0.0
    assert render_line(state, START + 1).startswith("2/2 done (2 succeeded, 1 duplicate) | "
                                                    "90 credits")


def test_the_bar_fills_with_progress_and_fits_the_width() -> None:
    state = busy_state()
    now = START + 342
    bar = render_bar(state, now, 100)
    # 25 cells (a quarter of the width); 12/300 of them is one. The details of the counts and
    # the rate make room for the ETA.
    assert bar == "[#" + "-" * 24 + "] 12/300 done | running 9 | 380 credits | elapsed 5:42 | " \
        "ETA 2:16:48"
    assert len(render_bar(state, now, 40)) <= 39
    assert render_bar(state, now, 400) == "[#" + "-" * 29 + "] " + BUSY_LINE
    settle(state, "succeeded", 288)
    assert render_bar(state, now, 400).startswith("[" + "#" * 30 + "] 300/300 done")


def test_without_a_total_the_bar_is_the_line() -> None:
    state = busy_state(total=None)
    assert render_bar(state, START + 342, 60) == "12 done | running 9 | 380 credits | elapsed 5:42"


def test_the_summary_names_a_run_that_stopped_early() -> None:
    assert render_summary(busy_state(), START + 342) == (
        "12 of 300 jobs in 5:42 (10 succeeded, 1 failed, 1 invalid) | 380 credits | rate 2.1/min"
    )
    assert render_summary(busy_state(total=12), START + 342).startswith("12 jobs in 5:42 (")
    assert render_summary(busy_state(total=None), START + 342).startswith("12 jobs in 5:42 (")


def test_a_terminal_gets_a_bar_redrawn_at_most_ten_times_a_second() -> None:
    clock, out = FakeClock(), io.StringIO()
    state = ProgressState(started=START, total=2)
    reporter = ProgressReporter(state, out, clock=clock, is_tty=True, width=80)
    reporter.update()  # the first event draws at once
    for step in range(1, 64):  # an event every 1/64 s (exact in binary) for a second
        clock.now = START + step / 64
        reporter.update()
    # A redraw once 0.1 s have passed: every 7th event (7/64 s), 10 in the second.
    assert out.getvalue().count(CLEAR) == 10
    assert "\n" not in out.getvalue()

    state.observe({"succeeded": 2}, 10)
    clock.now = START + 2
    reporter.close()
    final_bar = render_bar(state, START + 2, 80)
    assert out.getvalue().endswith(
        CLEAR + final_bar + "\n" + render_summary(state, START + 2) + "\n"
    )


def test_elsewhere_a_plain_line_every_interval() -> None:
    clock, out = FakeClock(), io.StringIO()  # StringIO is no terminal: plain by default
    state = ProgressState(started=START, total=3)
    reporter = ProgressReporter(state, out, clock=clock, interval=10)
    expected = []
    for at in (1, 5, 9.9, 10, 15, 19.9, 20.5, 21):
        clock.now = START + at
        settle(state, "succeeded")
        reporter.update()
        if at in (10, 20.5):
            expected.append(render_line(state, clock.now) + "\n")
    clock.now = START + 22
    reporter.close()
    expected.append(render_summary(state, START + 22) + "\n")
    assert out.getvalue() == "".join(expected)
    assert CLEAR not in out.getvalue()


@pytest.mark.parametrize("is_tty", [True, False])
def test_quiet_prints_nothing_not_even_the_summary(is_tty: bool) -> None:
    clock, out = FakeClock(), io.StringIO()
    state = ProgressState(started=START, total=1)
    reporter = ProgressReporter(state, out, clock=clock, is_tty=is_tty, quiet=True, interval=1)
    for at in (0, 5, 50):
        clock.now = START + at
        reporter.update()
    settle(state, "succeeded")
    reporter.close()
    assert out.getvalue() == ""


def test_close_writes_once_and_later_updates_are_ignored() -> None:
    clock, out = FakeClock(), io.StringIO()
    reporter = ProgressReporter(ProgressState(started=START), out, clock=clock, interval=1)
    reporter.close()
    written = out.getvalue()
    clock.now = START + 100
    reporter.update()
    reporter.close()
    assert out.getvalue() == written == "0 jobs in 0:00 | 0 credits | rate -\n"


def test_show_takes_the_snapshot_and_draws() -> None:
    clock, out = FakeClock(), io.StringIO()
    state = ProgressState(started=START, total=2)
    reporter = ProgressReporter(state, out, clock=clock, is_tty=True, width=200)
    reporter.show({"creating": 2}, 0)
    assert out.getvalue() == CLEAR + render_bar(state, START, 200)
    clock.now = START + 1
    reporter.show({"processing": 1, "succeeded": 1}, 20)
    clock.now = START + 2
    reporter.show({"succeeded": 2}, 40)
    assert (state.settled, state.credits, state.running.total()) == (2, 40, 0)
    assert out.getvalue().count(CLEAR) == 3
    assert out.getvalue().endswith(CLEAR + render_bar(state, START + 2, 200))
