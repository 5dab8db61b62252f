"""Fixtures every test module may use."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import settings

from vidu_async.testing import FakeVidu

# Property tests draw the same examples on every run (a bug they can catch fails CI every time);
# ``pytest --hypothesis-profile=explore --hypothesis-seed=N`` draws new ones to look further.
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("repeatable")


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> Callable[[FakeVidu], None]:
    """Point the command line's environment at a simulator: its key and its URL, and no list
    of other keys (``cli_env(fake)``, undone after the test)."""

    def point(fake: FakeVidu) -> None:
        monkeypatch.setenv("VIDU_API_KEY", fake.api_key)
        monkeypatch.setenv("VIDU_BASE_URL", fake.url)
        monkeypatch.delenv("VIDU_API_KEYS", raising=False)

    return point
