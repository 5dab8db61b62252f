"""The request model: every rule of the capability table, for every model, plus properties."""

from __future__ import annotations

import base64
import io
import json
import random
import struct
import warnings
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from vidu_async import ReferenceToVideoRequest, ValidationError, ViduWarning
from vidu_async.capabilities import (
    BODY_MAX_BYTES,
    LISTED_ASPECT_RATIOS,
    MODELS,
    MOVEMENT_AMPLITUDES,
    PAYLOAD_MAX_CHARS,
    PROMPT_MAX_CHARS,
    SEED_MAX,
    ModelCapabilities,
)
from vidu_async.requests import (
    KNOWN_FIELDS,
    ImageToVideoRequest,
    Request,
    StartEndToVideoRequest,
    Subject,
    SubjectsToVideoRequest,
    TextToVideoRequest,
)
from vidu_async.tasks import CORRELATION_OVERHEAD, new_correlation_key, wrap_payload

URL = "https://example.com/ref.png"
ALL = list(MODELS.values())
# The seed document's request example, verbatim (reference2video.seed.txt, "examples" -> "value").
SEED_REQUEST = Path(__file__).parent / "data" / "seed_request_example.json"


CLIENT_PAYLOAD_MAX = PAYLOAD_MAX_CHARS - CORRELATION_OVERHEAD
"""The longest payload of the caller's own: the client puts its correlation key in front."""


def make(model: str = "viduq2", **fields: Any) -> ReferenceToVideoRequest:
    fields.setdefault("images", [URL])
    return ReferenceToVideoRequest(model, fields.pop("prompt", "a cat in the grass"), **fields)


def problems(request: ReferenceToVideoRequest) -> dict[str, str]:
    return {p.field: p.message for p in request.check().errors}


def by_id(m: ModelCapabilities) -> str:
    return m.name


# --- the table, model by model -------------------------------------------------------------


@pytest.mark.parametrize("m", ALL, ids=by_id)
def test_every_allowed_duration_validates(m: ModelCapabilities) -> None:
    for duration in m.durations:
        assert make(m.name, duration=duration).check().ok, duration
    assert m.default_duration in m.durations


@pytest.mark.parametrize("m", ALL, ids=by_id)
def test_durations_outside_the_range_name_model_and_range(m: ModelCapabilities) -> None:
    for bad in (m.durations[0] - 1, m.durations[-1] + 1):
        assert problems(make(m.name, duration=bad)) == {
            "duration": f"{m.name} accepts {m.duration_text} seconds, got {bad}"
        }


def test_duration_message_matches_the_documented_example() -> None:
    assert problems(make("viduq3", duration=2))["duration"] == (
        "viduq3 accepts 3..16 seconds, got 2"
    )


@pytest.mark.parametrize("m", ALL, ids=by_id)
def test_resolutions(m: ModelCapabilities) -> None:
    for resolution in m.resolutions:
        assert make(m.name, resolution=resolution).check().ok
    assert m.default_resolution in m.resolutions
    for bad in {"360p", "540p", "720p", "1080p", "4k"} - set(m.resolutions):
        message = problems(make(m.name, resolution=bad))["resolution"]
        assert m.name in message and bad in message
        assert all(r in message for r in m.resolutions)


@pytest.mark.parametrize("m", ALL, ids=by_id)
def test_aspect_ratios(m: ModelCapabilities) -> None:
    for ratio in LISTED_ASPECT_RATIOS:
        assert make(m.name, aspect_ratio=ratio).check().ok
    free = ["21:9", "auto", "1:3", "100:1"]
    for ratio in free:
        assert make(m.name, aspect_ratio=ratio).check().ok is m.free_aspect_ratio, ratio
    for bad in ["0:1", "16:0", "16x9", "-1:2", "1.5:1", "", "auto:1", "١:٢"]:
        message = problems(make(m.name, aspect_ratio=bad))["aspect_ratio"]
        assert m.name in message


