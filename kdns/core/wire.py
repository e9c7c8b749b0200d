"""DNS messages on the wire for the query path: parse a query, assemble a reply (RFC 1035 4.1).

Hand-written rather than through dnslib because this runs once per packet: parsing is a walk over
the question's labels and at most an OPT record; a reply is a header, the question echoed as sent,
and a prepared `Answer`'s bytes. Anything the parser cannot read raises `QueryError`, which carries
the rcode to answer with and whatever of the query could be read (its ID at least).
"""

from __future__ import annotations

import bisect
import functools
import struct
from typing import NamedTuple

from kdns.core.answer import Answer
from kdns.core.message import (
    BADVERS,
    CD,
    CLASSIC_UDP_LIMIT,
    DO_BIT,
    FIXED_RR,
    FORMERR,
    HEADER,
    HEADER_LENGTH,
    NOTIMP,
    OPCODE_MASK,
    QR,
    RA,
    RD,
    TC,
    name_end,
    skip_name,
)
from kdns.core.rdata import OPT

_TYPE_CLASS = struct.Struct("!HH")
_OPT_FIXED = struct.Struct("!HI")  # an OPT record's CLASS (UDP size) and TTL (flags, version)
_ID_FLAGS = struct.Struct("!HH")


class Edns(NamedTuple):
    """What a client's OPT record (RFC 6891) said."""

    udp_size: int
    version: int
    dnssec_ok: bool


class Query(NamedTuple):
    """A parsed query: the parts a reply needs, the question as sent and its lookup key.

    A NamedTuple rather than a dataclass: one is built per packet, and tuple construction is
    several times cheaper than a frozen dataclass's.
    """

    id: int
    flags: int
    question: bytes  # QNAME, QTYPE and QCLASS as the client sent them: the reply echoes them
    key: bytes  # QNAME lowercased, the zone's index key
    qtype: int
    qclass: int
    edns: Edns | None


class QueryError(Exception):
    """A query that gets an error reply (`rcode`) or, when `query_id` is None, no reply at all."""

    def __init__(
        self, rcode: int, query_id: int | None, flags: int = 0, question: bytes = b"", edns: Edns | None = None
    ):
        super().__init__(rcode)
        self.rcode = rcode
        self.query_id = query_id
        self.flags = flags
        self.question = question
        self.edns = edns


def parse_query(packet: bytes) -> Query:
    """Parse a query; raise `QueryError` for anything that does not get a normal answer.

    The question's name is taken to end at the first zero byte, without walking its labels: if
    that name is in the zone's index, its bytes are those of a well-formed name and the walk would
    find the same end. Any other name must pass `checked` before it is answered. A zero byte may
    also sit inside a label (RFC 2181 11: `a\\000b.example` is a legal name); if reading on from
    the first zero byte fails, the name is walked label by label and read from its real end.
    """
    size = len(packet)
    if size < HEADER_LENGTH:
        # A fragment of a header gets no reply at all: any reply to it would be larger than the
        # packet, which is what an amplification attack looks for (miekg/dns drops them too).
        raise QueryError(FORMERR, None)
    query_id, flags, qdcount, _ancount, _nscount, _arcount = HEADER.unpack_from(packet)
    if flags & QR:
        raise QueryError(FORMERR, None)  # a response, not a query: never answer it (no loops)
    if flags & OPCODE_MASK:
        raise QueryError(NOTIMP, query_id, flags)
    if qdcount != 1:
        raise QueryError(FORMERR, query_id, flags)
    end = packet.find(0, HEADER_LENGTH) + 1
    try:
        return _parse_from(packet, end)
    except QueryError:
        real_end = name_end(packet, HEADER_LENGTH)
        if real_end < 0 or real_end == end:
            raise
        return _parse_from(packet, real_end)


def _parse_from(packet: bytes, end: int) -> Query:
    """The query whose question name ends at `end` (just after its root label)."""
    query_id, flags, _, ancount, nscount, arcount = HEADER.unpack_from(packet)
    size = len(packet)
    if end <= HEADER_LENGTH or end + 4 > size:
        raise QueryError(FORMERR, query_id, flags)
    question_end = end + 4
    question = packet[HEADER_LENGTH:question_end]
    key = packet[HEADER_LENGTH:end].lower()
    qtype, qclass = _TYPE_CLASS.unpack_from(packet, end)
    edns = None
    if arcount:
        if (
            arcount == 1
            and not ancount
            and not nscount
            and size == question_end + 11
            and packet[question_end : question_end + 3] == b"\x00\x00\x29"
            and packet[question_end + 9 :] == b"\x00\x00"
        ):  # the usual case: exactly one OPT record, with no options
            udp_size, ttl = _OPT_FIXED.unpack_from(packet, question_end + 3)
            edns = Edns(udp_size, (ttl >> 16) & 0xFF, bool(ttl & DO_BIT))
            if edns.version:
                raise QueryError(BADVERS, query_id, flags, question, edns)
        else:
            edns = _find_opt(packet, question_end, ancount + nscount, arcount, query_id, flags, question)
    return Query(query_id, flags, question, key, qtype, qclass, edns)


def checked(packet: bytes, query: Query) -> Query:
    """The query with a well-formed question name (RFC 1035 4.1.2: plain labels, within 255
    bytes); FORMERR for any other.

    Usually `query` itself. When the name holds a zero byte inside a label, `parse_query` took the
    name to end early; the query is then read again from the name's real end. A compression
    pointer could only point back into the header, so one in the question is malformed (and so
    cannot loop).
    """
    end = name_end(packet, HEADER_LENGTH)
    if end < 0:
        raise QueryError(FORMERR, query.id, query.flags)
    if end == HEADER_LENGTH + len(query.key):
        return query
    return _parse_from(packet, end)


