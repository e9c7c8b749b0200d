"""Objects that are valid in Kubernetes but would make names DNS cannot carry (issue 8, D1): the
part that cannot be published is left out and reported once, the rest of the object and every
other object are served, and no name over 255 bytes or label over 63 is ever published."""

from __future__ import annotations

from typing import Any

import pytest

from kdns.core.convert import convert, convert_service
from kdns.core.message import MAX_LABEL, MAX_NAME_WIRE
from kdns.core.names import to_wire
from kdns.core.records import Omission
from kdns.core.store import ClusterStore
from tests.builders import Obj, ask, endpoint, endpoint_slice, headless, namespace, records, service

LONG_PORT = "p" * 63  # a valid DNS_LABEL port name; `_` + it is 64 bytes
LONG_DOMAIN = ".".join(["d" * 22, "e" * 22, "f" * 22])  # 68 characters, valid


def _store(*objects: Obj, domain: str = "cluster.local") -> tuple[ClusterStore, list[Omission]]:
    reported: list[Omission] = []
    store = ClusterStore(domain, 30, report=reported.append)
    for obj in objects:
        converted = convert(obj["kind"], obj)
        assert converted is not None
        store.upsert(converted)
    return store, reported


def test_a_port_name_too_long_for_an_srv_label_loses_only_that_srv() -> None:
    ports = [{"name": "http", "port": 80}, {"name": LONG_PORT, "port": 81}, {"name": "grpc", "port": 82}]
    store, reported = _store(service("a", "bad", ["10.96.0.9"], ports=ports), service("a", "s1", ["10.96.0.1"]))
    assert records(ask(store, "bad.a.svc.cluster.local")) == ["bad.a.svc.cluster.local. A 10.96.0.9"]
    assert records(ask(store, "_http._tcp.bad.a.svc.cluster.local", "SRV")) == [
        "_http._tcp.bad.a.svc.cluster.local. SRV 0 100 80 bad.a.svc.cluster.local."
    ]
    assert len(records(ask(store, "_grpc._tcp.bad.a.svc.cluster.local", "SRV"))) == 1
    assert len(records(ask(store, "bad.a.svc.cluster.local", "SRV"))) == 3  # every port, as CoreDNS
    assert records(ask(store, "s1.a.svc.cluster.local")) == ["s1.a.svc.cluster.local. A 10.96.0.1"]
    assert reported == [
        Omission(
            "Service",
            "a/bad",
            "spec.ports[1].name",
            f"the SRV label '_{LONG_PORT}' is longer than 63 bytes: this port has no SRV name",
        )
    ]
    assert list(store.omissions.values()) == [tuple(reported)]


def test_a_port_name_that_is_not_ascii_loses_only_its_srv_found_by_the_fuzzer() -> None:
    # tests/test_fuzz.py found this: such a name raised while the zone was built.
    ports = [{"name": "", "port": 1}, {"name": "é" * 40, "port": 2}, {"name": "http", "port": 80}]
    store, reported = _store(service("prod", "a", ["10.96.0.1"], ports=ports))
    assert records(ask(store, "a.prod.svc.cluster.local")) == ["a.prod.svc.cluster.local. A 10.96.0.1"]
    assert len(records(ask(store, "_http._tcp.a.prod.svc.cluster.local", "SRV"))) == 1
    assert [(omission.field, omission.problem) for omission in reported] == [
        ("spec.ports[1].name", f"the SRV label '_{'é' * 40}' is not ASCII: this port has no SRV name")
    ]


def test_an_omission_is_reported_once_and_forgotten_when_the_object_is_fixed() -> None:
    bad = service("a", "bad", ["10.96.0.9"], ports=[{"name": LONG_PORT, "port": 81}])
    store, reported = _store(bad)
    store.upsert(convert_service(service("a", "bad", ["10.96.0.8"], ports=[{"name": LONG_PORT, "port": 81}])))
    assert len(reported) == 1 and store.omissions_reported == 1
    store.upsert(convert_service(service("a", "bad", ["10.96.0.8"])))
    assert store.omissions == {}
    store.delete("Service", ("a", "bad"))
    assert store.omissions == {}


def test_a_headless_slice_port_too_long_loses_only_its_srv_names() -> None:
    ports = [{"name": LONG_PORT, "port": 81}, {"name": "http", "port": 80}]
    store, reported = _store(
        headless("a", "db", ports=ports),
        endpoint_slice("a", "db-1", "db", [endpoint("10.244.0.1"), endpoint("10.244.0.2")], ports=ports),
    )
    assert len(records(ask(store, "db.a.svc.cluster.local"))) == 2
    assert len(records(ask(store, "_http._tcp.db.a.svc.cluster.local", "SRV"))) == 2
    assert [(o.kind, o.ref, o.field) for o in reported] == [("EndpointSlice", "a/db-1", "ports[0].name")]


