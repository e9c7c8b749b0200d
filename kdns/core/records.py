"""What each cluster object publishes: owner names and their records.

Every rule that decides whether a name exists lives here; the zone only indexes what these
functions return. A name mapped to no records exists with no records (an empty non-terminal),
which the zone answers NODATA rather than NXDOMAIN.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from kdns.core import rdata
from kdns.core.model import EndpointSlice, IPAddress, Service, ServicePort, ServiceType
from kdns.core.names import endpoint_label, label_wire, reverse_wire, service_name, to_wire
from kdns.core.rdata import Record
from kdns.core.zone import OnDemandRecords

RecordTuples = dict[bytes, tuple[Record, ...]]  # lowercased wire owner -> its records
RecordSets = Mapping[bytes, "tuple[Record, ...] | OnDemandRecords"]  # ... or who gives them on demand

SCHEMA_VERSION = "1.1.0"  # spec 2.2: the `dns-version` TXT record


def _ready_addresses(service: Service, slices: Iterable[EndpointSlice]) -> list[tuple[str, IPAddress, EndpointSlice]]:
    """(label, address, slice) of each address DNS publishes, each once even if two slices briefly
    hold it (SPEC-NOTES 4).

    Spec 2.4.1: only ready endpoints. `publishNotReadyAddresses` publishes all of them, as the
    endpoint controller then marks them ready anyway (CoreDNS reads only `ready`).
    """
    seen: set[tuple[str, IPAddress]] = set()
    out = []
    publish_all = service.publish_not_ready_addresses
    for slice_ in slices:
        for endpoint in slice_.endpoints:
            if not (endpoint.ready or publish_all):
                continue
            for address in endpoint.addresses:
                label = endpoint_label(endpoint, address)
                if (label, address) not in seen:
                    seen.add((label, address))
                    out.append((label, address, slice_))
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

    def result(self) -> RecordTuples:
        for owner, targets in self.srv_targets.items():
            # CoreDNS: priority 0 and weight floor(100 / records in the set), so the weights of
            # an answer add up to (about) 100.
            weight = 100 // len(targets)
            for port, target in targets:
                self.add(owner, rdata.srv(0, weight, port, target))
        return {owner: tuple(records) for owner, records in self.sets.items()}


def _endpoint_records(base: bytes, ready: Iterable[tuple[str, IPAddress, EndpointSlice]], out: _Builder) -> list[bytes]:
    """Each published address's name below the service and its PTR record; returns the names."""
    owners = []
    for label, address, _ in ready:
        owner = label_wire(label) + base
        owners.append(owner)
        out.add(owner, rdata.address(address))
        out.add(reverse_wire(address), rdata.Record(rdata.PTR, owner))
    return owners


class EndpointNames(OnDemandRecords):
    """The endpoint names of a ClusterIP Service and their PTR records, built when first asked for.

    CoreDNS answers `<endpoint>.<service>.<ns>.svc.<zone>` and the endpoints' PTR records for the
    endpoints of every Service; the spec names them only for headless Services, so we follow
    CoreDNS. They are seldom asked for, yet at 10k Services they are two thirds of the zone's
    names, and preparing them on every change doubled the build time and the memory. So the zone
    holds only their reverse names (which decide NXDOMAIN against NODATA below in-addr.arpa) and
    asks this object when a query comes. The records are built on the first question, from the
    Service and slices that the store holds anyway, and kept until the Service changes.
    """

    __slots__ = ("_service", "_sets", "_slices", "parent")

    def __init__(self, base: bytes, service: Service, slices: Sequence[EndpointSlice]) -> None:
        self.parent = base
        self._service = service
        self._slices = slices
        self._sets: RecordTuples | None = None

    def records_at(self, key: bytes) -> tuple[Record, ...]:
        return self._built().get(key, ())

    def children(self) -> list[bytes]:
        return [key for key in self._built() if key.endswith(self.parent) and len(key) > len(self.parent)]

    def _built(self) -> RecordTuples:
        if self._sets is None:
            out = _Builder()
            _endpoint_records(self.parent, _ready_addresses(self._service, self._slices), out)
            self._sets = out.result()
        return self._sets


def _published_addresses(service: Service, slices: Iterable[EndpointSlice]) -> dict[IPAddress, None]:
    """The addresses DNS publishes for a Service, each once (the rule of `_ready_addresses`)."""
    publish_all = service.publish_not_ready_addresses
    return {
        address: None
        for slice_ in slices
        for endpoint in slice_.endpoints
        if endpoint.ready or publish_all
        for address in endpoint.addresses
    }


