"""Answers from upstream resolvers, made into answers of ours: checked, stripped of the upstream's
OPT record, and held in a bounded cache whose TTLs count down.

Pure: the clock is injected, and the bytes come in and go out. The forwarder (`kdns.forward`)
owns the sockets.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import LRUCache

from kdns.core import rdata
from kdns.core.wire import CD, DO_BIT, HEADER_LENGTH, MAX_NAME_WIRE, QR, RA, RD, TC, TYPE_OPT, Query
from kdns.core.zone import NOERROR, NXDOMAIN, SERVFAIL, Answer

_HEADER = struct.Struct("!HHHHHH")
_FIXED_RR = struct.Struct("!HHIH")
_TTL = struct.Struct("!I")

AD = 0x0020  # RFC 4035 3.2.3: authentic data, passed on from a validating upstream
MX = 15
DNAME = 39
SERVFAIL_TTL = 5  # CoreDNS's cache keeps a SERVFAIL 5 s: long enough to stop a retry storm
UPSTREAM_UDP_SIZE = 1232  # what we advertise upstream (DNS Flag Day 2020)

# (lowercased name, type, class, DNSSEC OK, checking disabled). CD is part of the key because a
# validating upstream answers it differently: SERVFAIL for a bogus name without it, the data
# with it (RFC 4035 3.2.2 and 4.7); CoreDNS's cache keys on it for that reason.
CacheKey = tuple[bytes, int, int, bool, bool]


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
    opt = b"\x00" + _FIXED_RR.pack(TYPE_OPT, UPSTREAM_UDP_SIZE, DO_BIT if do else 0, 0)
    return query_id, _HEADER.pack(query_id, flags, 1, 0, 0, 1) + query.question + opt


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
    ends: tuple[int, ...]
    ttl_offsets: tuple[int, ...]
    ttls: tuple[int, ...]
    cache_ttl: int  # how long it may be cached (RFC 2308 for negative answers); 0: not at all
    truncated: bool  # TC was set: ask again over TCP

    @property
    def rcode(self) -> int:
        return self.flags & 0xF

    def answer(self, elapsed: int = 0, fixed_ttl: int | None = None) -> Answer:
        """As an `Answer` for `wire.reply`, its TTLs `elapsed` seconds lower (never below 0), or
        all set to `fixed_ttl`."""
        records = self.records
        if (elapsed or fixed_ttl is not None) and self.ttl_offsets:
            patched = bytearray(records)
            for offset, ttl in zip(self.ttl_offsets, self.ttls, strict=True):
                _TTL.pack_into(patched, offset, fixed_ttl if fixed_ttl is not None else max(0, ttl - elapsed))
            records = bytes(patched)
        return Answer(
            self.rcode,
            self.answer_count,
            self.authority_count,
            self.additional_count,
            records,
            self.ends,
            flags=self.flags & ~0xF,
        )


def read_response(response: bytes, expected_id: int, question: bytes, min_ttl: int, max_ttl: int) -> ForwardedAnswer:
    """Check an upstream's response to our query and take it apart.

    `BadResponse` if it is not the answer to the question we asked (RFC 5452 9.1: ID and question
    must match): such a datagram is dropped, and the real answer may still come.
    `MalformedResponse` if it is the answer but does not parse (a name that runs off or points
    forwards, record data whose length does not fit its type): it is neither relayed nor cached,
    and the client gets SERVFAIL, as from CoreDNS.
    """
    if len(response) < HEADER_LENGTH:
        raise BadResponse("shorter than a header")
    response_id, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(response)
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
            rtype, _class, ttl, rdlength = _FIXED_RR.unpack_from(response, offset)
            ttl_at = offset + 4
            offset += 10
            if offset + rdlength > len(response):
                raise MalformedResponse("record data runs past the message")
            check_rdata(response, offset, rtype, rdlength)
            offset += rdlength
            if rtype == TYPE_OPT:
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
                minimum = _TTL.unpack_from(response, offset - 4)[0]
                negative_ttl = min(ttl, minimum)  # RFC 2308 5
    if offset != len(response):
        raise MalformedResponse("bytes after the last record")
    rcode = flags & 0xF
    answer_flags = QR | RA | (flags & AD) | rcode  # authoritative only for our own zones
    if flags & TC:
        cache_ttl = 0  # a truncated answer is never cached
    elif rcode == SERVFAIL:
        cache_ttl = SERVFAIL_TTL
    elif rcode == NOERROR and answer_ttls:
        cache_ttl = _clamp(min(answer_ttls), min_ttl, max_ttl)
    elif rcode in (NOERROR, NXDOMAIN) and negative_ttl is not None:
        cache_ttl = _clamp(negative_ttl, min_ttl, max_ttl)
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
            _TTL.pack_into(patched, at, ttl)
        records = bytes(patched)
    return ForwardedAnswer(
        answer_flags,
        counts[0],
        counts[1],
        counts[2],
        records,
        tuple(ends),
        tuple(ttl_offsets),
        tuple(ttls),
        cache_ttl,
        bool(flags & TC),
    )


def _clamp(ttl: int, low: int, high: int) -> int:
    return max(low, min(ttl, high))


def read_name(message: bytes, offset: int) -> int:
    """Check the (possibly compressed) name at `offset` and return the offset after it.

    RFC 1035 4.1.4: a pointer points at an earlier name in the message. Each pointer must point
    strictly before the one that led to it, which rules out loops, and the name it makes must be
    made of plain labels and fit in 255 bytes.
    """
    size = len(message)
    after = -1  # the offset after the name as written here, known at its first pointer
    total = 0
    limit = offset  # a pointer must point before this
    while True:
        if offset >= size:
            raise MalformedResponse("name runs past the message")
        length = message[offset]
        if length >= 0xC0:
            if offset + 2 > size:
                raise MalformedResponse("pointer runs past the message")
            target = (length & 0x3F) << 8 | message[offset + 1]
            if after < 0:
                after = offset + 2
            if target >= limit:
                raise MalformedResponse("compression pointer does not point backwards")
            limit = target
            offset = target
            continue
        if length > 63:
            raise MalformedResponse("reserved label type")
        total += length + 1
        if total > MAX_NAME_WIRE:
            raise MalformedResponse("name longer than 255 bytes")
        if length == 0:
            return after if after >= 0 else offset + 1
        offset += length + 1


# Record types whose data is, or holds, one domain name that may be compressed (RFC 3597 4: the
# types of RFC 1035; SRV, RFC 2782, is read the same way), with the fixed bytes before it.
_NAME_RDATA = {rdata.NS: 0, rdata.CNAME: 0, rdata.PTR: 0, DNAME: 0, MX: 2, rdata.SRV: 6}
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
    prefix = _NAME_RDATA.get(rtype)
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


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    inserts: int = 0


STALE_TTL = 30  # RFC 8767 4: the TTL of an answer served stale
PREFETCH_HITS = 2  # an entry asked for this often is refreshed before it expires (CoreDNS: 1 by default)
PREFETCH_FRACTION = 0.1  # ... once no more than this part of its TTL is left (CoreDNS's 10%)


class _Entry:
    __slots__ = ("answer", "expires", "hits", "prefetching", "served", "served_at", "stored")

    def __init__(self, answer: ForwardedAnswer, stored: float) -> None:
        self.answer = answer
        self.stored = stored
        self.expires = stored + answer.cache_ttl
        self.served_at = -1
        self.served: Answer | None = None
        self.hits = 0
        self.prefetching = False


class ForwardCache:
    """Forwarded answers by (lowercased name, type, class, DO bit), LRU beyond `size` entries,
    each kept for its `cache_ttl` and served with TTLs lowered by the time it has been held.

    With `stale_for` (RFC 8767), an expired answer is kept that much longer, for `get_stale` to
    serve when no upstream answers. With `prefetch`, `get` reports a popular entry close to expiry
    through `prefetch_due`, for the forwarder to refresh while it is still being served.
    """

    def __init__(self, size: int, clock: Callable[[], float], stale_for: float = 0, prefetch: bool = False) -> None:
        self.clock = clock
        self.stats = CacheStats()
        self.stale_for = stale_for
        self.prefetch = prefetch
        self.prefetch_due: list[CacheKey] = []
        # A plain LRU: each entry knows when it expires, which `get` checks anyway, and an
        # expired one (kept for serve-stale) simply ages out. cachetools' TLRUCache would keep
        # a timer heap too, at five times the cost of a lookup.
        self._entries: LRUCache[CacheKey, _Entry] = LRUCache(maxsize=max(size, 1))
        self.enabled = size > 0

    @staticmethod
    def key(query: Query) -> CacheKey:
        dnssec_ok = bool(query.edns and query.edns.dnssec_ok)
        return (query.key, query.qtype, query.qclass, dnssec_ok, bool(query.flags & CD))

    def get(self, key: CacheKey) -> Answer | None:
        entry = self._entries.get(key)
        now = self.clock()
        if entry is None or now >= entry.expires:  # absent, or only there to be served stale
            self.stats.misses += 1
            if entry is not None and now >= entry.expires + self.stale_for:
                del self._entries[key]
            return None
        self.stats.hits += 1
        entry.hits += 1
        if (
            self.prefetch
            and not entry.prefetching
            and entry.hits >= PREFETCH_HITS
            and entry.expires - now <= entry.answer.cache_ttl * PREFETCH_FRACTION
        ):
            entry.prefetching = True
            self.prefetch_due.append(key)
        elapsed = int(now - entry.stored)
        if elapsed != entry.served_at:  # TTLs change once a second: patch them once a second
            entry.served = entry.answer.answer(elapsed)
            entry.served_at = elapsed
        assert entry.served is not None
        return entry.served

    def get_stale(self, key: CacheKey) -> Answer | None:
        """An expired answer still within `stale_for`, its TTLs set to 30 s (RFC 8767 4)."""
        entry = self._entries.get(key) if self.stale_for else None
        now = self.clock()
        if entry is None or now < entry.expires or now >= entry.expires + self.stale_for:
            return None
        return entry.answer.answer(fixed_ttl=STALE_TTL)

    def put(self, key: CacheKey, answer: ForwardedAnswer) -> None:
        if self.enabled and answer.cache_ttl > 0:
            self._entries[key] = _Entry(answer, self.clock())
            self.stats.inserts += 1

    def __len__(self) -> int:
        """Entries held, fresh or kept for serve-stale."""
        return len(self._entries)