def _published_names(store: ClusterStore) -> list[str]:
    return [owner for owner, _, _ in store.zone.names()]


def _assert_all_names_fit(store: ClusterStore) -> None:
    for owner, _rtype, group in store.zone.names():
        wire = to_wire(owner)  # raises for a label over 63 or a name over 255
        assert len(wire) <= MAX_NAME_WIRE
        for record in group:
            assert record.rtype != 33 or len(record.rdata) - 6 <= MAX_NAME_WIRE
            assert record.rtype != 12 or len(record.rdata) <= MAX_NAME_WIRE


def test_a_long_cluster_domain_never_publishes_a_name_over_255_bytes() -> None:
    ns, svc = "n" * 63, "s" * 63
    hostname = "h" * 63
    ports = [{"name": "http", "port": 80}]
    store, reported = _store(
        namespace(ns),
        headless(ns, svc, ports=ports),
        endpoint_slice(
            ns, "slice", svc, [endpoint("10.244.0.1", hostname=hostname), endpoint("10.244.0.2")], ports=ports
        ),
        service(ns, "w" * 63, ["10.96.0.5"], ports=ports),
        endpoint_slice(ns, "web-1", "w" * 63, [endpoint("10.244.1.1", hostname=hostname)], ports=ports),
        domain=LONG_DOMAIN,
    )
    _assert_all_names_fit(store)
    base = f"{svc}.{ns}.svc.{LONG_DOMAIN}"
    # The endpoint whose name fits is served, under its dashed address; the other is left out.
    assert records(ask(store, base)) == [f"{base}. A 10.244.0.2"]
    assert records(ask(store, f"10-244-0-2.{base}")) == [f"10-244-0-2.{base}. A 10.244.0.2"]
    assert records(ask(store, f"_http._tcp.{base}", "SRV")) == [f"_http._tcp.{base}. SRV 0 100 80 10-244-0-2.{base}."]
    assert records(ask(store, "1.0.244.10.in-addr.arpa", "PTR")) == []
    web = f"{'w' * 63}.{ns}.svc.{LONG_DOMAIN}"
    assert records(ask(store, web)) == [f"{web}. A 10.96.0.5"]
    assert records(ask(store, "1.1.244.10.in-addr.arpa", "PTR")) == []  # its endpoint name would not fit
    fields = sorted((o.kind, o.ref, o.field) for o in reported)
    assert fields == [
        ("EndpointSlice", f"{ns}/slice", "endpoints[0].hostname"),
        ("EndpointSlice", f"{ns}/web-1", "endpoints[0].hostname"),
    ]


def test_a_service_whose_own_name_cannot_fit_is_left_out_alone() -> None:
    domain = ".".join(["d" * 40, "e" * 40, "f" * 40])  # 124 bytes on the wire: 256 with the longest names
    ns = "n" * 63
    store, reported = _store(service(ns, "s" * 63, ["10.96.0.1"]), service(ns, "ok", ["10.96.0.2"]), domain=domain)
    _assert_all_names_fit(store)
    assert [(o.kind, o.field) for o in reported] == [("Service", "metadata.name")]
    assert records(ask(store, f"ok.{ns}.svc.{domain}")) == [f"ok.{ns}.svc.{domain}. A 10.96.0.2"]


def test_labels_in_the_zone_are_never_longer_than_63() -> None:
    store, _ = _store(service("a", "bad", ["10.96.0.9"], ports=[{"name": LONG_PORT, "port": 81}]))
    for owner in _published_names(store):
        assert all(len(label) <= MAX_LABEL for label in owner.split("."))


def test_an_edit_of_a_service_with_thousands_of_ports_does_work_linear_in_its_ports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 8 D2: each SRV name's answer walked every record of its target (the Service's own
    name, holding one SRV per port), so one edit was quadratic in the ports: 8 s of stalled DNS at
    10,000 ports. Counted in records read, not timed (timings belong in bench/)."""
    from kdns.core import zone as zone_module

    read = 0
    real_merged = zone_module._merged

    def counting(key: bytes, node: Any) -> list[Any]:
        nonlocal read
        found = real_merged(key, node)
        read += len(found)
        return found

    ports = [{"name": f"p{i}", "port": 1000 + i} for i in range(3000)]
    store, _ = _store(service("a", "big", ["10.96.0.9"], ports=ports))
    monkeypatch.setattr(zone_module, "_merged", counting)
    store.upsert(convert_service(service("a", "big", ["10.96.0.8"], ports=ports)))  # a one-field edit
    assert read <= 10 * len(ports)
    assert records(ask(store, "_p2999._tcp.big.a.svc.cluster.local", "SRV"))
    answer = ask(store, "_p7._tcp.big.a.svc.cluster.local", "SRV")
    assert records(answer, "additional") == ["big.a.svc.cluster.local. A 10.96.0.8"]
