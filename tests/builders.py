"""Literal API objects, shaped as the API server returns them, for tests to feed kdns."""

from __future__ import annotations

from typing import Any

import dns.flags
import dns.message
import dns.rdatatype

from kdns.core.convert import convert
from kdns.core.handler import Forward, Handler
from kdns.core.store import ClusterStore, PodMode

Obj = dict[str, Any]


def namespace(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def service(
    ns: str,
    name: str,
    cluster_ips: list[str] | None = None,
    ports: list[Obj] | None = None,
    type_: str = "ClusterIP",
    external_name: str | None = None,
    publish_not_ready: bool | None = None,
) -> Obj:
    ips = ["10.96.0.5"] if cluster_ips is None else cluster_ips
    spec: Obj = {"type": type_, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}] if ports is None else ports}
    if type_ == "ExternalName":
        spec = {"type": type_, "externalName": external_name}
    elif ips:
        spec["clusterIP"] = ips[0]
        spec["clusterIPs"] = ips
    if publish_not_ready is not None:
        spec["publishNotReadyAddresses"] = publish_not_ready
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def headless(ns: str, name: str, ports: list[Obj] | None = None, publish_not_ready: bool | None = None) -> Obj:
    return service(ns, name, ["None"], ports, publish_not_ready=publish_not_ready)


def endpoint(ip: str, ready: bool | None = True, hostname: str | None = None, pod: str | None = None) -> Obj:
    item: Obj = {"addresses": [ip], "conditions": {} if ready is None else {"ready": ready}}
    if hostname:
        item["hostname"] = hostname
    if pod:
        item["targetRef"] = {"kind": "Pod", "name": pod}
    return item


def endpoint_slice(
    ns: str, name: str, service_name: str, endpoints: list[Obj], family: str = "IPv4", ports: list[Obj] | None = None
) -> Obj:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": service_name}},
        "addressType": family,
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}] if ports is None else ports,
    }


def pod(ns: str, name: str, *ips: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "status": {"podIP": ips[0], "podIPs": [{"ip": ip} for ip in ips]},
    }


def store_of(
    *objects: Obj, domain: str = "cluster.local", ttl: int = 30, pods: PodMode = PodMode.INSECURE
) -> ClusterStore:
    store = ClusterStore(domain, ttl, pods)
    for obj in objects:
        converted = convert(obj["kind"], obj)
        if converted is not None:
            store.upsert(converted)
    return store


def ask(
    target: ClusterStore | Handler,
    name: str,
    rdtype: str = "A",
    tcp: bool = False,
    payload: int | None = None,
) -> dns.message.Message:
    """Ask the pure handler a question built by dnspython, and parse its reply with dnspython."""
    handler = target if isinstance(target, Handler) else Handler(target.zone)
    query = dns.message.make_query(name, rdtype, use_edns=payload is not None, payload=payload or 512)
    reply = handler.handle(query.to_wire(), tcp)
    assert isinstance(reply, bytes), f"no reply of ours to {name} {rdtype}: {reply!r}"
    message = dns.message.from_wire(reply)
    assert message.id == query.id
    return message


def forward_of(decided: bytes | Forward | None) -> Forward:
    """A handler's decision that must be to forward."""
    assert isinstance(decided, Forward), decided
    return decided


def bytes_of(decided: bytes | Forward | None) -> bytes:
    """A handler's decision that must be a reply."""
    assert isinstance(decided, bytes), decided
    return decided


def records(message: dns.message.Message, section: str = "answer") -> list[str]:
    """`owner TYPE rdata` of every record in a section, lowercased owner, sorted."""
    out = []
    for rrset in getattr(message, section):
        for item in rrset:
            out.append(f"{rrset.name.to_text().lower()} {dns.rdatatype.to_text(rrset.rdtype)} {item.to_text()}")
    return sorted(out)


def rcode(message: dns.message.Message) -> str:
    return dns.rcode.to_text(message.rcode())


def is_authoritative(message: dns.message.Message) -> bool:
    return bool(message.flags & dns.flags.AA)