def _find_opt(
    packet: bytes, offset: int, skip: int, arcount: int, query_id: int, flags: int, question: bytes
) -> Edns | None:
    """The OPT record among the additional records; FORMERR for a malformed one or two of them."""
    size = len(packet)
    edns = None
    for index in range(skip + arcount):
        name_start = offset
        offset = skip_name(packet, offset)
        if offset < 0 or offset + 10 > size:
            raise QueryError(FORMERR, query_id, flags, question)
        rtype, rclass, ttl, rdlength = FIXED_RR.unpack_from(packet, offset)
        offset += 10 + rdlength
        if offset > size:
            raise QueryError(FORMERR, query_id, flags, question)
        if index < skip or rtype != OPT:
            continue
        if edns is not None or packet[name_start] != 0:  # RFC 6891 6.1.1: one OPT, owner root
            raise QueryError(FORMERR, query_id, flags, question)
        edns = Edns(rclass, (ttl >> 16) & 0xFF, bool(ttl & DO_BIT))
    if edns is not None and edns.version != 0:
        raise QueryError(BADVERS, query_id, flags, question, edns)
    return edns


def udp_limit(edns: Edns | None, max_udp: int) -> int:
    """The largest reply a UDP client can take: 512 without EDNS (RFC 1035), else what it
    advertised (never under 512, RFC 6891 6.2.5), capped at our own maximum."""
    if edns is None:
        return CLASSIC_UDP_LIMIT
    return max(CLASSIC_UDP_LIMIT, min(edns.udp_size, max_udp))


@functools.cache
def _opt_record(dnssec_ok: bool, rcode: int, max_udp: int) -> bytes:
    """Our OPT record: version 0, our UDP size, the upper bits of the rcode, DO echoed (RFC 3225)."""
    ttl = (rcode >> 4) << 24 | (DO_BIT if dnssec_ok else 0)
    return b"\x00" + FIXED_RR.pack(OPT, max_udp, ttl, 0)


def reply(query: Query, answer: Answer, limit: int, max_udp: int, recursion_available: bool) -> bytes:
    """Assemble the reply to `query` from a prepared answer, fitted to `limit` bytes."""
    flags = answer.flags | (query.flags & (RD | CD))
    if recursion_available:
        flags |= RA
    question = query.question
    records = answer.records
    if query.edns is None:
        tail = b""
        counts = answer.counts
    else:
        tail = _opt_record(query.edns.dnssec_ok, answer.rcode, max_udp)
        counts = answer.counts_with_opt
    if HEADER_LENGTH + len(question) + len(records) + len(tail) <= limit:
        return _ID_FLAGS.pack(query.id, flags) + counts + question + records + tail
    return _truncated(query.id, flags, question, answer, tail, limit)


def _truncated(query_id: int, flags: int, question: bytes, answer: Answer, tail: bytes, limit: int) -> bytes:
    """As many whole records as fit in `limit`, answer section first, then authority, then
    additional, with TC set (CoreDNS, through miekg/dns `Msg.Truncate`).

    The records that fit are kept rather than none, because some stub resolvers never retry over
    TCP (musl before 1.2.4): with TC and an empty answer they get nothing, with TC and what fits
    they get usable addresses. TC is set even when only additional records are left out, as
    CoreDNS does, so that a client that wants everything knows to ask over TCP.
    """
    room = limit - HEADER_LENGTH - len(question) - len(tail)
    ends = answer.ends or (len(answer.records),)
    kept = bisect.bisect_right(ends, room)
    answers = min(kept, answer.answer_count)
    authority = min(kept - answers, answer.authority_count)
    additional = kept - answers - authority
    records = answer.records[: ends[kept - 1]] if kept else b""
    opt_count = 1 if tail else 0
    header = HEADER.pack(query_id, flags | TC, 1, answers, authority, additional + opt_count)
    return header + question + records + tail


def error_reply(error: QueryError, max_udp: int, recursion_available: bool) -> bytes | None:
    """The reply to a query that failed to parse or is refused; None when it gets no reply.

    The question is echoed only when it is well-formed: a question that failed to parse may hold
    compression pointers or reserved label types, and every reply kdns sends must parse."""
    if error.query_id is None:
        return None
    rcode = error.rcode
    flags = QR | (error.flags & (OPCODE_MASK | RD | CD)) | (rcode & 0xF)
    if recursion_available:
        flags |= RA
    question = error.question
    if question and name_end(question, 0) != len(question) - 4:
        question = b""
    tail = b""
    if error.edns is not None:
        tail = _opt_record(error.edns.dnssec_ok, rcode, max_udp)
    return HEADER.pack(error.query_id, flags, 1 if question else 0, 0, 0, 1 if tail else 0) + question + tail


def status_reply(query: Query, rcode: int, max_udp: int, recursion_available: bool) -> bytes:
    """A reply with no records and the given rcode (REFUSED, SERVFAIL, NOTIMP) to a parsed query."""
    error = QueryError(rcode, query.id, query.flags, query.question, query.edns)
    reply_bytes = error_reply(error, max_udp, recursion_available)
    assert reply_bytes is not None
    return reply_bytes
