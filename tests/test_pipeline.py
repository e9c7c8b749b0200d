"""The pipeline (kdns/pipeline.py), without sockets: what it counts, readiness, loop probes, the
client's address, a pipeline with no zone at all (a forward-only cache), its reply cache, and
admission to the upstreams."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rrset

from kdns.core import wire
from kdns.core.answer import Answer
from kdns.core.blocks import ServerBlock, ServerBlocks
from kdns.core.cache import CacheKey, ForwardCache
from kdns.core.convert import convert
from kdns.core.kept import KEPT_OVERHEAD
from kdns.core.loop import LoopProbes
from kdns.core.names import to_wire
from kdns.core.stage import Next, Outcome, ReplyOptions, Request
from kdns.core.store import PodMode
from kdns.core.upstream import ForwardedAnswer, read_response
from kdns.pipeline import Pending, Pipeline
from kdns.state import State
from tests.builders import (
    endpoint,
    endpoint_slice,
    headless,
    namespace,
    pending_of,
    pipeline_of,
    pod,
    service,
    store_of,
)

FORWARDING = ReplyOptions(recursion_available=True)


def _reply(pipeline: Pipeline, name: str, rdtype: str = "A", tcp: bool = False) -> dns.message.Message:
    reply = pipeline.answer(dns.message.make_query(name, rdtype).to_wire(), tcp, ("10.244.0.9", 5353))
    assert isinstance(reply, bytes)
    return dns.message.from_wire(reply)


def test_replies_are_counted_by_transport_type_and_rcode() -> None:
    pipeline = pipeline_of(store_of(service("prod", "web")))
    _reply(pipeline, "web.prod.svc.cluster.local")
    _reply(pipeline, "web.prod.svc.cluster.local", tcp=True)
    _reply(pipeline, "nope.prod.svc.cluster.local", "AAAA")
    _reply(pipeline, "www.example.com")  # not ours, no upstream: REFUSED
    assert pipeline.answer(b"\x12\x34\x01\x00", False, None) is None  # a fragment: dropped
    counters = pipeline.counters
    assert counters.replies == {  # (transport, family, type, rcode)
        ("udp", 1, 1, dns.rcode.NOERROR): 1,
        ("tcp", 1, 1, dns.rcode.NOERROR): 1,
        ("udp", 1, 28, dns.rcode.NXDOMAIN): 1,
        ("udp", 1, 1, dns.rcode.REFUSED): 1,
    }
    assert counters.dropped == 1 and counters.total() == 4


def test_until_synced_a_missing_cluster_name_is_servfail_and_existing_ones_answer() -> None:
    synced = False
    pipeline = pipeline_of(store_of(service("prod", "web")), synced=lambda: synced)
    assert _reply(pipeline, "nope.prod.svc.cluster.local").rcode() == dns.rcode.SERVFAIL
    assert _reply(pipeline, "web.prod.svc.cluster.local").answer
    synced = True
    assert _reply(pipeline, "nope.prod.svc.cluster.local").rcode() == dns.rcode.NXDOMAIN


def test_a_loop_probe_coming_back_is_refused_and_reported() -> None:
    found: list[str] = []
    probes = LoopProbes(found.append)
    probes.add(to_wire("abc.def.kdns-loop-probe"), "127.0.0.1:53")
    pipeline = pipeline_of(store_of(), options=FORWARDING, cache=ForwardCache(10, lambda: 0.0), probes=probes)
    assert _reply(pipeline, "abc.def.kdns-loop-probe", "HINFO").rcode() == dns.rcode.REFUSED
    assert found == ["127.0.0.1:53"]
    assert isinstance(pipeline.answer(dns.message.make_query("other.example", "A").to_wire(), False, None), Pending)


def test_without_a_zone_everything_goes_to_the_cache_or_upstream() -> None:
    pipeline = pipeline_of(None, options=FORWARDING, cache=ForwardCache(10, lambda: 0.0))
    for name in ("web.prod.svc.cluster.local", "5.0.96.10.in-addr.arpa", "www.example.com"):
        decided = pipeline.answer(dns.message.make_query(name, "A").to_wire(), False, None)
        assert isinstance(decided, Pending), name
    reply = pipeline.resume(pending_of(decided), None)
    assert isinstance(reply, bytes) and dns.message.from_wire(reply).rcode() == dns.rcode.SERVFAIL
    nothing = pipeline_of(None).answer(dns.message.make_query("x.example", "A").to_wire(), False, None)
    assert isinstance(nothing, bytes) and dns.message.from_wire(nothing).rcode() == dns.rcode.REFUSED


# -- the reply cache: repeated queries from kept replies, never a stale one ------------------


def _raw(pipeline: Pipeline, wire_query: bytes, tcp: bool = False, client: tuple[str, int] | None = None) -> bytes:
    reply = pipeline.answer(wire_query, tcp, client or ("10.244.0.9", 5353))
    assert isinstance(reply, bytes)
    return reply


def test_a_repeated_query_gets_the_kept_reply_with_its_own_id_and_is_counted() -> None:
    pipeline = pipeline_of(store_of(service("prod", "web", ["10.96.0.5"])))
    query = dns.message.make_query("web.prod.svc.cluster.local", "A", use_edns=0)
    first = _raw(pipeline, query.to_wire())
    query.id = (query.id + 1) % 65536
    second = _raw(pipeline, query.to_wire())
    assert second[:2] == query.to_wire()[:2] and second[2:] == first[2:]
    ipv6 = _raw(pipeline, query.to_wire(), client=("fd00::1", 53, 0, 0))  # type: ignore[arg-type]
    assert ipv6[2:] == first[2:]
    assert pipeline.counters.replies == {("udp", 1, 1, 0): 2, ("udp", 2, 1, 0): 1}
    assert len(pipeline.kept[0]) == 1


def test_kept_replies_are_dropped_when_the_zone_changes() -> None:
    store = store_of(service("prod", "web", ["10.96.0.5"]))
    pipeline = pipeline_of(store)
    assert _reply(pipeline, "web.prod.svc.cluster.local").answer[0][0].address == "10.96.0.5"
    assert _reply(pipeline, "new.prod.svc.cluster.local").rcode() == dns.rcode.NXDOMAIN
    serial = _reply(pipeline, "new.prod.svc.cluster.local").authority[0][0].serial
    store.upsert(convert("Service", service("prod", "web", ["10.96.0.6"])))  # type: ignore[arg-type]
    store.upsert(convert("Service", service("prod", "new", ["10.96.0.7"])))  # type: ignore[arg-type]
    assert _reply(pipeline, "web.prod.svc.cluster.local").answer[0][0].address == "10.96.0.6"
    assert _reply(pipeline, "new.prod.svc.cluster.local").answer[0][0].address == "10.96.0.7"
    store.zone.bump_serial(2_000_000_000)  # a change's new serial is in every negative answer
    assert _reply(pipeline, "gone.prod.svc.cluster.local").authority[0][0].serial == 2_000_000_000 != serial


def test_verified_pod_records_follow_pod_changes_despite_kept_replies() -> None:
    store = store_of(namespace("prod"), pod("prod", "p", "10.244.1.5"), pods=PodMode.VERIFIED)
    pipeline = pipeline_of(store)
    assert _reply(pipeline, "10-244-1-5.prod.pod.cluster.local").answer
    store.delete("Pod", ("prod", "p"))
    assert _reply(pipeline, "10-244-1-5.prod.pod.cluster.local").rcode() == dns.rcode.NXDOMAIN
    store.upsert(convert("Pod", pod("prod", "q", "10.244.1.5")))  # type: ignore[arg-type]
    assert _reply(pipeline, "10-244-1-5.prod.pod.cluster.local").answer


def test_a_udp_reply_cut_to_fit_is_never_sent_over_tcp() -> None:
    endpoints = [endpoint(f"10.244.0.{i}") for i in range(1, 120)]
    pipeline = pipeline_of(store_of(headless("prod", "big"), endpoint_slice("prod", "big-a", "big", endpoints)))
    query = dns.message.make_query("big.prod.svc.cluster.local", "A").to_wire()  # no EDNS: 512 bytes
    udp = dns.message.from_wire(_raw(pipeline, query))
    tcp = dns.message.from_wire(_raw(pipeline, query, tcp=True))
    assert udp.flags & dns.flags.TC and not tcp.flags & dns.flags.TC
    assert len(tcp.answer[0]) == 119 > len(udp.answer[0])
    assert dns.message.from_wire(_raw(pipeline, query)).flags & dns.flags.TC  # kept per transport


def _upstream_answer(query: dns.message.Message, pending: Pending, ttl: int = 300) -> ForwardedAnswer:
    response = dns.message.make_response(query)
    response.answer.append(dns.rrset.from_text(query.question[0].name, ttl, "IN", "A", "192.0.2.1"))
    return read_response(response.to_wire(), query.id, pending.ask.query.question, 0, 3600)


def test_forwarded_answers_are_kept_only_while_the_cache_serves_the_same_ttls() -> None:
    now = 100.0
    cache = ForwardCache(10, lambda: now)
    pipeline = pipeline_of(store_of(), options=FORWARDING, cache=cache)
    query = dns.message.make_query("www.example.com", "A")
    pending = pending_of(pipeline.answer(query.to_wire(), False, None))
    assert cache.misses == 1
    pipeline.resume(pending, _upstream_answer(query, pending))
    first = _raw(pipeline, query.to_wire())
    assert _raw(pipeline, query.to_wire())[2:] == first[2:]  # the kept reply
    assert dns.message.from_wire(first).answer[0].ttl == 300
    assert cache.hits == 2 and cache.misses == 1  # each counted once by the cache
    now += 1.5
    assert _reply(pipeline, "www.example.com").answer[0].ttl == 299  # a new second: made again
    assert cache.hits == 3
    now += 300
    assert isinstance(pipeline.answer(query.to_wire(), False, None), Pending)  # expired: asked again
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
    pipeline = pipeline_of(store_of(), options=FORWARDING, cache=cache)
    query = dns.message.make_query("www.example.com", "A")
    pending = pending_of(pipeline.answer(query.to_wire(), False, None))
    pipeline.resume(pending, _upstream_answer(query, pending))
    cache.lookups = 0
    for _ in range(5):
        assert _reply(pipeline, "www.example.com").answer[0].ttl == 300
    assert cache.lookups == 1  # the first: the reply is kept, then sent on the clock alone
    assert cache.hits == 5
    now += 1.0  # the TTLs move: asked of the cache again, once
    for _ in range(3):
        assert _reply(pipeline, "www.example.com").answer[0].ttl == 299
    assert cache.lookups == 2 and cache.hits == 8


def test_the_reply_cache_is_bounded_in_bytes_per_transport_and_keeps_the_newest() -> None:
    """Issue 17, K1: kept replies were bounded by count only, so 10,000 queries with large replies
    (a big headless Service asked with ever different EDNS sizes) held 620 MB."""
    budget = 64 * 1024
    pipeline = pipeline_of(store_of(service("prod", "web")), reply_cache_bytes=budget)
    for i in range(2000):
        assert _reply(pipeline, f"n{i}.prod.svc.cluster.local").rcode() == dns.rcode.NXDOMAIN
        assert pipeline.kept[0].size <= budget // 2
    udp = pipeline.kept[0]
    assert udp.evictions > 0 and 0 < len(udp) < 2000
    assert udp.size == sum(len(key) + len(reply.body) + KEPT_OVERHEAD for key, reply in udp.entries.items())
    newest = dns.message.make_query("n1999.prod.svc.cluster.local", "A").to_wire()[2:]
    assert newest in udp.entries and len(pipeline.kept[1]) == 0  # TCP has its own half


def test_a_servfail_before_sync_is_not_kept() -> None:
    synced = False
    pipeline = pipeline_of(store_of(service("prod", "web")), synced=lambda: synced)
    query = dns.message.make_query("nope.prod.svc.cluster.local", "A").to_wire()
    assert dns.message.from_wire(_raw(pipeline, query)).rcode() == dns.rcode.SERVFAIL
    synced = True
    assert dns.message.from_wire(_raw(pipeline, query)).rcode() == dns.rcode.NXDOMAIN


def test_negative_answers_carry_the_soa_compressed_against_the_question() -> None:
    """RFC 1035 4.1.4: the SOA's owner, and the tails of its names, point into the question."""
    pipeline = pipeline_of(store_of(namespace("prod"), service("prod", "web", ["10.96.0.5"])))
    for name, rdtype, rcode, apex in (
        ("nope.prod.svc.cluster.local", "A", dns.rcode.NXDOMAIN, "cluster.local."),
        ("a-much-longer-missing-name.prod.svc.cluster.local", "A", dns.rcode.NXDOMAIN, "cluster.local."),
        ("NoPe.Prod.SVC.Cluster.Local", "A", dns.rcode.NXDOMAIN, "Cluster.Local."),  # the client's case
        ("web.prod.svc.cluster.local", "AAAA", dns.rcode.NOERROR, "cluster.local."),
        ("5.0.96.10.in-addr.arpa", "A", dns.rcode.NOERROR, "in-addr.arpa."),
    ):
        query = dns.message.make_query(name, rdtype).to_wire()
        raw = _raw(pipeline, query)
        reply = dns.message.from_wire(raw)
        assert reply.rcode() == rcode and not reply.answer, name
        soa = reply.authority[0]
        assert soa.name.to_text() == apex and soa.ttl == 30 and soa[0].minimum == 30, name
        # CoreDNS's SOA of the zone the name is in (plugin.SOA): `ns.dns.<zone>`, `hostmaster.<zone>`
        assert soa[0].mname.to_text().lower() == f"ns.dns.{apex.lower()}"
        assert soa[0].rname.to_text().lower() == f"hostmaster.{apex.lower()}"
        question = len(query) - 12  # owner, mname and rname all point into the question
        assert len(raw) == 12 + question + 2 + 10 + (4 + 3 + 2) + (11 + 2) + 20, name


