"""Generators for fuzzing the pure core (issue 8, point 2): DNS messages for the handler, and
API-shaped objects for the converters and the store.

Shared by the bounded pass in CI (`tests/test_fuzz.py`, `KDNS_FUZZ_EXAMPLES` inputs per property,
default 400) and the long run (`KDNS_FUZZ_EXAMPLES=1000000 pytest tests/test_fuzz.py`; see
README). Messages are seeded from real queries of every type kdns answers, with EDNS, DNSSEC OK,
CD, compression pointers and long names, then mutated byte by byte; objects are seeded from the
shapes the API server sends, then mutated field by field (wrong types, missing fields, extreme
sizes, unicode).
"""

from __future__ import annotations

import os
import struct
from typing import Any

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rrset
from hypothesis import strategies as st

from kdns.core import wire
from kdns.core.cache import ForwardCache
from kdns.core.convert import convert
from kdns.core.message import CLASSIC_UDP_LIMIT
from kdns.core.stage import ReplyOptions
from kdns.core.store import ClusterStore, PodMode
from kdns.core.upstream import read_response, upstream_query
from kdns.pipeline import Pending, Pipeline
from tests.builders import endpoint, endpoint_slice, headless, namespace, pipeline_of, pod, service

EXAMPLES = int(os.environ.get("KDNS_FUZZ_EXAMPLES", "400"))

# -- DNS messages ----------------------------------------------------------------------------------

QUESTION_NAMES = [
    "web.prod.svc.cluster.local.",
    "WEB.Prod.svc.cluster.LOCAL.",
    "db.prod.svc.cluster.local.",
    "db-0.db.prod.svc.cluster.local.",
    "_pg._tcp.db.prod.svc.cluster.local.",
    "_http._tcp.web.prod.svc.cluster.local.",
    "ext.prod.svc.cluster.local.",
    "10-244-1-5.prod.pod.cluster.local.",
    "nope.prod.svc.cluster.local.",
    "prod.svc.cluster.local.",
    "cluster.local.",
    "dns-version.cluster.local.",
    "5.0.96.10.in-addr.arpa.",
    "5.1.244.10.in-addr.arpa.",
    "www.example.com.",
    "cached.example.com.",
    ".",
    ".".join(["a" * 63] * 3) + ".cluster.local.",
    ".".join(["b" * 60] * 4) + ".",  # 245 bytes: near the limit
]
QUESTION_TYPES = ["A", "AAAA", "SRV", "PTR", "TXT", "SOA", "NS", "CNAME", "ANY", "AXFR", "IXFR", "MX", "HINFO"]


def seed_query(name: str, rdtype: str, edns: int | None, payload: int, dnssec: bool, cd: bool, rd: bool) -> bytes:
    query = dns.message.make_query(
        name, rdtype, use_edns=edns is not None and edns, payload=payload, want_dnssec=dnssec and edns is not None
    )
    if edns is not None and edns > 0:
        query.use_edns(edns, payload=payload)
    if cd:
        query.flags |= dns.flags.CD
    if not rd:
        query.flags &= ~dns.flags.RD
    return query.to_wire()


def compressed_query(name_index: int) -> bytes:
    """A query whose additional section names the question by a compression pointer, then an OPT."""
    name = dns.name.from_text(QUESTION_NAMES[name_index % len(QUESTION_NAMES)]).to_wire()
    assert name is not None
    header = struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 2)
    extra = b"\xc0\x0c" + struct.pack("!HHIH", 16, 1, 0, 2) + b"\x01x"
    opt = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
    return header + name + b"\x00\x01\x00\x01" + extra + opt


