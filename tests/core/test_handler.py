"""The handler's seams (kdns/core/handler.py): what it counts, readiness, loop probes, the
client's address, a handler with no zone at all (a forward-only cache), and its reply cache."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rrset

from kdns.core.cache import CacheKey, ForwardCache
from kdns.core.convert import convert
from kdns.core.counters import QueryCounters
from kdns.core.handler import Forward, Handler, HandlerOptions, LoopProbes
from kdns.core.kept import KEPT_OVERHEAD
from kdns.core.names import to_wire
from kdns.core.store import PodMode
from kdns.core.upstream import read_response
from kdns.core.zone import Answer
from tests.builders import endpoint, endpoint_slice, headless, namespace, pod, service, store_of


def _reply(handler: Handler, name: str, rdtype: str = "A", tcp: bool = False) -> dns.message.Message:
    reply = handler.handle(dns.message.make_query(name, rdtype).to_wire(), tcp, ("10.244.0.9", 5353))
    assert isinstance(reply, bytes)
    return dns.message.from_wire(reply)


def test_replies_are_counted_by_transport_type_and_rcode() -> None:
    counters = QueryCounters()
    handler = Handler(store_of(service("prod", "web")).zone, counters=counters)
    _reply(handler, "web.prod.svc.cluster.local")
    _reply(handler, "web.prod.svc.cluster.local", tcp=True)
    _reply(handler, "nope.prod.svc.cluster.local", "AAAA")
    _reply(handler, "www.example.com")  # not ours, no cache: REFUSED
    assert handler.handle(b"\x12\x34\x01\x00", False) is None  # a fragment: dropped
    assert counters.replies == {  # (transport, family, type, rcode)
        ("udp", 1, 1, dns.rcode.NOERROR): 1,
        ("tcp", 1, 1, dns.rcode.NOERROR): 1,
        ("udp", 1, 28, dns.rcode.NXDOMAIN): 1,
        ("udp", 1, 1, dns.rcode.REFUSED): 1,
    }
    assert counters.dropped == 1 and counters.total() == 4


def test_until_ready_a_missing_cluster_name_is_servfail_and_existing_ones_answer() -> None:
    ready = False
    handler = Handler(store_of(service("prod", "web")).zone, ready=lambda: ready)
    assert _reply(handler, "nope.prod.svc.cluster.local").rcode() == dns.rcode.SERVFAIL
    assert _reply(handler, "web.prod.svc.cluster.local").answer
    ready = True
    assert _reply(handler, "nope.prod.svc.cluster.local").rcode() == dns.rcode.NXDOMAIN


def test_a_loop_probe_coming_back_is_refused_and_reported() -> None:
    found: list[str] = []
    probes = LoopProbes(found.append)
    probes.add(to_wire("abc.def.kdns-loop-probe"), "127.0.0.1:53")
    handler = Handler(
        store_of().zone, HandlerOptions(recursion_available=True), ForwardCache(10, lambda: 0.0), loop_probes=probes
    )
    assert _reply(handler, "abc.def.kdns-loop-probe", "HINFO").rcode() == dns.rcode.REFUSED
    assert found == ["127.0.0.1:53"]
    assert isinstance(handler.handle(dns.message.make_query("other.example", "A").to_wire(), False), Forward)


def test_without_a_zone_everything_goes_to_the_cache_or_upstream() -> None:
    handler = Handler(None, HandlerOptions(recursion_available=True), ForwardCache(10, lambda: 0.0))
    for name in ("web.prod.svc.cluster.local", "5.0.96.10.in-addr.arpa", "www.example.com"):
        decided = handler.handle(dns.message.make_query(name, "A").to_wire(), False)
        assert isinstance(decided, Forward), name
    assert isinstance(decided, Forward)
    reply = dns.message.from_wire(handler.finish_forward(decided, None))
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert Handler(None).handle(dns.message.make_query("x.example", "A").to_wire(), False) is not None


# -- the reply cache: repeated queries from kept replies, never a stale one ------------------


def _raw(handler: Handler, wire: bytes, tcp: bool = False, client: tuple[str, int] | None = None) -> bytes:
    reply = handler.handle(wire, tcp, client or ("10.244.0.9", 5353))
    assert isinstance(reply, bytes)
    return reply


def test_a_repeated_query_gets_the_kept_reply_with_its_own_id_and_is_counted() -> None:
    counters = QueryCounters()
    handler = Handler(store_of(service("prod", "web", ["10.96.0.5"])).zone, counters=counters)
    query = dns.message.make_query("web.prod.svc.cluster.local", "A", use_edns=0)
    first = _raw(handler, query.to_wire())
    query.id = (query.id + 1) % 65536
    second = _raw(handler, query.to_wire())
    assert second[:2] == query.to_wire()[:2] and second[2:] == first[2:]
    ipv6 = _raw(handler, query.to_wire(), client=("fd00::1", 53, 0, 0))  # type: ignore[arg-type]
    assert ipv6[2:] == first[2:]
    assert counters.replies == {("udp", 1, 1, 0): 2, ("udp", 2, 1, 0): 1}
    assert counters.last_qtype == 1


def test_kept_replies_are_dropped_when_the_zone_changes() -> None:
    store = store_of(service("prod", "web", ["10.96.0.5"]))
    handler = Handler(store.zone)
    assert _reply(handler, "web.prod.svc.cluster.local").answer[0][0].address == "10.96.0.5"
    assert _reply(handler, "new.prod.svc.cluster.local").rcode() == dns.rcode.NXDOMAIN
    serial = _reply(handler, "new.prod.svc.cluster.local").authority[0][0].serial
    store.upsert(convert("Service", service("prod", "web", ["10.96.0.6"])))  # type: ignore[arg-type]
    store.upsert(convert("Service", service("prod", "new", ["10.96.0.7"])))  # type: ignore[arg-type]
    assert _reply(handler, "web.prod.svc.cluster.local").answer[0][0].address == "10.96.0.6"
    assert _reply(handler, "new.prod.svc.cluster.local").answer[0][0].address == "10.96.0.7"
    store.zone.bump_serial(2_000_000_000)  # a change's new serial is in every negative answer
    assert _reply(handler, "gone.prod.svc.cluster.local").authority[0][0].serial == 2_000_000_000 != serial


def test_verified_pod_records_follow_pod_changes_despite_kept_replies() -> None:
    store = store_of(namespace("prod"), pod("prod", "p", "10.244.1.5"), pods=PodMode.VERIFIED)
    handler = Handler(store.zone)
    assert _reply(handler, "10-244-1-5.prod.pod.cluster.local").answer
    store.delete("Pod", ("prod", "p"))
    assert _reply(handler, "10-244-1-5.prod.pod.cluster.local").rcode() == dns.rcode.NXDOMAIN
    store.upsert(convert("Pod", pod("prod", "q", "10.244.1.5")))  # type: ignore[arg-type]
    assert _reply(handler, "10-244-1-5.prod.pod.cluster.local").answer


def test_a_udp_reply_cut_to_fit_is_never_sent_over_tcp() -> None:
    endpoints = [endpoint(f"10.244.0.{i}") for i in range(1, 120)]
    store = store_of(headless("prod", "big"), endpoint_slice("prod", "big-a", "big", endpoints))
    handler = Handler(store.zone)
    wire = dns.message.make_query("big.prod.svc.cluster.local", "A").to_wire()  # no EDNS: 512 bytes
    udp = dns.message.from_wire(_raw(handler, wire))
    tcp = dns.message.from_wire(_raw(handler, wire, tcp=True))
    assert udp.flags & dns.flags.TC and not tcp.flags & dns.flags.TC
    assert len(tcp.answer[0]) == 119 > len(udp.answer[0])
    assert dns.message.from_wire(_raw(handler, wire)).flags & dns.flags.TC  # kept per transport


def test_forwarded_answers_are_kept_only_while_the_cache_serves_the_same_ttls() -> None:
    now = 100.0
    cache = ForwardCache(10, lambda: now)
    handler = Handler(store_of().zone, HandlerOptions(recursion_available=True), cache)
    query = dns.message.make_query("www.example.com", "A")
    forward = handler.handle(query.to_wire(), False)
    assert isinstance(forward, Forward) and cache.misses == 1
    response = dns.message.make_response(query)
    response.answer.append(dns.rrset.from_text("www.example.com.", 300, "IN", "A", "192.0.2.1"))
    forwarded = read_response(response.to_wire(), query.id, forward.query.question, 0, 3600)
    handler.finish_forward(forward, forwarded)
    first = _raw(handler, query.to_wire())
    assert _raw(handler, query.to_wire())[2:] == first[2:]  # the kept reply
    assert dns.message.from_wire(first).answer[0].ttl == 300
    assert cache.hits == 2 and cache.misses == 1  # each counted once by the cache
    now += 1.5
    assert _reply(handler, "www.example.com").answer[0].ttl == 299  # a new second: made again
    assert cache.hits == 3
    now += 300
    assert isinstance(handler.handle(query.to_wire(), False), Forward)  # expired: asked again
    assert cache.misses == 2 and cache.hits == 3


class _CountingCache(ForwardCache):
    """The forward cache, counting the lookups made through its LRU (`get`)."""

    lookups = 0

    def get(self, key: CacheKey) -> Answer | None:
        self.lookups += 1
        return super().get(key)


def test_within_its_second_a_kept_forwarded_reply_is_counted_without_asking_the_cache_lru() -> None:
    """The kept reply of a forward cache answer is sent again until the cache's TTLs move (the
    next second) with one clock read; the cache's LRU is asked again after that, so its recency
    and prefetch still see the name once a second."""
    now = 100.0
    cache = _CountingCache(10, lambda: now)
    handler = Handler(store_of().zone, HandlerOptions(recursion_available=True), cache)
    query = dns.message.make_query("www.example.com", "A")
    forward = handler.handle(query.to_wire(), False)
    assert isinstance(forward, Forward)
    response = dns.message.make_response(query)
    response.answer.append(dns.rrset.from_text("www.example.com.", 300, "IN", "A", "192.0.2.1"))
    handler.finish_forward(forward, read_response(response.to_wire(), query.id, forward.query.question, 0, 3600))
    cache.lookups = 0
    for _ in range(5):
        assert _reply(handler, "www.example.com").answer[0].ttl == 300
    assert cache.lookups == 1  # the first: the reply is kept, then sent on the clock alone
    assert cache.hits == 5
    now += 1.0  # the TTLs move: asked of the cache again, once
    for _ in range(3):
        assert _reply(handler, "www.example.com").answer[0].ttl == 299
    assert cache.lookups == 2 and cache.hits == 8


def test_the_reply_cache_is_bounded_in_bytes_per_transport_and_keeps_the_newest() -> None:
    """Issue 17, K1: kept replies were bounded by count only, so 10,000 queries with large replies
    (a big headless Service asked with ever different EDNS sizes) held 620 MB."""
    budget = 64 * 1024
    handler = Handler(store_of(service("prod", "web")).zone, HandlerOptions(reply_cache_bytes=budget))
    for i in range(2000):
        assert _reply(handler, f"n{i}.prod.svc.cluster.local").rcode() == dns.rcode.NXDOMAIN
        assert handler.kept[0].size <= budget // 2
    udp = handler.kept[0]
    assert udp.evictions > 0 and 0 < len(udp) < 2000
    assert udp.size == sum(len(key) + len(reply.body) + KEPT_OVERHEAD for key, reply in udp.entries.items())
    newest = dns.message.make_query("n1999.prod.svc.cluster.local", "A").to_wire()[2:]
    assert newest in udp.entries and len(handler.kept[1]) == 0  # TCP has its own half


def test_a_servfail_before_sync_is_not_kept() -> None:
    ready = False
    handler = Handler(store_of(service("prod", "web")).zone, ready=lambda: ready)
    wire = dns.message.make_query("nope.prod.svc.cluster.local", "A").to_wire()
    assert dns.message.from_wire(_raw(handler, wire)).rcode() == dns.rcode.SERVFAIL
    ready = True
    assert dns.message.from_wire(_raw(handler, wire)).rcode() == dns.rcode.NXDOMAIN


def test_negative_answers_carry_the_soa_compressed_against_the_question() -> None:
    """RFC 1035 4.1.4: the SOA's owner, and the tails of its names, point into the question."""
    handler = Handler(store_of(namespace("prod"), service("prod", "web", ["10.96.0.5"])).zone)
    for name, rdtype, rcode, apex in (
        ("nope.prod.svc.cluster.local", "A", dns.rcode.NXDOMAIN, "cluster.local."),
        ("a-much-longer-missing-name.prod.svc.cluster.local", "A", dns.rcode.NXDOMAIN, "cluster.local."),
        ("NoPe.Prod.SVC.Cluster.Local", "A", dns.rcode.NXDOMAIN, "Cluster.Local."),  # the client's case
        ("web.prod.svc.cluster.local", "AAAA", dns.rcode.NOERROR, "cluster.local."),
        ("5.0.96.10.in-addr.arpa", "A", dns.rcode.NOERROR, "in-addr.arpa."),
    ):
        wire = dns.message.make_query(name, rdtype).to_wire()
        raw = _raw(handler, wire)
        reply = dns.message.from_wire(raw)
        assert reply.rcode() == rcode and not reply.answer, name
        soa = reply.authority[0]
        assert soa.name.to_text() == apex and soa.ttl == 30 and soa[0].minimum == 30, name
        assert soa[0].mname.to_text().lower() == "ns.dns.cluster.local."
        assert soa[0].rname.to_text().lower() == "hostmaster.cluster.local."
        question = len(wire) - 12
        if apex != "in-addr.arpa.":  # owner, mname and rname all point into the question
            assert len(raw) == 12 + question + 2 + 10 + (4 + 3 + 2) + (11 + 2) + 20, name
        else:  # only the owner does: the names are in the cluster domain, not in the question
            assert len(raw) == 12 + question + 2 + 10 + 22 + 26 + 20, name


