"""The pure parts behind ``vidu-async batch`` and ``--name``: where a journalled job is, the
results the journal implies, and the names of downloaded files."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidu_async.batch_view import counts, result_records, to_read, view
from vidu_async.download import DownloadNames, link_folder, safe_stem
from vidu_async.journal import JobRecord, read_journal
from vidu_async.tasks import Creation, TaskResult

FINAL = {"custom_id": "a", "line": 4, "status": "succeeded", "task_id": "t1",
         "state": "success", "credits": 45, "err_code": None, "error": None,
         "creations": [], "files": [], "type": None}
ENDED = JobRecord("a", "k1", task_id="t1", credits=45, final=FINAL)
RUNNING = JobRecord("b", "k2", account="acct-1", task_id="t2", credits=45)
UNSENT = JobRecord("c", "k3", account="acct-1")
REFUNDED = JobRecord("d", attempts=1)


@pytest.mark.parametrize(("record", "read", "state", "running"), [
    (ENDED, {}, "succeeded", False),
    (RUNNING, {"t2": TaskResult(id="t2", state="queueing")}, "queueing", True),
    (RUNNING, {"t2": TaskResult(id="t2", state="success")}, "succeeded", False),
    (RUNNING, {"t2": TaskResult(id="t2", state="failed")}, "failed", False),
    (RUNNING, {"t2": TaskResult(id="t2", state="scheduled")}, "scheduled", True),
    (RUNNING, {"t2": TaskResult(id="t2")}, "unknown", False),  # a list item without a state
    (RUNNING, {}, "unknown", False),
    (UNSENT, {}, "unconfirmed", False),
    (REFUNDED, {}, "not_submitted", False),
])
def test_where_a_job_is(record: JobRecord, read: dict[str, TaskResult], state: str,
                        running: bool) -> None:
    job = view(record, read)
    assert (job.state, job.running) == (state, running)


def test_only_tasks_without_a_recorded_end_are_asked_about() -> None:
    assert to_read([ENDED, RUNNING, UNSENT, REFUNDED]) == [RUNNING]


def test_counts_and_results_follow_the_journal() -> None:
    jobs = [view(r, {}) for r in (ENDED, RUNNING, UNSENT, REFUNDED)]
    assert counts(jobs) == {"succeeded": 1, "unknown": 1, "unconfirmed": 1, "not_submitted": 1}
    records = result_records(jobs)
    assert records[0] == FINAL
    assert [(r["custom_id"], r["status"], r["task_id"]) for r in records[1:]] == [
        ("b", "submitted", "t2"), ("c", "ambiguous", None), ("d", "not_submitted", None)]


def test_a_journal_is_read_without_its_lock_and_a_torn_last_line_is_skipped(
    tmp_path: Path
) -> None:
    path = tmp_path / "j.jsonl"
    path.write_text('{"v": 2, "kind": "batch", "batch_id": "b"}\n'
                    '{"v": 2, "kind": "intent", "job": "a", "key": "k", "account": "x"}\n'
                    '{"v": 2, "kind": "created", "job": "a", "task_id": "t", "credits": 9}\n'
                    '{"v": 2, "kind": "final", "job": "a", "res')
    contents = read_journal(path)
    assert (contents.batch_id, contents.spent) == ("b", 9)
    assert [(j.job_id, j.task_id, j.final) for j in contents.jobs] == [("a", "t", None)]
    assert not (tmp_path / "j.jsonl.lock").exists()


TWO = (Creation(id="c1"), Creation(id="c2"))


@pytest.mark.parametrize(("template", "custom_id", "line", "creations", "stems"), [
    ("{custom_id}", "cat-1", 3, TWO[:1], ["cat-1"]),
    ("{custom_id}", None, 3, TWO[:1], ["t9"]),  # no custom_id: the task id
    ("{line}-{custom_id}", "cat", 3, TWO[:1], ["3-cat"]),
    ("{line}", "cat", None, TWO[:1], ["t9"]),  # an unknown line: the task id
    ("{custom_id}/{line}", "cat", 3, TWO[:1], [safe_stem("cat/3")]),
    ("{custom_id}-{index}", "cat", 3, TWO, ["cat-1", "cat-2"]),
    ("{custom_id}-{{index}}", "cat", 3, TWO[:1], [safe_stem("cat-{index}")]),  # a literal
])
def test_names_from_a_template(template: str, custom_id: str | None, line: int | None,
                               creations: tuple[Creation, ...], stems: list[str]) -> None:
    names = DownloadNames(template)
    assert names.stems(creations, custom_id=custom_id, task_id="t9", line=line) == stems


def test_several_creations_without_index_are_named_by_the_pair_as_before() -> None:
    stems = DownloadNames().stems(TWO, custom_id="cat", task_id="t9", line=1)
    assert [s.rsplit("-", 1)[0] for s in stems] == ["cat_c1", "cat_c2"]
    assert len(set(stems)) == 2 and "cat" not in stems


@pytest.mark.parametrize(("template", "says"), [
    ("video", "must name {custom_id}, {task_id} or {line}"),
    ("{index}", "must name {custom_id}, {task_id} or {line}"),
    ("{prompt}", "unknown field {prompt}"),
    ("{}", "unknown field {}"),
    ("{line:04d}", "fields take no format"),
    ("{custom_id", "name template '{custom_id'"),
])
def test_unusable_templates_are_refused(template: str, says: str) -> None:
    with pytest.raises(ValueError, match=says.replace("{", r"\{").replace("}", r"\}")
                       .replace("(", r"\(")):
        DownloadNames(template)


def test_covers_and_watermarked_videos_go_to_their_own_folders() -> None:
    names = DownloadNames(covers=True, watermarked=True)
    assert names.links == ("url", "cover_url", "watermarked_url")
    assert DownloadNames().links == ("url",)
    assert [link_folder(Path("d"), link) for link in names.links] == [
        Path("d"), Path("d/covers"), Path("d/watermarked")]
