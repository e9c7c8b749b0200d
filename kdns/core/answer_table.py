"""Answers in one immutable buffer, found through an index of offsets: read by forked workers
without writing to the pages they share.

CPython writes an object's reference count whenever code reads the object, so a worker forked
with the zone's index and answers copies every page it reads from: after each name has been
asked once, each of 4 workers held its own copy of most of the zone (`bench/compare.py
--memory`: 2.4 times one worker's memory). Here every answer lives in one `bytes` object and the
index is one `array` of offsets: a lookup reads them through the buffer protocol and builds a
new `SharedAnswer` from the bytes it finds, so the only shared memory it writes is the headers of
the table's three objects. (Python 3.12's immortal objects would spare the rest of the zone;
this interpreter is 3.11.)

Layout of an entry, at its offset in `_blob` (network byte order):
    hash32 (I), key length (H), qtype (H), flags (H), answer / authority / additional counts
    (HHH), records length (I), ends count (H); then the key, the records, and each end (I).
The index is open addressing with linear probing, at most half full: a lookup reads one or two
slots on average, and an entry's stored hash spares comparing keys that cannot match.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterable

from kdns.core.answer import Answer
from kdns.core.message import RCODE_MASK

_HEADER = struct.Struct("!IHHHHHHIH")
_EMPTY = -1
_HASH_MASK = 0xFFFFFFFF


class SharedAnswer(Answer):
    """An answer read from an `AnswerTable`: the table holds it for as long as its name is
    unchanged, though each lookup builds a new object."""

    __slots__ = ()


def _hash(key: bytes, qtype: int) -> int:
    # The process's own string hash: forked workers share the supervisor's hash secret.
    return hash(key) ^ (qtype * 0x9E3779B1)


class AnswerTable:
    """(lowercased wire name, type) -> answer, immutable once built.

    Memory: about 20 bytes of header and 8 of index (two slots) per entry beside its key and
    records; no Python object per entry."""

    __slots__ = ("_blob", "_count", "_index", "_mask")

    def __init__(self, entries: Iterable[tuple[bytes, int, Answer]]) -> None:
        parts: list[bytes] = []
        placed: list[tuple[int, int]] = []  # (hash, offset)
        offset = 0
        for key, qtype, answer in entries:
            ends = answer.ends or ()
            full_hash = _hash(key, qtype)
            header = _HEADER.pack(
                full_hash & _HASH_MASK,
                len(key),
                qtype,
                answer.flags,
                answer.answer_count,
                answer.authority_count,
                answer.additional_count,
                len(answer.records),
                len(ends),
            )
            entry = b"".join((header, key, answer.records, struct.pack(f"!{len(ends)}I", *ends)))
            parts.append(entry)
            placed.append((full_hash, offset))
            offset += len(entry)
        size = 8
        while size < 2 * len(placed):
            size *= 2
        index = array("q", [_EMPTY]) * size
        mask = size - 1
        for full_hash, at in placed:
            slot = full_hash & mask
            while index[slot] != _EMPTY:
                slot = (slot + 1) & mask
            index[slot] = at
        self._blob = b"".join(parts)
        self._index = index
        self._mask = mask
        self._count = len(placed)

    def __len__(self) -> int:
        return self._count

    @property
    def slots(self) -> int:
        """The index's slots: a power of two, at least twice the entries."""
        return len(self._index)

    @property
    def nbytes(self) -> int:
        """The bytes of the entries and the index."""
        return len(self._blob) + self._index.itemsize * len(self._index)

    def get(self, key: bytes, qtype: int) -> SharedAnswer | None:
        """The answer for (`key`, `qtype`), or None if the table holds none."""
        full_hash = _hash(key, qtype)
        short_hash = full_hash & _HASH_MASK
        blob, index, mask = self._blob, self._index, self._mask
        slot = full_hash & mask
        while True:
            at = index[slot]
            if at == _EMPTY:
                return None
            stored_hash, key_length, stored_type, flags, an, ns, ar, length, ends_count = _HEADER.unpack_from(blob, at)
            start = at + _HEADER.size
            if (
                stored_hash == short_hash
                and stored_type == qtype
                and key_length == len(key)
                and blob[start : start + key_length] == key
            ):
                start += key_length
                records = blob[start : start + length]
                ends = struct.unpack_from(f"!{ends_count}I", blob, start + length) if ends_count else None
                return SharedAnswer(flags & RCODE_MASK, an, ns, ar, records, ends, flags & ~RCODE_MASK)
            slot = (slot + 1) & mask
