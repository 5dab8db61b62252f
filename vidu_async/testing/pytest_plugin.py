"""pytest plugin of vidu-async: the ``fake_vidu`` fixture, a running simulator per test.

Registered through the ``pytest11`` entry point, so it is available wherever vidu-async is
installed; it only defines fixtures, and starts nothing unless a test asks for ``fake_vidu``.
Configure it by overriding ``fake_vidu_options`` (keyword arguments of ``FakeVidu``)::

    @pytest.fixture
    def fake_vidu_options():
        return {"faults": Faults(create=EndpointFaults(server_error=0.1)), "seed": 7}

``fake_vidu`` is an async fixture: it needs pytest-asyncio (used when installed, in strict or
auto mode) or another plugin that runs async fixtures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from vidu_async.testing.server import FakeVidu

try:
    from pytest_asyncio import fixture as _async_fixture
except ImportError:  # another plugin (anyio, ...) runs async fixtures
    _async_fixture = pytest.fixture  # type: ignore[assignment]

__all__ = ["fake_vidu", "fake_vidu_options"]


@pytest.fixture
def fake_vidu_options() -> dict[str, Any]:
    """Keyword arguments for the ``fake_vidu`` fixture's ``FakeVidu``; override to configure."""
    return {}


@_async_fixture
async def fake_vidu(fake_vidu_options: dict[str, Any]) -> AsyncIterator[FakeVidu]:
    """A running ``FakeVidu`` (``.url``, ``.api_key``, ``.stats``), stopped after the test."""
    async with FakeVidu(**fake_vidu_options) as sim:
        yield sim
