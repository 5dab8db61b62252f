"""``_packed``: what a batch keeps of every job until its end, exact as a dict and a fraction of
its memory (the repeated-``custom_id`` check's ``IdLines``, the duplicate check's ``KeptTasks``).
"""

from __future__ import annotations

import hashlib
import random
import tracemalloc
from collections.abc import Callable

import pytest

from vidu_async._packed import (
    FixedWidth,
    IdLines,
    Index,
    Kept,
    KeptTasks,
    Keys,
    PackedStrings,
    Store,
)
from vidu_async.batch.identity import job_key

KEY = job_key("b", "job-1", "f" * 64)
OTHER = job_key("b", "job-2", "f" * 64)


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        ([], {}),
        ([("a", 1), ("b", 2)], {"a": 1, "b": 2}),
        ([("a", 1), ("a", 5)], {"a": 5}),  # set again: the last word, as a dict's
        ([("a", None)], {"a": None}),  # a job given without a line
        ([("a", None), ("a", 3)], {"a": 3}),
        ([("a", 3), ("a", None)], {"a": None}),
        ([("big", 2**31), ("huge", 10**30), ("low", -(2**31))],  # beyond the packed 32 bits
         {"big": 2**31, "huge": 10**30, "low": -(2**31)}),
        ([("top", 2**31 - 1), ("neg", -7), ("zero", 0)], {"top": 2**31 - 1, "neg": -7, "zero": 0}),
        ([("float", 1.5), ("flag", True)], {"float": 1.5, "flag": True}),  # a caller's mistakes
        ([("", 1), ("\x00", 2), ("a\x00", 3)], {"": 1, "\x00": 2, "a\x00": 3}),
        # A lone surrogate (JSON allows it) and a pair of them are not the character they
        # would make together.
        ([("\ud83d", 1), ("\ud83d\ude00", 2), ("😀", 3)],
         {"\ud83d": 1, "\ud83d\ude00": 2, "😀": 3}),
        ([("é", 1), ("e\u0301", 2)], {"é": 1, "e\u0301": 2}),  # not normalised: two ids
    ],
)
def test_id_lines_answer_as_a_dict(sets: list[tuple[str, int | None]],
                                   expected: dict[str, int | None]) -> None:
    ids = IdLines()
    for custom_id, line in sets:
        ids[custom_id] = line
    assert len(ids) == len(expected)
    assert {i: ids[i] for i in expected} == expected
    for absent in ("never", "A", "a ", "\ud83e", "e"):
        if absent not in expected:
            assert absent not in ids
            with pytest.raises(KeyError):
                ids[absent]


def test_many_ids_with_colliding_slots_are_told_apart_exactly() -> None:
    """Thousands of near-identical ids through every growth of the table: each found with its
    own line, none that was not given."""
    ids, model = IdLines(), {}
    for n in range(5000):
        custom_id = f"job-{n}" if n % 3 else f"job-{n}\u00e9"
        ids[custom_id] = model[custom_id] = n
    assert len(ids) == len(model)
    assert all(ids[i] == line for i, line in model.items())
    assert not any(f"job-{n}" in ids for n in range(0, 5000, 3))
    assert not any(f"job-{n}" in ids for n in range(5000, 6000))


@pytest.mark.parametrize(
    ("added", "numbers", "absent"),
    [
        ([], [], [KEY, "", None]),
        ([KEY, OTHER, KEY], [0, 1, 0], [KEY.upper(), KEY[:-1], 7]),
        # Strings of other forms than a made key: kept whole, numbered from -1 down.
        ([KEY.upper(), KEY, "", KEY.upper(), "k"], [-1, 0, -2, -1, -3], [KEY[1:], "K", None]),
        ([f" {KEY[1:]}", f"{KEY[:16]}\u0660{KEY[17:]}"], [-1, -2], [KEY]),
        ([bytes.fromhex(KEY).decode("latin-1")], [-1], [KEY]),  # its 16 bytes, as a string
    ],
)
def test_keys_number_each_distinct_key(added: list[str], numbers: list[int],
                                       absent: list[object]) -> None:
    keys = Keys()
    assert [keys.add(key) for key in added] == numbers
    assert len(keys) == len(set(added))
    assert [keys.find(key) for key in added] == numbers
    assert all(key in keys for key in added)
    assert not any(key in keys for key in absent)
    assert len(Keys(added)) == len(keys)


