"""Response types (vidu_async.tasks): the spec's examples, unknown fields, type errors,
timestamps and the correlation envelope."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vidu_async.errors import ResponseFormatError
from vidu_async.tasks import (
    CORRELATION_OVERHEAD,
    CORRELATION_PREFIX,
    Creation,
    CreditBalance,
    Credits,
    Task,
    TaskPage,
    TaskResult,
    TaskState,
    is_terminal,
    new_correlation_key,
    parse_state,
    parse_timestamp,
    split_payload,
    wrap_payload,
)

UTC = dt.UTC

# The seed's response example, verbatim (reference2video.seed.txt, "响应示例", its "data" string).
SEED_RESPONSE = (
    '{\r\n    "task_id": "911084878697623552",\r\n    "type": "character2video",\r\n'
    '    "state": "created",\r\n    "model": "viduq2",\r\n    "style": "general",\r\n'
    '    "prompt": "一只可爱的@cat在草地上奔跑,阳光明媚,画面温馨",\r\n    "images": [\r\n'
    '        "https://picx.zhimg.com/v2-4911df093b40ee5511938a1ac2a5cdc4_r.jpg"\r\n    ],\r\n'
    '    "duration": 5,\r\n    "seed": 1830691647,\r\n    "aspect_ratio": "16:9",\r\n'
    '    "resolution": "720p",\r\n    "movement_amplitude": "auto",\r\n'
    '    "created_at": "2026-01-20T06:37:57.371761937Z",\r\n    "credits": 45,\r\n'
    '    "payload": "",\r\n    "cus_priority": 0,\r\n    "off_peak": false,\r\n'
    '    "watermark": false,\r\n    "is_rec": false,\r\n    "wm_position": "unspecified",\r\n'
    '    "wm_url": "",\r\n    "meta_data": "",\r\n    "client_request_id": ""\r\n}'
)

# API.md section 2.
QUERY_RESPONSE: dict[str, Any] = {
    "id": "911084878697623552",
    "state": "success",
    "err_code": "",
    "credits": 45,
    "payload": "",
    "bgm": False,
    "off_peak": False,
    "creations": [
        {
            "id": "c1",
            "url": "https://cdn.example/v.mp4",
            "cover_url": "https://cdn.example/v.jpg",
            "watermarked_url": "https://cdn.example/v-wm.mp4",
        }
    ],
}

# API.md section 4.
CREDITS_RESPONSE: dict[str, Any] = {
    "remains": [
        {
            "type": "metered",
            "credit_remain": 1000,
            "concurrency_limit": 5,
            "current_concurrency": 2,
            "queue_count": 7,
        }
    ],
    "packages": [{"name": "starter", "credit": 500}],
}

KEY = "0123456789abcdef0123456789abcdef"


# --- the spec's examples -------------------------------------------------------------------------


def test_seed_response_parses_every_field() -> None:
    data = json.loads(SEED_RESPONSE)
    task = Task.from_dict(data)
    assert task == Task(
        task_id="911084878697623552",
        type="character2video",
        state=TaskState.CREATED,
        model="viduq2",
        style="general",
        prompt="一只可爱的@cat在草地上奔跑,阳光明媚,画面温馨",
        images=("https://picx.zhimg.com/v2-4911df093b40ee5511938a1ac2a5cdc4_r.jpg",),
        duration=5,
        seed=1830691647,
        aspect_ratio="16:9",
        resolution="720p",
        movement_amplitude="auto",
        created_at=dt.datetime(2026, 1, 20, 6, 37, 57, 371761, tzinfo=UTC),
        credits=45,
        payload="",
        correlation_key=None,
        cus_priority=0,
        off_peak=False,
        watermark=False,
        is_rec=False,
        wm_position="unspecified",
        wm_url="",
        meta_data="",
        client_request_id="",
        extra={},
    )
    assert task.state is TaskState.CREATED
    assert task.created_at is not None
    assert task.created_at.utcoffset() == dt.timedelta(0)
    assert task.raw == data


def test_query_example_parses() -> None:
    result = TaskResult.from_dict(QUERY_RESPONSE)
    assert result == TaskResult(
        id="911084878697623552",
        state=TaskState.SUCCESS,
        err_code="",
        credits=45,
        payload="",
        bgm=False,
        off_peak=False,
        creations=(
            Creation(
                id="c1",
                url="https://cdn.example/v.mp4",
                cover_url="https://cdn.example/v.jpg",
                watermarked_url="https://cdn.example/v-wm.mp4",
            ),
        ),
    )
    assert result.task_id == result.id
    assert result.is_terminal
    assert result.succeeded
    assert result.creations[0].raw == QUERY_RESPONSE["creations"][0]


def test_failed_result_is_terminal_but_not_succeeded() -> None:
    result = TaskResult.from_dict(
        {"id": "1", "state": "failed", "err_code": "CreationPolicyViolation"}
    )
    assert result.is_terminal
    assert not result.succeeded
    assert result.err_code == "CreationPolicyViolation"
    assert result.creations == ()


def test_list_page_parses_items_and_keeps_their_other_fields() -> None:
    item = {
        "id": "7",
        "state": "processing",
        "model": "viduq3",
        "prompt": "a cat",
        "payload": wrap_payload(KEY, "job-7"),
        "created_at": "2026-01-20T06:37:57Z",
        "creations": [],
        "images": ["https://example.com/a.png"],
        "duration": 5,
    }
    page = TaskPage.from_dict({"tasks": [item, {"id": "8"}], "next_page_token": "abc"})
    assert page.next_page_token == "abc"
    assert [t.id for t in page.tasks] == ["7", "8"]
    first = page.tasks[0]
    assert first.state is TaskState.PROCESSING
    assert (first.model, first.prompt) == ("viduq3", "a cat")
    assert (first.correlation_key, first.payload) == (KEY, "job-7")
    assert first.created_at == dt.datetime(2026, 1, 20, 6, 37, 57, tzinfo=UTC)
    assert first.extra == {"images": ["https://example.com/a.png"], "duration": 5}
    assert not first.is_terminal


def test_empty_list_page() -> None:
    page = TaskPage.from_dict({"tasks": [], "next_page_token": ""})
    assert page == TaskPage()


def test_credits_example_parses() -> None:
    credits = Credits.from_dict(CREDITS_RESPONSE)
    assert credits.remains == (
        CreditBalance(
            type="metered",
            credit_remain=1000,
            concurrency_limit=5,
            current_concurrency=2,
            queue_count=7,
        ),
    )
    assert credits.packages == ({"name": "starter", "credit": 500},)
    assert credits.extra == {}


# --- unknown and missing fields ------------------------------------------------------------------


def test_unknown_fields_land_in_extra_at_every_level() -> None:
    data = json.loads(SEED_RESPONSE) | {"new_thing": {"nested": [1, None]}, "another": None}
    assert Task.from_dict(data).extra == {"new_thing": {"nested": [1, None]}, "another": None}

    query = QUERY_RESPONSE | {
        "creations": [QUERY_RESPONSE["creations"][0] | {"duration": 5.0, "hd": True}],
        "trace": "t-1",
    }
    result = TaskResult.from_dict(query)
    assert result.extra == {"trace": "t-1"}
    assert result.creations[0].extra == {"duration": 5.0, "hd": True}
    assert result.creations[0].url == "https://cdn.example/v.mp4"

    page = TaskPage.from_dict({"tasks": [], "next_page_token": "", "total": 3})
    assert page.extra == {"total": 3}

    balance = Credits.from_dict({"remains": [{"type": "x", "unit": "credit"}], "plan": "pro"})
    assert balance.extra == {"plan": "pro"}
    assert balance.remains[0].extra == {"unit": "credit"}


def test_missing_and_null_fields_get_defaults() -> None:
    bare = Task.from_dict({"task_id": "1"})
    assert bare == Task(task_id="1")
    assert (bare.state, bare.payload, bare.correlation_key, bare.images) == ("", "", None, ())
    assert (bare.credits, bare.created_at, bare.off_peak) == (None, None, False)

    nulls = dict.fromkeys(json.loads(SEED_RESPONSE), None) | {"task_id": "1"}
    assert Task.from_dict(nulls) == bare

    result = TaskResult.from_dict({"id": "2", "creations": None, "credits": None})
    assert result == TaskResult(id="2")
    assert not result.is_terminal


@pytest.mark.parametrize("position", [3, "unspecified", "3"])
def test_wm_position_accepts_integer_or_string(position: int | str) -> None:
    assert Task.from_dict({"task_id": "1", "wm_position": position}).wm_position == position


# --- states --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "terminal"),
    [
        ("created", False),
        ("queueing", False),
        ("processing", False),
        ("success", True),
        ("failed", True),
    ],
)
def test_known_states(value: str, terminal: bool) -> None:
    state = parse_state(value)
    assert isinstance(state, TaskState)
    assert state == value
    assert is_terminal(state) is terminal
    assert is_terminal(value) is terminal
    assert TaskResult.from_dict({"id": "1", "state": value}).is_terminal is terminal


@pytest.mark.parametrize("value", ["cancelled", "SUCCESS", "scheduled", ""])
def test_unknown_state_stays_a_string_and_is_not_terminal(value: str) -> None:
    state = parse_state(value)
    assert type(state) is str
    assert state == value
    assert not is_terminal(state)
    result = TaskResult.from_dict({"id": "1", "state": value})
    assert type(result.state) is str
    assert result.state == value
    assert not result.is_terminal
    assert not result.succeeded


# --- wrong types ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "data", "field"),
    [
        (Task, {}, "task_id"),
        (Task, {"task_id": None}, "task_id"),
        (Task, {"task_id": ""}, "task_id"),
        (Task, {"task_id": 911084878697623552}, "task_id"),
        (Task, {"task_id": "1", "credits": "45"}, "credits"),
        (Task, {"task_id": "1", "state": 1}, "state"),
        (Task, {"task_id": "1", "payload": {"k": 1}}, "payload"),
        (Task, ["task_id", "1"], "response"),
        (TaskResult, {"state": "success"}, "id"),
        (TaskResult, {"id": "1", "err_code": 500}, "err_code"),
        (TaskResult, {"id": "1", "creations": {"id": "c"}}, "creations"),
        (TaskResult, {"id": "1", "creations": ["https://x/v.mp4"]}, "creations[0]"),
        (TaskResult, {"id": "1", "creations": [{}, {"url": 5}]}, "creations[1].url"),
        (Task, {"task_id": "1", "credits": 45.0}, "credits"),
        (Task, {"task_id": "1", "state": True}, "state"),
        (TaskResult, {"id": "1", "state": ["success"]}, "state"),
        (TaskResult, {"id": "1", "credits": "45"}, "credits"),
        (TaskResult, {"id": "1", "payload": 7}, "payload"),
        (
            TaskPage,
            {"tasks": [{"id": "1"}, {"id": "2", "state": None, "credits": True}]},
            "tasks[1].credits",
        ),
        (TaskPage, {"tasks": [{"state": "success"}]}, "tasks[0].id"),
        (TaskPage, {"next_page_token": 2}, "next_page_token"),
        (Credits, {"remains": [{"credit_remain": "1000"}]}, "remains[0].credit_remain"),
        (Credits, {"packages": {"name": "starter"}}, "packages"),
        (Creation, {"cover_url": ["a"]}, "cover_url"),
    ],
)
def test_wrong_type_names_the_field(cls: type[Task], data: Any, field: str) -> None:
    with pytest.raises(ResponseFormatError) as caught:
        cls.from_dict(data)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert "expected" in str(caught.value) or "missing" in str(caught.value)


def test_error_message_says_what_was_expected_and_got() -> None:
    with pytest.raises(
        ResponseFormatError, match=r"^credits: expected an integer, got a string '45'$"
    ):
        Task.from_dict({"task_id": "1", "credits": "45"})
    with pytest.raises(
        ResponseFormatError, match=r"^creations\[0\]: expected an object, got a string 'x'$"
    ):
        TaskResult.from_dict({"id": "1", "creations": ["x"]})


# Fields the client only reports (mostly echoes of the request): a 200 create answer with a task
# id is a billed task, so an odd echo is read leniently or dropped, never an error.
@pytest.mark.parametrize(
    ("cls", "field", "sent", "parsed", "dropped"),
    [
        (Task, "watermark", "false", False, False),
        (Task, "watermark", "TRUE", True, False),
        (Task, "watermark", 1, True, False),
        (Task, "watermark", 0, False, False),
        (Task, "watermark", "no", False, True),
        (Task, "watermark", 2, False, True),
        (Task, "off_peak", "true", True, False),
        (Task, "is_rec", {"a": 1}, False, True),
        (TaskResult, "bgm", "true", True, False),
        (TaskResult, "off_peak", " false ", False, False),
        (TaskResult, "bgm", [True], False, True),
        (Task, "duration", 5.0, 5, False),
        (Task, "duration", "5", 5, False),
        (Task, "duration", 5.5, None, True),
        (Task, "duration", True, None, True),
        (Task, "duration", float("inf"), None, True),
        (Task, "seed", "1830691647", 1830691647, False),
        (Task, "seed", "-3", -3, False),
        (Task, "seed", "12a", None, True),
        (Task, "seed", "1" * 31, None, True),
        (Task, "cus_priority", 1.5, None, True),
        (Task, "wm_position", "3", "3", False),
        (Task, "wm_position", 3.0, 3, False),
        (Task, "wm_position", 1.5, None, True),
        (Task, "wm_position", False, None, True),
        (Task, "model", 2, "", True),
        (Task, "meta_data", {"Label": "x"}, "", True),
        (TaskResult, "prompt", ["a"], "", True),
        (Task, "images", "https://x/a.png", (), True),
        (Task, "images", ["https://x/a.png", 7], (), True),
        (Task, "created_at", 1768891077, None, True),
        (Task, "created_at", "yesterday", None, True),
        (TaskResult, "created_at", "2026-01-20T06:37:57Z",
         dt.datetime(2026, 1, 20, 6, 37, 57, tzinfo=UTC), False),
    ],
)
def test_reported_fields_are_read_leniently(
    cls: type[Task] | type[TaskResult], field: str, sent: Any, parsed: Any, dropped: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    id_field = "task_id" if cls is Task else "id"
    with caplog.at_level("DEBUG", logger="vidu_async.tasks"):
        answer = cls.from_dict({id_field: "911", "state": "created", field: sent})
    assert getattr(answer, field) == parsed
    assert answer.task_id == "911" and answer.state == TaskState.CREATED
    assert field not in answer.extra and answer.raw[field] == sent
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == dropped and all(m.startswith(f"ignored {field}: ") for m in logged)


def test_a_page_keeps_items_with_odd_echoes() -> None:
    page = TaskPage.from_dict({"tasks": [{"id": "1", "bgm": "no", "duration": "x"}]})
    assert page.tasks[0].id == "1" and page.tasks[0].bgm is False


# --- equality, hashing, repr ---------------------------------------------------------------------


def test_equality_includes_extra_but_not_raw() -> None:
    data = json.loads(SEED_RESPONSE)
    same = Task.from_dict(data)
    assert same == Task.from_dict(dict(data))
    assert hash(same) == hash(Task.from_dict(dict(data)))
    # Only the nanoseconds differ: the parsed values are equal, the raw dicts are not.
    finer = Task.from_dict(data | {"created_at": "2026-01-20T06:37:57.371761999Z"})
    assert finer == same
    assert finer.raw != same.raw
    assert Task.from_dict(data | {"new": 1}) != same


def test_hashable_with_unhashable_extra_values() -> None:
    result = TaskResult.from_dict({"id": "1", "tags": ["a"], "meta": {"b": 1}})
    assert {result: 1}[result] == 1
    assert hash(Credits.from_dict(CREDITS_RESPONSE)) == hash(Credits.from_dict(CREDITS_RESPONSE))


def test_repr_shows_extra_not_raw() -> None:
    text = repr(Task.from_dict({"task_id": "1", "payload": "p" * 500, "surprise": "yes"}))
    assert "surprise" in text
    assert "raw=" not in text
    assert text.count("p" * 500) == 1


def test_raw_is_a_copy() -> None:
    data = {"task_id": "1", "state": "created"}
    task = Task.from_dict(data)
    data["state"] = "failed"
    assert task.raw == {"task_id": "1", "state": "created"}


# --- timestamps ----------------------------------------------------------------------------------

BASE = dt.datetime(2026, 1, 20, 6, 37, 57, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("2026-01-20T06:37:57Z", 0),
        ("2026-01-20T06:37:57.3Z", 300000),
        ("2026-01-20T06:37:57.37Z", 370000),
        ("2026-01-20T06:37:57.371Z", 371000),
        ("2026-01-20T06:37:57.3717Z", 371700),
        ("2026-01-20T06:37:57.37176Z", 371760),
        ("2026-01-20T06:37:57.371761Z", 371761),
        ("2026-01-20T06:37:57.3717619Z", 371761),
        ("2026-01-20T06:37:57.37176193Z", 371761),
        ("2026-01-20T06:37:57.371761937Z", 371761),
        ("2026-01-20T06:37:57.999999999Z", 999999),
        ("2026-01-20T06:37:57.000000001Z", 0),
    ],
)
def test_fractional_digits_zero_to_nine(text: str, micros: int) -> None:
    assert parse_timestamp(text) == BASE.replace(microsecond=micros)


@pytest.mark.parametrize(
    "text",
    [
        "2026-01-20T06:37:57.5z",
        "2026-01-20t06:37:57.5Z",
        "2026-01-20 06:37:57.5Z",
        "2026-01-20T06:37:57.5+00:00",
        "2026-01-20T06:37:57.5-00:00",
        "2026-01-20T12:07:57.5+05:30",
        "2026-01-19T22:37:57.5-08:00",
        "2026-01-21T05:37:57.5+23:00",
    ],
)
def test_offsets_and_lowercase_convert_to_utc(text: str) -> None:
    parsed = parse_timestamp(text)
    assert parsed == BASE.replace(microsecond=500000)
    assert parsed is not None
    assert parsed.tzinfo is UTC


def test_empty_timestamp_is_none() -> None:
    assert parse_timestamp("") is None
    assert Task.from_dict({"task_id": "1", "created_at": ""}).created_at is None


@pytest.mark.parametrize(
    "text",
    [
        "yesterday",
        "2026-01-20",
        "2026-01-20T06:37:57",  # no offset: not RFC 3339, and naive
        "2026-01-20T06:37Z",
        "2026-01-20T06:37:57.Z",
        "2026-01-20T06:37:57,5Z",
        "2026-01-20T06:37:57+0530",
        "2026-01-20T06:37:57+05",
        "2026-01-20T06:37:57.5ZZ",
        " 2026-01-20T06:37:57Z",
        "2026-01-20T06:37:57Z\n",
        "20260120T063757Z",
        "2026-W03-2T06:37:57Z",
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-01-20T24:00:00Z",
        "2026-01-20T06:37:60Z",
        "2026-01-20T06:37:57+24:00",
        "0000-01-01T00:00:00Z",
        "0001-01-01T00:00:00+01:00",  # before datetime.min once in UTC
        "٢٠٢٦-01-20T06:37:57Z",  # non-ASCII digits
        "2026-01-20T06:37:57.123456٣Z",  # ... also where truncation would drop them
        "2026-01-20T06:37:57." + "1" * 100_000 + "X",
    ],
)
def test_garbage_timestamps_raise(text: str) -> None:
    with pytest.raises(ResponseFormatError) as caught:
        parse_timestamp(text, field="tasks[0].created_at")
    assert caught.value.field == "tasks[0].created_at"
    assert len(str(caught.value)) < 300


@given(
    moment=st.datetimes(
        min_value=dt.datetime(1970, 1, 2),
        max_value=dt.datetime(9999, 12, 30),
        timezones=st.just(UTC),
    ),
    offset_minutes=st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59),
    nanos=st.integers(min_value=0, max_value=999),
)
def test_timestamp_round_trip(moment: dt.datetime, offset_minutes: int, nanos: int) -> None:
    offset = dt.timedelta(minutes=offset_minutes)
    local = moment.astimezone(dt.timezone(offset))
    sign = "-" if offset_minutes < 0 else "+"
    hours, minutes = divmod(abs(offset_minutes), 60)
    text = (
        f"{local:%Y-%m-%dT%H:%M:%S}.{local.microsecond:06d}{nanos:03d}"
        f"{sign}{hours:02d}:{minutes:02d}"
    )
    assert parse_timestamp(text) == moment


# --- the correlation envelope --------------------------------------------------------------------


def test_envelope_shape() -> None:
    assert CORRELATION_PREFIX == "va1:"
    assert wrap_payload(KEY, "mine") == f"va1:{KEY}:mine"
    assert CORRELATION_OVERHEAD == len(wrap_payload(KEY, "")) == 37


def test_new_keys_are_fresh_lowercase_hex() -> None:
    first, second = new_correlation_key(), new_correlation_key()
    assert first != second
    for key in (first, second):
        assert len(key) == 32
        assert set(key) <= set("0123456789abcdef")
        assert split_payload(wrap_payload(key, "x")) == (key, "x")


@pytest.mark.parametrize("key", ["", KEY[:-1], KEY + "0", KEY.upper(), "g" * 32, KEY[:-1] + ":"])
def test_wrap_refuses_a_malformed_key(key: str) -> None:
    with pytest.raises(ValueError, match="32 lowercase hex"):
        wrap_payload(key, "x")


@pytest.mark.parametrize(
    "sent",
    [
        "",
        "va1:",
        "va1:abc:",
        f"va1:{KEY}",  # no closing colon
        f"va1:{KEY}x",
        f"va1:{KEY.upper()}:x",
        f"va1:{'g' * 32}:x",
        f"va1:{KEY[:-1]}:x",
        f"VA1:{KEY}:x",
        f"va2:{KEY}:x",
        f" va1:{KEY}:x",
        "va1:١٢٣٤٥٦٧٨٩٠abcdef0123456789abcdef:x",  # non-ASCII digits
        '{"job": 7}',
    ],
)
def test_foreign_payloads_pass_unchanged(sent: str) -> None:
    assert split_payload(sent) == (None, sent)
    task = Task.from_dict({"task_id": "1", "payload": sent})
    assert (task.correlation_key, task.payload) == (None, sent)


_keys = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)
# User payloads, including ones that look like (or are) envelopes themselves.
_payloads = st.one_of(
    st.text(),
    st.builds(lambda key, rest: f"va1:{key}:{rest}", _keys, st.text()),
    st.builds(lambda rest: "va1:" + rest, st.text(alphabet="0123456789abcdef:vaA", max_size=40)),
)


@given(key=_keys, user_payload=_payloads)
def test_wrap_then_split_returns_the_user_payload(key: str, user_payload: str) -> None:
    sent = wrap_payload(key, user_payload)
    assert split_payload(sent) == (key, user_payload)
    result = TaskResult.from_dict({"id": "1", "payload": sent})
    assert (result.correlation_key, result.payload) == (key, user_payload)
    assert result.raw["payload"] == sent


@given(sent=_payloads)
def test_split_loses_nothing(sent: str) -> None:
    key, user_payload = split_payload(sent)
    if key is None:
        assert user_payload == sent
    else:
        assert wrap_payload(key, user_payload) == sent