class _FullTransport:
    """A transport whose every place in flight is taken: every question is refused at once."""

    upstream_names: tuple[str, ...] = ()

    def admit(self, client: str) -> object | None:
        return None

    def release(self, admission: object) -> None:
        raise AssertionError("nothing was admitted")

    async def ask(self, query: wire.Query, tcp: bool, upstreams: int, admission: object) -> ForwardedAnswer | None:
        raise AssertionError("nothing was admitted")

    async def probe(self, upstream: str, name: str) -> None:
        return None


def test_forwarded_and_refused_queries_are_counted_under_the_clients_address_family() -> None:
    cache = ForwardCache(10, lambda: 0.0)
    state = State()
    ipv6_client = ("fd00::1", 5353, 0, 0)
    pipeline = pipeline_of(store_of(), options=FORWARDING, cache=cache, state=state)
    pending = pending_of(pipeline.answer(dns.message.make_query("a.example", "A").to_wire(), False, ipv6_client))
    pipeline.resume(pending, None)  # no answer: SERVFAIL
    full = Pipeline(
        pipeline.blocks, FORWARDING, state, cache=cache, transport=_FullTransport(), reply_cache_bytes=1 << 20
    )
    refused = full.answer(dns.message.make_query("b.example", "A").to_wire(), False, ipv6_client)
    assert isinstance(refused, bytes) and dns.message.from_wire(refused).rcode() == dns.rcode.REFUSED
    assert state.queries.replies == {("udp", 2, 1, dns.rcode.SERVFAIL): 1, ("udp", 2, 1, dns.rcode.REFUSED): 1}


