"""Bad input never stops the rest: each broken line (or file) becomes its own clear error, with its
line number, and every other line is still read, validated and (through the CLI) run."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from vidu_async.cli import main
from vidu_async.jobs import MAX_LINE_BYTES, JobLine, JobsFileError, read_jobs
from vidu_async.submit import count_lines
from vidu_async.testing import FakeVidu

URL = "https://example.com/ref.png"
DEFAULTS = {"model": "viduq2", "images": [URL]}
VALIDATE = ["--model", "viduq2", "--image", URL]


def prompts(count: int) -> list[bytes]:
    return [f"prompt {i}\n".encode() for i in range(1, count + 1)]


def read(path: Path) -> list[JobLine]:
    return list(read_jobs(path, defaults=DEFAULTS))


def only_bad(lines: list[JobLine]) -> dict[int, list[str]]:
    """{line: [field: message]} of the lines that failed."""
    return {item.line: [str(p) for p in item.errors] for item in lines if not item.ok}


# --- bytes that are not UTF-8, lines too long or too deep ---------------------------------------


def test_a_non_utf8_byte_spoils_only_its_line(tmp_path: Path) -> None:
    lines = prompts(400)
    lines[299] = b"prompt \xff 300\n"
    path = tmp_path / "prompts.txt"
    path.write_bytes(b"".join(lines))
    read_back = read(path)
    assert len(read_back) == 400
    assert only_bad(read_back) == {
        300: ["(line): not UTF-8 at byte 8 of the line (0xff): save the file as UTF-8"]
    }
    assert read_back[399].job is not None and read_back[399].job.request.prompt == "prompt 400"


def test_validate_reports_the_non_utf8_line_and_checks_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(
        b'{"prompt": "caf\xe9"}\n'  # Latin-1, not UTF-8
        + b'{"prompt": "a dog"}\n' * 2
    )
    assert main(["validate", str(path), *VALIDATE, "--json"]) == 1
    out, err = capsys.readouterr()
    assert [json.loads(r)["ok"] for r in out.splitlines()] == [False, True, True]
    assert f"{path}:1: error: (line): not UTF-8 at byte 16 of the line (0xe9)" in err
    assert "3 jobs, 2 valid, 1 invalid" in err


def test_a_bom_on_the_first_line_is_still_allowed(tmp_path: Path) -> None:
    path = tmp_path / "jobs.csv"
    path.write_bytes(b"\xef\xbb\xbfprompt\na cat\n")
    [line] = read(path)
    assert line.job is not None and line.job.request.prompt == "a cat"


@pytest.mark.parametrize(
    ("encoding", "name"),
    [
        ("utf-16", "UTF-16"),  # with its BOM, as Windows Notepad and PowerShell write it
        ("utf-16-le", "UTF-16"),  # without: the NUL bytes of the first character tell
        ("utf-16-be", "UTF-16"),
        ("utf-32", "UTF-32"),
        ("utf-32-le", "UTF-32"),
        ("utf-32-be", "UTF-32"),
    ],
)
@pytest.mark.parametrize(
    ("suffix", "text"),
    [(".txt", "a red fox\na heron\n"), (".jsonl", '{"prompt": "a red fox"}\n'),
     (".csv", "prompt\na red fox\n")],
)
def test_a_utf16_or_utf32_file_is_refused_whole_in_one_line_before_anything_is_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], encoding: str, name: str, suffix: str,
    text: str,
) -> None:
    path = tmp_path / f"jobs{suffix}"
    path.write_text(text, encoding=encoding)
    with pytest.raises(JobsFileError, match=f"^{path} is {name}; save it as UTF-8$"):
        read(path)
    assert main(["validate", str(path), *VALIDATE]) == 2
    assert main(["submit", str(path), *VALIDATE]) == 2  # no key, no server: refused first
    err = capsys.readouterr().err
    assert err == (f"vidu-async validate: {path} is {name}; save it as UTF-8\n"
                   f"vidu-async submit: {path} is {name}; save it as UTF-8\n")


def test_a_utf16_stdin_is_named_as_stdin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO("a fox\n".encode("utf-16"))))
    assert main(["validate", "-", *VALIDATE]) == 2
    assert "vidu-async validate: <stdin> is UTF-16; save it as UTF-8" in capsys.readouterr().err


def test_a_deeply_nested_json_line_is_that_lines_error(tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    deep = "[" * 100_000 + "]" * 100_000
    path.write_text(
        f'{{"prompt": "a"}}\n{deep}\n{{"prompt": "b", "images": {deep}}}\n{{"prompt": "c"}}\n'
    )
    assert only_bad(read(path)) == {
        2: ["(line): not valid JSON: nested too deeply"],
        3: ["(line): not valid JSON: nested too deeply"],
    }


def test_a_deeply_nested_csv_cell_is_that_fields_error(tmp_path: Path) -> None:
    path = tmp_path / "jobs.csv"
    path.write_text(f"prompt,images\na,{'[' * 100_000}\nb,{URL}\n")
    bad = only_bad(read(path))
    assert list(bad) == [2] and bad[2][0].startswith("images: viduq2 accepts a list")


def test_a_line_longer_than_the_limit_is_that_lines_error(tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    with path.open("wb") as out:
        out.write(b"first\n" + b"x" * (MAX_LINE_BYTES + 10) + b"\nlast\n")
    lines = read(path)
    assert [(i.line, i.ok) for i in lines] == [(1, True), (2, False), (3, True)]
    assert str(lines[1].errors[0]) == (
        f"(line): longer than {MAX_LINE_BYTES:,} bytes, the most a line may hold"
    )


def test_an_unexpected_failure_on_one_line_is_that_lines_error(tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text('{"prompt": "a", "images": ["~no-such-user-vidu/x.png"]}\n{"prompt": "b"}\n')
    lines = read(path)
    assert only_bad(lines) == {
        1: ["(line): cannot be read: RuntimeError: Could not determine home directory."]
    }
    assert lines[1].ok


# --- control characters -------------------------------------------------------------------------


def test_control_characters_in_a_prompt_are_refused_tab_and_newline_are_not(
    tmp_path: Path,
) -> None:
    path = tmp_path / "prompts.txt"
    path.write_bytes(b"\x00\x00\x00\nok\twith a tab\nan \x1b[31m escape\n")
    assert only_bad(read(path)) == {
        1: ["prompt: contains the control character U+0000 at character 1; "
            "only tab and line breaks are allowed"],
        3: ["prompt: contains the control character U+001B at character 4; "
            "only tab and line breaks are allowed"],
    }
    jsonl = tmp_path / "jobs.jsonl"
    jsonl.write_text('{"prompt": "two\\nlines\\r\\n"}\n{"prompt": "bell\\u0007"}\n')
    assert list(only_bad(read(jsonl))) == [2]


# --- CSV ----------------------------------------------------------------------------------------


def test_a_csv_file_without_a_header_is_refused_as_a_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "jobs.csv"
    path.write_text("a cat,viduq2\na dog,viduq2\n")
    with pytest.raises(JobsFileError, match="must start with a header row of field names"):
        read(path)
    assert main(["validate", str(path), *VALIDATE]) == 2
    err = capsys.readouterr().err
    assert f"vidu-async validate: {path}:1: a CSV jobs file must start with a header row" in err
    assert "'a cat,viduq2' names none of" in err


def test_csv_header_names_are_case_and_space_insensitive(tmp_path: Path) -> None:
    path = tmp_path / "jobs.csv"
    path.write_text(" Custom_ID , Prompt ,MODEL,Aspect Ratio,Images\nx,a cat,viduq2,1:1,"
                    f"{URL}\n")
    [line] = list(read_jobs(path))
    assert line.job is not None
    assert (line.custom_id, line.job.request.prompt, line.job.request.aspect_ratio) == (
        "x", "a cat", "1:1"
    )


def test_csv_records_carry_the_line_where_they_start(tmp_path: Path) -> None:
    path = tmp_path / "jobs.csv"
    path.write_bytes(
        b"prompt,duration\n"
        b'"a cat\n\non two lines",5\n'  # lines 2-4
        b"\n"
        b"a dog,99\n"  # line 6
        b'"a \xff bird\nspanning",5\n'  # lines 7-8, not UTF-8
        b"a fox,5\n"  # line 9
    )
    lines = read(path)
    assert [(i.line, i.ok) for i in lines] == [(2, True), (6, False), (7, False), (9, True)]
    assert lines[0].job is not None and lines[0].job.request.prompt == "a cat\n\non two lines"
    assert str(lines[1].errors[0]) == "duration: viduq2 accepts 1..10 seconds, got 99"
    assert str(lines[2].errors[0]) == (
        "(line): not UTF-8 at byte 4 of the line (0xff): save the file as UTF-8 "
        "(the record spans lines 7-8)"
    )
    assert count_lines(path) == 4


STRAY = "c1,first\nc2,\"a broken quote\nc3,third\nc4,fourth\nc5,\"fifth\"\nc6,sixth\n"
"""The reviewers' file: line 3's stray quote closes on line 6, swallowing lines 4-6."""
AGAIN = "; they are read again, each on its own"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(STRAY, [
            (2, "c1"),
            (3, "(line): not valid CSV: ',' expected after '\"': a quote opened on line 3 and "
                f"closed on line 6 swallowed lines 4-6{AGAIN}"),
            (4, "c3"), (5, "c4"), (6, "c5"), (7, "c6"),
        ], id="closed-later"),
        pytest.param('c1,first\nc2,"a broken quote\nc3,third\nc4,fourth\n', [
            (2, "c1"),
            (3, "(line): not valid CSV: unexpected end of data: a quote opened on line 3 and "
                f"never closed swallowed lines 4-5{AGAIN}"),
            (4, "c3"), (5, "c4"),
        ], id="never-closed"),
        pytest.param('c1,first\nc2,"open\n', [
            (2, "c1"),
            (3, "(line): not valid CSV: unexpected end of data: a quote opened on line 3 is "
                "never closed"),
        ], id="never-closed-on-the-last-line"),
        pytest.param('c1,"x\nc2,y\nc3,"z\nc4,w\n', [
            (2, "(line): not valid CSV: ',' expected after '\"': a quote opened on line 2 and "
                f"closed on line 4 swallowed lines 3-4{AGAIN}"),
            (3, "c2"),
            (4, "(line): not valid CSV: unexpected end of data: a quote opened on line 4 and "
                f"never closed swallowed line 5{AGAIN}"),
            (5, "c4"),
        ], id="two-stray-quotes"),
        pytest.param('c1,"two\nlines",extra\nc2,ok\n', [
            (2, "(line): has 3 cells, the header has 2: a quote opened on line 2 and closed on "
                "line 3 swallowed line 3 into this record: not run either"),
            (4, "c2"),
        ], id="well-formed-but-too-many-cells-is-not-read-again"),
        pytest.param('c1,"two\nlines"\nc2,ok\n', [(2, "c1"), (4, "c2")],
                     id="a-prompt-on-two-lines"),
    ],
)
def test_a_stray_csv_quote_names_the_lines_it_swallowed_and_the_rest_still_run(
    tmp_path: Path, body: str, expected: list[tuple[int, str]]
) -> None:
    path = tmp_path / "jobs.csv"
    path.write_text("custom_id,prompt\n" + body)
    lines = read(path)
    assert [
        (i.line, i.job.custom_id if i.job else "; ".join(map(str, i.errors))) for i in lines
    ] == expected
    assert count_lines(path) == len(lines)


def test_every_message_about_a_record_over_several_lines_names_them(tmp_path: Path) -> None:
    path = tmp_path / "jobs.csv"
    path.write_bytes(
        b"custom_id,prompt,duration\n"
        b'a,"a cat\non two lines",99\n'  # lines 2-3
        b'b,"a dog\non \xff two lines",5\n'  # lines 4-5, line 5 not UTF-8
    )
    assert only_bad(read(path)) == {
        2: ["duration: viduq2 accepts 1..10 seconds, got 99 (the record spans lines 2-3)"],
        4: ["(line): line 5: not UTF-8 at byte 4 of the line (0xff): save the file as UTF-8 "
            "(the record spans lines 4-5)"],
    }


def test_a_value_in_a_column_the_header_leaves_unnamed_is_named_by_its_column(
    tmp_path: Path,
) -> None:
    path = tmp_path / "jobs.csv"
    path.write_text("prompt,,duration,\na cat,,5,\na dog,x,5,\n")
    assert only_bad(read(path)) == {
        3: ["column 2: has no name in the header, yet holds 'x' on this line; name the column "
            "in the header or leave its cells empty"],
    }


def test_a_csv_line_with_a_large_inline_image_is_read(tmp_path: Path) -> None:
    picture = io.BytesIO()
    Image.frombytes("RGB", (300, 250), os.urandom(300 * 250 * 3)).save(picture, "PNG")
    uri = "data:image/png;base64," + base64.b64encode(picture.getvalue()).decode()
    assert len(uri) > 200_000
    path = tmp_path / "jobs.csv"
    path.write_text(f'prompt,model,images\na cat,viduq2,"{uri}"\na dog,viduq2,"{uri}"\n')
    lines = list(read_jobs(path))
    assert [(i.line, i.ok, i.errors) for i in lines] == [(2, True, ()), (3, True, ())]


# --- counting, empty files, directories ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "jobs"),
    [
        ("a.csv", "prompt,model\n\na,viduq2\n,\nb,viduq2\n", 2),
        ("a.txt", "a\n\n  \nb\nc\n", 3),
        ("a.jsonl", '{"prompt": "a"}\n\nnot json\n', 2),
    ],
)
def test_the_progress_total_counts_jobs_as_the_reader_does(
    tmp_path: Path, name: str, text: str, jobs: int
) -> None:
    path = tmp_path / name
    path.write_text(text)
    assert count_lines(path) == len(read(path)) == jobs


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("empty.jsonl", "", "no jobs in it: every line is blank"),
        ("blank.txt", "\n  \n\n", "no jobs in it: every line is blank"),
        ("header.csv", "prompt,model\n,\n", "no jobs in it: every line (after the CSV header)"),
    ],
)
def test_a_file_without_jobs_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    assert main(["validate", str(path), *VALIDATE]) == 2
    assert main(["submit", str(path), *VALIDATE]) == 2
    err = capsys.readouterr().err
    assert f"vidu-async validate: {path}: {message}" in err
    assert f"vidu-async submit: {path}: {message}" in err


def test_a_directory_is_named_as_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "x.jsonl"
    folder.mkdir()
    assert main(["validate", str(folder)]) == 2
    assert f"{folder}: is a directory, not a jobs file" in capsys.readouterr().err


# --- the run goes on ----------------------------------------------------------------------------


async def test_submit_runs_every_line_around_a_non_utf8_one(
    cli_sim: FakeVidu, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    lines = prompts(40)
    lines[29] = b"prompt \xff 30\n"
    path = tmp_path / "prompts.txt"
    path.write_bytes(b"".join(lines))
    out = tmp_path / "results.jsonl"
    args = ["submit", str(path), *VALIDATE, "--quiet", "--visibility-lag", "0.5",
            "--results", str(out)]
    assert await asyncio.to_thread(main, args) == 1
    assert f"{path}:30: error: (line): not UTF-8 at byte 8" in capfd.readouterr().err
    statuses = {r["line"]: r["status"] for r in map(json.loads, out.read_text().splitlines())}
    assert statuses == {n: "invalid" if n == 30 else "submitted" for n in range(1, 41)}
    assert cli_sim.stats.tasks_created == 39


async def test_submit_runs_the_lines_a_stray_csv_quote_swallowed_once_each(
    cli_sim: FakeVidu, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "jobs.csv"
    path.write_text("custom_id,prompt\n" + STRAY)
    out = tmp_path / "results.jsonl"
    args = ["submit", str(path), *VALIDATE, "--quiet", "--visibility-lag", "0.5",
            "--results", str(out)]
    assert await asyncio.to_thread(main, args) == 1
    assert f"{path}:3: error: (line): not valid CSV" in capfd.readouterr().err
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted((r["line"], r["custom_id"], r["status"]) for r in results) == [
        (2, "c1", "submitted"), (3, None, "invalid"), (4, "c3", "submitted"),
        (5, "c4", "submitted"), (6, "c5", "submitted"), (7, "c6", "submitted"),
    ]
    assert cli_sim.stats.tasks_created == 5
