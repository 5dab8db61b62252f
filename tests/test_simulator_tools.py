"""Starting the simulator without ``FakeVidu``: the pytest plugin and ``vidu-async serve``."""

from __future__ import annotations

import argparse
import asyncio
import io
from typing import Any

import aiohttp
import pytest

from vidu_async.testing import EndpointFaults, FakeVidu, Faults, RateLimit
from vidu_async.testing.serve import add_arguments, faults_from_args, serve


async def get_credits(sim: FakeVidu, key: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Token {key or sim.api_key}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{sim.url}/ent/v2/credits", headers=headers) as resp,
    ):
        return resp.status, await resp.json()


# --- pytest plugin ------------------------------------------------------------------------------


def test_the_plugin_is_registered_through_its_entry_point(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.hasplugin("vidu_async")


async def test_the_fake_vidu_fixture_is_a_running_simulator(fake_vidu: FakeVidu) -> None:
    status, body = await get_credits(fake_vidu)
    assert status == 200
    assert body["remains"][0]["credit_remain"] == fake_vidu.balance()


class TestConfiguredFixture:
    @pytest.fixture
    def fake_vidu_options(self) -> dict[str, Any]:
        return {"api_key": "mine", "faults": Faults(credits=EndpointFaults(server_error=1.0))}

    async def test_fake_vidu_options_configure_it(self, fake_vidu: FakeVidu) -> None:
        status, body = await get_credits(fake_vidu, "mine")
        assert (status, body["reason"]) == (500, "InternalServiceFailure")


# --- vidu-async serve ---------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize("flag", ["--latency", "--processing-seconds", "--link-ttl"])
def test_serve_refuses_a_number_of_seconds_that_is_not_finite(
    flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse(flag, "inf")
    assert f"argument {flag}: must be a finite number, got 'inf'" in capsys.readouterr().err


async def test_serve_prints_the_url_and_key_and_runs_until_stopped() -> None:
    args = parse("--api-key", "s3cret", "--fault", "server_error=1", "--credits", "77")
    out, stop, ready = io.StringIO(), asyncio.Event(), asyncio.Event()
    running: list[FakeVidu] = []

    def on_ready(sim: FakeVidu) -> None:
        running.append(sim)
        ready.set()

    task = asyncio.create_task(serve(args, out=out, on_ready=on_ready, stop=stop))
    await ready.wait()
    [sim] = running
    assert f"export VIDU_BASE_URL={sim.url} VIDU_API_KEY=s3cret" in out.getvalue()
    assert sim.url.startswith("http://127.0.0.1:")
    status, body = await get_credits(sim, "s3cret")
    assert (status, body["reason"]) == (500, "InternalServiceFailure")
    assert sim.balance() == 77

    stop.set()
    assert await task == 0


def test_fault_options_build_faults() -> None:
    args = parse(
        "--fault", "reset=0.1", "--fault", "commit_then_drop=0.2", "--retry-after", "3",
        "--latency", "0.5", "--rate-limit", "4/10",
    )  # fmt: skip
    faults = faults_from_args(args)

    assert faults.create == EndpointFaults(
        reset=0.1, commit_then_drop=0.2, retry_after=3.0, latency=0.5, latency_rate=1.0
    )
    assert faults.query == EndpointFaults(reset=0.1, retry_after=3.0, latency=0.5, latency_rate=1.0)
    assert faults.rate_limit == RateLimit(rate=4.0, burst=10)


@pytest.mark.parametrize(
    "argv",
    [
        ("--fault", "explode=0.1"),
        ("--fault", "reset"),
        ("--fault", "reset=lots"),
        ("--fault", "reset=0.7", "--fault", "server_error=0.7"),
        ("--rate-limit", "fast"),
        ("--failure-rate", "2"),
    ],
)
async def test_serve_refuses_bad_options_with_exit_2(
    argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    assert await serve(parse(*argv)) == 2
    assert "vidu-async serve:" in capsys.readouterr().err
