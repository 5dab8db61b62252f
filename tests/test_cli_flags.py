"""Flags and variables as the README says: a usage error is one line and exit 2 naming the flag
(or the variable) and what it allows, a flag that would do nothing is refused, a key given twice
is one account, and the auth scheme's variable is named where a key is refused."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
from pathlib import Path

import pytest

from vidu_async.cli import main
from vidu_async.cli.common import distinct_keys, settings_error, within
from vidu_async.cli.task import empty_window
from vidu_async.testing import FakeVidu

URL = "https://example.com/ref.png"
NOW = dt.datetime(2026, 5, 10, 12, 0, tzinfo=dt.UTC)


def one_line(capfd: pytest.CaptureFixture[str]) -> str:
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(("flags", "says"), [
    (["submit", "p.txt", "--rate", "abc"], "argument --rate: not a number: 'abc'"),
    (["submit", "p.txt", "--rate", "nan"], "argument --rate: must be a finite number"),
    (["submit", "p.txt", "--visibility-lag", "nan"], "argument --visibility-lag: must be a finite"),
    (["submit", "p.txt", "--max-credits", "1.5"], "argument --max-credits: invalid int value"),
    (["submit", "p.txt", "--duration", "abc"], "argument --duration: invalid int value"),
    (["submit", "p.txt", "--rate", "1e-300"],
     "argument --rate: must be from 0.001 to 10000 requests per second, got '1e-300'"),
    (["submit", "p.txt", "--rate", "0"], "argument --rate: must be from 0.001 to 10000"),
    (["submit", "p.txt", "--poll-interval", "1e300"],
     "argument --poll-interval: must be from 0.01 to 3600 seconds (an hour), got '1e300'"),
    (["submit", "p.txt", "--visibility-lag", "1e9"],
     "argument --visibility-lag: must be from 0 to 86400 seconds (a day), got '1e9'"),
    (["wait", "t1", "--timeout", "0"],
     "argument --timeout: must be more than 0 and at most 604800 seconds (a week), got '0'"),
    (["wait", "t1", "--timeout", "1e9"], "argument --timeout: must be more than 0 and at most"),
    (["tasks", "--since", "yesterday"], "argument --since: not a date, a date-time or an age"),
    (["submit", "p.txt", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["batch", "status"], "the following arguments are required: JOURNAL"),
    ([], "the following arguments are required: COMMAND"),
])
def test_a_bad_flag_value_is_one_line_naming_the_flag_and_exit_2(
    flags: list[str], says: str, capfd: pytest.CaptureFixture[str]
) -> None:
    assert main(flags) == 2
    line = one_line(capfd)
    assert says in line
    # The command's own parser says it; arguments no parser took, the main one.
    named = 0 if "unrecognized" in says else 2 if flags[:1] == ["batch"] else len(flags[:1])
    command = " ".join(["vidu-async", *flags[:named]])
    assert line.startswith(f"{command}: error: ")
    assert line.endswith(f"(see {command} --help)")


@pytest.mark.parametrize(("low", "high", "above", "text", "expected"), [
    (0.01, 3600, False, "0.01", 0.01),
    (0.01, 3600, False, "3600", 3600.0),
    (0.01, 3600, False, "0.001", "must be from 0.01 to 3600 s, got '0.001'"),
    (0.01, 3600, False, "3601", "must be from 0.01 to 3600 s"),
    (0, 604800, True, "0", "must be more than 0 and at most 604800 s, got '0'"),
    (0, 604800, True, "1e-9", 1e-9),
    (0, 604800, True, "-inf", "must be a finite number"),
])
def test_within_keeps_a_number_to_its_range(
    low: float, high: float, above: bool, text: str, expected: float | str
) -> None:
    check = within(low, high, "s", above=above)
    if isinstance(expected, float):
        assert check(text) == expected
    else:
        with pytest.raises(argparse.ArgumentTypeError, match=expected.replace("(", r"\(")):
            check(text)


@pytest.mark.parametrize(("flags", "environ", "says"), [
    ({"auth_scheme": "Tok en"}, {}, "--auth-scheme must be one word such as Token or Bearer"),
    ({}, {"VIDU_AUTH_SCHEME": "Tok en"}, "VIDU_AUTH_SCHEME must be one word"),
    ({"auth_scheme": "Bearer"}, {"VIDU_AUTH_SCHEME": "Tok en"}, None),  # the flag wins
    ({"base_url": "ftp://x"}, {}, "--base-url must be an absolute http(s) URL"),
    ({}, {"VIDU_BASE_URL": "ftp://x"}, "VIDU_BASE_URL must be an absolute http(s) URL"),
    ({"base_url": "http://example.com"}, {},
     "--base-url: refusing to send the API key over plain http to example.com"),
    ({"base_url": "http://127.0.0.1:9"}, {"VIDU_AUTH_SCHEME": "Bearer"}, None),
    ({}, {}, None),
])
def test_a_bad_setting_is_named_as_the_flag_or_the_variable_it_came_from(
    flags: dict[str, str], environ: dict[str, str], says: str | None
) -> None:
    args = argparse.Namespace(**{"base_url": None, "auth_scheme": None, **flags})
    problem = settings_error(args, environ)
    assert problem == says if says is None else problem is not None and problem.startswith(says)


@pytest.mark.parametrize(("flags", "says"), [
    (["--auth-scheme", "Tok en"],
     "--auth-scheme must be one word such as Token or Bearer, got 'Tok en'"),
    (["--base-url", "ftp://x"],
     "--base-url must be an absolute http(s) URL such as https://api.vidu.com, got 'ftp://x'"),
])
async def test_a_malformed_account_flag_is_a_usage_error_not_a_rejected_key(
    cli_sim: FakeVidu, capfd: pytest.CaptureFixture[str], flags: list[str], says: str
) -> None:
    assert await asyncio.to_thread(main, ["credits", *flags]) == 2
    assert one_line(capfd) == f"vidu-async credits: {says}"
    assert sum(cli_sim.stats.requests.values()) == 0


async def test_a_malformed_auth_scheme_variable_is_named_as_the_variable(
    cli_sim: FakeVidu, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIDU_AUTH_SCHEME", "Tok en")
    assert await asyncio.to_thread(main, ["credits"]) == 2
    assert one_line(capfd).startswith("vidu-async credits: VIDU_AUTH_SCHEME must be one word")
    assert sum(cli_sim.stats.requests.values()) == 0


async def test_a_refused_key_names_the_auth_scheme_flag_and_variable(
    cli_sim: FakeVidu, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIDU_API_KEY", "not-the-key")
    assert await asyncio.to_thread(main, ["credits"]) == 3
    line = one_line(capfd)
    assert "HTTP 401" in line and "VIDU_AUTH_SCHEME or --auth-scheme" in line


@pytest.mark.parametrize(("keys", "kept", "notes"), [
    (["a", "b"], ["a", "b"], []),
    (["k", "k"], ["k"], ["VIDU_API_KEYS: key 2 repeats key 1: one account, used once"]),
    (["a", "b", "a", "b", "a"], ["a", "b"], [
        "VIDU_API_KEYS: key 3 repeats key 1: one account, used once",
        "VIDU_API_KEYS: key 4 repeats key 2: one account, used once",
        "VIDU_API_KEYS: key 5 repeats key 1: one account, used once",
    ]),
    # "k1,,k1": positions as given, the empty entry counted (and dropped).
    (["k", "", "k", ""], ["k"], ["VIDU_API_KEYS: key 3 repeats key 1: one account, used once"]),
])
def test_a_key_given_twice_is_one_account(keys: list[str], kept: list[str],
                                          notes: list[str]) -> None:
    assert distinct_keys(keys) == (kept, notes)


async def test_credits_with_a_key_twice_shows_one_account_and_never_the_key(
    cli_sim: FakeVidu, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIDU_API_KEYS", f"{cli_sim.api_key},, {cli_sim.api_key}")
    assert await asyncio.to_thread(main, ["credits"]) == 0
    out, err = capfd.readouterr()
    assert [line.split(":")[0] for line in out.splitlines()] == [
        f"account 1 (key ...{cli_sim.api_key[-4:]})"]
    assert err == "vidu-async credits: VIDU_API_KEYS: key 3 repeats key 1: one account, used once\n"
    assert cli_sim.stats.requests_to("credits") == 1


@pytest.mark.parametrize(("flags", "says"), [
    (["--wait", "--covers"], "--covers only applies with --download DIR"),
    (["--name", "{line}", "--watermarked"],
     "--name, --watermarked only apply with --download DIR: give --download (it implies "
     "--wait), or leave them out"),
])
async def test_download_naming_flags_without_download_are_refused(
    cli_sim: FakeVidu, tmp_path: Path, capfd: pytest.CaptureFixture[str], flags: list[str],
    says: str,
) -> None:
    jobs = tmp_path / "p.txt"
    jobs.write_text("a fox\n")
    args = ["submit", str(jobs), "--model", "viduq2", "--image", URL, "--quiet", "--results",
            str(tmp_path / "r.jsonl"), *flags]
    assert await asyncio.to_thread(main, args) == 2
    assert says in one_line(capfd)
    assert sum(cli_sim.stats.requests.values()) == 0


@pytest.mark.parametrize(("since", "until", "empty"), [
    (NOW - dt.timedelta(days=2), NOW - dt.timedelta(days=3), True),
    (NOW, NOW, True),
    (NOW - dt.timedelta(days=3), NOW - dt.timedelta(days=2), False),
    (NOW, None, False),
    (None, NOW, False),
])
def test_an_inverted_window_selects_nothing(since: dt.datetime | None, until: dt.datetime | None,
                                            empty: bool) -> None:
    assert (empty_window(since, until) is not None) is empty


async def test_tasks_with_an_inverted_window_is_a_usage_error(
    cli_sim: FakeVidu, capfd: pytest.CaptureFixture[str]
) -> None:
    assert await asyncio.to_thread(main, ["tasks", "--since", "2d", "--until", "3d"]) == 2
    line = one_line(capfd)
    assert line.startswith("vidu-async tasks: --since (") and "must be before --until (" in line
    assert cli_sim.stats.requests_to("list_tasks") == 0


def test_the_rate_is_documented_as_every_request_of_the_batch(
    capfd: pytest.CaptureFixture[str]
) -> None:
    assert main(["submit", "--help"]) == 0
    text = " ".join(capfd.readouterr().out.split())
    assert "API requests per second at most, every request of the batch taking a turn" in text
    assert "default: VIDU_AUTH_SCHEME, else Token" in text
