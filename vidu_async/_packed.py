"""Compact tables for what a batch keeps of every job until its end: tens of bytes a job.

A batch's memory must stay flat in the size of its input, yet two checks need something of
every job to the last line: whether a ``custom_id`` repeats an earlier one, and on which line
(``IdLines``: the jobs reader's, and the submitter's for jobs given as such), and which task
each correlation key kept (``KeptTasks``: the closing duplicate check); a rerun's journal holds
the key of every create recorded (``Keys``). As Python objects that is a few hundred bytes a job
(a ``str`` costs ~50 bytes before its first character, an ``int`` 28, a dict entry 30-100);
here values are packed in ``bytearray``s and ``array``s, and found through an open-addressing
table of their numbers (``Index``). Exact: a hash only points at candidates, whose bytes are
then compared; what does not fit a packed form is kept aside whole.

The price is time: ~3-6 µs a job to add (a dict's is a tenth of that), a few more while a
table that doubled moves its members over, a few at a time with each later add (moved all at
once, a doubling held the event loop ~40 ms at 90,000 members and ~0.4 s at 700,000).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from typing import Protocol

import attrs

__all__ = [
    "FixedWidth", "IdLines", "Index", "Kept", "KeptTasks", "Keys", "PackedStrings", "Store",
]

_FIRST_SLOTS = 8


class Store(Protocol):
    """Byte strings numbered in the order appended (what an ``Index`` finds)."""

    def __len__(self) -> int: ...

    def append(self, data: bytes) -> int: ...

    def __getitem__(self, number: int) -> bytes: ...


class PackedStrings:
    """An append-only list of byte strings in one buffer: each costs its length and 8 more."""

    __slots__ = ("_data", "_ends")

    def __init__(self) -> None:
        self._data = bytearray()
        self._ends = array("Q")

    def __len__(self) -> int:
        return len(self._ends)

    def append(self, data: bytes) -> int:
        """Add ``data`` last; its number (0 first)."""
        self._data += data
        self._ends.append(len(self._data))
        return len(self._ends) - 1

    def __getitem__(self, number: int) -> bytes:
        start = self._ends[number - 1] if number > 0 else 0
        return bytes(self._data[start:self._ends[number]])


class FixedWidth:
    """An append-only list of byte strings of one ``width``, back to back: no offsets."""

    __slots__ = ("_data", "width")

    def __init__(self, width: int) -> None:
        self.width = width
        self._data = bytearray()

    def __len__(self) -> int:
        return len(self._data) // self.width

    def append(self, data: bytes) -> int:
        if len(data) != self.width:
            raise ValueError(f"{len(data)} bytes given to a list of {self.width}-byte strings")
        self._data += data
        return len(self) - 1

    def __getitem__(self, number: int) -> bytes:
        start = number * self.width
        return bytes(self._data[start:start + self.width])


class Index:
    """Distinct byte strings, numbered in the order first added (in ``store``) and found by
    their bytes: a set that numbers its members, for tables of values beside it. An
    open-addressing table of their numbers, at most two thirds full.

    A full table doubles without stopping the event loop: the larger one takes new members at
    once, and the members of the smaller one move over ``MOVES_PER_ADD`` at a time with each
    later ``add`` (a lookup tries both until they have all moved), so no call does more than a
    few members' work however large the index.
    """

    __slots__ = ("_moved", "_old", "_slots", "_to_move", "store")

    MOVES_PER_ADD = 8
    """Members moved to a grown table per ``add``: all have moved long before it is full."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._slots = array("I", bytes(4 * _FIRST_SLOTS))
        """Each slot 0 (free) or a member's number + 1."""
        self._old: array[int] | None = None
        """While growing: the smaller table, still whole (every member numbered below
        ``_to_move``); None once they have all moved."""
        self._moved = 0
        self._to_move = 0

    def __len__(self) -> int:
        return len(self.store)

    def find(self, data: bytes) -> int | None:
        """The number of ``data``, or None if it was never added."""
        number = self._slots[_probe(self._slots, self.store, data)]
        if not number and self._old is not None:
            number = self._old[_probe(self._old, self.store, data)]
        return number - 1 if number else None

    def add(self, data: bytes) -> int:
        """Add ``data`` unless it is in already; its number either way."""
        slots = self._slots
        slot = _probe(slots, self.store, data)
        if slots[slot]:
            return slots[slot] - 1
        if self._old is not None and (found := self._old[_probe(self._old, self.store, data)]):
            return found - 1
        number = self.store.append(data)
        slots[slot] = number + 1
        if self._old is None and 3 * len(self.store) > 2 * len(slots):
            self._old, self._slots = slots, array("I", bytes(8 * len(slots)))
            self._moved, self._to_move = 0, len(self.store)
        if self._old is not None:
            self._move(self.MOVES_PER_ADD)
        return number

    def _move(self, count: int) -> None:
        """Move up to ``count`` more members of the smaller table to the larger one."""
        slots, store = self._slots, self.store
        mask = len(slots) - 1
        end = min(self._moved + count, self._to_move)
        for number in range(self._moved, end):
            slot = hash(store[number]) & mask
            while slots[slot]:
                slot = (slot + 1) & mask
            slots[slot] = number + 1
        self._moved = end
        if end == self._to_move:
            self._old = None


