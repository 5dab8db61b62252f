"""Jobs files and ``vidu-async validate``: every line checked, bad lines named, the rest kept."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from vidu_async.cli import main
from vidu_async.failures import Failure, write_errors_file
from vidu_async.jobs import auto_id, read_jobs, sniff_format
from vidu_async.testing import FakeVidu

URL = "https://example.com/ref.png"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_jsonl_lines_become_jobs_with_line_numbers(tmp_path: Path) -> None:
    jobs = write(
        tmp_path / "jobs.jsonl",
        "\n".join(
            [
                json.dumps({"custom_id": "a", "model": "viduq2", "prompt": "p", "images": [URL]}),
                "",
                "{not json",
                json.dumps([1, 2]),
                json.dumps({"model": "viduq3", "prompt": "p", "images": [URL], "duration": 2}),
                json.dumps({"custom_id": "a", "model": "viduq2", "prompt": "q", "images": [URL]}),
                json.dumps({"model": "viduq2", "prompt": "p", "images": [URL], "colour": "red"}),
            ]
        ),
    )
    lines = list(read_jobs(jobs))
    assert [(item.line, item.ok) for item in lines] == [
        (1, True), (3, False), (4, False), (5, False), (6, False), (7, False),
    ]
    assert lines[0].job is not None and lines[0].job.custom_id == "a"
    assert "not valid JSON" in lines[1].errors[0].message
    assert lines[3].custom_id is not None and lines[3].custom_id.startswith("auto-")
    assert lines[3].errors[0].message == "viduq3 accepts 3..16 seconds, got 2"
    assert lines[4].errors[0].message == "'a' is already used on line 1"
    assert lines[5].errors[0].field == "colour"


def test_defaults_fill_what_a_line_leaves_out(tmp_path: Path) -> None:
    jobs = write(tmp_path / "jobs.jsonl", '{"prompt": "p"}\n{"prompt": "q", "model": "viduq1"}\n')
    lines = list(read_jobs(jobs, defaults={"model": "viduq3", "images": [URL], "duration": 8}))
    assert lines[0].job is not None and lines[0].job.request.duration == 8
    assert lines[1].errors[0].field == "duration"  # viduq1 only does 5 s: the default doesn't fit


NO_IMAGES = "text2video takes no images (img2video, start-end2video and reference2video do)"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ({"type": "text2video", "prompt": "p", "images": [URL]}, [f"images: {NO_IMAGES}"]),
        ({"type": "text2video", "prompt": "p", "model": "viduq1"},
         ["duration: viduq1 accepts 5 seconds, got 8 "
          "(from the default --duration: this line gives no duration)"]),
        ({"prompt": "p", "model": "viduq1"},
         ["duration: viduq1 accepts 5 seconds, got 8 "
          "(from the default --duration: this line gives no duration)"]),
        ({"prompt": "p", "model": "viduq1", "duration": 8},
         ["duration: viduq1 accepts 5 seconds, got 8"]),
    ],
)
def test_a_problem_with_a_default_says_the_default_gave_it(
    tmp_path: Path, line: dict[str, object], expected: list[str]
) -> None:
    jobs = write(tmp_path / "jobs.jsonl", json.dumps(line) + "\n")
    [item] = read_jobs(jobs, defaults={"model": "viduq2", "images": [URL], "duration": 8})
    assert [str(p) for p in item.errors] == expected


def test_a_file_may_mix_endpoints_each_line_taking_the_defaults_it_can_use(
    tmp_path: Path,
) -> None:
    """The README's mixed file under ``--model --image --aspect-ratio``: a default fills only
    the fields the line's endpoint takes, and a line's own value, an empty list too, wins."""
    Image.new("RGB", (300, 200)).save(tmp_path / "cat.png")
    subject = {"name": "c", "images": ["cat.png"]}
    lines = [
        {"custom_id": "r", "prompt": "a cat on a roof"},
        {"custom_id": "t", "type": "text2video", "prompt": "a paper boat"},
        {"custom_id": "i", "type": "img2video", "images": ["cat.png"], "prompt": "it runs"},
        {"custom_id": "s", "prompt": "@c runs", "subjects": [subject]},
        {"custom_id": "t2", "type": "text2video", "prompt": "a paper boat", "images": []},
        {"custom_id": "e", "prompt": "an empty list overrides", "images": []},
    ]
    jobs = write(tmp_path / "mixed.jsonl", "".join(json.dumps(line) + "\n" for line in lines))
    defaults = {"model": "viduq2", "images": [str(tmp_path / "cat.png")], "aspect_ratio": "16:9"}
    found = {item.custom_id: item for item in read_jobs(jobs, defaults=defaults)}
    assert {k: [str(p) for p in item.errors] for k, item in found.items() if not item.ok} == {}
    requests = {k: item.job.request for k, item in found.items() if item.job is not None}
    assert {k: type(r).__name__ for k, r in requests.items()} == {
        "r": "ReferenceToVideoRequest", "t": "TextToVideoRequest",
        "i": "ImageToVideoRequest", "s": "SubjectsToVideoRequest",
        "t2": "TextToVideoRequest", "e": "TextToVideoRequest",
    }
    assert {k: getattr(r, "aspect_ratio", None) for k, r in requests.items()} == {
        "r": "16:9", "t": "16:9", "i": None, "s": "16:9", "t2": "16:9", "e": "16:9",
    }
    assert requests["r"].media() == (tmp_path / "cat.png",)
    assert all(r.model == "viduq2" for r in requests.values())


@pytest.mark.parametrize(
    ("line", "defaults", "kind"),
    [
        ({"prompt": "p"}, {"type": "img2video", "images": [URL]}, "img2video"),
        ({"prompt": "@c", "subjects": [{"name": "c", "images": [URL]}]},
         {"type": "img2video", "images": [URL]}, "reference2video"),
        ({"prompt": "p", "type": "text2video"}, {"type": "img2video", "images": [URL]},
         "text2video"),
        ({"prompt": "p", "images": [URL]}, {}, "reference2video"),
        ({"prompt": "p", "videos": []}, {"videos": [URL]}, "text2video"),
    ],
)
def test_the_line_picks_its_endpoint_before_the_defaults_fill_it(
    tmp_path: Path, line: dict[str, object], defaults: dict[str, object], kind: str
) -> None:
    jobs = write(tmp_path / "jobs.jsonl", json.dumps(line) + "\n")
    [item] = read_jobs(jobs, defaults={"model": "viduq2", **defaults})
    assert (item.kind, [str(p) for p in item.errors]) == (kind, [])


def test_a_valid_line_keeps_its_auto_id_whatever_defaults_it_does_not_take(
    tmp_path: Path,
) -> None:
    """Ids hash the fields with the defaults applied: a default the line cannot take is not
    among them, and a line that took every default hashes exactly as before."""
    jobs = write(tmp_path / "jobs.jsonl", '{"prompt": "p", "type": "text2video"}\n'
                                          '{"prompt": "p"}\n')
    base = {"model": "viduq2"}
    text, ref = read_jobs(jobs, defaults={**base, "images": [URL]})
    [plain] = read_jobs(write(tmp_path / "one.jsonl", '{"prompt": "p", "type": "text2video"}\n'),
                        defaults=base)
    assert text.custom_id == plain.custom_id == auto_id({**base, "prompt": "p",
                                                          "type": "text2video"})
    assert ref.custom_id == auto_id({**base, "images": [URL], "prompt": "p"})


def test_the_errors_file_fills_each_line_with_the_defaults_its_endpoint_takes(
    tmp_path: Path,
) -> None:
    """A failed text2video line of a mixed file is written without the default ``--image``:
    it must be submittable as is."""
    jobs = write(tmp_path / "jobs.jsonl",
                 '{"custom_id": "t", "type": "text2video", "prompt": "a boat"}\n'
                 '{"custom_id": "r", "prompt": "a cat"}\n')
    failures = [Failure(cid, n, "failed", "TaskFailed", "retry", True)
                for n, cid in ((1, "t"), (2, "r"))]
    out = tmp_path / "errors.jsonl"
    defaults = {"model": "viduq2", "images": [URL], "aspect_ratio": "16:9"}
    assert write_errors_file(out, jobs, failures, defaults=defaults).written == 2
    assert [json.loads(line) for line in out.read_text().splitlines()] == [
        {"custom_id": "t", "model": "viduq2", "aspect_ratio": "16:9", "type": "text2video",
         "prompt": "a boat"},
        {"custom_id": "r", "model": "viduq2", "images": [URL], "aspect_ratio": "16:9",
         "prompt": "a cat"},
    ]
    assert all(item.ok for item in read_jobs(out))


def test_csv_cells_are_typed_and_lists_split(tmp_path: Path) -> None:
    jobs = write(
        tmp_path / "jobs.csv",
        "custom_id,model,prompt,images,duration,bgm\n"
        f'x,viduq2,"a, b",{URL}|{URL},6,yes\n'
        f'y,viduq2,p,"[""{URL}""]",six,maybe\n'
        "z,viduq2\n"
        ",,,,,\n",
    )
    lines = list(read_jobs(jobs))
    assert [item.line for item in lines] == [2, 3, 4]
    first = lines[0].job
    assert first is not None
    assert first.request.images == (URL, URL)
    assert (first.request.duration, first.request.bgm, first.request.prompt) == (6, True, "a, b")
    assert {p.field for p in lines[1].errors} == {"duration", "bgm"}
    assert lines[2].errors[0].message == "has 2 cells, the header has 6"


def test_a_csv_record_over_several_lines_is_one_job_that_says_so(tmp_path: Path) -> None:
    """A quoted prompt with line breaks is legal CSV and runs as one job; it warns, naming the
    lines, since a stray quote that closes at the end of a cell looks the same."""
    jobs = write(tmp_path / "jobs.csv",
                 f'prompt,images\n"a cat,\nthen a dog",{URL}\nan owl,{URL}\n')
    first, second = read_jobs(jobs, defaults={"model": "viduq2"})
    assert first.job is not None and first.job.request.prompt == "a cat,\nthen a dog"
    assert [p.message for p in first.warnings] == [
        "one job of lines 2-3: a quoted cell holds line breaks (if that is not meant, a quote "
        "is unbalanced)"]
    assert second.line == 4 and second.ok and second.warnings == ()


def test_text_files_are_one_prompt_per_line_and_media_resolve_against_the_file(
    tmp_path: Path,
) -> None:
    Image.new("RGB", (300, 200)).save(tmp_path / "ref.png")
    jobs = write(tmp_path / "prompts.txt", "a cat\n\n  a dog  \n")
    lines = list(read_jobs(jobs, defaults={"model": "viduq2", "images": ["ref.png"]}))
    assert [(i.line, i.job.request.prompt if i.job else None) for i in lines] == [
        (1, "a cat"), (3, "a dog"),
    ]
    assert lines[0].job is not None
    assert lines[0].job.request.images == (tmp_path / "ref.png",)


def test_reading_is_lazy(tmp_path: Path) -> None:
    jobs = write(tmp_path / "p.txt", "".join(f"prompt {i}\n" for i in range(10_000)))
    stream = read_jobs(jobs, defaults={"model": "viduq2", "images": [URL]})
    assert next(stream).line == 1
    assert next(stream).line == 2


def test_validate_command_json_and_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = write(
        tmp_path / "jobs.jsonl",
        '{"custom_id": "ok", "prompt": "p", "bgm": true, "duration": 10}\n'
        "oops\n"
        '{"prompt": "p", "duration": 99}\n',
    )
    code = main(["validate", str(jobs), "--model", "viduq2", "--image", URL, "--json"])
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 1
    assert [(r["line"], r["ok"]) for r in records] == [(1, True), (2, False), (3, False)]
    assert records[0]["warnings"] == [
        {"field": "bgm",
         "message": "viduq2 ignores bgm at 10 seconds (it has no effect at 9, 10 s)"}
    ]
    assert records[2]["errors"] == [
        {"field": "duration", "message": "viduq2 accepts 1..10 seconds, got 99"}
    ]
    assert f"{jobs}:2: error: (line): not valid JSON" in err
    assert f"{jobs}:1: warning: bgm: viduq2 ignores bgm" in err
    assert "3 jobs, 1 valid, 2 invalid" in err


def test_a_default_flag_its_own_type_never_takes_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Defaults fill only what a line's endpoint takes; with --type naming that endpoint for
    # every line without one, --image would silently reach none.
    good = write(tmp_path / "good.txt", "a prompt\n")
    for command in ("validate", "submit"):
        code = main([command, str(good), "--type", "text2video", "--model", "viduq2",
                     "--image", URL, "--aspect-ratio", "16:9"])
        assert code == 2
        assert capsys.readouterr().err == (
            f"vidu-async {command}: --type text2video takes no --image: no line would get it "
            "(lines of other endpoints can name their own type)\n")
    assert main(["validate", str(good), "--type", "reference2video", "--model", "viduq2",
                 "--image", URL]) == 0


def test_validate_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path / "good.txt", "a prompt\n")
    assert main(["validate", str(good), "--model", "viduq2", "--image", URL]) == 0
    assert main(["validate", str(tmp_path / "missing.jsonl")]) == 2
    assert main(["validate", str(write(tmp_path / "jobs.xml", ""))]) == 2
    assert main(["validate", str(good), "--duration", "five"]) == 2
    assert main(["validate"]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err and "unknown jobs file type '.xml'" in err


def test_validate_counts_and_names_every_line_around_a_stray_csv_quote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = write(
        tmp_path / "q.csv",
        'custom_id,prompt\nc1,first\nc2,"a broken quote\nc3,third\nc4,fourth\nc5,"fifth"\n'
        "c6,sixth\n",
    )
    assert main(["validate", str(jobs), "--model", "viduq2", "--image", URL]) == 1
    err = capsys.readouterr().err
    assert f"{jobs}:3: error: (line): not valid CSV: ',' expected after '\"': a quote opened " \
        "on line 3 and closed on line 6 swallowed lines 4-6; they are read again" in err
    assert f"{jobs}: 6 jobs, 5 valid, 1 invalid" in err


def test_validate_refuses_a_payload_with_no_room_for_the_correlation_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = {"model": "viduq2", "prompt": "x", "payload": "a" * 1_048_540}
    jobs = write(tmp_path / "big.jsonl", json.dumps(line) + "\n")
    assert main(["validate", str(jobs)]) == 1
    assert (f"{jobs}:1: error: payload: viduq2 accepts at most 1048539 characters through this "
            "client") in capsys.readouterr().err


def test_console_entry_points_run(tmp_path: Path) -> None:
    good = write(tmp_path / "good.txt", "a prompt\n")
    done = subprocess.run(
        [sys.executable, "-m", "vidu_async", "validate", str(good), "--model", "viduq2",
         "--image", URL, "--json"],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.load(io.StringIO(done.stdout))["ok"] is True


# --- a line without custom_id is identified by what it asks ------------------------------------


def ids(path: Path) -> dict[str, str]:
    """{prompt: custom_id} of every line of a jobs file."""
    lines = list(read_jobs(path, defaults={"model": "viduq2", "images": ["ref.png"]}))
    return {i.job.request.prompt: i.custom_id for i in lines if i.job and i.custom_id}


@pytest.mark.parametrize(
    ("name", "header", "line"),
    [
        ("p.txt", "", "{}"),
        ("p.csv", "prompt\n", "{}"),
        ("p.jsonl", "", '{{"prompt": "{}"}}'),
    ],
)
def test_inserting_or_reordering_lines_keeps_every_other_id(
    tmp_path: Path, name: str, header: str, line: str
) -> None:
    Image.new("RGB", (300, 200)).save(tmp_path / "ref.png")
    path = tmp_path / name

    def ids_of(*prompts: str) -> dict[str, str]:
        write(path, header + "".join(line.format(p) + "\n" for p in prompts))
        return ids(path)

    before = ids_of("a cat", "a dog", "a fox")
    assert all(i.startswith("auto-") and len(i) == len("auto-") + 16 for i in before.values())
    assert len(set(before.values())) == 3
    inserted = ids_of("a new one", "a cat", "a dog", "a fox")
    assert {p: inserted[p] for p in before} == before
    assert ids_of("a fox", "a cat", "a dog") == before


def test_identical_lines_stay_separate_jobs_numbered_in_file_order(tmp_path: Path) -> None:
    path = write(tmp_path / "p.txt", "a cat\na dog\na cat\na cat\n")
    lines = list(read_jobs(path, defaults={"model": "viduq2", "images": [URL]}))
    cat = lines[0].custom_id
    assert [i.custom_id for i in lines] == [cat, lines[1].custom_id, f"{cat}-2", f"{cat}-3"]
    assert all(i.ok for i in lines)


def test_the_id_depends_on_the_request_as_written_not_on_where_the_file_lies(
    tmp_path: Path,
) -> None:
    (tmp_path / "sub").mkdir()
    first = write(tmp_path / "a.txt", "a cat\n")
    same = write(tmp_path / "b.txt", "a cat\n")
    elsewhere = write(tmp_path / "sub" / "a.txt", "a cat\n")

    def the_id(path: Path, **defaults: object) -> str | None:
        [line] = read_jobs(path, defaults={"model": "viduq2", "images": ["ref.png"], **defaults})
        return line.custom_id

    assert the_id(first) == the_id(same)
    assert the_id(first) == the_id(elsewhere)  # another checkout: the same job
    assert the_id(first) != the_id(first, duration=8)
    assert the_id(first) != the_id(first, images=[str(tmp_path / "ref.png")])  # as written


def test_an_explicit_id_may_look_like_an_auto_id_but_ids_stay_unique(tmp_path: Path) -> None:
    path = write(tmp_path / "p.txt", "a cat\n")
    [auto] = read_jobs(path, defaults={"model": "viduq2", "images": [URL]})
    jsonl = write(
        tmp_path / "jobs.jsonl",
        f'{{"prompt": "a cat"}}\n{{"custom_id": "{auto.custom_id}", "prompt": "a dog"}}\n',
    )
    lines = list(read_jobs(jsonl, defaults={"model": "viduq2", "images": [URL]}))
    assert lines[0].custom_id == auto.custom_id
    assert [str(p) for p in lines[1].errors] == [
        f"custom_id: {auto.custom_id!r} is already used on line 1"
    ]


@pytest.mark.parametrize(("name", "text", "converted"), [
    ("jobs.json", '[\n  {"prompt": "a cat"},\n  {"prompt": "a dog"}\n]\n', "jobs.jsonl"),
    ("jobs.jsonl", '\n  [{"prompt": "a cat"}, {"prompt": "a dog"}]\n', "jobs.lines.jsonl"),
    ("jobs.ndjson", '\ufeff[{"prompt": "a cat"},\n{"prompt": "a dog"}]', "jobs.jsonl"),
])
async def test_a_json_array_is_refused_whole_saying_how_to_convert_it(
    cli_sim: FakeVidu, tmp_path: Path, capfd: pytest.CaptureFixture[str],
    name: str, text: str, converted: str,
) -> None:
    # Read a line at a time, an array's lines were each "not valid JSON", and an object alone
    # on its line (the pretty-printed array's) a job, sent and paid.
    jobs = write(tmp_path / name, text)
    said = (f"{jobs} holds a JSON array, but jobs are read as JSON Lines, one object per line: "
            f"convert it first, e.g. jq -c '.[]' {jobs} > {tmp_path / converted}\n")
    for command in ("validate", "submit"):
        quiet = ["--quiet"] if command == "submit" else []
        code = await asyncio.to_thread(
            main, [command, str(jobs), "--model", "viduq2", "--image", URL, *quiet])
        assert (code, capfd.readouterr().err) == (2, f"vidu-async {command}: {said}")
    assert cli_sim.stats.tasks_created == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


async def test_a_json_array_on_stdin_is_refused_saying_to_convert_it_in_the_pipe(
    cli_sim: FakeVidu, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # There is no file to convert: the conversion goes in the pipe.
    text = '[{"prompt": "a cat"}, {"prompt": "a dog"}]\n'
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    code = await asyncio.to_thread(main, ["validate", "-", "--model", "viduq2", "--image", URL])
    assert (code, capfd.readouterr().err.splitlines()[-1]) == (2, (
        "vidu-async validate: <stdin> holds a JSON array, but jobs are read as JSON Lines, one "
        "object per line: convert it first, e.g. ... | jq -c '.[]' | vidu-async ... -"))
    assert cli_sim.stats.tasks_created == 0


def test_a_json_array_on_stdin_is_read_as_json_lines_to_be_refused() -> None:
    # As text, each line of it would be a prompt, sent and paid.
    assert sniff_format(b'\n [\n {"prompt": "a cat"}\n]\n') == ("jsonl", "it starts with [")
