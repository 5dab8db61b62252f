"""Every route's model rules, table-driven over the capability data, and unknown models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pytest

from vidu_async import capabilities as caps
from vidu_async.capabilities import ModelCapabilities, RouteTable
from vidu_async.requests import (
    ImageToVideoRequest,
    ReferenceToVideoRequest,
    Request,
    StartEndToVideoRequest,
    Subject,
    SubjectsToVideoRequest,
    TextToVideoRequest,
)

URL = "https://example.com/a.png"

MAKERS: dict[str, Callable[..., Request]] = {
    "reference2video": lambda model, **kw: ReferenceToVideoRequest(
        model, "a cat", images=[URL], **kw
    ),
    "reference2video with subjects": lambda model, **kw: SubjectsToVideoRequest(
        model, "@cat runs", [Subject("cat", [URL])], **kw
    ),
    "text2video": lambda model, **kw: TextToVideoRequest(model, "a cat", **kw),
    "img2video": lambda model, **kw: ImageToVideoRequest(model, [URL], **kw),
    "start-end2video": lambda model, **kw: StartEndToVideoRequest(model, [URL, URL], **kw),
}
ROWS = [(t, m) for t in caps.TABLES.values() for m in t.models.values()]
Row = tuple[RouteTable, ModelCapabilities]


def row_id(row: Row) -> str:
    return f"{row[0].title}:{row[1].name}"


def make(table: RouteTable, model: str, **fields: Any) -> Request:
    return MAKERS[table.title](model, **fields)


def errors(request: Request, *, strict: bool = False) -> dict[str, str]:
    return {p.field: p.message for p in request.check(strict=strict).errors}


def warned(request: Request) -> dict[str, str]:
    return {p.field: p.message for p in request.check().warnings}


def test_every_table_has_a_maker() -> None:
    assert set(MAKERS) == set(caps.TABLES)


@pytest.mark.parametrize("row", ROWS, ids=row_id)
def test_durations_edges(row: Row) -> None:
    table, m = row
    for duration in m.durations:
        assert make(table, m.name, duration=duration).check().ok, duration
    outside = {m.durations[0] - 1, m.durations[-1] + 1} | (
        set(range(m.durations[0], m.durations[-1])) - set(m.durations)
    )
    for bad in outside:
        assert errors(make(table, m.name, duration=bad)) == {
            "duration": f"{m.name} accepts {m.duration_text} seconds, got {bad}"
        }


@pytest.mark.parametrize("row", ROWS, ids=row_id)
def test_resolutions_edges(row: Row) -> None:
    table, m = row
    for duration in m.durations:
        for resolution in m.resolutions:
            request = make(table, m.name, duration=duration, resolution=resolution)
            allowed = m.resolutions_for(duration)
            if resolution in allowed:
                assert request.check().ok
            else:
                assert errors(request) == {
                    "resolution": f"{m.name} accepts {', '.join(allowed)} at {duration} "
                    f"seconds, got {resolution!r}"
                }
    for bad in {"360p", "540p", "720p", "1080p", "4k"} - set(m.resolutions):
        assert errors(make(table, m.name, resolution=bad)) == {
            "resolution": f"{m.name} accepts {', '.join(m.resolutions)}, got {bad!r}"
        }


def test_vidu2_at_8_seconds_is_720p_only() -> None:
    request = ImageToVideoRequest("vidu2.0", [URL], duration=8, resolution="1080p")
    assert errors(request) == {
        "resolution": "vidu2.0 accepts 720p at 8 seconds, got '1080p'"
    }
    assert StartEndToVideoRequest("vidu2.0", [URL, URL], duration=8, resolution="720p").check().ok
    # No duration given: the default (4 s) decides.
    assert ImageToVideoRequest("vidu2.0", [URL], resolution="1080p").check().ok


def rows_with(field: str) -> list[Row]:
    """The rows whose route has ``field``."""
    return [r for r in ROWS if field in type(make(r[0], r[1].name)).FIELDS]


@pytest.mark.parametrize("row", rows_with("aspect_ratio"), ids=row_id)
def test_aspect_ratios(row: Row) -> None:
    table, m = row
    for ratio in m.aspect_ratios:
        assert make(table, m.name, aspect_ratio=ratio).check().ok
    for ratio in ("21:9", "auto", "1:3"):
        assert make(table, m.name, aspect_ratio=ratio).check().ok is m.free_aspect_ratio
    for ratio in set(caps.LISTED_ASPECT_RATIOS) - set(m.aspect_ratios):
        assert errors(make(table, m.name, aspect_ratio=ratio)) == {
            "aspect_ratio": f"{m.name} accepts {', '.join(m.aspect_ratios)}, got {ratio!r}"
        }


def test_text2video_ratios_3_4_and_4_3_only_on_q2_q3() -> None:
    assert TextToVideoRequest("viduq2", "p", aspect_ratio="3:4").check().ok
    assert errors(TextToVideoRequest("viduq1", "p", aspect_ratio="4:3")) == {
        "aspect_ratio": "viduq1 accepts 16:9, 9:16, 1:1, got '4:3'"
    }


@pytest.mark.parametrize("row", rows_with("audio"), ids=row_id)
def test_audio_where_the_table_allows(row: Row) -> None:
    table, m = row
    request = make(table, m.name, audio=True)
    if m.audio:
        assert request.check().ok
    else:
        assert errors(request)["audio"].startswith(f"not supported on {m.name} (only ")


@pytest.mark.parametrize("row", ROWS, ids=row_id)
def test_movement_amplitude(row: Row) -> None:
    table, m = row
    for value in caps.MOVEMENT_AMPLITUDES:
        request = make(table, m.name, movement_amplitude=value)
        sent = "movement_amplitude" in request.to_payload()
        if m.movement_amplitude:
            assert request.check().ok and sent and not warned(request)
        elif m.movement_amplitude_ignored or value == "auto":
            assert request.check().ok and not sent
            assert m.name in warned(request)["movement_amplitude"]
        else:
            assert errors(request)["movement_amplitude"].startswith(f"not supported on {m.name}")
    assert "movement_amplitude" in errors(make(table, m.name, movement_amplitude="huge"))


def test_movement_amplitude_auto_on_q2_reference_warns_and_is_left_out() -> None:
    request = ReferenceToVideoRequest("viduq2", "p", images=[URL], movement_amplitude="auto")
    assert warned(request) == {
        "movement_amplitude": "viduq2 does not support movement_amplitude; 'auto' (the default) "
        "is left out of the body"
    }
    assert request.to_payload() == {"model": "viduq2", "prompt": "p", "images": [URL]}
    assert "movement_amplitude" in errors(attrs.evolve(request, movement_amplitude="small"))


# --- models no table knows ----------------------------------------------------------------


@pytest.mark.parametrize("table", caps.TABLES.values(), ids=lambda t: t.title)
def test_an_unknown_model_warns_and_is_sent_as_is(table: RouteTable) -> None:
    request = make(table, "viduq4", duration=99, resolution="8k")
    result = request.check()
    assert result.ok
    assert [(w.field, w.message) for w in result.warnings] == [
        ("model", f"viduq4 is not in this version's table for {table.title} "
                  f"(known: {table.known}); sent as is")
    ]
    body = request.to_payload()
    assert body["model"] == "viduq4" and body["duration"] == 99 and body["resolution"] == "8k"


@pytest.mark.parametrize("table", caps.TABLES.values(), ids=lambda t: t.title)
@pytest.mark.parametrize("name", ["", "  "])
def test_an_empty_model_name_is_an_error_not_an_unknown_model(
    table: RouteTable, name: str
) -> None:
    result = make(table, name).check()
    assert [(p.field, p.message) for p in result.errors] == [
        ("model", f"must not be empty; one of {table.known}")
    ]
    assert "model" not in [w.field for w in result.warnings]


@pytest.mark.parametrize("table", caps.TABLES.values(), ids=lambda t: t.title)
def test_strict_refuses_an_unknown_model(table: RouteTable) -> None:
    request = make(table, "viduq4")
    assert errors(request, strict=True) == {
        "model": f"unknown model 'viduq4'; choose one of {table.known}"
    }
    with pytest.raises(Exception, match="unknown model 'viduq4'"):
        request.validate(strict=True)


@pytest.mark.parametrize("table", caps.TABLES.values(), ids=lambda t: t.title)
def test_an_unknown_model_still_gets_every_model_independent_rule(table: RouteTable) -> None:
    request = make(
        table, "viduq4", duration=0, seed=-1, wm_position=7, payload=3, movement_amplitude="x",
        callback_url="ftp://x/cb", bgm="yes",
    )
    expected = {
        "duration", "seed", "wm_position", "payload", "movement_amplitude", "callback_url", "bgm",
    }
    if "aspect_ratio" in type(request).FIELDS:
        request = attrs.evolve(request, aspect_ratio="16x9")
        expected.add("aspect_ratio")
    assert set(errors(request)) == expected & set(type(request).FIELDS)


def test_an_unknown_model_keeps_the_endpoint_wide_counts() -> None:
    assert errors(ImageToVideoRequest("viduq4", [URL, URL])) == {
        "images": "img2video takes exactly 1 image (the first frame), got 2"
    }
    assert errors(ReferenceToVideoRequest("viduq4", "p", images=[URL] * 8)) == {
        "images": "reference2video accepts 1..7 images, got 8"
    }
    assert errors(SubjectsToVideoRequest("viduq4", "p", [])) == {
        "subjects": "reference2video accepts 1..7 subjects, got 0"
    }
    assert "prompt" in errors(TextToVideoRequest("viduq4", "x" * (caps.PROMPT_MAX_CHARS + 1)))


def test_a_model_known_to_be_unsupported_is_an_error_even_when_not_strict() -> None:
    request = SubjectsToVideoRequest("viduq3-mix", "@cat", [Subject("cat", [URL])])
    assert errors(request) == {"model": caps.SUBJECTS.unsupported["viduq3-mix"]}
    assert "viduq3-mix" in errors(request)["model"]
