"""Fuzzing the pure core (issue 8, point 2), with hypothesis: hostile messages into the handler,
hostile API objects into the converters and the store.

Invariants: no exception escapes; every reply parses with dnspython, carries the query's ID,
echoes a question that parses, and never exceeds what a UDP client can take; the zone after any
sequence of changes equals a fresh build of the final objects. `KDNS_FUZZ_EXAMPLES` sets the
inputs per property (400 by default, a bounded pass for CI); the README gives the long run.
"""

from __future__ import annotations

import struct
from typing import Any

import dns.exception
import dns.message
import dns.rcode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdns.core import wire
from kdns.core.cache import ForwardCache
from kdns.core.convert import KINDS, ConversionError, convert
from kdns.core.handler import Forward, Handler, HandlerOptions
from kdns.core.message import CLASSIC_UDP_LIMIT
from kdns.core.model import Namespace
from kdns.core.store import ClusterStore, PodMode
from kdns.core.upstream import read_response, upstream_query
from kdns.core.zonefile import render
from tests.builders import endpoint, endpoint_slice, headless, pod, service
from tests.fuzz import EXAMPLES, hostile_objects, mutated_messages, valid_objects

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
MAX_UDP = 1232


def _store() -> ClusterStore:
    store = ClusterStore("cluster.local", 30, PodMode.INSECURE)
    objects = [
        service("prod", "web", ["10.96.0.5", "fd00::5"], ports=[{"name": "http", "port": 80}]),
        headless("prod", "db", ports=[{"name": "pg", "port": 5432}]),
        endpoint_slice(
            "prod",
            "db-a",
            "db",
            [endpoint(f"10.244.1.{i}", hostname=f"db-{i}") for i in range(1, 70)],
            ports=[{"name": "pg", "port": 5432}],
        ),
        endpoint_slice("prod", "web-a", "web", [endpoint("10.244.1.5")]),
        service("prod", "ext", type_="ExternalName", external_name="www.example.com"),
        pod("prod", "p", "10.244.1.5"),
    ]
    for obj in objects:
        converted = convert(obj["kind"], obj)
        assert converted is not None
        store.upsert(converted)
    return store


def _handler() -> Handler:
    cache = ForwardCache(100, lambda: 1000.0)
    handler = Handler(_store().zone, HandlerOptions(max_udp=MAX_UDP, recursion_available=True), cache)
    # One cached forwarded answer, so cache hits are fuzzed too.
    query = wire.parse_query(dns.message.make_query("cached.example.com", "A").to_wire())
    query_id, packet = upstream_query(query)
    response = dns.message.make_response(dns.message.from_wire(packet))
    response.answer.append(dns.rrset.from_text("cached.example.com.", 60, "IN", "A", "192.0.2.1"))
    cache.put(ForwardCache.key(query), read_response(response.to_wire(), query_id, query.question, 0, 3600))
    return handler


HANDLER = _handler()


def check_reply(packet: bytes, reply: bytes, tcp: bool) -> None:
    """The invariants every reply to `packet` must hold."""
    try:
        message = dns.message.from_wire(reply)
    except dns.exception.DNSException as error:
        raise AssertionError(f"reply does not parse ({error}): {reply.hex()} to {packet.hex()}") from None
    assert reply[:2] == packet[:2], "the reply carries another ID"
    assert message.flags & 0x8000, "the reply is not marked as a response"
    assert len(message.question) <= 1
    if message.question:
        sent = packet[12 : 12 + len(reply) - 12]
        name = message.question[0].name.to_wire()
        assert name is not None
        echoed = reply[12 : 12 + len(name) + 4]
        assert sent.startswith(echoed) or echoed.lower() == sent[: len(echoed)].lower(), "question not echoed"
    if not tcp:
        limit = MAX_UDP if message.edns >= 0 else CLASSIC_UDP_LIMIT
        assert len(reply) <= limit, f"{len(reply)} bytes to a UDP client that takes {limit}"


def answer(handler: Handler, packet: bytes, tcp: bool) -> bytes | None:
    """What kdns sends back for `packet`: a reply, the reply to a failed forward, or nothing."""
    decided = handler.handle(packet, tcp)
    if isinstance(decided, Forward):
        return handler.finish_forward(decided, None)  # every upstream failed: SERVFAIL
    return decided


@FUZZ
@given(mutated_messages(), st.booleans())
def test_every_reply_to_a_hostile_message_parses_and_fits(packet: bytes, tcp: bool) -> None:
    reply = answer(HANDLER, packet, tcp)
    if reply is None:
        return
    check_reply(packet, reply, tcp)


@FUZZ
@given(mutated_messages())
def test_hostile_upstream_answers_are_refused_or_relayed_as_messages_that_parse(data: bytes) -> None:
    """Whatever an upstream sends back for a question, kdns relays only what parses."""
    query = wire.parse_query(dns.message.make_query("www.example.com", "A", use_edns=True).to_wire())
    query_id, _ = upstream_query(query)
    response = bytearray(data[:12].ljust(12, b"\x00")) + query.question + data[12:]
    response[0:2] = struct.pack("!H", query_id)
    response[2] |= 0x80
    response[4:6] = b"\x00\x01"
    try:
        forwarded = read_response(bytes(response), query_id, query.question, 0, 3600)
    except ValueError:
        return  # dropped, or SERVFAIL to the client: nothing relayed
    reply = wire.reply(query, forwarded.answer(), MAX_UDP, MAX_UDP, True)
    check_reply(query_packet(query), reply, tcp=False)


def query_packet(query: wire.Query) -> bytes:
    return struct.pack("!HHHHHH", query.id, query.flags, 1, 0, 0, 1) + query.question


def _key(kind: str, raw: Any) -> tuple[str, str] | None:
    metadata = raw.get("metadata") if isinstance(raw, dict) else None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
        return None
    return (kind, str(metadata.get("namespace") or ""), metadata["name"])  # type: ignore[return-value]


@FUZZ
@given(st.lists(st.one_of(hostile_objects(), valid_objects().map(lambda obj: (obj["kind"], obj))), max_size=12))
def test_hostile_objects_never_raise_and_the_zone_equals_a_fresh_build(changes: list[tuple[str, Any]]) -> None:
    store = ClusterStore("cluster.local", 30, PodMode.INSECURE)
    final: dict[Any, Any] = {}
    for kind, raw in changes:
        if kind not in KINDS:
            continue
        try:
            converted = convert(kind, raw)
        except ConversionError:
            continue  # reported and skipped: nothing else may change
        if converted is None:
            continue
        key = (kind, converted.name) if isinstance(converted, Namespace) else (kind, converted.key)
        if key in final and len(final) % 3 == 0:
            store.delete(kind, ("", converted.name) if isinstance(converted, Namespace) else converted.key)
            del final[key]
            continue
        store.upsert(converted)
        final[key] = converted
    fresh = ClusterStore("cluster.local", 30, PodMode.INSECURE)
    fresh.load(final.values())
    assert render(store.zone).split("\n", 1)[1] == render(fresh.zone).split("\n", 1)[1]
    for owner, _rtype, _records in store.zone.names():
        assert len(owner) <= 253 and all(0 < len(label) <= 63 for label in owner.split("."))
    for name in ("web.prod.svc.cluster.local", "db.prod.svc.cluster.local", "a.prod.svc.cluster.local"):
        for rdtype in ("A", "SRV", "ANY"):
            packet = dns.message.make_query(name, rdtype).to_wire()
            reply = Handler(store.zone).handle(packet, False)
            assert reply is not None and not isinstance(reply, Forward)
            check_reply(packet, reply, tcp=False)