def _probe(slots: array[int], store: Store, data: bytes) -> int:
    """The slot of ``slots`` holding ``data``'s number, else the free one where it would go."""
    mask = len(slots) - 1
    slot = hash(data) & mask
    while (number := slots[slot]) and store[number - 1] != data:
        slot = (slot + 1) & mask
    return slot


def _encoded(text: str) -> bytes:
    """``text`` as bytes, one to one (a lone surrogate, which JSON allows, included)."""
    return text.encode("utf-8", "surrogatepass")


def _decoded(data: bytes) -> str:
    return data.decode("utf-8", "surrogatepass")


_NO_LINE = -(2**31)
"""What ``IdLines`` packs for a line kept aside (None, beyond 32 bits, not an ``int``)."""


class IdLines:
    """Each ``custom_id`` given and the line it first came on (None: a job without one), in
    ~25 bytes an id: the repeated-id check's memory. Used as a dict: ``in``, ``[]``, ``[]=``."""

    __slots__ = ("_aside", "_ids", "_lines")

    def __init__(self) -> None:
        self._ids = Index(PackedStrings())
        self._lines = array("i")
        self._aside: dict[int, int | None] = {}
        """Lines that do not fit ``_lines`` (None, beyond 32 bits, not an ``int``), by the
        id's number."""

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, custom_id: str) -> bool:
        return self._ids.find(_encoded(custom_id)) is not None

    def __getitem__(self, custom_id: str) -> int | None:
        number = self._ids.find(_encoded(custom_id))
        if number is None:
            raise KeyError(custom_id)
        line = self._lines[number]
        return self._aside[number] if line == _NO_LINE else line

    def __setitem__(self, custom_id: str, line: int | None) -> None:
        number = self._ids.add(_encoded(custom_id))
        packed = line if type(line) is int and _NO_LINE < line < 2**31 else _NO_LINE
        if number == len(self._lines):
            self._lines.append(packed)
        else:
            self._lines[number] = packed
        if packed == _NO_LINE:
            self._aside[number] = line
        else:
            self._aside.pop(number, None)


def _key_bytes(key: str) -> bytes | None:
    """A correlation key as made (32 lowercase hex digits) as its 16 bytes; else None."""
    if len(key) != 32:
        return None
    try:
        data = bytes.fromhex(key)
    except ValueError:
        return None
    return data if data.hex() == key else None


class Keys:
    """Correlation keys, numbered in the order first added: a key as made (32 lowercase hex
    digits) in ~25 bytes, numbered from 0; any other string kept whole, numbered from -1 down.
    A set of keys (``in``, ``len``) that numbers them for tables of values beside it."""

    __slots__ = ("_made", "_odd")

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self._made = Index(FixedWidth(16))
        self._odd: dict[str, int] = {}
        """Keys not of the form made (none, as keys are made), by number."""
        for key in keys:
            self.add(key)

    def __len__(self) -> int:
        return len(self._made) + len(self._odd)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.find(key) is not None

    def add(self, key: str) -> int:
        """Add ``key`` unless it is in already; its number either way."""
        data = _key_bytes(key)
        if data is None:
            return self._odd.setdefault(key, -1 - len(self._odd))
        return self._made.add(data)

    def find(self, key: str) -> int | None:
        """The number of ``key``, or None if it was never added."""
        data = _key_bytes(key)
        return self._odd.get(key) if data is None else self._made.find(data)


@attrs.frozen
class Kept:
    """The task a batch kept for a key, and the job it is for."""

    job_id: str
    task_id: str


def _task_code(task_id: str) -> int:
    """A task id as Vidu makes them (decimal digits, no leading zero, below 2**64 - 1) packed
    as the number + 1; else 0 (kept aside whole)."""
    if not (task_id.isascii() and task_id.isdigit()) or len(task_id) > 20:
        return 0
    number = int(task_id)
    return number + 1 if str(number) == task_id and number < 2**64 - 1 else 0


class KeptTasks:
    """The task kept for each correlation key and its job, in ~50 bytes a job: the duplicate
    check's memory. ``keep`` each job's, then ``get`` while sweeping the accounts' tasks."""

    __slots__ = ("_aside", "_jobs", "_keys", "_tasks")

    def __init__(self) -> None:
        self._keys = Keys()
        self._tasks = array("Q")
        """By key number: its task id as ``_task_code`` packs it (0: in ``_aside``)."""
        self._jobs = PackedStrings()
        """By key number: its job id (UTF-8)."""
        self._aside: dict[int, Kept] = {}
        """By key number: a task id of another form, a key of another form, or a key kept
        again (none of these happen as keys and Vidu's task ids are made)."""

    def __len__(self) -> int:
        return len(self._keys)

    def keep(self, key: str, job_id: str, task_id: str) -> None:
        """``task_id`` is the task kept for ``key``, for the job ``job_id`` (the last word)."""
        number = self._keys.add(key)
        if number == len(self._tasks):  # a new key as made
            code = _task_code(task_id)
            self._tasks.append(code)
            self._jobs.append(_encoded(job_id))
            if code:
                return
        elif number >= 0:  # kept again
            self._tasks[number] = 0
        self._aside[number] = Kept(job_id, task_id)

    def get(self, key: str | None) -> Kept | None:
        """What was kept for ``key``, or None (a key of no job here, or no key)."""
        number = None if key is None else self._keys.find(key)
        if number is None:
            return None
        if number < 0 or not (code := self._tasks[number]):
            return self._aside[number]
        return Kept(_decoded(self._jobs[number]), str(code - 1))
