"""The shared answer table (kdns/core/answer_table.py): every answer put in is found again,
field for field; nothing else is."""

from __future__ import annotations

import pytest

from kdns.core.answer import Answer
from kdns.core.answer_table import AnswerTable, SharedAnswer
from kdns.core.message import AA, NOERROR, NXDOMAIN, QR
from kdns.core.names import to_wire


def _answer(i: int) -> Answer:
    if i % 3 == 0:  # several records: their ends are kept
        return Answer(NOERROR, 2, 0, 1, bytes([i % 256]) * 30, (10, 20, 30))
    return Answer(NOERROR if i % 3 == 1 else NXDOMAIN, 1, i % 2, 0, f"record-{i}".encode())


def _same(found: Answer | None, answer: Answer) -> None:
    assert isinstance(found, SharedAnswer)
    assert (found.flags, found.counts, found.counts_with_opt, found.records, found.ends) == (
        answer.flags,
        answer.counts,
        answer.counts_with_opt,
        answer.records,
        answer.ends,
    )


def test_every_answer_put_in_is_found_field_for_field() -> None:
    entries = [(to_wire(f"svc-{i}.ns.svc.cluster.local"), 1 + i % 2 * 32, _answer(i)) for i in range(5000)]
    table = AnswerTable(entries)
    assert len(table) == 5000
    for key, qtype, answer in entries:
        _same(table.get(key, qtype), answer)


def test_a_name_or_type_it_does_not_hold_is_not_found() -> None:
    key = to_wire("web.prod.svc.cluster.local")
    table = AnswerTable([(key, 1, _answer(1))])
    assert table.get(key, 28) is None  # another type
    assert table.get(to_wire("wex.prod.svc.cluster.local"), 1) is None  # same length, other bytes
    assert table.get(to_wire("web.prod.svc.cluster.loca"), 1) is None
    assert AnswerTable([]).get(key, 1) is None


def test_an_answers_flags_are_kept_beside_its_rcode() -> None:
    answer = Answer(NXDOMAIN, 0, 1, 0, b"soa", flags=QR)  # not authoritative
    found = AnswerTable([(b"\x01a\x00", 1, answer)]).get(b"\x01a\x00", 1)
    assert found is not None and found.rcode == NXDOMAIN and not found.flags & AA


@pytest.mark.parametrize("count", [1, 7, 8, 9, 1000])
def test_the_index_stays_at_most_half_full_whatever_the_count(count: int) -> None:
    table = AnswerTable([(f"k{i}".encode(), 1, _answer(i)) for i in range(count)])
    assert table.slots >= 2 * count and table.slots & (table.slots - 1) == 0
    assert all(table.get(f"k{i}".encode(), 1) is not None for i in range(count))
