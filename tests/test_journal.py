"""The batch journal: one run at a time, records fold into per-job state, group commit keeps
intents durable with few fsyncs, and anything that is not a healthy journal file is refused in
one line."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.waiting import until
from vidu_async import journal as journal_module
from vidu_async.errors import JournalError, JournalLockedError
from vidu_async.journal import INLINE_SYNC, LINGER, SYNCS_JUDGED, Journal, _SyncTimes


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


async def intent(journal: Journal, job_id: str, key: str, **fields: Any) -> None:
    values: dict[str, Any] = {
        "account": "acct", "fingerprint": f"fp-{job_id}", "cost_class": "viduq2/5s",
        "server_at": 1_700_000_000.5,
    }
    await journal.intent(job_id, key=key, **(values | fields))


async def test_records_fold_into_job_state(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    async with await Journal.open(path, batch_id="b1") as journal:
        assert journal.is_new and journal.batch_id == "b1"
        await intent(journal, "a", "k1", fingerprint="fa", account="acct-1")
        await intent(journal, "b", "k2")
        await journal.created("a", task_id="t1", credits=20)
        await journal.final("a", {"custom_id": "a", "status": "succeeded"})
    async with await Journal.open(path, batch_id="b2") as again:
        assert not again.is_new and again.batch_id == "b1"  # the journal keeps its own
        assert [r.job_id for r in again.pending()] == ["a", "b"]
        a, b = again.take("a"), again.take("b")
        assert a is not None and b is not None
        assert (a.task_id, a.credits, a.is_final, a.needs_reconcile) == ("t1", 20, True, False)
        assert a.final == {"custom_id": "a", "status": "succeeded"}
        assert (a.fingerprint, a.account, a.cost_class) == ("fa", "acct-1", "viduq2/5s")
        assert a.server_at == 1_700_000_000.5 and a.intent_at is not None
        assert (b.correlation_key, b.task_id, b.needs_reconcile) == ("k2", None, True)
        assert again.take("c") is None
    header = lines(path)[0]
    assert (header["v"], header["kind"], header["batch_id"]) == (2, "batch", "b1")


async def test_a_new_intent_starts_the_job_afresh(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    async with await Journal.open(path, batch_id="b") as journal:
        await intent(journal, "a", "k1")
        await journal.created("a", task_id="t1", credits=20)
        await journal.final("a", {"status": "failed"})
        await intent(journal, "a", "k2", fingerprint="edited")
    async with await Journal.open(path, batch_id="b") as again:
        a = again.take("a")
        assert a is not None
        assert (a.correlation_key, a.fingerprint, a.task_id) == ("k2", "edited", None)
        assert a.needs_reconcile and not a.is_final


async def test_spent_and_costs_add_up_across_runs(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    async with await Journal.open(path, batch_id="b") as journal:
        await intent(journal, "a", "k1", cost_class="q2-5s")
        await journal.created("a", task_id="t1", credits=20)
        await intent(journal, "b", "k2", cost_class="q3-8s")
        await journal.created("b", task_id="t2", credits=64)
        assert (journal.spent, journal.spent_this_run) == (84, 84)
        assert journal.costs == {"q2-5s": 20, "q3-8s": 64}
    async with await Journal.open(path, batch_id="b") as again:
        assert (again.spent, again.spent_this_run) == (84, 0)
        assert again.costs == {"q2-5s": 20, "q3-8s": 64}
        await intent(again, "c", "k3", cost_class="q2-5s")
        await again.created("c", task_id="t3", credits=25)
        assert (again.spent, again.spent_this_run) == (109, 25)
        assert again.costs["q2-5s"] == 25
    async with await Journal.open(path, batch_id="b") as third:
        assert third.spent == 109


async def test_the_same_task_recorded_twice_is_spent_once(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    async with await Journal.open(path, batch_id="b") as journal:
        await intent(journal, "a", "k1")
        await journal.created("a", task_id="t1", credits=20)
    with path.open("ab") as handle:  # e.g. a reconcile that found the task again
        handle.write(b'{"v": 2, "kind": "created", "job": "a", "task_id": "t1", "credits": 20}\n')
    async with await Journal.open(path, batch_id="b") as again:
        assert again.spent == 20


async def test_memory_holds_earlier_runs_only_and_take_forgets(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    async with await Journal.open(path, batch_id="b") as journal:
        await asyncio.gather(*(intent(journal, f"job-{i}", f"k{i}") for i in range(50)))
        await asyncio.gather(*(journal.created(f"job-{i}", task_id=f"t{i}", credits=1)
                               for i in range(50)))
        assert journal.pending() == []  # this run's writes are on disk, not in memory
        assert journal._open_intents == {}
    async with await Journal.open(path, batch_id="b") as again:
        assert len(again.pending()) == 50
        taken = again.take("job-7")
        assert taken is not None and taken.correlation_key == "k7"
        assert again.take("job-7") is None
        assert len(again.pending()) == 49


async def test_a_withdrawn_intent_leaves_its_job_as_if_never_sent(tmp_path: Path) -> None:
    """``withdrawn`` (the create never left) needs no await: a cancelled job records it on its
    way out, and close() writes it. The job then needs no reconcile; its attempts stay."""
    path = tmp_path / "journal.jsonl"
    async with await Journal.open(path, batch_id="b") as journal:
        await intent(journal, "a", "k1")
        await intent(journal, "b", "k2")
        journal.withdrawn("a")
        assert journal._open_intents == {"b": "viduq2/5s"}
    async with await Journal.open(path, batch_id="b") as again:
        # every intent's, withdrawn or not
        assert len(again.recorded_keys) == 2 and "k1" in again.recorded_keys
        assert "k2" in again.recorded_keys and "k3" not in again.recorded_keys
        a, b = again.take("a"), again.take("b")
    assert a is not None and not a.needs_reconcile and a.correlation_key is None
    assert a.attempts == 0
    assert b is not None and b.needs_reconcile


async def test_the_journal_and_its_lock_are_private_to_their_owner(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    async with await Journal.open(path, batch_id="b") as journal:
        await intent(journal, "a", "k1")
    assert path.stat().st_mode & 0o077 == 0
    assert (tmp_path / "journal.jsonl.lock").stat().st_mode & 0o077 == 0


# -- one run at a time --------------------------------------------------------------------------


async def test_a_second_open_in_this_process_is_refused_naming_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    async with await Journal.open(path, batch_id="b") as journal:
        await intent(journal, "a", "k1")
        before = path.read_bytes()
        with pytest.raises(JournalLockedError) as caught:
            await Journal.open(path, batch_id="other")
        message = str(caught.value)
        assert f"journal {path} is in use by process {os.getpid()} on " in message
        assert " since " in message and "\n" not in message
        assert path.read_bytes() == before  # the loser wrote nothing
    async with await Journal.open(path, batch_id="other") as again:  # released on close
        assert again.batch_id == "b"


HOLDER = """
import asyncio, sys
from pathlib import Path
from vidu_async.journal import Journal