TASK = "911084878697623552"


@pytest.mark.parametrize(
    ("keeps", "asked", "expected"),
    [
        ([(KEY, "job-1", TASK)], KEY, Kept("job-1", TASK)),
        ([(KEY, "job-1", TASK)], OTHER, None),
        ([(KEY, "job-1", TASK)], None, None),  # a task without a key
        ([(KEY, "job-1", TASK)], KEY.upper(), None),  # another key (not made by a batch)
        ([(KEY, "job-1", TASK)], KEY[:-1], None),
        ([(KEY, "job-1", TASK)], f" {KEY[1:]}", None),
        ([(KEY, "job-1", TASK)], "", None),
        # Task ids of other forms than Vidu's decimal ones are kept whole.
        ([(KEY, "j", "0")], KEY, Kept("j", "0")),
        ([(KEY, "j", "0123")], KEY, Kept("j", "0123")),
        ([(KEY, "j", "")], KEY, Kept("j", "")),
        ([(KEY, "j", "task-7")], KEY, Kept("j", "task-7")),
        ([(KEY, "j", "١٢٣")], KEY, Kept("j", "١٢٣")),  # digits, but not ASCII ones
        ([(KEY, "j", "+12")], KEY, Kept("j", "+12")),
        ([(KEY, "j", str(2**64 - 2))], KEY, Kept("j", str(2**64 - 2))),
        ([(KEY, "j", str(2**64 - 1))], KEY, Kept("j", str(2**64 - 1))),
        ([(KEY, "j", "9" * 30)], KEY, Kept("j", "9" * 30)),
        ([(KEY, "j", "1" * 5000)], KEY, Kept("j", "1" * 5000)),  # past int()'s digit limit
        ([(KEY, "\ud83d", TASK)], KEY, Kept("\ud83d", TASK)),
        # Keys of other forms (never made by a batch) are kept whole, told apart exactly.
        ([(KEY.upper(), "up", "1"), (KEY, "low", "2")], KEY.upper(), Kept("up", "1")),
        ([(KEY.upper(), "up", "1"), (KEY, "low", "2")], KEY, Kept("low", "2")),
        ([("k", "j", "1")], "k", Kept("j", "1")),
        # A key kept again: the last word, as a dict's.
        ([(KEY, "a", "1"), (KEY, "b", "2")], KEY, Kept("b", "2")),
        ([(KEY, "a", "x"), (KEY, "b", "2")], KEY, Kept("b", "2")),
        ([(KEY, "a", "1"), (KEY, "b", "2"), (OTHER, "c", "3")], OTHER, Kept("c", "3")),
        ([("k", "a", "1"), ("k", "b", "2")], "k", Kept("b", "2")),
    ],
)
def test_kept_tasks_answer_as_a_dict(keeps: list[tuple[str, str, str]], asked: str | None,
                                     expected: Kept | None) -> None:
    kept = KeptTasks()
    for key, job_id, task_id in keeps:
        kept.keep(key, job_id, task_id)
    assert kept.get(asked) == expected
    assert len(kept) == len({key for key, _, _ in keeps})


def test_many_kept_tasks_are_each_found_and_no_other_key_is() -> None:
    kept, model = KeptTasks(), {}
    for n in range(3000):
        key = job_key("batch", f"job-{n}", "f" * 64)
        task_id = str(900_000_000_000_000_000 + 7 * n) if n % 5 else f"t{n}"
        kept.keep(key, f"job-{n}", task_id)
        model[key] = Kept(f"job-{n}", task_id)
    assert len(kept) == 3000
    assert all(kept.get(key) == value for key, value in model.items())
    assert not any(kept.get(job_key("batch", f"job-{n}", "e" * 64)) for n in range(3000))


