"""What each cluster object publishes: owner names and their records.

Every rule that decides whether a name exists lives here; the zone only indexes what these
functions return. A name mapped to an empty list exists with no records (an empty non-terminal),
which the zone answers NODATA rather than NXDOMAIN.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kdns.core import rdata
from kdns.core.model import EndpointSlice, IPAddress, Service, ServicePort, ServiceType
from kdns.core.names import endpoint_label, label_wire, reverse_wire, service_name, to_wire
from kdns.core.rdata import Record

RecordSets = dict[bytes, list[Record]]  # owner name in lowercased wire form -> its records

SCHEMA_VERSION = "1.1.0"  # spec 2.2: the `dns-version` TXT record


@dataclass(frozen=True, slots=True)
class _ReadyAddress:
    label: str
    address: IPAddress
    slice_: EndpointSlice


def _ready_addresses(service: Service, slices: Iterable[EndpointSlice]) -> list[_ReadyAddress]:
    """Addresses that DNS publishes, each once even if two slices briefly hold it (SPEC-NOTES 4).

    Spec 2.4.1: only ready endpoints. `publishNotReadyAddresses` publishes all of them, as the
    endpoint controller then marks them ready anyway (CoreDNS reads only `ready`).
    """
    seen: set[tuple[str, IPAddress]] = set()
    out = []
    for slice_ in slices:
        for endpoint in slice_.endpoints:
            if not (endpoint.ready or service.publish_not_ready_addresses):
                continue
            for address in endpoint.addresses:
                label = endpoint_label(endpoint, address)
                if (label, address) not in seen:
                    seen.add((label, address))
                    out.append(_ReadyAddress(label, address, slice_))
    return out


class _Builder:
    """Record sets under construction: insertion-ordered, each record once."""

    def __init__(self) -> None:
        self.sets: dict[bytes, dict[Record, None]] = {}
        self.srv_targets: dict[bytes, dict[tuple[int, bytes], None]] = {}

    def add(self, owner: bytes, record: Record) -> None:
        self.sets.setdefault(owner, {})[record] = None

    def add_srv(self, owner: bytes, port: int, target: bytes) -> None:
        self.sets.setdefault(owner, {})
        self.srv_targets.setdefault(owner, {})[(port, target)] = None

    def result(self) -> RecordSets:
        for owner, targets in self.srv_targets.items():
            # CoreDNS: priority 0 and weight floor(100 / records in the set), so the weights of
            # an answer add up to (about) 100.
            weight = 100 // len(targets)
            for port, target in targets:
                self.add(owner, rdata.srv(0, weight, port, target))
        return {owner: list(records) for owner, records in self.sets.items()}


def service_records(service: Service, slices: Iterable[EndpointSlice], domain: str) -> RecordSets:
    """Every record a Service publishes, from the Service and its EndpointSlices (spec 2.3, 2.4).

    Spec 2.4 defines endpoint names for headless services; CoreDNS publishes them (and their PTR
    records) for the endpoints of every service, which we follow where the spec is silent.
    A headless service with no ready endpoint publishes nothing, so its name is NXDOMAIN.

    Names are built in wire form: the service's name is encoded once, and each endpoint's name is
    one label in front of it, used as owner, PTR target and SRV target alike.
    """
    base = to_wire(service_name(service.namespace, service.name, domain))
    if service.type is ServiceType.EXTERNAL_NAME:  # spec 2.5
        return {base: [rdata.pointer(rdata.CNAME, service.external_name)]}

    out = _Builder()
    ready = _ready_addresses(service, slices)
    owners = [label_wire(item.label) + base for item in ready]
    for item, owner in zip(ready, owners, strict=True):
        out.add(owner, rdata.address(item.address))
        out.add(reverse_wire(item.address), rdata.Record(rdata.PTR, owner))

    if service.type is ServiceType.CLUSTER_IP:  # spec 2.3
        for ip in service.cluster_ips:
            out.add(base, rdata.address(ip))
            out.add(reverse_wire(ip), rdata.Record(rdata.PTR, base))
        if service.cluster_ips:
            for port in service.ports:
                if port.name:
                    out.add_srv(_srv_owner(port, base), port.port, base)
                # CoreDNS: an SRV query for the bare service name lists every port.
                out.add_srv(base, port.port, base)
    else:  # headless, spec 2.4: the EndpointSlice's ports, one SRV per ready endpoint
        for item, target in zip(ready, owners, strict=True):
            out.add(base, rdata.address(item.address))
            for port in item.slice_.ports:
                if port.name:
                    out.add_srv(_srv_owner(port, base), port.port, target)
                out.add_srv(base, port.port, target)
    return out.result()


def _srv_owner(port: ServicePort, base: bytes) -> bytes:
    """`_<port>._<proto>.<service name>` (spec 2.3.2)."""
    return label_wire("_" + port.name) + label_wire(port.protocol.label) + base


def namespace_records(namespace: str, domain: str, pods_enabled: bool) -> RecordSets:
    """The empty non-terminals an existing namespace makes: `<ns>.svc` and `<ns>.pod` NODATA."""
    sets: RecordSets = {to_wire(f"{namespace}.svc.{domain}"): []}
    if pods_enabled:
        sets[to_wire(f"{namespace}.pod.{domain}")] = []
    return sets


def apex_records(domain: str, ns_addresses: Iterable[IPAddress], pods_enabled: bool) -> RecordSets:
    """The records at and just below the zone apex (the SOA is served by the zone itself).

    NS and the nameserver's own name follow CoreDNS: `ns.dns.<zone>`, whose addresses are those of
    the cluster DNS Service. `svc` and `pod` exist as empty non-terminals (NODATA).
    """
    ns_name = f"ns.dns.{domain}"
    sets: RecordSets = {
        to_wire(domain): [rdata.pointer(rdata.NS, ns_name)],
        to_wire(ns_name): [rdata.address(ip) for ip in dict.fromkeys(ns_addresses)],
        to_wire(f"dns-version.{domain}"): [rdata.txt(SCHEMA_VERSION)],
        to_wire(f"svc.{domain}"): [],
    }
    if pods_enabled:
        sets[to_wire(f"pod.{domain}")] = []
    return sets