seed_queries = st.one_of(
    st.builds(
        seed_query,
        st.sampled_from(QUESTION_NAMES),
        st.sampled_from(QUESTION_TYPES),
        st.sampled_from([None, 0, 0, 1]),
        st.sampled_from([0, 100, 512, 1232, 4096, 65535]),
        st.booleans(),
        st.booleans(),
        st.booleans(),
    ),
    st.builds(compressed_query, st.integers(0, len(QUESTION_NAMES) - 1)),
)


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    """A real query, or random bytes, changed by a few byte-level edits."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=600))
    data = bytearray(draw(seed_queries))
    for _ in range(draw(st.integers(0, 6))):
        action = draw(st.integers(0, 5))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if action == 0:
            data[at] = draw(st.integers(0, 255))
        elif action == 1:
            data[at] = draw(st.sampled_from([0x00, 0x3F, 0x40, 0x80, 0xC0, 0xFF]))  # label edges
        elif action == 2:
            del data[at:]
        elif action == 3:
            data[at:at] = draw(st.binary(min_size=1, max_size=20))
        elif action == 4 and len(data) >= 12:
            field = draw(st.integers(2, 5))  # a header count
            data[field * 2 : field * 2 + 2] = struct.pack("!H", draw(st.sampled_from([0, 1, 2, 3, 255, 65535])))
        else:
            data[at : at + 2] = struct.pack("!H", 0xC000 | draw(st.integers(0, 0x3FFF)))  # a pointer
    return bytes(data)


# -- API objects -----------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63),
    st.floats(allow_nan=True),
    st.text(max_size=80),
    st.sampled_from(["", "None", "10.96.0.1", "fd00::1", "999.1.1.1", "a" * 64, "é", "TCP", "ClusterIP"]),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)

NAMES = ["a", "b", "web", "db", "p" * 63]
ADDRESSES = ["10.244.0.1", "10.244.0.2", "10.96.0.1", "fd00::1", "10.244.0.1"]
PORT_NAMES = ["", "http", "grpc", "p" * 63, "UPPER"]


@st.composite
def valid_objects(draw: st.DrawFn) -> dict[str, Any]:
    """Well-formed objects from a small pool of names and addresses, so that changes collide."""
    ns = draw(st.sampled_from(["prod", "dev"]))
    name = draw(st.sampled_from(NAMES))
    ports = [
        {"name": draw(st.sampled_from(PORT_NAMES)), "port": draw(st.integers(1, 65535)), "protocol": proto}
        for proto in draw(st.lists(st.sampled_from(["TCP", "UDP", "SCTP"]), max_size=3))
    ]
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return namespace(ns)
    if kind == 1:
        return service(ns, name, [draw(st.sampled_from(ADDRESSES[2:4]))], ports=ports)
    if kind == 2:
        return headless(ns, name, ports=ports, publish_not_ready=draw(st.booleans()))
    if kind == 3:
        return service(ns, name, type_="ExternalName", external_name=draw(st.sampled_from(["example.com", "x.y"])))
    if kind == 4:
        return pod(ns, name, draw(st.sampled_from(ADDRESSES)))
    family = draw(st.sampled_from(["IPv4", "IPv4", "IPv6"]))
    pool = ADDRESSES if family == "IPv4" else ["fd00::1", "fd00::2"]
    endpoints = [
        endpoint(
            draw(st.sampled_from(pool)),
            ready=draw(st.sampled_from([True, False, None])),
            hostname=draw(st.sampled_from([None, "h0", "h1"])),
        )
        for _ in range(draw(st.integers(0, 4)))
    ]
    slice_name = f"{name}-{draw(st.integers(0, 1))}"
    return endpoint_slice(ns, slice_name, draw(st.sampled_from(NAMES)), endpoints, family=family, ports=ports)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside nested dicts and lists."""
    paths = [prefix]
    if isinstance(obj, dict):
        for key, value in obj.items():
            paths += _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            paths += _paths(value, (*prefix, index))
    return paths


@st.composite
def hostile_objects(draw: st.DrawFn) -> tuple[str, Any]:
    """(kind, object): a valid object with some fields replaced, removed or grown huge, or any
    JSON value at all."""
    obj = draw(valid_objects())
    kind = obj["kind"]
    if draw(st.integers(0, 9)) == 0:
        return kind, draw(json_values)
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(obj)[1:]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = obj
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.integers(0, 3))
        if action == 0:
            parent[path[-1]] = draw(json_values)
        elif action == 1 and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == 2:
            parent[path[-1]] = draw(st.sampled_from(["x" * 300, "é" * 40, "a.b", "-a", "A" * 63, 10**20, []]))
        else:
            parent[path[-1]] = [parent[path[-1]]] * draw(st.integers(2, 50))
    return kind, obj


# -- what the messages go to, and what every reply must be ----------------------------------

MAX_UDP = 1232


def fuzz_store() -> ClusterStore:
    """The store every fuzzed message is answered from."""
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


def fuzz_pipeline() -> Pipeline:
    """The pipeline the fuzzed messages go to: the fuzz store's zone, a forward cache holding one
    answer (so that cache hits are fuzzed too), no transport."""
    cache = ForwardCache(100, lambda: 1000.0)
    options = ReplyOptions(max_udp=MAX_UDP, recursion_available=True)
    pipeline = pipeline_of(fuzz_store(), options=options, cache=cache)
    # One cached forwarded answer, so cache hits are fuzzed too.
    query = wire.parse_query(dns.message.make_query("cached.example.com", "A").to_wire())
    query_id, packet = upstream_query(query)
    response = dns.message.make_response(dns.message.from_wire(packet))
    response.answer.append(dns.rrset.from_text("cached.example.com.", 60, "IN", "A", "192.0.2.1"))
    cache.put(ForwardCache.key(query), read_response(response.to_wire(), query_id, query.question, 0, 3600))
    return pipeline


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


def answer(pipeline: Pipeline, packet: bytes, tcp: bool) -> bytes | None:
    """What kdns sends back for `packet`: a reply, the reply once every upstream failed, or
    nothing."""
    decided = pipeline.answer(packet, tcp, None)
    while isinstance(decided, Pending):
        decided = pipeline.resume(decided, None)  # every upstream failed: SERVFAIL
    return decided
