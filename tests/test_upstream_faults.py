"""Hostile and broken upstreams (issue 8, point 4): garbage, wrong IDs, late answers, answers to
another question, malformed record data, compression loops, out-of-bailiwick extras and a CNAME
into the cluster domain. None of it is served to another client or cached beyond its own
question, and the forwarder's counters show each.

kdns runs in-process (its listeners, forwarder and cache in a trio nursery) so that the tests
read the counters; the upstream is the scriptable fake on loopback, answering with raw bytes.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import dns.message
import dns.rcode
import dns.rrset
import pytest
import trio

from kdns.address import SocketAddress
from kdns.config import ForwardOptions, TcpLimits
from kdns.core.cache import ForwardCache
from kdns.core.stage import ReplyOptions
from kdns.forward import Forwarder, Upstream
from kdns.serve import Current, bind, serve
from tests.builders import pipeline_of, service, store_of
from tests.fakeupstream import FakeUpstream

TIMEOUT = 0.6  # the forwarder's per-try timeout here


@dataclass
class Kdns:
    address: tuple[str, int]
    upstream: Upstream
    fake: FakeUpstream

    async def ask(self, name: str, rdtype: str = "A") -> dns.message.Message:
        query = dns.message.make_query(name, rdtype)
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            await sock.sendto(query.to_wire(), self.address)
            with trio.fail_after(5):
                while True:
                    data = await sock.recv(65535)
                    reply = dns.message.from_wire(data)  # every reply must parse
                    if reply.id == query.id:
                        return reply


@pytest.fixture
async def kdns(nursery: trio.Nursery) -> AsyncIterator[Kdns]:
    fake = FakeUpstream()
    store = store_of(service("prod", "web", ["10.96.0.5"]))
    cache = ForwardCache(100, trio.current_time)
    forwarder = Forwarder([[SocketAddress("127.0.0.1", fake.port)]], ForwardOptions(timeout=TIMEOUT))
    pipeline = pipeline_of(store, options=ReplyOptions(recursion_available=True), cache=cache, transport=forwarder)
    listener = bind(SocketAddress("127.0.0.1", 0))
    await nursery.start(forwarder.run)
    await nursery.start(serve, [listener], Current(pipeline, TcpLimits()))
    yield Kdns((listener.address.host, listener.address.port), forwarder.upstreams[0], fake)
    fake.close()


def _a(reply: dns.message.Message) -> list[str]:
    return sorted(item.to_text() for rrset in reply.answer if rrset.rdtype == 1 for item in rrset)


def _script(kdns: Kdns, build: Callable[[dns.message.Message, bytes], Sequence[tuple[bytes, float | None]]]) -> None:
    kdns.fake.script = build
    kdns.fake.mode = "script"


async def test_garbage_and_wrong_ids_are_dropped_and_counted_and_the_real_answer_taken(kdns: Kdns) -> None:
    def build(query: dns.message.Message, answer: bytes) -> list[tuple[bytes, float]]:
        wrong_id = bytearray(answer)
        struct.pack_into("!H", wrong_id, 0, (query.id + 1) % 65536)
        return [(b"\x00", 0), (bytes(range(40)), 0), (bytes(wrong_id), 0), (answer, 0.05)]

    _script(kdns, build)
    reply = await kdns.ask("www.example.com")
    assert reply.rcode() == dns.rcode.NOERROR and _a(reply) == ["192.0.2.1"]
    assert kdns.upstream.counters.dropped >= 3


async def test_a_late_answer_is_servfail_and_is_neither_served_later_nor_cached(kdns: Kdns) -> None:
    _script(kdns, lambda query, answer: [(answer, None)])  # held until released: after the timeout
    reply = await kdns.ask("late.example.com")
    assert reply.rcode() == dns.rcode.SERVFAIL
    kdns.fake.release()  # the late answer arrives: nobody waits for it
    with trio.fail_after(5):
        while kdns.upstream.counters.dropped < 1:
            await trio.sleep(0.02)
    kdns.fake.mode = "answer"
    before = kdns.fake.udp_queries
    assert _a(await kdns.ask("late.example.com")) == ["192.0.2.1"]
    assert kdns.fake.udp_queries == before + 1  # asked again: nothing was cached


async def test_an_answer_to_another_question_is_dropped_and_never_cached_for_that_question(kdns: Kdns) -> None:
    def build(query: dns.message.Message, answer: bytes) -> list[tuple[bytes, float]]:
        other = dns.message.make_response(dns.message.make_query("victim.example.com", "A"))
        other.id = query.id
        other.answer.append(dns.rrset.from_text("victim.example.com.", 300, "IN", "A", "203.0.113.66"))
        return [(other.to_wire(), 0), (answer, 0.05)]

    _script(kdns, build)
    assert _a(await kdns.ask("asked.example.com")) == ["192.0.2.1"]
    assert kdns.upstream.counters.dropped >= 1
    kdns.fake.mode = "answer"
    before = kdns.fake.udp_queries
    assert _a(await kdns.ask("victim.example.com")) == ["192.0.2.1"]
    assert kdns.fake.udp_queries == before + 1


def _raw_answer(query: dns.message.Message, record: Callable[[int], bytes]) -> bytes:
    """A response whose one answer record is `record(offset of that record)`."""
    name = query.question[0].name.to_wire()
    assert name is not None
    question = name + struct.pack("!HH", 1, 1)
    start = 12 + len(question)
    return struct.pack("!HHHHHH", query.id, 0x8180, 1, 1, 0, 0) + question + record(start)


def _pointer(offset: int) -> bytes:
    return struct.pack("!H", 0xC000 | offset)


@pytest.mark.parametrize(
    "record",
    [
        lambda start: b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 3) + b"\xc0\x00\x02",
        lambda start: _pointer(start) + struct.pack("!HHIH", 1, 1, 60, 4) + b"\xc0\x00\x02\x01",
        lambda start: b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 60, 2) + _pointer(start + 12),
        lambda start: b"\x41" + b"x" * 65 + b"\x00" + struct.pack("!HHIH", 1, 1, 60, 4) + b"\xc0\x00\x02\x01",
    ],
    ids=["rdlength-3", "owner-points-at-itself", "cname-points-at-itself", "reserved-label-type"],
)
async def test_malformed_answers_are_servfail_counted_and_never_cached(
    kdns: Kdns, record: Callable[[int], bytes]
) -> None:
    _script(kdns, lambda query, answer: [(_raw_answer(query, record), 0)])
    reply = await kdns.ask("broken.example.com")
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert kdns.upstream.counters.malformed >= 1
    before = kdns.fake.udp_queries
    assert (await kdns.ask("broken.example.com")).rcode() == dns.rcode.SERVFAIL
    assert kdns.fake.udp_queries > before  # asked again: a malformed answer is never cached


async def test_out_of_bailiwick_extras_stay_with_their_own_question(kdns: Kdns) -> None:
    def build(query: dns.message.Message, answer: bytes) -> list[tuple[bytes, float]]:
        response = dns.message.from_wire(answer)
        response.additional.append(dns.rrset.from_text("victim.example.org.", 86400, "IN", "A", "203.0.113.66"))
        return [(response.to_wire(), 0)]

    _script(kdns, build)
    first = await kdns.ask("www.example.com")
    assert _a(first) == ["192.0.2.1"]
    kdns.fake.mode = "answer"
    before = kdns.fake.udp_queries
    assert _a(await kdns.ask("victim.example.org")) == ["192.0.2.1"]  # from upstream, not the extra
    assert kdns.fake.udp_queries == before + 1


async def test_a_cname_into_the_cluster_domain_never_changes_a_cluster_answer(kdns: Kdns) -> None:
    def build(query: dns.message.Message, answer: bytes) -> list[tuple[bytes, float]]:
        response = dns.message.from_wire(answer)
        response.answer = [
            dns.rrset.from_text(query.question[0].name, 300, "IN", "CNAME", "web.prod.svc.cluster.local."),
            dns.rrset.from_text("web.prod.svc.cluster.local.", 86400, "IN", "A", "203.0.113.66"),
        ]
        return [(response.to_wire(), 0)]

    _script(kdns, build)
    await kdns.ask("sneaky.example.com")
    before = kdns.fake.udp_queries
    web = await kdns.ask("web.prod.svc.cluster.local")
    assert _a(web) == ["10.96.0.5"] and web.flags & 0x0400  # the zone's own, authoritative answer
    assert kdns.fake.udp_queries == before  # cluster names are never forwarded


async def test_a_flood_of_garbage_from_the_upstream_address_costs_nothing_but_counts(kdns: Kdns) -> None:
    garbage = [(bytes([i]) * (i % 40 + 1), 0) for i in range(200)]
    _script(kdns, lambda query, answer: [*garbage, (answer, 0.05)])
    started = time.monotonic()
    assert _a(await kdns.ask("flood.example.com")) == ["192.0.2.1"]
    assert time.monotonic() - started < 5
    assert kdns.upstream.counters.dropped >= 200