@pytest.mark.parametrize("m", ALL, ids=by_id)
def test_image_counts(m: ModelCapabilities) -> None:
    assert make(m.name, images=[URL] * m.max_images).check().ok
    assert problems(make(m.name, images=[])) == {
        "images": f"{m.name} accepts 1..{m.max_images} images, got 0"
    }
    assert problems(make(m.name, images=[URL] * (m.max_images + 1))) == {
        "images": f"{m.name} accepts 1..{m.max_images} images, got {m.max_images + 1}"
    }


@pytest.mark.parametrize("m", ALL, ids=by_id)
def test_videos_only_where_the_table_allows(m: ModelCapabilities) -> None:
    request = make(m.name, videos=["https://example.com/v.mp4"])
    if m.supports_videos:
        assert request.check().ok
    else:
        assert "videos" in problems(request)
        assert m.name in problems(request)["videos"]
        assert "viduq2-pro" in problems(request)["videos"]


def test_viduq2_pro_with_videos_takes_fewer_images_and_at_most_two_videos() -> None:
    video = "https://example.com/v.mp4"
    assert make("viduq2-pro", images=[URL] * 4, videos=[video, video]).check().ok
    assert problems(make("viduq2-pro", images=[URL] * 5, videos=[video])) == {
        "images": "viduq2-pro accepts 1..4 images with reference videos, got 5"
    }
    assert problems(make("viduq2-pro", videos=[video] * 3)) == {
        "videos": "viduq2-pro accepts 1..2 videos, got 3"
    }


@pytest.mark.parametrize("m", ALL, ids=by_id)
def test_audio_only_on_q3(m: ModelCapabilities) -> None:
    for value in (True, False):
        request = make(m.name, audio=value)
        if m.audio:
            assert request.check().ok
        else:
            message = problems(request)["audio"]
            assert m.name in message and "viduq3" in message


@pytest.mark.parametrize("m", ALL, ids=by_id)
def test_movement_amplitude(m: ModelCapabilities) -> None:
    for value in MOVEMENT_AMPLITUDES:
        request = make(m.name, movement_amplitude=value)
        if m.movement_amplitude:
            assert request.check().ok
        elif value == "auto":  # the default: harmless, a warning, and left out of the body
            assert [w.field for w in request.check().warnings] == ["movement_amplitude"]
            assert "movement_amplitude" not in request.to_payload()
        else:
            assert problems(request)["movement_amplitude"].startswith(
                f"not supported on {m.name}"
            )
    if m.movement_amplitude:
        assert "movement_amplitude" in problems(make(m.name, movement_amplitude="huge"))


@pytest.mark.parametrize("m", ALL, ids=by_id)
def test_bgm_warns_where_the_server_ignores_it(m: ModelCapabilities) -> None:
    for duration in m.durations:
        result = make(m.name, bgm=True, duration=duration).check()
        assert result.ok
        ignored = m.bgm_ignored or duration in m.bgm_ignored_durations
        assert [w.field for w in result.warnings] == (["bgm"] if ignored else [])
        assert make(m.name, bgm=False, duration=duration).check().warnings == ()


def test_bgm_warning_uses_the_default_duration_when_none_is_given() -> None:
    assert make("viduq2", bgm=True).check().warnings == ()
    assert make("viduq3", bgm=True).check().warnings[0].message == (
        "viduq3 ignores bgm; no background music will be added"
    )


def test_validate_emits_vidu_warning_and_returns_it() -> None:
    with pytest.warns(ViduWarning, match="viduq2 ignores bgm at 10 seconds"):
        result = make("viduq2", bgm=True, duration=10).validate()
    assert [w.field for w in result.warnings] == ["bgm"]


