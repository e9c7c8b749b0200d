"""Literal API objects, shaped as the API server returns them, for tests to feed kdns; and a
pipeline over a store, to ask it questions without sockets."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import dns.flags
import dns.message
import dns.rdatatype

from kdns.answering import server_blocks
from kdns.core.autopath import Autopath
from kdns.core.budgets import REPLY_CACHE_BYTES
from kdns.core.cache import ForwardCache
from kdns.core.convert import convert
from kdns.core.loop import LoopProbes
from kdns.core.stage import ReplyOptions
from kdns.core.store import AS_THE_SPEC, ClusterStore, PodMode, PublishOptions
from kdns.core.zone import Zone
from kdns.pipeline import Pending, Pipeline, Transport
from kdns.state import State

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


def upsert(store: ClusterStore, obj: Obj) -> None:
    """Convert `obj` (which must convert) and apply it to `store`."""
    converted = convert(obj["kind"], obj)
    assert converted is not None
    store.upsert(converted)


def store_of(
    *objects: Obj,
    domain: str = "cluster.local",
    ttl: int = 30,
    pods: PodMode = PodMode.INSECURE,
    publish: PublishOptions = AS_THE_SPEC,
) -> ClusterStore:
    store = ClusterStore(domain, ttl, pods, publish=publish)
    for obj in objects:
        converted = convert(obj["kind"], obj)
        if converted is not None:
            store.upsert(converted)
    return store


def _always() -> bool:
    return True


def pipeline_of(
    target: ClusterStore | Zone | None = None,
    *,
    cache: ForwardCache | None = None,
    options: ReplyOptions = ReplyOptions(),
    state: State | None = None,
    synced: Callable[[], bool] = _always,
    autopath: Autopath | None = None,
    probes: LoopProbes | None = None,
    reply_cache_bytes: int = REPLY_CACHE_BYTES,
    stub_domains: Sequence[str] = (),
    transport: Transport | None = None,
    loadbalance: bool = False,
) -> Pipeline:
    """The pipeline kdns would run over `target`'s zone (None: a node cache's, with no zone),
    with kdns's own server blocks; forwarding (to group 0, the default upstreams, and a group a
    stub domain) when given a `cache`; no transport: a question for upstream comes back as a
    `Pending`, for the test to answer with `Pipeline.resume`."""
    zone = target.zone if isinstance(target, ClusterStore) else target
    state = state if state is not None else State()
    probes = probes if probes is not None else LoopProbes(lambda upstream: None)
    blocks = server_blocks(
        options,
        domain=zone.domain if zone is not None else "cluster.local",
        zone=zone,
        synced=synced,
        cache=cache,
        probes=probes,
        autopath=autopath,
        count_autopath=state.queries.count_autopath,
        stub_domains=stub_domains,
        loadbalance=loadbalance,
    )
    return Pipeline(
        blocks,
        options,
        state,
        zone=zone,
        cache=cache,
        transport=transport,
        reply_cache_bytes=reply_cache_bytes,
        probes=probes,
    )


def ask(
    target: ClusterStore | Pipeline,
    name: str,
    rdtype: str = "A",
    tcp: bool = False,
    payload: int | None = None,
) -> dns.message.Message:
    """Ask the pipeline a question built by dnspython, and parse its reply with dnspython."""
    pipeline = target if isinstance(target, Pipeline) else pipeline_of(target)
    query = dns.message.make_query(name, rdtype, use_edns=payload is not None, payload=payload or 512)
    reply = pipeline.answer(query.to_wire(), tcp, None)
    assert isinstance(reply, bytes), f"no reply of ours to {name} {rdtype}: {reply!r}"
    message = dns.message.from_wire(reply)
    assert message.id == query.id
    return message


def pending_of(decided: bytes | Pending | None) -> Pending:
    """A pipeline's outcome that must wait on upstream answers."""
    assert isinstance(decided, Pending), decided
    return decided


def bytes_of(decided: bytes | Pending | None) -> bytes:
    """A pipeline's outcome that must be a reply."""
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
