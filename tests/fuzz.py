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
import dns.flags
import dns.message
import dns.name
from hypothesis import strategies as st

from tests.builders import endpoint, endpoint_slice, headless, namespace, pod, service

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


def _seed_query(name: str, rdtype: str, edns: int | None, payload: int, dnssec: bool, cd: bool, rd: bool) -> bytes:
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


def _compressed_query(name_index: int) -> bytes:
    """A query whose additional section names the question by a compression pointer, then an OPT."""
    name = dns.name.from_text(QUESTION_NAMES[name_index % len(QUESTION_NAMES)]).to_wire()
    assert name is not None
    header = struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 2)
    extra = b"\xc0\x0c" + struct.pack("!HHIH", 16, 1, 0, 2) + b"\x01x"
    opt = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
    return header + name + b"\x00\x01\x00\x01" + extra + opt


seed_queries = st.one_of(
    st.builds(
        _seed_query,
        st.sampled_from(QUESTION_NAMES),
        st.sampled_from(QUESTION_TYPES),
        st.sampled_from([None, 0, 0, 1]),
        st.sampled_from([0, 100, 512, 1232, 4096, 65535]),
        st.booleans(),
        st.booleans(),
        st.booleans(),
    ),
    st.builds(_compressed_query, st.integers(0, len(QUESTION_NAMES) - 1)),
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