async def main() -> None:
    await Journal.open(Path(sys.argv[1]), batch_id="holder")
    print("locked", flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""


async def test_another_process_holds_the_lock_until_it_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, str(path), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert holder.stdout is not None
        assert await asyncio.wait_for(holder.stdout.readline(), 30) == b"locked\n"
        with pytest.raises(JournalLockedError, match=rf"in use by process {holder.pid} on "):
            await Journal.open(path, batch_id="b")
    finally:
        holder.send_signal(signal.SIGKILL)
        await holder.wait()
    async with await Journal.open(path, batch_id="b") as journal:  # kill -9 freed it
        assert journal.batch_id == "holder"


# -- group commit and durability ----------------------------------------------------------------


async def test_an_intent_is_on_disk_when_it_returns(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    async with await Journal.open(path, batch_id="b") as journal:
        await intent(journal, "a", "k1")
        assert journal.syncs == 1
        with path.open("rb") as other:
            assert json.loads(other.read().splitlines()[-1])["key"] == "k1"
        await journal.created("a", task_id="t1", credits=5)
        assert journal.syncs == 2
        assert lines(path)[-1]["task_id"] == "t1"


async def test_concurrent_intents_share_writes_and_fsyncs(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    async with await Journal.open(path, batch_id="b") as journal:
        await asyncio.gather(*(intent(journal, f"j{i}", f"k{i}") for i in range(64)))
        assert sorted(r["job"] for r in lines(path)[1:]) == sorted(f"j{i}" for i in range(64))
        assert journal.syncs <= 4 and journal.writes == journal.syncs


async def test_finals_are_written_without_fsync_and_flushed_on_close(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = await Journal.open(path, batch_id="b")
    for i in range(10):
        await journal.final(f"j{i}", {"status": "succeeded"})
    await journal.close()
    assert (journal.writes, journal.syncs) <= (2, 0)
    assert [r["job"] for r in lines(path)[1:]] == [f"j{i}" for i in range(10)]


async def test_records_that_need_not_be_durable_ride_the_next_intents_group(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.jsonl"
    async with await Journal.open(path, batch_id="b") as journal:
        for i in range(5):
            await journal.created(f"j{i}", task_id=f"t{i}", credits=5, durable=False)
        assert journal.writes == 0  # no group of their own
        await intent(journal, "next", "k")
        assert (journal.writes, journal.syncs) == (1, 1)
        assert [r["kind"] for r in lines(path)[1:]] == ["created"] * 5 + ["intent"]


async def test_a_record_that_need_not_be_durable_is_written_soon_anyway(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    async with await Journal.open(path, batch_id="b") as journal:
        await journal.final("j", {"status": "succeeded"})
        assert journal.writes == 0
        started = asyncio.get_running_loop().time()
        # The writer writes it LINGER seconds later, not at close.
        await until(lambda: journal.writes == 1, "the lingering record written",
                    within=LINGER + 5)
        assert asyncio.get_running_loop().time() - started >= LINGER * 0.9
        assert (journal.writes, journal.syncs, lines(path)[-1]["kind"]) == (1, 0, "final")


async def test_cancelled_callers_lose_nothing_and_tear_nothing(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    async with await Journal.open(path, batch_id="b") as journal:
        calls = [asyncio.create_task(intent(journal, f"j{i}", f"k{i}")) for i in range(40)]
        await asyncio.sleep(0)  # every call queues its record; the writer takes the group
        await asyncio.sleep(0)
        assert journal.writes == 0  # the group is still being written
        for call in calls[::2]:
            call.cancel()
        settled = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(s, asyncio.CancelledError) for s in settled[::2])
        assert settled[1::2] == [None] * 20  # the others completed, durably
        await intent(journal, "after", "k")
    async with await Journal.open(path, batch_id="b") as again:
        assert len(again.pending()) == 41


@pytest.mark.parametrize(
    ("took", "quick"),
    [
        ([], False),  # a new journal: its first groups go to a thread
        ([0.0001] * (SYNCS_JUDGED - 1), False),
        ([0.0001] * SYNCS_JUDGED, True),
        ([0.0001] * (SYNCS_JUDGED - 1) + [0.05], True),  # one slow (or a GIL wait timed)
        ([0.0001] * 3 + [INLINE_SYNC] * 5, False),  # most were slow
        ([0.05] * SYNCS_JUDGED + [0.0001] * SYNCS_JUDGED, True),  # quick again: the last 8
    ],
)
def test_groups_go_on_the_loop_only_after_enough_quick_syncs(took: list[float],
                                                             quick: bool) -> None:
    times = _SyncTimes()
    times.extend(took)
    assert times.quick() is quick


@pytest.mark.parametrize("inline_under", [60.0, 0.0])
async def test_a_quick_disk_is_synced_on_the_loop_a_slow_one_in_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inline_under: float
) -> None:
    """60 s: every sync counts as quick, so after ``SYNCS_JUDGED`` groups in a thread the rest
    are written on the loop; 0 s: none is, every group goes to a thread. Either way each intent
    is on disk when its call returns."""
    monkeypatch.setattr(journal_module, "INLINE_SYNC", inline_under)
    path = tmp_path / "journal.jsonl"
    async with await Journal.open(path, batch_id="b") as journal:
        for i in range(20):
            await intent(journal, f"j{i}", f"k{i}")
            assert len(lines(path)) == i + 2  # the header, and every intent so far
        assert (journal.writes, journal.syncs) == (20, 20)
        assert journal.inline_writes == (20 - SYNCS_JUDGED if inline_under else 0)


FILLER = """
import asyncio, resource, sys
from pathlib import Path
from vidu_async.errors import JournalError
from vidu_async.journal import Journal

async def main() -> None:
    intents = await Journal.open(Path(sys.argv[1]), batch_id="b")
    finals = await Journal.open(Path(sys.argv[2]), batch_id="b")
    resource.setrlimit(resource.RLIMIT_FSIZE, (3000, resource.RLIM_INFINITY))
    try:
        for i in range(100):
            await intents.intent(f"j{i}", key="k" * 50, account="a", fingerprint="f",
                                 cost_class="c", server_at=0)
    except JournalError as error:
        print(error)
    try:
        await intents.final("x", {})
    except JournalError as error:
        print("then:", error)
    await intents.close()
    for i in range(100):
        await finals.final(f"j{i}", {"status": "succeeded"})
    try:
        await finals.close()
    except JournalError as error:
        print("close:", error)

asyncio.run(main())
"""


async def test_a_failed_write_is_reported_and_cut_off(tmp_path: Path) -> None:
    """The file may not grow (RLIMIT_FSIZE, in a child): the torn group is cut off, later writes
    are refused, a failure only finals met surfaces at close, and both journals stay readable."""
    paths = [tmp_path / "intents.jsonl", tmp_path / "finals.jsonl"]
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FILLER, *map(str, paths), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(child.communicate(), 30)
    reason = os.strerror(errno.EFBIG)
    assert out.decode().splitlines() == [
        f"cannot write journal {paths[0]}: {reason}",
        f"then: cannot write journal {paths[0]}: {reason}",
        f"close: cannot write journal {paths[1]}: {reason}",
    ]
    kept = []
    for path in paths:
        assert path.read_bytes().endswith(b"\n")
        async with await Journal.open(path, batch_id="b") as journal:
            kept.append(len(journal.pending()))
    assert 0 < kept[0] < 100 and kept[1] == 0  # the finals went in one group


async def test_a_cancelled_open_leaves_no_lock_behind(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    opening = asyncio.create_task(Journal.open(path, batch_id="b"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the opening thread has been started
    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening
    async with await Journal.open(path, batch_id="b") as journal:
        assert journal.batch_id == "b"


async def test_after_close_writes_are_refused(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "journal.jsonl", batch_id="b")
    await journal.close()
    await journal.close()  # idempotent
    with pytest.raises(JournalError, match="is closed"):
        await intent(journal, "a", "k1")


# -- reading: torn, corrupt, old, not a file ----------------------------------------------------


async def test_a_torn_last_line_is_dropped_and_appends_stay_parseable(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    async with await Journal.open(path, batch_id="b") as journal:
        await intent(journal, "a", "k1")
    with path.open("ab") as handle:
        handle.write(b'{"v": 2, "kind": "created", "job": "a", "task_')
    async with await Journal.open(path, batch_id="b") as journal:
        record = journal.take("a")
        assert record is not None and record.needs_reconcile
        await journal.created("a", task_id="t9", credits=5)
    assert [r["kind"] for r in lines(path)] == ["batch", "intent", "created"]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'{"v": 2, "kind": "intent", "job": "a", "key": "k"}\nGARBAGE\n{}\n', ":2: not JSON"),
        (b'{"v": 2, "kind": "batch", "batch_id": "b"}\n[1]\n', ":2: not a journal record"),
        (b'{"v": 2, "kind": "intent", "key": "k"}\n', ":1: not a journal record"),
        (b'{"v": 2, "kind": "bogus", "job": "a"}\n', ":1: not a journal record"),
        (b'{"v": 3, "kind": "intent", "job": "a"}\n', ":1: written by a newer vidu-async"),
        (b"x" * (1 << 20) + b"\n", ":1: a line over 1 MiB"),
    ],
)
async def test_a_damaged_journal_is_an_error_naming_the_line(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(content)
    with pytest.raises(JournalError) as caught:
        await Journal.open(path, batch_id="b")
    assert str(caught.value).startswith(f"{path}{problem}")
    assert "\n" not in str(caught.value)
    assert path.read_bytes() == content
    async with await Journal.open(tmp_path / "other.jsonl", batch_id="b"):
        pass  # the failed open left no lock behind on anything
    path.write_bytes(b"")
    async with await Journal.open(path, batch_id="b"):
        pass


async def test_a_version_1_journal_is_read_by_custom_id(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_text(
        '{"v": 1, "kind": "intent", "custom_id": "a", "key": "k1", "account": "x", "at": 5.0}\n'
        '{"v": 1, "kind": "created", "custom_id": "a", "task_id": "t1", "credits": 20}\n'
        '{"v": 1, "kind": "final", "custom_id": "a", "result": {"status": "succeeded"}}\n'
        '{"v": 1, "kind": "intent", "custom_id": "b", "key": "k2", "account": "x", "at": 6.0}\n'
    )
    async with await Journal.open(path, batch_id="new-id") as journal:
        assert (journal.is_new, journal.batch_id, journal.spent) == (False, "new-id", 20)
        a, b = journal.take("a"), journal.take("b")
        assert a is not None and b is not None
        assert (a.task_id, a.is_final, a.account, a.intent_at) == ("t1", True, "x", 5.0)
        assert (b.needs_reconcile, b.fingerprint, b.cost_class, b.server_at) == (
            True, None, None, None
        )
    assert lines(path)[-1]["batch_id"] == "new-id"  # a v1 journal gains a header
    async with await Journal.open(path, batch_id="other") as again:
        assert again.batch_id == "new-id"


async def test_a_named_pipe_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    os.mkfifo(path)
    with pytest.raises(JournalError, match=rf"^journal {path} is a named pipe, not a regular"):
        await asyncio.wait_for(Journal.open(path, batch_id="b"), 5)
    assert not (tmp_path / "journal.jsonl.lock").exists()


async def test_a_folder_or_a_device_is_refused(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match=rf"^journal {tmp_path} is a folder, not a regular"):
        await Journal.open(tmp_path, batch_id="b")
    with pytest.raises(JournalError, match=r"^journal /dev/full is a device, not a regular"):
        await asyncio.wait_for(Journal.open(Path("/dev/full"), batch_id="b"), 5)
    assert not Path("/dev/full.lock").exists()


async def test_a_folder_that_cannot_be_made_is_one_line_with_the_reason(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    path = blocker / "sub" / "journal.jsonl"
    with pytest.raises(JournalError) as caught:
        await Journal.open(path, batch_id="b")
    assert str(caught.value) == f"cannot use journal {path}: Not a directory"


async def test_a_journal_knows_it_was_used_before_even_when_it_was_deleted(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.jsonl"
    async with await Journal.open(path, batch_id="b") as first:
        assert not first.used_before  # a path never used
    async with await Journal.open(path, batch_id="b") as again:
        assert again.used_before and again.is_new  # used, though it holds no job yet
    path.unlink()  # a deleted journal: its lock file beside it tells
    async with await Journal.open(path, batch_id="b") as after:
        assert after.used_before and after.is_new


async def test_a_refund_takes_the_credits_back_and_starts_the_job_afresh(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    async with await Journal.open(path, batch_id="b") as journal:
        await journal.intent("job", key="k" * 32, account="a", fingerprint="f",
                             cost_class="c", server_at=0.0)
        await journal.created("job", task_id="t1", credits=45)
        await journal.refunded("job", task_id="t1", credits=45)
        assert journal.spent == 0
    async with await Journal.open(path, batch_id="b") as journal:
        assert journal.spent == 0
        record = journal.take("job")
        assert record is not None
        assert (record.correlation_key, record.task_id, record.attempts) == (None, None, 1)
