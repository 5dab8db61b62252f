"""Fixtures every test module may use."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from vidu_async.testing import FakeVidu


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> Callable[[FakeVidu], None]:
    """Point the command line's environment at a simulator: its key and its URL, and no list
    of other keys (``cli_env(fake)``, undone after the test)."""

    def point(fake: FakeVidu) -> None:
        monkeypatch.setenv("VIDU_API_KEY", fake.api_key)
        monkeypatch.setenv("VIDU_BASE_URL", fake.url)
        monkeypatch.delenv("VIDU_API_KEYS", raising=False)

    return point
