"""``Recent``: what a client keeps per key or task, bounded however long it runs."""

from __future__ import annotations

import pytest

from vidu_async._keys import REMEMBERED, Recent


@pytest.mark.parametrize(
    ("sets", "kept"),
    [
        ("", ""),
        ("abc", "abc"),
        ("abcd", "bcd"),  # one more: the one set longest ago goes
        ("abca", "bca"),  # set again: the latest
        ("abcad", "cad"),
        ("aaaa", "a"),
    ],
)
def test_recent_keeps_the_last_keys_set(sets: str, kept: str) -> None:
    recent: Recent[str, int] = Recent(3)
    for i, key in enumerate(sets):
        recent[key] = i
    assert "".join(recent) == kept
    assert all(recent[key] == sets.rindex(key) for key in kept)


def test_recent_keeps_the_clients_share_by_default() -> None:
    recent: Recent[int, None] = Recent()
    for i in range(3 * REMEMBERED):
        recent[i] = None
    assert list(recent) == list(range(2 * REMEMBERED, 3 * REMEMBERED))
