"""The query handler: bytes of a query in, bytes of a reply (or nothing) out. No I/O.

For a cluster name this is the hot path the design asks for: parse the question, one lookup in
the zone index, and a reply assembled from prepared bytes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace

from kdns.core import chase, rdata, wire
from kdns.core.autopath import AUTOPATH_TTL, Autopath
from kdns.core.budgets import REPLY_CACHE_BYTES
from kdns.core.cache import CacheKey, ForwardCache
from kdns.core.counters import TCP, UDP, QueryCounters, counted_type
from kdns.core.kept import KeptReplies, KeptReply
from kdns.core.message import DEFAULT_MAX_UDP, NXDOMAIN, RCODE_MASK, REFUSED, SERVFAIL, TCP_LIMIT
from kdns.core.upstream import ForwardedAnswer
from kdns.core.zone import Answer, Zone

ClientAddress = tuple[str, int] | tuple[str, int, int, int]  # IPv4, IPv6 socket addresses
CounterKey = tuple[str, int, int, int]  # `QueryCounters.replies`: transport, family, type, rcode


@dataclass(frozen=True, slots=True)
class Forward:
    """The decision to ask upstream: the I/O side forwards `query` and calls `finish_forward`.

    With `chased_from`, `query` asks for the target of an ExternalName service's CNAME, and the
    reply answers `chased_from` with the CNAME followed by what upstream said of the target.
    """

    query: wire.Query
    tcp: bool
    chased_from: wire.Query | None = None
    family: int = 1  # the client's address family (1 IPv4, 2 IPv6), for the counters
    # With autopath: `query` is a name of the client's search path (`chased_from` the name it
    # asked), and these the names still to try after it, should it not exist.
    autopath: tuple[bytes, ...] | None = None


@dataclass(frozen=True, slots=True)
class HandlerOptions:
    max_udp: int = DEFAULT_MAX_UDP  # the largest UDP reply we send and advertise in OPT
    recursion_available: bool = False  # set once queries outside the zones can be forwarded
    reply_cache_bytes: int = REPLY_CACHE_BYTES  # kept replies, UDP and TCP together (half each)


class LoopProbes:
    """The loop probes sent upstream (CoreDNS's `loop`): a random name per upstream that only a
    forwarding loop brings back to kdns. `on_loop` is told which upstream it came back through."""

    def __init__(self, on_loop: Callable[[str], None]) -> None:
        self._names: dict[bytes, str] = {}
        self._on_loop = on_loop

    def add(self, name_wire: bytes, upstream: str) -> None:
        self._names[name_wire] = upstream

    def came_back(self, key: bytes) -> bool:
        """Whether `key` is a probe of ours; if so, `on_loop` has been told."""
        upstream = self._names.get(key)
        if upstream is None:
            return False
        self._on_loop(upstream)
        return True


def _always() -> bool:
    return True


@functools.cache
def _counter_keys(transport: str, qtype: int, rcode: int) -> tuple[CounterKey, CounterKey]:
    """The counters' keys of a kept reply for an IPv4 and an IPv6 client: shared by every reply
    of the same transport, type and rcode (at most 2 x 16 x 16 of them, as types are folded)."""
    return (transport, 1, qtype, rcode), (transport, 2, qtype, rcode)


def _family(client: ClientAddress | None) -> int:
    """1 for an IPv4 client, 2 for IPv6 (whose socket addresses have four parts)."""
    return 2 if client is not None and len(client) == 4 else 1


class Handler:
    """Answers queries from a `Zone`, and from the forward cache for everything else, deciding to
    forward what neither holds.

    Everything it depends on is given when it is built: the zone (None for a forward-only
    cache), the cache (None: nothing is forwarded, and what is not ours is refused), the counters
    it keeps, whether the cluster has been listed (`ready`: until then a missing cluster name is
    SERVFAIL), and the loop probes to watch for.
    """

    def __init__(
        self,
        zone: Zone | None,
        options: HandlerOptions = HandlerOptions(),
        cache: ForwardCache | None = None,
        *,
        counters: QueryCounters | None = None,
        ready: Callable[[], bool] = _always,
        loop_probes: LoopProbes | None = None,
        autopath: Autopath | None = None,
    ) -> None:
        self.zone = zone
        self._autopath = autopath
        self.options = options
        self.cache = cache
        self.counters = counters if counters is not None else QueryCounters()
        self._ready = ready
        self._loop_probes = loop_probes
        # Read directly on the hot path: one dict lookup a query.
        self._prepared = zone.prepared if zone is not None else {}
        self._domain_key = zone.apexes[0] if zone is not None else None
        self._ttl = zone.ttl if zone is not None else 0
        # The reply cache: every reply made from the zone, by the query's bytes after its ID, per
        # transport (a UDP reply may be cut to fit). The same bytes get the same reply, but for
        # the ID, until the zone changes (`Zone.generation`), so a repeated query costs one dict
        # lookup and one concatenation instead of a parse and an assembly: 0.3 against 3 to 5 µs.
        # Each value: the reply after its ID, the query type, and the counters' keys for an IPv4
        # and an IPv6 client; for an answer from the forward cache, also its cache key and the
        # cached answer it was made from. Their TTLs run down, so such a reply is sent again only
        # while the cache still serves that same answer object (it makes a new one each second,
        # and none once expired), and the cache counts the hit and plans its prefetch as usual.
        # Each transport keeps replies within half of `options.reply_cache_bytes` (`KeptReplies`).
        half = options.reply_cache_bytes // 2
        self.kept = (KeptReplies(half), KeptReplies(half))  # UDP, TCP
        self._kept = (self.kept[0].entries, self.kept[1].entries)  # read on the hot path
        self._kept_generation = zone.generation if zone is not None else 0

    def handle(self, packet: bytes, tcp: bool, client: ClientAddress | None = None) -> bytes | Forward | None:
        """The reply to one query from `client`; a `Forward` when it is to be asked upstream;
        None when it must be dropped (a response, a fragment of a header)."""
        zone = self.zone
        if zone is not None and zone.generation != self._kept_generation:
            self._forget_replies(zone.generation)
        kept = self._kept[tcp]
        hit = kept.get(packet[2:])
        fetched: tuple[CacheKey, Answer | None] | None = None  # a forward cache answer asked for already
        if hit is not None and (kept_key := hit.cache_key) is not None:
            cache = self.cache
            assert cache is not None
            now = cache.clock()
            if hit.entry is None or now >= hit.served_until or not cache.kept_hit(hit.entry, now):
                fetched = (kept_key, cache.get(kept_key))  # counted as a hit (or a miss) there, once
                serving = cache.served(kept_key) if fetched[1] is hit.served else None
                if serving is None:
                    hit = None  # its TTLs moved on, or it expired: made again below from `fetched`
                else:
                    hit = hit._replace(entry=serving[0], served_until=serving[1])
                    self.kept[tcp].replace(packet[2:], hit)
        if hit is not None:
            body, qtype, ipv4_key, ipv6_key, _, _, _, _ = hit
            counters = self.counters
            key = ipv6_key if client is not None and len(client) == 4 else ipv4_key
            replies = counters.replies
            replies[key] = replies.get(key, 0) + 1  # `QueryCounters.count`, inlined
            counters.last_qtype = qtype
            return packet[:2] + body
        options = self.options
        try:
            query = wire.parse_query(packet)
            # The index holds class IN only; other classes are refused below.
            answer = self._prepared.get((query.key, query.qtype)) if query.qclass == rdata.CLASS_IN else None
            from_zone = answer is not None
            cache_key: CacheKey | None = None  # set when the answer is the forward cache's
            if answer is None:
                cache_missed = False
                if self.cache is not None and query.qclass == rdata.CLASS_IN and not self._maybe_ours(query.key):
                    # Outside every zone: the forward cache at once. A hit needs no name check:
                    # a cached name was checked when it was first asked.
                    cache_key = ForwardCache.key(query)
                    answer = (
                        fetched[1] if fetched is not None and fetched[0] == cache_key else self.cache.get(cache_key)
                    )
                    cache_missed = answer is None
                if answer is None:
                    checked = wire.checked(packet, query)
                    decided = self._answer_checked(checked, tcp, cache_missed and checked is query, client)
                    if isinstance(decided, bytes):
                        self.counters.count(tcp, checked.qtype, decided[3] & RCODE_MASK, _family(client))
                        return decided
                    if isinstance(decided, Forward):
                        family = _family(client)
                        return decided if family == decided.family else replace(decided, family=family)
                    query, answer = checked, decided
                    # From the zone (the same object it holds), not the forward cache: kept.
                    from_zone = zone is not None and zone.answer(query.key, query.qtype) is answer
        except wire.QueryError as error:
            reply = wire.error_reply(error, options.max_udp, options.recursion_available)
            if reply is None:
                self.counters.dropped += 1
            else:
                self.counters.count(tcp, 0, error.rcode & RCODE_MASK, _family(client))  # type unknown: 0
            return reply
        rcode = answer.flags & RCODE_MASK
        self.counters.count(tcp, query.qtype, rcode, _family(client))
        limit = TCP_LIMIT if tcp else wire.udp_limit(query.edns, options.max_udp)
        reply = wire.reply(query, answer, limit, options.max_udp, options.recursion_available)
        # With autopath, an NXDOMAIN from the zone depends on who asks (a Pod is answered from its
        # search path): not kept for the next asker.
        keep = from_zone and not (rcode == NXDOMAIN and self._autopath is not None)
        if keep or (cache_key is not None and not cache_missed):
            qtype = counted_type(query.qtype)  # as `QueryCounters.count` files it
            counter_keys = _counter_keys(TCP if tcp else UDP, qtype, rcode)
            served = None if from_zone else answer
            entry = None if from_zone or self.cache is None or cache_key is None else self.cache.served(cache_key)
            self.kept[tcp].keep(
                packet[2:],
                KeptReply(
                    reply[2:], qtype, *counter_keys, None if from_zone else cache_key, served, *(entry or (None, 0.0))
                ),
            )
        return reply

    def _forget_replies(self, generation: int) -> None:
        """The zone changed: no reply made before may be sent again."""
        for kept in self.kept:
            kept.clear()
        self._kept_generation = generation

    def _answer_checked(
        self, query: wire.Query, tcp: bool, cache_missed: bool, client: ClientAddress | None = None
    ) -> Answer | bytes | Forward:
        """A well-formed query with no prepared answer: refused, answered from the zone, or from
        the cache (unless `cache_missed` says it was just asked) or upstream."""
        if query.qclass != rdata.CLASS_IN:
            return self._status(query, REFUSED)  # only class IN is served
        if query.qtype in (rdata.AXFR, rdata.IXFR):
            return self._status(query, REFUSED)  # no transfers: CoreDNS needs its `transfer` plugin
        if not self._maybe_ours(query.key):
            if self.cache is None:
                return self._status(query, REFUSED)  # not ours, and nowhere to forward it
            cached = None if cache_missed else self.cache.get(ForwardCache.key(query))
            return cached if cached is not None else self._forward(query, tcp)
        return self._answer_slow(query, tcp, client)

    def _answer_slow(
        self, query: wire.Query, tcp: bool, client: ClientAddress | None = None
    ) -> Answer | bytes | Forward:
        """A name that may be ours but has no prepared answer of this type: an ExternalName to
        chase, a negative or dynamic answer from the zone, or, for a name the zone does not hold
        (a reverse name CoreDNS falls through for), the cache or upstream."""
        zone = self.zone
        assert zone is not None  # `_maybe_ours` is False without a zone
        target = zone.cname_target(query.key)
        if target is not None and query.qtype not in (rdata.CNAME, rdata.ANY):
            chased = self._chase(query, tcp, target)
            if chased is not None:
                return chased
        answer = zone.answer(query.key, query.qtype)
        autopath = self._autopath
        if autopath is not None and client is not None and answer is not None and self._ready():
            candidates = autopath.candidates(query.key, client[0]) if answer.flags & RCODE_MASK == NXDOMAIN else ()
            walked = self._autopath_walk(query, tcp, candidates) if candidates else None
            if walked is not None:
                return walked
        if answer is not None:
            if not answer.answer_count and not self._ready():
                # Not every watcher has listed yet: a missing name may only be missing from us.
                # SERVFAIL, which resolvers retry, rather than an NXDOMAIN or NODATA that they
                # would cache (SPEC-NOTES 5.1).
                return self._status(query, SERVFAIL)
            return answer
        if self.cache is None:
            return self._status(query, REFUSED)  # not ours, and nowhere to forward it
        cached = self.cache.get(ForwardCache.key(query))
        return cached if cached is not None else self._forward(query, tcp)

    def _forward(self, query: wire.Query, tcp: bool) -> bytes | Forward:
        if self._loop_probes is not None and self._loop_probes.came_back(query.key):
            return self._status(query, REFUSED)
        return Forward(query, tcp)

    def _status(self, query: wire.Query, rcode: int) -> bytes:
        return wire.status_reply(query, rcode, self.options.max_udp, self.options.recursion_available)

    def _maybe_ours(self, key: bytes) -> bool:
        """A quick, conservative test: False only for names outside every zone kdns holds."""
        domain = self._domain_key
        return domain is not None and (key.endswith(domain) or key.endswith(b"\x04arpa\x00"))

    def after_forward(self, forward: Forward, forwarded: ForwardedAnswer | None) -> bytes | Forward:
        """What follows a forwarded query's answer (or its failure, None): the reply
        (`finish_forward`), or for an autopath step whose name does not exist, the next step: a
        `Forward` to ask in turn."""
        if forward.autopath is None:
            return self.finish_forward(forward, forwarded)
        step = self._finish_autopath(forward, forwarded)
        if isinstance(step, bytes):
            original = forward.chased_from or forward.query
            self.counters.count(forward.tcp, original.qtype, step[3] & RCODE_MASK, forward.family)
        return step

    def finish_forward(self, forward: Forward, forwarded: ForwardedAnswer | None) -> bytes:
        """The reply to a forwarded query: the upstream's answer (cached for the next asker); with
        none, an expired one where serve-stale allows (RFC 8767), else SERVFAIL."""
        reply = self._finish_forward(forward, forwarded)
        self.counters.count(
            forward.tcp, (forward.chased_from or forward.query).qtype, reply[3] & RCODE_MASK, forward.family
        )
        return reply

    def _finish_autopath(self, forward: Forward, forwarded: ForwardedAnswer | None) -> bytes | Forward:
        """A search path name's upstream answer: the reply if it exists; else the next name;
        after the last, or on a failure, the ordinary NXDOMAIN for the name asked."""
        original, query = forward.chased_from, forward.query
        assert original is not None and forward.autopath is not None
        if forwarded is not None:
            if self.cache is not None:
                self.cache.put(ForwardCache.key(query), forwarded)
            answer = forwarded.answer()
            if answer.flags & RCODE_MASK != NXDOMAIN:
                return self._autopathed(original, query, answer, forward.tcp)
            walked = self._autopath_walk(original, forward.tcp, forward.autopath) if forward.autopath else None
            if walked is not None:
                return replace(walked, family=forward.family) if isinstance(walked, Forward) else walked
        zone = self.zone
        assert zone is not None
        negative = zone.answer(original.key, original.qtype)
        assert negative is not None
        limit = TCP_LIMIT if forward.tcp else wire.udp_limit(original.edns, self.options.max_udp)
        return wire.reply(original, negative, limit, self.options.max_udp, self.options.recursion_available)

    def _autopath_walk(self, query: wire.Query, tcp: bool, candidates: tuple[bytes, ...]) -> bytes | Forward | None:
        """Try the search path's names in turn (the zone's at once, others from the cache or
        upstream) until one exists: its reply, a `Forward` to ask upstream first, or None when
        none exists (the ordinary NXDOMAIN is sent)."""
        zone = self.zone
        assert zone is not None
        for index, target in enumerate(candidates):
            target_query = wire.Query(
                query.id, query.flags, target + query.question[-4:], target, query.qtype, query.qclass, query.edns
            )
            if zone.in_zones(target):
                inner = zone.answer(target, query.qtype)
                if inner is None or inner.flags & RCODE_MASK == NXDOMAIN:
                    continue
                return self._autopathed(query, target_query, inner, tcp)
            if self.cache is None:
                return None  # nowhere to ask: the client walks its search path itself
            cached = self.cache.get(ForwardCache.key(target_query))
            if cached is None:
                return Forward(target_query, tcp, chased_from=query, autopath=candidates[index + 1 :])
            if cached.flags & RCODE_MASK == NXDOMAIN:
                continue
            return self._autopathed(query, target_query, cached, tcp)
        return None

    def _autopathed(self, query: wire.Query, target_query: wire.Query, answer: Answer, tcp: bool) -> bytes:
        """The name asked, a CNAME to the search path's name that exists, and its records (as
        CoreDNS's autopath `cnamer`), every TTL at most AUTOPATH_TTL."""
        self.counters.autopath += 1
        return chase.compose(query, target_query, AUTOPATH_TTL, answer, tcp, self.options, max_ttl=AUTOPATH_TTL)

    def _finish_forward(self, forward: Forward, forwarded: ForwardedAnswer | None) -> bytes:
        options = self.options
        query = forward.query
        key = ForwardCache.key(query)
        if forwarded is not None:
            if self.cache is not None:
                self.cache.put(key, forwarded)
            answer = forwarded.answer()
        else:
            stale = self.cache.get_stale(key) if self.cache is not None else None
            if stale is None:
                original = forward.chased_from or query
                return wire.status_reply(original, SERVFAIL, options.max_udp, options.recursion_available)
            answer = stale
        if forward.chased_from is not None:
            return chase.compose(forward.chased_from, query, self._ttl, answer, forward.tcp, options)
        limit = TCP_LIMIT if forward.tcp else wire.udp_limit(query.edns, options.max_udp)
        return wire.reply(query, answer, limit, options.max_udp, options.recursion_available)

    def refuse(self, forward: Forward) -> bytes:
        """REFUSED for a query that cannot be forwarded now (too many already in flight)."""
        original = forward.chased_from or forward.query
        self.counters.count(forward.tcp, original.qtype, REFUSED, forward.family)
        return wire.status_reply(original, REFUSED, self.options.max_udp, self.options.recursion_available)

    def _chase(self, query: wire.Query, tcp: bool, target: bytes) -> bytes | Forward | None:
        """An ExternalName's CNAME and its target's records (as CoreDNS answers): from the zone
        when the target is in it, else from the cache or upstream; the bare CNAME without either."""
        target_query = wire.Query(
            query.id, query.flags, target + query.question[-4:], target, query.qtype, query.qclass, query.edns
        )
        zone = self.zone
        assert zone is not None
        if zone.in_zones(target):
            inner = zone.answer(target, query.qtype)
            if inner is None or zone.cname_target(target) is not None:
                return None  # no chains of CNAMEs inside the cluster: the CNAME alone
            return chase.compose(query, target_query, self._ttl, inner, tcp, self.options)
        if self.cache is None:
            return None
        cached = self.cache.get(ForwardCache.key(target_query))
        if cached is None:
            return Forward(target_query, tcp, chased_from=query)
        return chase.compose(query, target_query, self._ttl, cached, tcp, self.options)

    def failure_reply(self, packet: bytes, tcp: bool, client: ClientAddress | None = None) -> bytes | None:
        """SERVFAIL for a query whose handling raised (counted as any reply): the server logs it
        and keeps serving."""
        try:
            query = wire.parse_query(packet)
            query = wire.checked(packet, query)
        except wire.QueryError:
            self.counters.dropped += 1
            return None
        self.counters.count(tcp, query.qtype, SERVFAIL, _family(client))
        return wire.status_reply(query, SERVFAIL, self.options.max_udp, self.options.recursion_available)
