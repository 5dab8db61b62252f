"""What ``submit`` draws while it runs, without a terminal: the ETA kept at every width below 150
columns, messages written around the bar (never on its line), and the credits of this run told
apart from the batch's."""

from __future__ import annotations

import io

from vidu_async.progress import ProgressReporter, ProgressState, render_bar, render_summary

START = 1000.0
CLEAR = "\r\x1b[2K"


def busy_state(total: int | None = 300) -> ProgressState:
    """12 jobs settled, 9 under way, 380 credits, 342 s in: the ETA is 2:16:48."""
    state = ProgressState(started=START, total=total)
    state.observe({"succeeded": 10, "failed": 1, "invalid": 1, "created": 1, "queueing": 3,
                   "processing": 5}, 380)
    return state


def test_the_eta_is_never_cut_and_the_line_never_wraps() -> None:
    state = busy_state()
    for width in range(30, 151):
        bar = render_bar(state, START + 342, width)
        assert bar.endswith("| ETA 2:16:48") and len(bar) <= width - 1, width
    # What gives way first: the details of the counts, the rate, the elapsed time, the credits,
    # the running count, the bar.
    assert [render_bar(state, START + 342, width) for width in (100, 80, 60, 40, 30)] == [
        "[#------------------------] 12/300 done | running 9 | 380 credits | elapsed 5:42 | "
        "ETA 2:16:48",
        "[--------------------] 12/300 done | running 9 | 380 credits | ETA 2:16:48",
        "[---------------] 12/300 done | running 9 | ETA 2:16:48",
        "[----------] 12/300 done | ETA 2:16:48",
        "12/300 done | ETA 2:16:48",
    ]
    assert render_bar(state, START + 342, 10) == "12/300 do"  # nothing fits: cut


def test_a_message_clears_the_bar_and_the_bar_comes_back_below_it() -> None:
    out = io.StringIO()
    clock = [START]
    state = ProgressState(started=START, total=3)
    reporter = ProgressReporter(state, out, clock=lambda: clock[0], is_tty=True, width=80)
    reporter.messages.write("before the bar\n")  # no bar yet: nothing to clear
    reporter.show({"creating": 3}, 0)
    bar = render_bar(state, START, 80)
    assert out.getvalue() == "before the bar\n" + CLEAR + bar
    reporter.messages.write("jobs.jsonl:3: error: ")  # a line is written whole, or not yet
    assert out.getvalue().endswith(bar)
    print("duration: 99", file=reporter.messages)
    assert out.getvalue() == (
        "before the bar\n" + CLEAR + bar + CLEAR + "jobs.jsonl:3: error: duration: 99\n"
        + CLEAR + bar
    )
    reporter.close()
    print("results: r.jsonl", file=reporter.messages)  # after the summary: a plain line
    assert out.getvalue().endswith(render_summary(state, START) + "\nresults: r.jsonl\n")
    assert reporter.messages.isatty()


def test_off_a_terminal_messages_are_plain_lines() -> None:
    out = io.StringIO()
    reporter = ProgressReporter(ProgressState(started=START), out, clock=lambda: START,
                                is_tty=False)
    reporter.show({"creating": 1}, 0)
    print("a warning", file=reporter.messages)
    assert out.getvalue() == "a warning\n"
    assert not reporter.messages.isatty()


def test_the_summary_tells_this_run_s_credits_from_the_batch_s() -> None:
    state = ProgressState(started=START, total=4)
    state.observe({"succeeded": 4}, 90, 180)
    assert render_summary(state, START + 10) == (
        "4 jobs in 0:10 (4 succeeded) | 90 credits this run, 180 in the batch | rate 24.0/min"
    )
    state.observe({"succeeded": 4}, 180, 180)  # a first run: one figure
    assert "| 180 credits | rate" in render_summary(state, START + 10)