# --- model-independent rules --------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"model": 3}, "model"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * (PROMPT_MAX_CHARS + 1)}, "prompt"),
        ({"prompt": None}, "prompt"),
        ({"seed": -1}, "seed"),
        ({"seed": SEED_MAX + 1}, "seed"),
        ({"seed": "7"}, "seed"),
        ({"seed": True}, "seed"),
        ({"duration": 5.5}, "duration"),
        ({"duration": "5"}, "duration"),
        ({"payload": "p" * (CLIENT_PAYLOAD_MAX + 1)}, "payload"),
        ({"payload": 7}, "payload"),
        ({"wm_position": 0}, "wm_position"),
        ({"wm_position": 5}, "wm_position"),
        ({"wm_position": "3"}, "wm_position"),
        ({"meta_data": "not json"}, "meta_data"),
        ({"meta_data": "[1, 2]"}, "meta_data"),
        ({"meta_data": {"Label": "x"}}, "meta_data"),
        ({"callback_url": "ftp://example.com/cb"}, "callback_url"),
        ({"callback_url": "example.com/cb"}, "callback_url"),
        ({"wm_url": "javascript:alert(1)"}, "wm_url"),
        ({"bgm": "true"}, "bgm"),
        ({"watermark": 1}, "watermark"),
        ({"off_peak": "no"}, "off_peak"),
        ({"sounds": ["https://example.com/a.mp3"]}, "sounds"),
        ({"images": URL}, "images"),
        ({"images": [3]}, "images[0]"),
    ],
)
def test_single_bad_value_is_reported_on_its_field(fields: dict[str, Any], field: str) -> None:
    found = problems(make(**fields))
    assert field in found, found
    if field != "model":  # the house rule: a wrong field names the field, the model, the values
        assert found[field].startswith(("viduq2 accepts ", "not supported on viduq2 ")), found


def test_messages_of_model_independent_rules_name_the_model_when_the_table_knows_it() -> None:
    assert problems(make(seed=-1)) == {
        "seed": f"viduq2 accepts 0..{SEED_MAX} (0 or absent means random), got -1"
    }
    assert problems(make("viduq4", seed=-1)) == {
        "seed": f"must be 0..{SEED_MAX} (0 or absent means random), got -1"
    }
    assert problems(make(sounds=["x"])) == {
        "sounds": "not supported on viduq2 (reserved by the API, no model takes it yet); remove it"
    }


def test_limits_are_inclusive() -> None:
    assert make(prompt="x" * PROMPT_MAX_CHARS, seed=SEED_MAX, payload="p" * CLIENT_PAYLOAD_MAX,
                wm_position=4, meta_data='{"Label": "x"}').check().ok
    assert make(seed=0).check().ok


PAYLOAD_HOLDERS: dict[str, Any] = {
    "reference2video": lambda payload: make(payload=payload),
    "subjects": lambda payload: SubjectsToVideoRequest(
        "viduq2", "@cat runs", [Subject("cat", [URL])], payload=payload
    ),
    "text2video": lambda payload: TextToVideoRequest("viduq2", "a cat", payload=payload),
    "img2video": lambda payload: ImageToVideoRequest("viduq2-pro", [URL], payload=payload),
    "start-end2video": lambda payload: StartEndToVideoRequest(
        "viduq2-pro", [URL, URL], payload=payload
    ),
}


@pytest.mark.parametrize("kind", PAYLOAD_HOLDERS)
@pytest.mark.parametrize(
    ("length", "sent", "refused"),
    [
        (CLIENT_PAYLOAD_MAX, False, False),
        (CLIENT_PAYLOAD_MAX + 1, False, True),  # fits the API, not once the key is in front
        (PAYLOAD_MAX_CHARS, True, False),  # a body as sent (the simulator): the key is in it
        (PAYLOAD_MAX_CHARS + 1, True, True),
    ],
)
def test_the_payload_leaves_room_for_the_correlation_key_on_every_route(
    kind: str, length: int, sent: bool, refused: bool
) -> None:
    request: Request = PAYLOAD_HOLDERS[kind]("p" * length)
    found = {p.field: p.message for p in request.check(sent=sent).errors}
    if not refused:
        assert found == {}
    elif sent:
        assert found == {
            "payload": f"{request.model} accepts at most {PAYLOAD_MAX_CHARS} characters, "
            f"got {length}"
        }
    else:
        assert found == {
            "payload": f"{request.model} accepts at most {CLIENT_PAYLOAD_MAX} characters through "
            f"this client (the API's {PAYLOAD_MAX_CHARS} less {CORRELATION_OVERHEAD} for the "
            f"correlation key every create carries in payload), got {length}"
        }