def service_records(service: Service, slices: Sequence[EndpointSlice], domain: str) -> RecordSets:
    """Every record a Service publishes, from the Service and its EndpointSlices (spec 2.3, 2.4).

    Spec 2.4 defines endpoint names for headless services; CoreDNS publishes them (and their PTR
    records) for the endpoints of every service, which we follow where the spec is silent. For a
    ClusterIP Service they are given on demand (`EndpointNames`).
    A headless service with no ready endpoint publishes nothing, so its name is NXDOMAIN.

    Names are built in wire form: the service's name is encoded once, and each endpoint's name is
    one label in front of it, used as owner, PTR target and SRV target alike.
    """
    base = to_wire(service_name(service.namespace, service.name, domain))
    if service.type is ServiceType.EXTERNAL_NAME:  # spec 2.5
        return {base: (rdata.pointer(rdata.CNAME, service.external_name),)}

    out = _Builder()
    if service.type is ServiceType.CLUSTER_IP:  # spec 2.3
        for ip in service.cluster_ips:
            out.add(base, rdata.address(ip))
            out.add(reverse_wire(ip), rdata.Record(rdata.PTR, base))
        if not service.cluster_ips:  # endpoint names alone make the service's name exist
            _endpoint_records(base, _ready_addresses(service, slices), out)
            return out.result()
        for port in service.ports:
            if port.name:
                out.add_srv(_srv_owner(port, base), port.port, base)
            # CoreDNS: an SRV query for the bare service name lists every port.
            out.add_srv(base, port.port, base)
        sets: dict[bytes, tuple[Record, ...] | OnDemandRecords] = dict(out.result())  # a few names
        addresses = _published_addresses(service, slices)
        if addresses:
            names = EndpointNames(base, service, slices)
            for address in addresses:
                reverse = reverse_wire(address)
                held = sets.get(reverse)
                # An endpoint at one of the Service's own cluster IPs: both PTRs, given up front.
                sets[reverse] = names if held is None else (*held, *names.records_at(reverse))
        return sets

    # headless, spec 2.4: the EndpointSlice's ports, one SRV per ready endpoint
    ready = _ready_addresses(service, slices)
    owners = _endpoint_records(base, ready, out)
    srv_owners = {
        id(slice_): [(_srv_owner(port, base) if port.name else None, port.port) for port in slice_.ports]
        for slice_ in slices
    }
    for (_, address, slice_), target in zip(ready, owners, strict=True):
        out.add(base, rdata.address(address))
        for owner, port_number in srv_owners[id(slice_)]:
            if owner is not None:
                out.add_srv(owner, port_number, target)
            out.add_srv(base, port_number, target)
    return out.result()


def _srv_owner(port: ServicePort, base: bytes) -> bytes:
    """`_<port>._<proto>.<service name>` (spec 2.3.2)."""
    return label_wire("_" + port.name) + label_wire(port.protocol.label) + base


def namespace_records(namespace: str, domain: str, pods_enabled: bool) -> RecordSets:
    """The empty non-terminals an existing namespace makes: `<ns>.svc` and `<ns>.pod` NODATA."""
    sets: RecordTuples = {to_wire(f"{namespace}.svc.{domain}"): ()}
    if pods_enabled:
        sets[to_wire(f"{namespace}.pod.{domain}")] = ()
    return sets


def apex_records(domain: str, ns_addresses: Iterable[IPAddress], pods_enabled: bool) -> RecordSets:
    """The records at and just below the zone apex (the SOA is served by the zone itself).

    NS and the nameserver's own name follow CoreDNS: `ns.dns.<zone>`, whose addresses are those of
    the cluster DNS Service. `svc` and `pod` exist as empty non-terminals (NODATA).
    """
    ns_name = f"ns.dns.{domain}"
    sets: RecordTuples = {
        to_wire(domain): (rdata.pointer(rdata.NS, ns_name),),
        to_wire(ns_name): tuple(rdata.address(ip) for ip in dict.fromkeys(ns_addresses)),
        to_wire(f"dns-version.{domain}"): (rdata.txt(SCHEMA_VERSION),),
        to_wire(f"svc.{domain}"): (),
    }
    if pods_enabled:
        sets[to_wire(f"pod.{domain}")] = ()
    return sets
