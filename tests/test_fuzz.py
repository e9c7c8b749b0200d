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
from kdns.core.convert import KINDS, ConversionError, convert
from kdns.core.model import Namespace
from kdns.core.store import ClusterStore, PodMode
from kdns.core.upstream import read_response, upstream_query
from kdns.core.zonefile import render
from kdns.pipeline import Pending
from tests.builders import pipeline_of
from tests.fuzz import (
    EXAMPLES,
    MAX_UDP,
    answer,
    check_reply,
    fuzz_pipeline,
    hostile_objects,
    mutated_messages,
    valid_objects,
)

PIPELINE = fuzz_pipeline()

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


@FUZZ
@given(mutated_messages(), st.booleans())
def test_every_reply_to_a_hostile_message_parses_and_fits(packet: bytes, tcp: bool) -> None:
    reply = answer(PIPELINE, packet, tcp)
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
            reply = pipeline_of(store).answer(packet, False, None)
            assert reply is not None and not isinstance(reply, Pending)
            check_reply(packet, reply, tcp=False)