def test_every_problem_is_reported_at_once() -> None:
    request = make("viduq1", duration=9, resolution="720p", aspect_ratio="21:9", audio=True,
                   seed=-4, images=[], sounds=["x"])
    with pytest.raises(ValidationError) as caught:
        request.validate()
    assert set(caught.value.fields) == {
        "duration", "resolution", "aspect_ratio", "audio", "seed", "images", "sounds"
    }
    assert caught.value.model == "viduq1"
    assert "viduq1" in str(caught.value) and "duration: viduq1 accepts 5 seconds, got 9" in str(
        caught.value
    )


def test_from_dict_refuses_unknown_and_missing_fields() -> None:
    with pytest.raises(ValidationError) as caught:
        ReferenceToVideoRequest.from_dict({"model": "viduq2", "subjects": [], "style": "x"})
    assert caught.value.fields == ("subjects", "style", "prompt")
    with pytest.raises(ValidationError, match="must be a JSON object"):
        ReferenceToVideoRequest.from_dict([1, 2])  # type: ignore[arg-type]


def test_the_unknown_field_message_lists_only_fields_that_can_be_sent() -> None:
    with pytest.raises(ValidationError) as caught:
        ReferenceToVideoRequest.from_dict({"model": "viduq2", "prompt": "p", "style": "x"})
    [problem] = caught.value.problems
    assert problem.message.startswith("unknown field; the API accepts model, prompt, images,")
    assert "sounds" not in problem.message


def test_from_dict_keeps_any_url_as_a_url(tmp_path: Path) -> None:
    request = ReferenceToVideoRequest.from_dict(
        {"model": "viduq2", "prompt": "p", "images": ["ftp://example.com/a.png"]},
        base_dir=tmp_path,
    )
    assert request.images == ("ftp://example.com/a.png",)
    assert "http" in problems(request)["images[0]"]


def test_from_dict_resolves_relative_paths(tmp_path: Path) -> None:
    request = ReferenceToVideoRequest.from_dict(
        {"model": "viduq2", "prompt": "p", "images": ["a.png", URL, "/abs/b.png"]},
        base_dir=tmp_path,
    )
    assert request.images == (tmp_path / "a.png", URL, Path("/abs/b.png"))


# --- payload ---------------------------------------------------------------------------------


def seed_request_example() -> dict[str, Any]:
    example: dict[str, Any] = json.loads(SEED_REQUEST.read_text(encoding="utf-8"))
    return example


def test_seed_request_example_validates_and_serializes_to_the_same_json() -> None:
    example = seed_request_example()
    assert example["model"] == "viduq3-mix"
    request = ReferenceToVideoRequest.from_dict(example)
    assert request.validate().ok
    assert request.to_payload() == example
    assert json.loads(json.dumps(request.to_payload())) == example


def test_to_payload_types() -> None:
    request = make("viduq1", duration=5.0, seed=12, wm_position=2, watermark=True, bgm=False,
                   off_peak=True, movement_amplitude="large", meta_data='{"Label": "x"}')
    body = request.to_payload()
    assert body == {
        "model": "viduq1", "prompt": "a cat in the grass", "images": [URL], "duration": 5,
        "seed": 12, "wm_position": 2, "watermark": True, "bgm": False, "off_peak": True,
        "movement_amplitude": "large", "meta_data": '{"Label": "x"}',
    }
    assert type(body["duration"]) is int and isinstance(body["images"], list)


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def test_local_files_and_bytes_are_inlined_as_data_uris(tmp_path: Path) -> None:
    data = png(256, 256)
    (tmp_path / "ref.jpg").write_bytes(data)  # the extension lies; the bytes decide
    request = make(images=[tmp_path / "ref.jpg", data, str(tmp_path / "ref.jpg")])
    result = request.validate()
    body = request.to_payload()
    assert all(i.startswith("data:image/png;base64,") for i in body["images"])
    # The size of the body the client sends: the correlation envelope in its payload too.
    sent = request.to_body(payload=wrap_payload(new_correlation_key(), ""))
    assert result.body_bytes == len(sent)


