"""Each endpoint's own rules, request_from_dict's choice, ssupload: URIs and round-trips."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import attrs
import pytest
from PIL import Image

from vidu_async import ValidationError
from vidu_async import capabilities as caps
from vidu_async.requests import (
    ImageToVideoRequest,
    ReferenceToVideoRequest,
    Request,
    StartEndToVideoRequest,
    Subject,
    SubjectsToVideoRequest,
    TextToVideoRequest,
    request_from_dict,
)

URL = "https://example.com/a.png"
VIDEO = "https://example.com/v.mp4"
UPLOAD = "ssupload:?id=123456"


def errors(request: Request) -> dict[str, str]:
    return {p.field: p.message for p in request.check().errors}


def warned(request: Request) -> list[tuple[str, str]]:
    return [(p.field, p.message) for p in request.check().warnings]


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buffer, "PNG")
    return buffer.getvalue()


# --- text2video -----------------------------------------------------------------------------


def test_text2video_style_values_and_where_it_has_no_effect() -> None:
    assert TextToVideoRequest("viduq1", "p", style="anime").check().ok
    assert warned(TextToVideoRequest("viduq1", "p", style="anime")) == []
    assert warned(TextToVideoRequest("viduq2", "p", style="anime")) == [
        ("style", "viduq2 ignores style")
    ]
    assert errors(TextToVideoRequest("viduq1", "p", style="cartoon")) == {
        "style": "viduq1 accepts one of general, anime, got 'cartoon'"
    }


def test_text2video_bgm_not_on_q3_and_ignored_on_q2_at_9_and_10_seconds() -> None:
    assert errors(TextToVideoRequest("viduq3-pro", "p", bgm=True)) == {
        "bgm": "not supported on viduq3-pro (only viduq2, viduq1 accept it)"
    }
    assert warned(TextToVideoRequest("viduq2", "p", bgm=True, duration=9)) == [
        ("bgm", "viduq2 ignores bgm at 9 seconds (it has no effect at 9, 10 s)")
    ]
    assert warned(TextToVideoRequest("viduq2", "p", bgm=True, duration=8)) == []


def test_text2video_needs_a_prompt_and_takes_no_images() -> None:
    assert errors(TextToVideoRequest("viduq2", " ")) == {
        "prompt": "viduq2 accepts a non-blank string, got ' '"
    }
    with pytest.raises(ValidationError) as caught:
        TextToVideoRequest.from_dict({"model": "viduq2", "prompt": "p", "images": [URL]})
    assert caught.value.problems[0].message.startswith("text2video takes no images")


# --- img2video and start-end2video ---------------------------------------------------------


@pytest.mark.parametrize("count", [0, 2])
def test_img2video_takes_exactly_one_image(count: int) -> None:
    assert errors(ImageToVideoRequest("viduq2-pro", [URL] * count)) == {
        "images": f"viduq2-pro on img2video takes exactly 1 image (the first frame), got {count}"
    }


@pytest.mark.parametrize("kind", [ImageToVideoRequest, StartEndToVideoRequest])
def test_frames_routes_refuse_aspect_ratio_saying_why(kind: type[Request]) -> None:
    images = [URL] if kind is ImageToVideoRequest else [URL, URL]
    with pytest.raises(ValidationError) as caught:
        kind.from_dict({"model": "viduq1", "images": images, "aspect_ratio": "16:9"})
    assert caught.value.fields == ("aspect_ratio",)
    assert "takes no aspect_ratio" in str(caught.value)


def test_img2video_audio_options() -> None:
    assert ImageToVideoRequest("viduq2-pro", [URL], audio=True, audio_type="all",
                               voice_id="v1").check().ok
    assert errors(ImageToVideoRequest("viduq3-pro", [URL], audio=True, voice_id="v1")) == {
        "voice_id": "not supported on viduq3-pro (only viduq2-pro, viduq2-turbo, viduq1, "
        "vidu2.0 accept it)"
    }
    assert errors(ImageToVideoRequest("viduq2-pro", [URL], audio=False, audio_type="all")) == {
        "audio_type": "only with audio; this viduq2-pro request sets audio=false"
    }
    assert errors(ImageToVideoRequest("viduq2-pro", [URL], audio_type="music")) == {
        "audio_type": "viduq2-pro accepts one of all, speech_only, sound_effect_only, got 'music'"
    }


@pytest.mark.parametrize(
    "request_",
    [
        ImageToVideoRequest("viduq2-pro", [URL], voice_id="v1"),
        ImageToVideoRequest("viduq1", [URL], audio_type="speech_only"),
        SubjectsToVideoRequest("viduq2", "@a", [Subject("a", [URL])], audio_type="all"),
    ],
    ids=lambda r: f"{type(r).__name__}-{r.model}",
)
def test_audio_options_need_audio_where_it_is_off_by_default(request_: Request) -> None:
    field = "voice_id" if getattr(request_, "voice_id", None) else "audio_type"
    assert errors(request_) == {
        field: f"only with audio; audio is off by default on {request_.model}: set audio=true"
    }
    assert attrs.evolve(request_, audio=True).check().ok


def test_audio_options_pass_where_audio_is_on_by_default() -> None:
    assert ImageToVideoRequest("viduq3-pro", [URL], audio_type="all").check().ok
    assert SubjectsToVideoRequest("viduq3", "@a", [Subject("a", [URL])], audio_type="all",
                                  duration=5).check().ok
    assert ImageToVideoRequest("viduq4", [URL], audio_type="all").check().errors == ()


@pytest.mark.parametrize("audio", [None, False])
def test_a_subject_voice_without_audio_is_a_warning_not_an_error(audio: bool | None) -> None:
    request = SubjectsToVideoRequest("viduq2", "@a", [Subject("a", [URL], voice_id="v")],
                                     audio=audio)
    assert request.check().ok
    [(field, message)] = warned(request)
    assert field == "subjects[0].voice_id" and "viduq2" in message
    assert message.startswith("a voice likely needs audio (as on img2video); ")
    assert warned(attrs.evolve(request, audio=True)) == []


@pytest.mark.parametrize(
    ("request_", "how"),
    [
        (ReferenceToVideoRequest("viduq3", "p", images=[URL], off_peak=True),
         "audio, which is on by default on viduq3"),
        (TextToVideoRequest("viduq3-pro", "p", off_peak=True),
         "audio, which is on by default on viduq3-pro"),
        (ImageToVideoRequest("viduq2-pro", [URL], audio=True, off_peak=True),
         "audio=true on viduq2-pro"),
    ],
    ids=lambda x: getattr(x, "model", ""),
)
def test_off_peak_with_audio_is_a_warning(request_: Request, how: str) -> None:
    assert request_.check().ok
    assert warned(request_) == [(
        "off_peak",
        f"combined with {how}: one copy of the API docs says audio-video output cannot be made "
        "off-peak, so the API may refuse it (set audio=false or drop off_peak)",
    )]


def test_off_peak_without_audio_is_silent() -> None:
    assert warned(ReferenceToVideoRequest("viduq3", "p", images=[URL], off_peak=True,
                                          audio=False)) == []
    assert warned(ImageToVideoRequest("viduq2-pro", [URL], off_peak=True)) == []
    assert warned(StartEndToVideoRequest("viduq3-pro", [URL, URL], off_peak=True)) == []


def test_is_rec_makes_the_prompt_ignored() -> None:
    request = ImageToVideoRequest("viduq1", [URL], prompt="p", is_rec=True)
    assert warned(request) == [("prompt", "is ignored: is_rec is true, so Vidu writes the prompt")]
    assert ImageToVideoRequest("viduq1", [URL]).to_payload() == {
        "model": "viduq1", "images": [URL]
    }


@pytest.mark.parametrize("count", [1, 3])
def test_start_end_takes_exactly_two_images(count: int) -> None:
    assert errors(StartEndToVideoRequest("viduq1", [URL] * count)) == {
        "images": f"viduq1 on start-end2video takes exactly 2 images (the first and last frames), "
        f"got {count}"
    }


@pytest.mark.parametrize(
    ("start", "end", "ok"),
    [
        ((400, 400), (400, 400), True),
        ((500, 400), (400, 400), True),  # 1.25: the upper edge
        ((400, 500), (400, 400), True),  # 0.8: the lower edge
        ((504, 400), (400, 400), False),  # 1.26
        ((400, 504), (400, 400), False),  # 0.79
        ((800, 450), (450, 800), False),
    ],
)
def test_start_end_ratio_rule_on_probed_images(
    tmp_path: Path, start: tuple[int, int], end: tuple[int, int], ok: bool
) -> None:
    (tmp_path / "end.png").write_bytes(png(*end))
    request = StartEndToVideoRequest("viduq2-pro", [png(*start), tmp_path / "end.png"])
    found = errors(request)
    assert (found == {}) is ok, found
    if not ok:
        assert "outside 0.8..1.25" in found["images"]
        assert f"{start[0]}x{start[1]}" in found["images"]


def test_start_end_ratio_is_not_checked_for_urls() -> None:
    assert StartEndToVideoRequest("viduq2-pro", [png(800, 450), URL]).check().ok


# --- reference2video with subjects --------------------------------------------------------


def subjects_request(model: str = "viduq2", *subjects: Subject, **fields: Any) -> Request:
    chosen = subjects or (Subject("cat", [URL]),)
    prompt = fields.pop("prompt", " ".join(f"@{s.name}" for s in chosen))
    return SubjectsToVideoRequest(model, prompt, chosen, **fields)


def test_subject_counts() -> None:
    many = [Subject(f"s{i}", [URL]) for i in range(8)]
    assert subjects_request("viduq2", *many[:7]).check().ok
    assert errors(subjects_request("viduq2", *many)) == {
        "subjects": "viduq2 accepts 1..7 subjects, got 8"
    }
    assert subjects_request("viduq2", Subject("cat", [URL] * 3)).check().ok
    assert errors(subjects_request("viduq2", Subject("cat", [URL] * 4))) == {
        "subjects[0].images": "viduq2 accepts 1..3 images per subject, got 4"
    }
    assert errors(subjects_request("viduq2", Subject("cat", []))) == {
        "subjects[0].images": "viduq2 accepts 1..3 images per subject, got 0"
    }


def test_subject_videos_only_on_viduq2_pro_within_its_limits() -> None:
    video = Subject("dog", [URL], videos=[VIDEO])
    cat = Subject("cat", [URL])
    assert errors(subjects_request("viduq2", cat, video)) == {
        "subjects": "subjects with videos are not supported on viduq2 (only viduq2-pro accept them)"
    }
    assert subjects_request("viduq2-pro", cat, video, Subject("eel", [URL], videos=[VIDEO])
                            ).check().ok
    image_only = [Subject(f"s{i}", [URL]) for i in range(5)]
    assert errors(subjects_request("viduq2-pro", *image_only)) == {
        "subjects": "viduq2-pro accepts 0..4 subjects without videos, got 5"
    }
    assert errors(subjects_request("viduq2-pro", Subject("v", [URL], videos=[VIDEO] * 3))) == {
        "subjects": "viduq2-pro accepts 1..2 videos, got 3"
    }
    three = [Subject(f"v{i}", [URL], videos=[VIDEO]) for i in range(3)]
    assert errors(subjects_request("viduq2-pro", *three)) == {
        "subjects": "viduq2-pro accepts 0..2 subjects with videos, got 3"
    }


def test_subject_prompt_limit_is_2000() -> None:
    at_limit = "@cat " + "x" * (caps.SUBJECT_PROMPT_MAX_CHARS - 5)
    assert subjects_request(prompt=at_limit).check().ok
    assert errors(subjects_request(prompt=at_limit + "x")) == {
        "prompt": "viduq2 accepts at most 2000 characters, got 2001"
    }


def test_mentions_of_subjects_are_warned_about() -> None:
    request = subjects_request(
        "viduq2", Subject("cat", [URL]), Subject("big dog", [URL]),
        prompt="@cat chases @big dog past @owl, mail me at a@b.c",
    )
    assert warned(request) == [("prompt", "@owl names no subject")]
    request = subjects_request("viduq2", Subject("cat", [URL]), prompt="a cat")
    assert warned(request) == [("prompt", "never mentions subject 'cat' (as @cat)")]


def test_subjects_from_dict_reports_bad_subjects_by_index() -> None:
    with pytest.raises(ValidationError) as caught:
        SubjectsToVideoRequest.from_dict(
            {"model": "viduq2", "prompt": "p", "subjects": [{"images": [URL]}, 3,
                                                             {"name": "a", "x": 1}]}
        )
    assert caught.value.fields == ("subjects[0].name", "subjects[1]", "subjects[2].x")


# --- request_from_dict -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "kind", "expected"),
    [
        ({"model": "viduq2", "prompt": "p"}, None, TextToVideoRequest),
        ({"model": "viduq2", "prompt": "p", "images": [URL]}, None, ReferenceToVideoRequest),
        ({"model": "viduq2-pro", "prompt": "p", "videos": [VIDEO], "images": [URL]}, None,
         ReferenceToVideoRequest),
        ({"model": "viduq2", "prompt": "@a", "subjects": [{"name": "a", "images": [URL]}]}, None,
         SubjectsToVideoRequest),
        ({"type": "img2video", "model": "viduq1", "images": [URL]}, None, ImageToVideoRequest),
        ({"model": "viduq1", "images": [URL, URL]}, "start-end2video", StartEndToVideoRequest),
        ({"type": "img2video", "model": "viduq1", "images": [URL]}, "start-end2video",
         ImageToVideoRequest),
        ({"type": "reference2video", "model": "viduq2", "prompt": "p"}, None,
         ReferenceToVideoRequest),
        ({"model": "viduq2", "prompt": "@a", "subjects": [{"name": "a", "images": [URL]}]},
         "reference2video", SubjectsToVideoRequest),
        ({"model": "viduq2", "prompt": "p"}, "text2video", TextToVideoRequest),
    ],
)
def test_request_from_dict_picks_the_class(
    data: dict[str, Any], kind: str | None, expected: type[Request]
) -> None:
    request = request_from_dict(data, kind=kind)
    assert type(request) is expected
    assert "type" not in request.to_payload()


def test_request_from_dict_refuses_an_unknown_type() -> None:
    with pytest.raises(ValidationError) as caught:
        request_from_dict({"type": "video2video", "model": "viduq2", "prompt": "p"})
    assert caught.value.fields == ("type",)
    assert "text2video, img2video, start-end2video, reference2video" in str(caught.value)


@pytest.mark.parametrize(
    ("cls", "route", "kind"),
    [
        (ReferenceToVideoRequest, "/reference2video", "reference2video"),
        (SubjectsToVideoRequest, "/reference2video", "reference2video"),
        (TextToVideoRequest, "/text2video", "text2video"),
        (ImageToVideoRequest, "/img2video", "img2video"),
        (StartEndToVideoRequest, "/start-end2video", "start-end2video"),
    ],
)
def test_route_and_kind(cls: type[Request], route: str, kind: str) -> None:
    assert (cls.route, cls.kind) == (route, kind)


# --- ssupload: URIs, media(), round-trips -------------------------------------------------

EXAMPLES: list[Request] = [
    ReferenceToVideoRequest("viduq2-pro", "p", images=[UPLOAD, URL], videos=[VIDEO], seed=3,
                            aspect_ratio="21:9", wm_position=2, off_peak=True),
    SubjectsToVideoRequest("viduq2-pro", "@a and @b", [Subject("a", [UPLOAD]),
                           Subject("b", [URL], videos=[VIDEO], voice_id="v")], audio=True,
                           audio_type="all", duration=5),
    TextToVideoRequest("viduq3-pro", "p", aspect_ratio="4:3", audio=True,
                       meta_data='{"Label": "x"}', callback_url="https://e.com/cb"),
    ImageToVideoRequest("viduq2-turbo", [UPLOAD], prompt="p", is_rec=False, audio=True,
                        voice_id="v", watermark=True),
    StartEndToVideoRequest("vidu2.0", [UPLOAD, URL], duration=8, resolution="720p",
                           movement_amplitude="small", bgm=True),
]


@pytest.mark.parametrize("request_", [r for r in EXAMPLES if r.media()], ids=lambda r: r.kind)
def test_ssupload_uris_are_accepted_and_sent_as_is(request_: Request) -> None:
    result = request_.check()
    assert result.ok and result.warnings == (), result
    assert UPLOAD in request_.media()
    assert UPLOAD in str(request_.to_payload())


@pytest.mark.parametrize("request_", EXAMPLES, ids=lambda r: type(r).__name__)
def test_round_trip_through_the_body(request_: Request, tmp_path: Path) -> None:
    body = request_.to_payload()
    again = type(request_).from_dict(body, base_dir=tmp_path)  # base_dir leaves URIs alone
    assert again == request_
    assert request_from_dict({**body, "type": request_.kind}) == request_


def test_an_ssupload_uri_is_not_a_video() -> None:
    request = ReferenceToVideoRequest("viduq2-pro", "p", images=[URL], videos=[UPLOAD])
    assert errors(request) == {
        "videos[0]": f"{UPLOAD}: an ssupload: URI names an uploaded image, not a video"
    }


def test_media_lists_every_entry(tmp_path: Path) -> None:
    subjects = SubjectsToVideoRequest("viduq2-pro", "@a", [Subject("a", [URL, tmp_path],
                                                                   videos=[VIDEO])])
    assert subjects.media() == (URL, tmp_path, VIDEO)
    assert TextToVideoRequest("viduq2", "p").media() == ()
