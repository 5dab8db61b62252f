"""How an option check's message names its option: as the flag its field's name makes, or as an
explicit map names it (the simulator's flags do not follow its configuration's fields)."""

from __future__ import annotations

import pytest

from vidu_async.cli.common import as_flag

SERVE_FLAGS = {"failure_rate": "--failure-rate", "reset": "--fault reset=P: P"}


@pytest.mark.parametrize(
    ("message", "names", "expected"),
    [
        ("'poll_interval' must be > 0: 0", None, "--poll-interval must be > 0: 0"),
        ("max_credits must be >= 0, got -1", None, "--max-credits must be >= 0, got -1"),
        ("'rate' must be > 0.0: 0.0", None, "--rate must be > 0.0: 0.0"),
        ("the journal is taken", None, "the journal is taken"),
        ("a 'rate' must be > 0", None, "a 'rate' must be > 0"),
        ("'failure_rate' must be <= 1.0: 1.5", SERVE_FLAGS, "--failure-rate must be <= 1.0: 1.5"),
        ("'reset' must be <= 1.0: 2.0", SERVE_FLAGS, "--fault reset=P: P must be <= 1.0: 2.0"),
        ("'rate' must be > 0.0: 0.0", {"rate": "RATE"}, "RATE must be > 0.0: 0.0"),
        ("'latency' must be >= 0.0: -1.0", SERVE_FLAGS, "'latency' must be >= 0.0: -1.0"),
        ("fault probabilities add up to 1.4", SERVE_FLAGS, "fault probabilities add up to 1.4"),
    ],
)
def test_a_field_named_first_is_named_as_its_flag(
    message: str, names: dict[str, str] | None, expected: str
) -> None:
    assert as_flag(message, names) == expected