def test_a_data_uri_typed_image_jpg_is_accepted_with_a_warning() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), (20, 30, 200)).save(buffer, "JPEG")
    uri = "data:image/jpg;base64," + base64.b64encode(buffer.getvalue()).decode()
    request = make(images=[uri])
    result = request.check()
    assert result.ok
    assert [(w.field, w.message) for w in result.warnings] == [
        ("images[0]", f"<data URI, image/jpg, {len(uri):,} characters>: image/jpg is not the "
                      "standard content type (image/jpeg is); sent as is")
    ]
    assert request.to_payload()["images"] == [uri]


def mp4(duration: int, timescale: int = 1000) -> bytes:
    """A minimal 640x360 MP4 whose header says it lasts ``duration / timescale`` seconds."""

    def box(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I4s", 8 + len(body), kind) + body

    mvhd = box(b"mvhd", struct.pack(">B3xIIII", 0, 0, 0, timescale, duration) + bytes(80))
    tkhd = box(b"tkhd", bytes(76) + struct.pack(">II", 640 << 16, 360 << 16))
    moov = box(b"moov", mvhd + box(b"trak", tkhd))
    return box(b"ftyp", b"isom" + bytes(4) + b"isom") + moov + box(b"mdat", bytes(64))


@pytest.mark.parametrize(
    ("clips", "lasts", "refused"),
    [
        ([mp4(240_240, 30_000)], "8.008", False),  # 240 frames at 29.97 fps: "8 s" to a person
        ([mp4(8_099)], "8.099", False),
        ([mp4(80_004, 10_000)], "8.0004", False),
        ([mp4(8_100)], "8.1", True),
        ([mp4(9_000)], "9.0", True),
        ([mp4(5_050), mp4(5_000)], "5.05", False),
        ([mp4(5_000), mp4(5_200)], "5.2", True),
    ],
)
def test_a_reference_video_a_little_over_its_limit_is_a_warning(
    clips: list[bytes], lasts: str, refused: bool
) -> None:
    result = make("viduq2-pro", videos=clips).check()
    problem = (result.errors if refused else result.warnings)[0]
    limit = 8 if len(clips) == 1 else 5
    assert problem.message.startswith(
        "viduq2-pro accepts at most one 8 s video or two 5 s videos; with "
        f"{len(clips)} video{'s' if len(clips) > 1 else ''} each may last {limit} s, <"
    )
    assert f"bytes> lasts {lasts} s" in problem.message
    assert result.ok is not refused
    if not refused:
        assert problem.message.endswith(", under 0.1 s over: the API may refuse it")
    assert len(result.errors + result.warnings) == 1


def test_a_reference_video_at_its_limit_passes_silently() -> None:
    result = make("viduq2-pro", videos=[mp4(8_000)]).check()
    assert result.ok and result.warnings == ()


def test_bad_local_media_names_the_item(tmp_path: Path) -> None:
    (tmp_path / "small.png").write_bytes(png(64, 64))
    found = problems(make(images=[URL, tmp_path / "small.png", tmp_path / "missing.png"]))
    assert set(found) == {"images[1]", "images[2]"}
    assert "small.png" in found["images[1]"] and "missing.png" in found["images[2]"]


def test_a_body_over_20_mb_is_refused_with_advice() -> None:
    noise = Image.frombytes("RGB", (1600, 1600), random.Random(1).randbytes(1600 * 1600 * 3))
    buffer = io.BytesIO()
    noise.save(buffer, "PNG", compress_level=0)  # about 7.7 MB, 10 MB once in base64
    request = make(images=[buffer.getvalue()] * 3)
    found = problems(request)
    assert set(found) == {"body"}
    assert "MB" in found["body"] and "URLs" in found["body"]
    assert request.check().body_bytes > BODY_MAX_BYTES


# --- properties ------------------------------------------------------------------------------

JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "model": str, "prompt": str, "images": list, "videos": list, "bgm": bool, "audio": bool,
    "duration": int, "seed": int, "aspect_ratio": str, "resolution": str,
    "movement_amplitude": str, "payload": str, "off_peak": bool, "watermark": bool,
    "wm_position": int, "wm_url": str, "meta_data": str, "callback_url": str,
}


