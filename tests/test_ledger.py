"""The batch journal: records fold into per-job state; a torn last line is dropped, not fatal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vidu_async.ledger import Ledger, LedgerError


async def test_records_fold_into_job_state(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    with Ledger.open(path) as ledger:
        await ledger.intent("a", "k1", account="acct")
        await ledger.intent("b", "k2", account="acct")
        await ledger.created("a", "t1", 20)
        await ledger.final("a", {"custom_id": "a", "status": "succeeded"})
    with Ledger.open(path) as again:
        a, b = again.get("a"), again.get("b")
        assert a is not None and b is not None
        assert (a.task_id, a.credits, a.is_final, a.needs_reconcile) == ("t1", 20, True, False)
        assert a.final == {"custom_id": "a", "status": "succeeded"}
        assert (b.correlation_key, b.task_id, b.needs_reconcile) == ("k2", None, True)
        assert again.get("c") is None
        assert [r.custom_id for r in again.records()] == ["a", "b"]


async def test_a_torn_last_line_is_dropped_and_appends_stay_parseable(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    with Ledger.open(path) as ledger:
        await ledger.intent("a", "k1", account="acct")
    with path.open("ab") as handle:
        handle.write(b'{"v": 1, "kind": "created", "custom_id": "a", "task_')
    with Ledger.open(path) as ledger:
        record = ledger.get("a")
        assert record is not None and record.needs_reconcile
        await ledger.created("a", "t9", 5)
    lines = path.read_bytes().splitlines()
    assert [json.loads(line)["kind"] for line in lines] == ["intent", "created"]


def test_corruption_before_the_last_line_is_an_error_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_text('{"v": 1, "kind": "intent", "custom_id": "a", "key": "k"}\nGARBAGE\n{}\n')
    with pytest.raises(LedgerError, match=r"journal.jsonl:2: not a journal record"):
        Ledger.open(path)


async def test_the_journal_is_private_to_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    with Ledger.open(path) as ledger:
        await ledger.intent("a", "k1", account="acct")
    assert path.stat().st_mode & 0o077 == 0


async def test_memory_holds_earlier_runs_only_and_take_forgets(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    with Ledger.open(path) as ledger:
        for i in range(50):
            await ledger.intent(f"job-{i}", f"k{i}", account="acct")
        assert len(ledger) == 0  # this run's writes are on disk, not in memory
    with Ledger.open(path) as again:
        assert len(again) == 50
        taken = again.take("job-7")
        assert taken is not None and taken.correlation_key == "k7"
        assert again.take("job-7") is None
        assert len(again) == 49
