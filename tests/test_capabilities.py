"""The capability tables as data: every entry is coherent and says where it comes from."""

from __future__ import annotations

import pytest

from vidu_async import capabilities as caps
from vidu_async.capabilities import ModelCapabilities, RouteTable

ROWS = [(t, m) for t in caps.TABLES.values() for m in t.models.values()]


def row_id(row: tuple[RouteTable, ModelCapabilities]) -> str:
    return f"{row[0].title}:{row[1].name}"


@pytest.mark.parametrize("row", ROWS, ids=row_id)
def test_every_entry_is_coherent_and_sourced(row: tuple[RouteTable, ModelCapabilities]) -> None:
    table, m = row
    assert m.source.strip()
    assert m.durations == tuple(sorted(set(m.durations))) and m.durations[0] >= 1
    assert m.default_duration in m.durations
    assert m.default_resolution in m.resolutions_for(m.default_duration)
    for duration, allowed in m.resolutions_at.items():
        assert duration in m.durations and set(allowed) < set(m.resolutions)
    assert m.name not in table.unsupported
    assert not (m.movement_amplitude and m.movement_amplitude_ignored)
    assert m.audio or not m.audio_default


def test_tables_cover_every_route_and_the_seed_models_stay_the_default() -> None:
    assert set(caps.TABLES) == {
        "reference2video", "reference2video with subjects", "text2video", "img2video",
        "start-end2video",
    }
    assert caps.MODELS is caps.REFERENCE2VIDEO.models
    assert caps.get_model("viduq3-mix") is caps.MODELS["viduq3-mix"]
    assert caps.get_model("viduq4") is None
    assert "viduq3-mix" in caps.SUBJECTS.unsupported


@pytest.mark.parametrize(
    ("durations", "text"),
    [((5,), "5"), (range(3, 17), "3..16"), ((4, 8), "4 or 8"), ((1, 2, 4), "1, 2 or 4")],
)
def test_duration_text(durations: tuple[int, ...], text: str) -> None:
    m = ModelCapabilities("m", "test", durations, durations[0], ("720p",), "720p")
    assert m.duration_text == text


def test_where_lists_models_in_table_order() -> None:
    assert caps.TEXT2VIDEO.where(lambda m: m.audio) == "viduq3-pro, viduq3-turbo"
    assert caps.TEXT2VIDEO.known == "viduq3-pro, viduq3-turbo, viduq2, viduq1"


def test_audio_is_on_by_default_on_q3_models_only() -> None:
    """ENDPOINTS.md: "default false; true on q3" (img2video, subjects), "q3 only, default true"
    (text2video); API.md: q3 models only, default true (the seed's route)."""
    on = {title: t.where(lambda m: m.audio_default) for title, t in caps.TABLES.items()}
    assert on == {
        "reference2video": "viduq3-mix, viduq3",
        "reference2video with subjects": "viduq3, viduq3-turbo",
        "text2video": "viduq3-pro, viduq3-turbo",
        "img2video": "viduq3-pro, viduq3-turbo",
        "start-end2video": "",
    }