@st.composite
def valid_requests(draw: st.DrawFn) -> ReferenceToVideoRequest:
    m = draw(st.sampled_from(ALL))
    opt = lambda s: draw(st.none() | s)  # noqa: E731
    ratios = st.sampled_from(LISTED_ASPECT_RATIOS)
    if m.free_aspect_ratio:
        ratios |= st.just("auto") | st.builds(
            "{}:{}".format, st.integers(1, 10_000), st.integers(1, 10_000)
        )
    videos = draw(st.lists(st.just("https://e.com/v.mp4"), max_size=m.max_videos))
    max_images = m.max_images_with_videos if videos else m.max_images
    return ReferenceToVideoRequest(
        m.name,
        draw(st.text(min_size=1, max_size=50).filter(str.strip)),
        images=draw(st.lists(st.just(URL), min_size=1, max_size=max_images)),
        videos=videos,
        bgm=opt(st.booleans()),
        audio=opt(st.booleans()) if m.audio else None,
        duration=opt(st.sampled_from(m.durations)),
        seed=opt(st.integers(0, SEED_MAX)),
        aspect_ratio=opt(ratios),
        resolution=opt(st.sampled_from(m.resolutions)),
        movement_amplitude=opt(st.sampled_from(MOVEMENT_AMPLITUDES))
        if m.movement_amplitude
        else None,
        payload=opt(st.text(max_size=30)),
        off_peak=opt(st.booleans()),
        watermark=opt(st.booleans()),
        wm_position=opt(st.integers(1, 4)),
        wm_url=opt(st.just("https://e.com/wm.png")),
        meta_data=opt(st.dictionaries(st.text(max_size=5), st.text(max_size=5)).map(json.dumps)),
        callback_url=opt(st.just("http://127.0.0.1:9/cb?x=1")),
    )


@given(valid_requests())
@settings(max_examples=300, deadline=None)
def test_valid_requests_give_documented_keys_with_json_types(
    request: ReferenceToVideoRequest,
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ViduWarning)
        request.validate()
    body = request.to_payload()
    assert set(body) <= set(KNOWN_FIELDS) - {"sounds"}
    assert {"model", "prompt", "images"} <= set(body)
    for key, value in body.items():
        expected = JSON_TYPES[key]
        assert isinstance(value, expected) and value is not None, key
        if expected is int:
            assert not isinstance(value, bool), key
    assert json.loads(json.dumps(body)) == body


BAD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "duration": st.integers(-5, 40),
    "seed": st.integers(-(2**40), -1) | st.integers(SEED_MAX + 1, 2**40),
    "resolution": st.text(max_size=6),
    "aspect_ratio": st.text(max_size=6),
    "wm_position": st.integers(-10, 10).filter(lambda v: v not in range(1, 5)),
    "prompt": st.just("") | st.just("y" * (PROMPT_MAX_CHARS + 1)),
    "callback_url": st.text(max_size=20),
    "meta_data": st.text(max_size=10),
    "movement_amplitude": st.text(max_size=8),
    "bgm": st.integers() | st.text(),
}


@given(valid_requests(), st.data())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_single_out_of_range_value_is_named(
    request: ReferenceToVideoRequest, data: st.DataObject
) -> None:
    field = data.draw(st.sampled_from(sorted(BAD_VALUES)))
    value = data.draw(BAD_VALUES[field])
    bad = attrs.evolve(request, **{field: value})
    m = MODELS[request.model]
    still_valid = {
        "duration": lambda v: v in m.durations,
        "resolution": lambda v: v in m.resolutions,
        "aspect_ratio": lambda v: make(m.name, aspect_ratio=v).check().ok,
        "callback_url": lambda v: make(m.name, callback_url=v).check().ok,
        "meta_data": lambda v: make(m.name, meta_data=v).check().ok,
        "movement_amplitude": lambda v: make(m.name, movement_amplitude=v).check().ok,
    }
    assume(not (field in still_valid and still_valid[field](value)))
    assert field in {p.field for p in bad.check().errors}
