"""A prepared answer: everything of a reply after its question, ready to send.

The message codec (`wire`, `upstream`, `cache`, `chase`) and the zone index both speak in
answers; this module is below them all, so the codec does not depend on the index.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence

from kdns.core.message import AA, QR, RCODE_MASK


class Answer:
    """A prepared reply, less its ID, question and any OPT record.

    `ends` holds where each record ends in `records` when there is more than one, so that a reply
    too large for a client can be cut at a record boundary; None for a single record (most
    answers: a tuple each would cost memory for nothing). The header's flags and section counts
    are worked out here, once, rather than for every reply.
    """

    __slots__ = ("counts", "counts_with_opt", "ends", "flags", "records")

    def __init__(
        self,
        rcode: int,
        answer_count: int,
        authority_count: int,
        additional_count: int,
        records: bytes,
        ends: Sequence[int] | None = None,
        flags: int = QR | AA,  # authoritative, as for every name of our zones
    ) -> None:
        self.flags = flags | rcode
        # One lookup for both: answers are made on a query's first use (`zone.Zone.answer`).
        self.counts, self.counts_with_opt = _count_pair(answer_count, authority_count, additional_count)
        self.records = records
        self.ends = ends

    @property
    def rcode(self) -> int:
        return self.flags & RCODE_MASK

    @property
    def answer_count(self) -> int:
        return self.counts[2] << 8 | self.counts[3]

    @property
    def authority_count(self) -> int:
        return self.counts[4] << 8 | self.counts[5]

    @property
    def additional_count(self) -> int:
        return self.counts[6] << 8 | self.counts[7]


@functools.cache
def _count_pair(answers: int, authority: int, additional: int) -> tuple[bytes, bytes]:
    """The section counts without an OPT record and with one (`_counts`), shared."""
    return _counts(answers, authority, additional), _counts(answers, authority, additional + 1)


@functools.cache
def _counts(answers: int, authority: int, additional: int) -> bytes:
    """QDCOUNT (always 1) and the three section counts; shared bytes, as few values recur."""
    return struct.pack("!HHHH", 1, answers, authority, additional)