@pytest.mark.parametrize("store", [PackedStrings, lambda: FixedWidth(3)])
def test_an_index_numbers_what_it_is_given_in_order(store: Callable[[], Store]) -> None:
    index = Index(store())
    given = [b"abc", b"abd", b"abc", b"xyz", b"abd", b"\x00\x00\x00"]
    assert [index.add(data) for data in given] == [0, 1, 0, 2, 1, 3]
    assert [index.find(data) for data in (b"abc", b"xyz", b"\x00\x00\x00", b"abe")] == [0, 2, 3,
                                                                                       None]
    assert len(index) == 4
    assert [index.store[n] for n in range(4)] == [b"abc", b"abd", b"xyz", b"\x00\x00\x00"]


class CountingStore(PackedStrings):
    """Packed strings that count how many members were read back (an index's work)."""

    reads = 0

    def __getitem__(self, number: int) -> bytes:
        self.reads += 1
        return super().__getitem__(number)


def test_an_index_growing_past_many_doublings_stays_exact_during_each_move() -> None:
    rng = random.Random(7)
    index, model = Index(PackedStrings()), {}
    for _ in range(40_000):
        data = rng.randbytes(rng.choice((1, 2, 8)))  # short ones repeat: found, not added
        expected = model.setdefault(data, len(model))
        assert index.add(data) == expected
        probe = rng.randbytes(2)  # asked between adds, while members move tables
        assert index.find(probe) == model.get(probe)
    assert len(index) == len(model)
    assert all(index.find(data) == number for data, number in model.items())


def test_no_add_moves_the_whole_index_when_its_table_doubles() -> None:
    store = CountingStore()
    index, most = Index(store), 0
    for n in range(100_000):  # about 14 doublings
        before = store.reads
        index.add(n.to_bytes(4, "big"))
        most = max(most, store.reads - before)
    # Its probe's comparisons (a cluster can make them a hundred) and MOVES_PER_ADD moved:
    # never the 65,000 members the last doubling had (moved at once, that add read them all).
    assert most < 1000


def test_fixed_width_strings_refuse_another_width() -> None:
    strings = FixedWidth(4)
    with pytest.raises(ValueError, match="3 bytes given to a list of 4-byte strings"):
        strings.append(b"abc")
    assert len(strings) == 0


def test_packed_strings_keep_empty_ones_and_their_order() -> None:
    strings = PackedStrings()
    assert [strings.append(d) for d in (b"", b"a", b"", b"bc")] == [0, 1, 2, 3]
    assert [strings[n] for n in range(4)] == [b"", b"a", b"", b"bc"]


def traced_bytes_per_item(fill: Callable[[int], object], items: int) -> float:
    """Bytes held (traced by tracemalloc) per item by what ``fill(items)`` returns."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        held = fill(items)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held is not None
    return (after - before) / items


def kept_tasks(n: int) -> KeptTasks:
    kept = KeptTasks()
    rng = random.Random(1)
    for i in range(n):
        key = hashlib.sha256(str(i).encode()).hexdigest()[:32]
        kept.keep(key, f"job-{i}", str(rng.randrange(9 * 10**17, 10**18)))
    return kept


def id_lines(n: int) -> IdLines:
    ids = IdLines()
    for i in range(n):
        ids[f"job-{i}"] = i + 1
    return ids


@pytest.mark.parametrize(("fill", "most"), [(kept_tasks, 70), (id_lines, 40)])
def test_what_a_batch_keeps_of_a_job_is_tens_of_bytes(fill: Callable[[int], object],
                                                      most: int) -> None:
    """Each ``job-N`` with a Vidu task id: as dicts of str, ~290 and ~110 bytes a job."""
    assert traced_bytes_per_item(fill, 20_000) < most
