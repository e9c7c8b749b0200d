"""Round-robin order of address and MX records (CoreDNS's `loadbalance`), made once per reply.

What CoreDNS does (plugin/loadbalance, `roundRobin`): to every NOERROR reply it writes, each
section is reordered at random: a section of A records only (or of AAAA only) is shuffled whole;
any other section gets its CNAMEs first, then the records of other types, then the A and AAAA
records shuffled, then the MX records shuffled. Without it every client of a headless Service
gets the same first address, and picks the same Pod.

What kdns does: a reply is made once and kept (the pipeline's reply cache), so reordering it per
query would cost the fast path its point. Instead `orders` makes, once, a few orders of the reply
(at most MOST_ORDERS, and ORDER_BYTES of them together): in the k-th, every reordered group is
rotated by k steps (spread evenly over a group larger than the number of orders), so that each
record comes first in turn; the reply cache keeps them all and serves them in turn, one index a
query. The partition into CNAMEs, other types, addresses and MX is CoreDNS's. Each new set of
orders starts from a new turn (`LoadBalance`), so over a reply's rebuilds a group larger than
MOST_ORDERS has every record first.

Records are moved as they are, byte for byte, so the move must not break a compression pointer
(RFC 1035 4.1.4): a section is reordered only if no name anywhere in the message points into it
(names in a section may point before it: to the question, or to an earlier section, which do
not move). kdns's own answers compress only against the question, so theirs always qualify; an
upstream's answer whose names point into a section that would move keeps that section's order.
"""

from __future__ import annotations

from typing import NamedTuple

from kdns.core.budgets import KIB
from kdns.core.message import FIXED_RR, HEADER, HEADER_LENGTH, MAX_LABEL, NOERROR, RCODE_MASK, skip_name
from kdns.core.rdata import AAAA, CNAME, MX, NAME_IN_RDATA, SOA, A
from kdns.core.stage import Next, Outcome, Reply, Request, then_reply

MOST_ORDERS = 16  # orders kept of one reply: up to 16 addresses each first in turn
ORDER_BYTES = 64 * KIB  # one reply's orders together, at most (but two are always made)


class _Record(NamedTuple):
    start: int
    end: int
    rtype: int


class LoadBalance:
    """The stage: every NOERROR reply the stages after it make, in the orders `orders` makes; the
    first one is sent, the reply cache serves the others in turn (`Reply.orders`)."""

    def __init__(self) -> None:
        self._turn = 0  # where the next set of orders starts its rotations

    def serve(self, request: Request, next: Next) -> Outcome:
        return then_reply(next(request), self._balanced)

    def _balanced(self, reply: Reply) -> Reply:
        message = reply.message
        if len(message) < HEADER_LENGTH or message[3] & RCODE_MASK != NOERROR:
            return reply  # CoreDNS leaves every other rcode alone
        self._turn += 1
        made = orders(message, self._turn)
        if not made:
            return reply
        return Reply(made[0], reply.keep, made)


def orders(message: bytes, turn: int = 0) -> tuple[bytes, ...]:
    """The orders of `message` (a whole reply with one question) to serve in turn, the first
    starting its rotations at `turn`; () when there is nothing to reorder (no group of two, or
    only sections that cannot move safely). O(records x orders)."""
    walked = _walk(message)
    if walked is None:
        return ()
    sections, targets = walked
    layouts: list[tuple[list[_Record], list[list[_Record]] | None]] = []
    largest = 1
    for records in sections:
        layout = _layout(records)
        if layout is not None and not _pointed_into(records, targets):
            layouts.append((records, layout))
            largest = max(largest, *(len(group) for group in layout[1:]))
        else:
            layouts.append((records, None))
    if all(layout is None for _, layout in layouts):
        return ()
    count = min(MOST_ORDERS, largest, max(2, ORDER_BYTES // len(message)))
    head = message[: _records_start(sections, len(message))]
    made = []
    for k in range(count):
        parts = [head]
        for records, layout in layouts:
            if not records:
                continue
            if layout is None:
                parts.append(message[records[0].start : records[-1].end])
                continue
            fixed, *groups = layout
            parts += (message[r.start : r.end] for r in fixed)
            for group in groups:
                size = len(group)
                if not size:
                    continue
                step = (turn + (k if size <= count else k * size // count)) % size
                parts += (message[r.start : r.end] for r in group[step:] + group[:step])
        made.append(b"".join(parts))
    if len(made) == 1 and made[0] == message:
        return ()
    return tuple(made)


def _records_start(sections: list[list[_Record]], size: int) -> int:
    """Where the first record starts (the end of the question)."""
    for records in sections:
        if records:
            return records[0].start
    return size


def _layout(records: list[_Record]) -> list[list[_Record]] | None:
    """A section's new order: [records kept in place, groups rotated...], or None when it does
    not change (CoreDNS's `roundRobin` partition)."""
    if len(records) < 2:
        return None
    first = records[0].rtype
    if first in (A, AAAA) and all(r.rtype == first for r in records):
        return [[], records]
    cnames = [r for r in records if r.rtype == CNAME]
    rest = [r for r in records if r.rtype not in (CNAME, A, AAAA, MX)]
    addresses = [r for r in records if r.rtype in (A, AAAA)]
    exchanges = [r for r in records if r.rtype == MX]
    if len(addresses) < 2 and len(exchanges) < 2 and cnames + rest + addresses + exchanges == records:
        return None
    return [cnames + rest, addresses, exchanges]


def _pointed_into(records: list[_Record], targets: list[int]) -> bool:
    if not records:
        return False
    start, end = records[0].start, records[-1].end
    return any(start <= target < end for target in targets)


def _walk(message: bytes) -> tuple[list[list[_Record]], list[int]] | None:
    """The records of each section and every compression pointer's target; None if the message
    is not one kdns can take apart (it made it, so that would be a bug: left as it is)."""
    if len(message) < HEADER_LENGTH:
        return None
    _, _, questions, *counts = HEADER.unpack_from(message)
    if questions != 1:
        return None
    offset = skip_name(message, HEADER_LENGTH)
    if offset < 0:
        return None
    offset += 4  # type and class
    targets: list[int] = []
    sections: list[list[_Record]] = []
    size = len(message)
    for count in counts:
        records = []
        for _ in range(count):
            start = offset
            offset = _name(message, offset, targets)
            if offset < 0 or offset + FIXED_RR.size > size:
                return None
            rtype, _, _, rdlength = FIXED_RR.unpack_from(message, offset)
            offset += FIXED_RR.size
            end = offset + rdlength
            if end > size:
                return None
            prefix = NAME_IN_RDATA.get(rtype)
            if prefix is not None and _name(message, offset + prefix, targets) < 0:
                return None
            if rtype == SOA and _name(message, _name(message, offset, targets), targets) < 0:
                return None
            records.append(_Record(start, end, rtype))
            offset = end
        sections.append(records)
    return (sections, targets) if offset == size else None


def _name(message: bytes, offset: int, targets: list[int]) -> int:
    """The offset after the name written at `offset`, its pointer's target (if it ends in one)
    added to `targets`; -1 if it runs off the message."""
    size = len(message)
    while 0 <= offset < size:
        length = message[offset]
        if length == 0:
            return offset + 1
        if length >= 0xC0:
            if offset + 2 > size:
                return -1
            targets.append((length & 0x3F) << 8 | message[offset + 1])
            return offset + 2
        if length > MAX_LABEL:
            return -1
        offset += length + 1
    return -1
