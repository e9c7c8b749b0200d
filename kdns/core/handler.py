"""The query handler: bytes of a query in, bytes of a reply (or nothing) out. No I/O.

For a cluster name this is the hot path the design asks for: parse the question, one lookup in
the zone index, and a reply assembled from prepared bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kdns.core import chase, rdata, wire
from kdns.core.cache import ForwardCache
from kdns.core.message import DEFAULT_MAX_UDP, REFUSED, SERVFAIL, TCP_LIMIT
from kdns.core.upstream import ForwardedAnswer
from kdns.core.zone import Answer, Zone


@dataclass(frozen=True, slots=True)
class Forward:
    """The decision to ask upstream: the I/O side forwards `query` and calls `finish_forward`.

    With `chased_from`, `query` asks for the target of an ExternalName service's CNAME, and the
    reply answers `chased_from` with the CNAME followed by what upstream said of the target.
    """

    query: wire.Query
    tcp: bool
    chased_from: wire.Query | None = None


@dataclass(frozen=True, slots=True)
class HandlerOptions:
    max_udp: int = DEFAULT_MAX_UDP  # the largest UDP reply we send and advertise in OPT
    recursion_available: bool = False  # set once queries outside the zones can be forwarded


class Handler:
    """Answers queries from a `Zone`, and from the forward cache for everything else, deciding to
    forward what neither holds."""

    def __init__(
        self, zone: Zone, options: HandlerOptions = HandlerOptions(), cache: ForwardCache | None = None
    ) -> None:
        self.zone = zone
        self.options = options
        self.cache = cache  # None: nothing is forwarded, and what is not ours is refused
        self._prepared = zone.prepared  # read directly on the hot path: one dict lookup a query
        self._domain_key = zone.apexes[0]
        self.synced = True  # False while a live source has not listed everything once
        # Loop probes sent upstream (name -> upstream): one coming back to us means that upstream
        # forwards to kdns (CoreDNS's `loop`); `loop_detected` is called with the upstream.
        self.loop_probes: dict[bytes, str] = {}
        self.loop_detected: Callable[[str], None] = lambda upstream: None

    def handle(self, packet: bytes, tcp: bool) -> bytes | Forward | None:
        """The reply to one query; a `Forward` when it is to be asked upstream; None when it must be
        dropped (a response, a stub of a header)."""
        options = self.options
        try:
            query = wire.parse_query(packet)
            # The index holds class IN only; other classes are refused below.
            answer = self._prepared.get((query.key, query.qtype)) if query.qclass == rdata.CLASS_IN else None
            if answer is None:
                cache_missed = False
                if self.cache is not None and query.qclass == rdata.CLASS_IN and not self._maybe_ours(query.key):
                    # Outside every zone: the forward cache at once. A hit needs no name check:
                    # a cached name was checked when it was first asked.
                    answer = self.cache.get(ForwardCache.key(query))
                    cache_missed = answer is None
                if answer is None:
                    checked = wire.checked(packet, query)
                    decided = self._answer_checked(checked, tcp, cache_missed and checked is query)
                    if not isinstance(decided, Answer):
                        return decided
                    query, answer = checked, decided
        except wire.QueryError as error:
            return wire.error_reply(error, options.max_udp, options.recursion_available)
        limit = TCP_LIMIT if tcp else wire.udp_limit(query.edns, options.max_udp)
        return wire.reply(query, answer, limit, options.max_udp, options.recursion_available)

    def _answer_checked(self, query: wire.Query, tcp: bool, cache_missed: bool) -> Answer | bytes | Forward:
        """A well-formed query with no prepared answer: refused, answered from the zone, or from
        the cache (unless `cache_missed` says it was just asked) or upstream."""
        if query.qclass != rdata.CLASS_IN:
            return self._status(query, REFUSED)  # only class IN is served
        if query.qtype in (rdata.AXFR, rdata.IXFR):
            return self._status(query, REFUSED)  # no transfers: CoreDNS needs its `transfer` plugin
        if self.cache is not None and not self._maybe_ours(query.key):
            cached = None if cache_missed else self.cache.get(ForwardCache.key(query))
            return cached if cached is not None else self._forward(query, tcp)
        return self._answer_slow(query, tcp)

    def _answer_slow(self, query: wire.Query, tcp: bool) -> Answer | bytes | Forward:
        """A name that may be ours but has no prepared answer of this type: an ExternalName to
        chase, a negative or dynamic answer from the zone, or, for a name the zone does not hold
        (a reverse name CoreDNS falls through for), the cache or upstream."""
        target = self.zone.cname_target(query.key)
        if target is not None and query.qtype not in (rdata.CNAME, rdata.ANY):
            chased = self._chase(query, tcp, target)
            if chased is not None:
                return chased
        answer = self.zone.answer(query.key, query.qtype)
        if answer is not None:
            if not answer.answer_count and not self.synced:
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
        if self.loop_probes and query.key in self.loop_probes:
            self.loop_detected(self.loop_probes[query.key])
            return self._status(query, REFUSED)
        return Forward(query, tcp)

    def _status(self, query: wire.Query, rcode: int) -> bytes:
        return wire.status_reply(query, rcode, self.options.max_udp, self.options.recursion_available)

    def _maybe_ours(self, key: bytes) -> bool:
        """A quick, conservative test: False only for names outside every zone kdns holds."""
        return key.endswith(self._domain_key) or key.endswith(b"\x04arpa\x00")

    def finish_forward(self, forward: Forward, forwarded: ForwardedAnswer | None) -> bytes:
        """The reply to a forwarded query: the upstream's answer (cached for the next asker); with
        none, an expired one where serve-stale allows (RFC 8767), else SERVFAIL."""
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
            return chase.compose(forward.chased_from, query, self.zone.ttl, answer, forward.tcp, options)
        limit = TCP_LIMIT if forward.tcp else wire.udp_limit(query.edns, options.max_udp)
        return wire.reply(query, answer, limit, options.max_udp, options.recursion_available)

    def refuse(self, forward: Forward) -> bytes:
        """REFUSED for a query that cannot be forwarded now (too many already in flight)."""
        original = forward.chased_from or forward.query
        return wire.status_reply(original, REFUSED, self.options.max_udp, self.options.recursion_available)

    def _chase(self, query: wire.Query, tcp: bool, target: bytes) -> bytes | Forward | None:
        """An ExternalName's CNAME and its target's records (as CoreDNS answers): from the zone
        when the target is in it, else from the cache or upstream; the bare CNAME without either."""
        target_query = wire.Query(
            query.id, query.flags, target + query.question[-4:], target, query.qtype, query.qclass, query.edns
        )
        if self.zone.in_zones(target):
            inner = self.zone.answer(target, query.qtype)
            if inner is None or self.zone.cname_target(target) is not None:
                return None  # no chains of CNAMEs inside the cluster: the CNAME alone
            return chase.compose(query, target_query, self.zone.ttl, inner, tcp, self.options)
        if self.cache is None:
            return None
        cached = self.cache.get(ForwardCache.key(target_query))
        if cached is None:
            return Forward(target_query, tcp, chased_from=query)
        return chase.compose(query, target_query, self.zone.ttl, cached, tcp, self.options)

    def failure_reply(self, packet: bytes) -> bytes | None:
        """SERVFAIL for a query whose handling raised: the server logs it and keeps serving."""
        try:
            query = wire.parse_query(packet)
            query = wire.checked(packet, query)
        except wire.QueryError:
            return None
        return wire.status_reply(query, SERVFAIL, self.options.max_udp, self.options.recursion_available)