def test_queries_of_every_type_leave_the_counters_and_kept_replies_bounded() -> None:
    """Issue 17, K6, through the pipeline: unknown types are counted as one, kept or not."""
    pipeline = pipeline_of(store_of(service("prod", "web", ["10.96.0.5"])))
    for qtype in range(1, 65536, 7):
        question = to_wire("web.prod.svc.cluster.local") + qtype.to_bytes(2, "big") + b"\x00\x01"
        for _ in range(2):  # the second from the kept reply
            pipeline.answer(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + question, False, ("10.0.0.1", 53))
    counters = pipeline.counters
    assert len(counters.replies) <= 16 * 16 and counters.total() == 2 * len(range(1, 65536, 7))


class _Exploding:
    """A stage with a bug."""

    def serve(self, request: Request, next: Next) -> Outcome:
        raise RuntimeError("a stage's bug")


def test_a_query_whose_handling_raises_is_answered_servfail_counted_and_logged() -> None:
    """No exception raised while answering reaches the listener: SERVFAIL, a panic counted."""
    options = ReplyOptions()
    blocks = ServerBlocks(lambda resolve: [ServerBlock((".",), [_Exploding()], options)])
    pipeline = Pipeline(blocks, options, State(), reply_cache_bytes=1 << 20)
    reply = pipeline.answer(dns.message.make_query("web.prod.svc.cluster.local", "A").to_wire(), False, None)
    assert isinstance(reply, bytes) and dns.message.from_wire(reply).rcode() == dns.rcode.SERVFAIL
    assert pipeline.state.panics == 1 and pipeline.counters.by_rcode(dns.rcode.SERVFAIL) == 1
