"""The handler's seams (kdns/core/handler.py): what it counts, readiness, loop probes, the
client's address, and a handler with no zone at all (a forward-only cache)."""

from __future__ import annotations

import dns.message
import dns.rcode

from kdns.core.cache import ForwardCache
from kdns.core.counters import QueryCounters
from kdns.core.handler import Forward, Handler, HandlerOptions, LoopProbes
from kdns.core.names import to_wire
from tests.builders import service, store_of


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
