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


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
@pytest.mark.parametrize("flag", ["--latency", "--processing-seconds", "--link-ttl"])
def test_serve_refuses_a_number_of_seconds_that_is_not_finite(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse(f"{flag}={value}")
    assert f"argument {flag}: must be a finite number, got '{value}'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [("--link-ttl", "0"), ("--rate-limit", "1e9/1")])
async def test_serve_takes_a_link_ttl_of_0_and_any_finite_rate(argv: tuple[str, ...]) -> None:
    stop = asyncio.Event()
    stop.set()  # started, then stopped at once
    assert await serve(parse(*argv), out=io.StringIO(), stop=stop) == 0


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
    ("argv", "said"),
    [
        (("--fault", "explode=0.1"), "--fault 'explode=0.1': expected KIND=P with KIND one of"),
        (("--fault", "reset"), "--fault 'reset': expected KIND=P"),
        (("--fault", "reset=lots"), "--fault 'reset=lots': 'lots' is not a probability"),
        (("--fault", "reset=2"), "--fault reset=P: P must be <= 1.0: 2.0"),
        (("--fault", "reset=0.7", "--fault", "server_error=0.7"),
         "--fault reset=0.7 --fault server_error=0.7: fault probabilities add up to 1.4, "
         "more than 1"),
        (("--rate-limit", "fast"), "--rate-limit 'fast': expected RATE[/BURST], could not "
         "convert string to float: 'fast'"),
        (("--rate-limit", "0"), "--rate-limit '0': expected RATE[/BURST], RATE must be > 0.0: 0.0"),
        (("--rate-limit", "1/0"),
         "--rate-limit '1/0': expected RATE[/BURST], BURST must be >= 1: 0"),
        (("--failure-rate", "2"), "--failure-rate must be <= 1.0: 2.0"),
        (("--credits", "-1"), "--credits must be >= 0: -1"),
        (("--concurrency-limit", "0"), "--concurrency-limit must be >= 1: 0"),
        (("--processing-seconds", "-1"), "--processing-seconds must be >= 0.0: -1.0"),
        (("--retry-after", "-2"), "--retry-after must be >= 0.0: -2.0"),
        (("--latency", "-1"), "--latency must be >= 0.0: -1.0"),
        (("--latency-rate", "1.5"), "--latency-rate must be <= 1.0: 1.5"),
        (("--link-ttl", "-1"), "--link-ttl must be >= 0.0: -1.0"),
        (("--link-ttl", "-0.001"), "--link-ttl must be >= 0.0: -0.001"),
        (("--rate-limit", "inf"),
         "--rate-limit 'inf': expected RATE[/BURST], RATE must be a finite number: inf"),
        (("--rate-limit", "inf/2"),
         "--rate-limit 'inf/2': expected RATE[/BURST], RATE must be a finite number: inf"),
        (("--rate-limit", "nan"),
         "--rate-limit 'nan': expected RATE[/BURST], RATE must be a finite number: nan"),
        (("--port", "65536"), "--port must be 0..65535 (0 picks a free one), got 65536"),
        (("--port", "-1"), "--port must be 0..65535 (0 picks a free one), got -1"),
    ],
)
async def test_serve_refuses_a_bad_value_in_one_line_naming_its_option_with_exit_2(
    argv: tuple[str, ...], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Not the configuration's field (failure_rate), nor a traceback (--credits -1 was one).
    stop = asyncio.Event()
    stop.set()  # a simulator that starts all the same stops at once (exit 0)
    assert await serve(parse(*argv), out=io.StringIO(), stop=stop) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vidu-async serve: {said}")
    assert err.count("\n") == 1 and err.endswith("\n")