def test_forwarded_and_refused_queries_are_counted_under_the_clients_address_family() -> None:
    counters = QueryCounters()
    handler = Handler(
        store_of().zone, HandlerOptions(recursion_available=True), ForwardCache(10, lambda: 0.0), counters=counters
    )
    ipv6_client = ("fd00::1", 5353, 0, 0)
    forward = handler.handle(dns.message.make_query("a.example", "A").to_wire(), False, ipv6_client)
    refused = handler.handle(dns.message.make_query("b.example", "A").to_wire(), False, ipv6_client)
    assert isinstance(forward, Forward) and isinstance(refused, Forward) and forward.family == 2
    handler.finish_forward(forward, None)  # no answer: SERVFAIL
    handler.refuse(refused)
    assert counters.replies == {("udp", 2, 1, dns.rcode.SERVFAIL): 1, ("udp", 2, 1, dns.rcode.REFUSED): 1}


def test_queries_of_every_type_leave_the_counters_and_kept_replies_bounded() -> None:
    """Issue 17, K6, through the handler: unknown types are counted as one, kept or not."""
    counters = QueryCounters()
    handler = Handler(store_of(service("prod", "web", ["10.96.0.5"])).zone, counters=counters)
    for qtype in range(1, 65536, 7):
        question = to_wire("web.prod.svc.cluster.local") + qtype.to_bytes(2, "big") + b"\x00\x01"
        for _ in range(2):  # the second from the kept reply
            handler.handle(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + question, False, ("10.0.0.1", 53))
    assert len(counters.replies) <= 16 * 16 and counters.total() == 2 * len(range(1, 65536, 7))
