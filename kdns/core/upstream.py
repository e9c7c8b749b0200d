"""Answers from upstream resolvers, made into answers of ours: checked, and stripped of the
upstream's OPT record (`kdns.core.cache` holds them).

Pure: the clock is injected, and the bytes come in and go out. The forwarder (`kdns.forward`)
owns the sockets.
"""

from __future__ import annotations

import secrets
from array import array
from dataclasses import dataclass

from kdns.core import rdata
from kdns.core.answer import Answer
from kdns.core.message import (
    AD,
    CD,
    DO_BIT,
    FIXED_RR,
    HEADER,
    HEADER_LENGTH,
    NOERROR,
    NXDOMAIN,
    QR,
    RA,
    RCODE_MASK,
    RD,
    SERVFAIL,
    TC,
    TTL,
    MalformedName,
)
from kdns.core.message import read_name as _read_name
from kdns.core.rdata import OPT
from kdns.core.wire import Query

SERVFAIL_TTL = 5  # CoreDNS's cache keeps a SERVFAIL 5 s: long enough to stop a retry storm
UPSTREAM_UDP_SIZE = 1232  # what we advertise upstream (DNS Flag Day 2020)


class BadResponse(ValueError):
    """An upstream datagram that is not the answer to our question: dropped and counted."""


class MalformedResponse(BadResponse):
    """The answer to our question, but not a well-formed DNS message: an upstream failure."""


def upstream_query(query: Query) -> tuple[int, bytes]:
    """(fresh random ID, the query to send upstream): the client's question as sent (its case
    kept, for resolvers that check 0x20 randomisation), RD and CD as the client set them, and EDNS
    with our buffer size and the client's DO bit."""
    query_id = secrets.randbits(16)
    flags = query.flags & (RD | CD)
    do = bool(query.edns and query.edns.dnssec_ok)
    opt = b"\x00" + FIXED_RR.pack(OPT, UPSTREAM_UDP_SIZE, DO_BIT if do else 0, 0)
    return query_id, HEADER.pack(query_id, flags, 1, 0, 0, 1) + query.question + opt


@dataclass(frozen=True, slots=True)
class ForwardedAnswer:
    """An upstream's answer, ready to be fitted to any client's query.

    `records` holds the answer, authority and additional sections less the upstream's OPT, byte
    for byte: behind our header and a question of the same length they keep their offsets, so
    the upstream's compression pointers stay valid (the OPT, the one record dropped, comes last
    in practice, and a name never points at it); `ends` is where each record ends in it, so a
    reply can be cut at a record boundary (pointers only point backwards, so what is kept stays
    valid); `ttl_offsets` are where in it each record's TTL lies, so that a cached answer's TTLs
    can count down; `ttls` are their values when it arrived, none above `cache_ttl` when that is
    set (a cached answer is never served with a TTL longer than the time it will stay cached).
    """

    flags: int
    answer_count: int
    authority_count: int
    additional_count: int
    records: bytes
    # Unsigned 32-bit arrays, not tuples: a 60 KB answer of 3,750 records holds 45 KB of them,
    # where tuples of Python integers held 400 KB (this is what the cache's byte budget counts).
    ends: array[int]
    ttl_offsets: array[int]
    ttls: array[int]
    cache_ttl: int  # how long it may be cached (RFC 2308 for negative answers); 0: not at all
    truncated: bool  # TC was set: ask again over TCP

    @property
    def rcode(self) -> int:
        return self.flags & RCODE_MASK

    def answer(self, elapsed: int = 0, fixed_ttl: int | None = None) -> Answer:
        """As an `Answer` for `wire.reply`, its TTLs `elapsed` seconds lower (never below 0), or
        all set to `fixed_ttl`."""
        records = self.records
        if (elapsed or fixed_ttl is not None) and self.ttl_offsets:
            patched = bytearray(records)
            for offset, ttl in zip(self.ttl_offsets, self.ttls, strict=True):
                TTL.pack_into(patched, offset, fixed_ttl if fixed_ttl is not None else max(0, ttl - elapsed))
            records = bytes(patched)
        return Answer(
            self.rcode,
            self.answer_count,
            self.authority_count,
            self.additional_count,
            records,
            self.ends,
            flags=self.flags & ~RCODE_MASK,
        )


def read_response(
    response: bytes,
    expected_id: int,
    question: bytes,
    min_ttl: int,
    max_ttl: int,
    max_negative_ttl: int | None = None,
) -> ForwardedAnswer:
    """Check an upstream's response to our query and take it apart.

    `BadResponse` if it is not the answer to the question we asked (RFC 5452 9.1: ID and question
    must match): such a datagram is dropped, and the real answer may still come.
    `MalformedResponse` if it is the answer but does not parse (a name that runs off or points
    forwards, record data whose length does not fit its type): it is neither relayed nor cached,
    and the client gets SERVFAIL, as from CoreDNS.
    `max_negative_ttl` caps how long a negative answer is cached apart (CoreDNS's cache `denial`).
    """
    if len(response) < HEADER_LENGTH:
        raise BadResponse("shorter than a header")
    response_id, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(response)
    if response_id != expected_id or not flags & QR or qdcount != 1:
        raise BadResponse("not a response to our query ID")
    end = HEADER_LENGTH + len(question)
    if response[HEADER_LENGTH:end].lower() != question.lower():
        raise BadResponse("answers another question")
    kept: list[bytes] = []
    ends: list[int] = []
    ttl_offsets: list[int] = []
    ttls: list[int] = []
    counts = [0, 0, 0]
    length = 0
    answer_ttls: list[int] = []
    negative_ttl: int | None = None
    seen_opt = False
    rewrite = False  # whether some TTL must be written back (top bit set, or over the cache time)
    offset = end
    for section, count in enumerate((ancount, nscount, arcount)):
        for _ in range(count):
            start = offset
            offset = read_name(response, offset)
            if offset + 10 > len(response):
                raise MalformedResponse("record runs past the message")
            rtype, _class, ttl, rdlength = FIXED_RR.unpack_from(response, offset)
            ttl_at = offset + 4
            offset += 10
            if offset + rdlength > len(response):
                raise MalformedResponse("record data runs past the message")
            check_rdata(response, offset, rtype, rdlength)
            offset += rdlength
            if rtype == OPT:
                seen_opt = True  # the upstream's EDNS is between it and us; the client gets ours
                continue
            if seen_opt:
                continue  # records behind a dropped OPT would move, and pointers into them break
            if ttl & 0x80000000:
                ttl = 0  # RFC 2181 8: a TTL with the top bit set is read as zero
                rewrite = True
            kept.append(response[start:offset])
            ttl_offsets.append(length + (ttl_at - start))
            ttls.append(ttl)
            length += offset - start
            ends.append(length)
            counts[section] += 1
            if section == 0:
                answer_ttls.append(ttl)
            elif section == 1 and rtype == rdata.SOA:
                minimum = TTL.unpack_from(response, offset - 4)[0]
                negative_ttl = min(ttl, minimum)  # RFC 2308 5
    if offset != len(response):
        raise MalformedResponse("bytes after the last record")
    rcode = flags & RCODE_MASK
    answer_flags = QR | RA | (flags & AD) | rcode  # authoritative only for our own zones
    if flags & TC:
        cache_ttl = 0  # a truncated answer is never cached
    elif rcode == SERVFAIL:
        cache_ttl = SERVFAIL_TTL
    elif rcode == NOERROR and answer_ttls:
        cache_ttl = _clamp(min(answer_ttls), min_ttl, max_ttl)
    elif rcode in (NOERROR, NXDOMAIN) and negative_ttl is not None:
        high = max_ttl if max_negative_ttl is None else min(max_ttl, max_negative_ttl)
        cache_ttl = _clamp(negative_ttl, min(min_ttl, high), high)
    else:
        cache_ttl = 0  # negative without an SOA (RFC 2308 5: not cached), or another rcode
    records = b"".join(kept)
    if cache_ttl and any(ttl > cache_ttl for ttl in ttls):
        # A served TTL never outlasts the cache entry: `--cache-max-ttl` caps what clients keep
        # as well (CoreDNS's cache serves min(TTL, time left)).
        ttls = [min(ttl, cache_ttl) for ttl in ttls]
        rewrite = True
    if rewrite:
        patched = bytearray(records)
        for at, ttl in zip(ttl_offsets, ttls, strict=True):
            TTL.pack_into(patched, at, ttl)
        records = bytes(patched)
    return ForwardedAnswer(
        answer_flags,
        counts[0],
        counts[1],
        counts[2],
        records,
        array("I", ends),
        array("I", ttl_offsets),
        array("I", ttls),
        cache_ttl,
        bool(flags & TC),
    )


def _clamp(ttl: int, low: int, high: int) -> int:
    return max(low, min(ttl, high))


def read_name(message: bytes, offset: int) -> int:
    """`message.read_name`, its failure an upstream's malformed answer."""
    try:
        return _read_name(message, offset)
    except MalformedName as error:
        raise MalformedResponse(str(error)) from None


_FIXED_LENGTH = {rdata.A: 4, rdata.AAAA: 16}


def check_rdata(message: bytes, offset: int, rtype: int, rdlength: int) -> None:
    """`MalformedResponse` unless the record data at `offset` is well-formed for its type: the
    fixed-size types have their size, names in it parse and end exactly where the data ends.
    Other types are opaque bytes to a forwarder and pass as they are."""
    end = offset + rdlength
    fixed = _FIXED_LENGTH.get(rtype)
    if fixed is not None:
        if rdlength != fixed:
            raise MalformedResponse(f"type {rtype} record data of {rdlength} bytes")
        return
    prefix = rdata.NAME_IN_RDATA.get(rtype)
    if prefix is not None:
        if rdlength < prefix + 1 or read_name(message, offset + prefix) != end:
            raise MalformedResponse(f"type {rtype} record data does not hold one name")
        return
    if rtype == rdata.SOA:
        if read_name(message, read_name(message, offset)) + 20 != end:
            raise MalformedResponse("SOA record data is malformed")
        return
    if rtype == rdata.TXT:
        at = offset
        while at < end:
            at += message[at] + 1
        if at != end or not rdlength:
            raise MalformedResponse("TXT record data is malformed")
