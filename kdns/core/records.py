"""What each cluster object publishes: owner names and their records.

Every rule that decides whether a name exists lives here; the zone only indexes what these
functions return. A name mapped to no records exists with no records (an empty non-terminal),
which the zone answers NODATA rather than NXDOMAIN.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import chain
from typing import NamedTuple

from kdns.core import rdata
from kdns.core.message import MAX_LABEL, MAX_NAME_WIRE
from kdns.core.model import EndpointSlice, IPAddress, Kind, Service, ServicePort, ServiceType
from kdns.core.names import (
    InvalidName,
    endpoint_label,
    label_wire,
    reverse_wire,
    service_name,
    to_wire,
)
from kdns.core.rdata import Record
from kdns.core.zone import OnDemandRecords

RecordTuples = dict[bytes, tuple[Record, ...]]  # lowercased wire owner -> its records
RecordSets = Mapping[bytes, "tuple[Record, ...] | OnDemandRecords"]  # ... or who gives them on demand

SCHEMA_VERSION = "1.1.0"  # spec 2.2: the `dns-version` TXT record
# Below a base name longer than this, a label (at most 63 bytes) could push a name past 255 bytes:
# only then are endpoint names measured one by one.
_ROOM_FOR_ANY_LABEL = MAX_NAME_WIRE - 1 - MAX_LABEL


class Omission(NamedTuple):
    """A part of a valid object that DNS cannot carry: a name it would make is longer than a label
    (63 bytes) or a name (255 bytes) may be (RFC 1035 2.3.4). The rest of the object is published;
    this part is left out and reported once, naming the object and the field.
    """

    kind: str
    ref: str  # namespace/name
    field: str
    problem: str

    def __str__(self) -> str:
        return f"{self.kind} {self.ref}: field {self.field}: {self.problem}"


ReadyAddress = tuple[str, IPAddress, EndpointSlice, int]  # (label, address, its slice, endpoint index)


def _ready_addresses(service: Service, slices: Iterable[EndpointSlice], pod_names: bool = False) -> list[ReadyAddress]:
    """(label, address, slice, endpoint index) of each address DNS publishes, each once even if
    two slices briefly hold it (SPEC-NOTES 4).

    Spec 2.4.1: only ready endpoints. `publishNotReadyAddresses` publishes all of them, as the
    endpoint controller then marks them ready anyway (CoreDNS reads only `ready`).
    """
    seen: set[tuple[str, IPAddress]] = set()
    out = []
    publish_all = service.publish_not_ready_addresses
    for slice_ in slices:
        for index, endpoint in enumerate(slice_.endpoints):
            if not (endpoint.ready or publish_all):
                continue
            for address in endpoint.addresses:
                label = endpoint_label(endpoint, address, pod_names)
                if (label, address) not in seen:
                    seen.add((label, address))
                    out.append((label, address, slice_, index))
    return out


def _fitting(base: bytes, ready: list[ReadyAddress], omitted: list[Omission]) -> list[ReadyAddress]:
    """The ready addresses whose name below `base` fits in 255 bytes; the others are omitted.

    Only a long cluster domain with long namespace and service names leaves too little room."""
    if len(base) <= _ROOM_FOR_ANY_LABEL:
        return ready
    fitting = []
    for item in ready:
        label, _, slice_, index = item
        if len(base) + 1 + len(label) <= MAX_NAME_WIRE:
            fitting.append(item)
            continue
        field = f"endpoints[{index}].hostname" if slice_.endpoints[index].hostname else f"endpoints[{index}].addresses"
        omitted.append(
            Omission(
                Kind.ENDPOINT_SLICE,
                f"{slice_.namespace}/{slice_.name}",
                field,
                f"the endpoint name {label!r} under its Service would be longer than {MAX_NAME_WIRE} bytes: "
                "it is left out of DNS",
            )
        )
    return fitting


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


def _endpoint_records(
    base: bytes, ready: Iterable[ReadyAddress], out: _Builder, address_records: list[Record] | None = None
) -> list[bytes]:
    """Each published address's name below the service and its PTR record; returns the names,
    and appends each address's record to `address_records` if given. Every name must fit
    (`_fitting`)."""
    owners = []
    for label, address, _, _ in ready:
        owner = label_wire(label) + base
        owners.append(owner)
        record = rdata.address(address)
        out.add(owner, record)
        out.add(reverse_wire(address), rdata.Record(rdata.PTR, owner))
        if address_records is not None:
            address_records.append(record)
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

    __slots__ = ("_pod_names", "_service", "_sets", "_slices", "parent")

    def __init__(self, base: bytes, service: Service, slices: Sequence[EndpointSlice], pod_names: bool = False) -> None:
        self.parent = base
        self._service = service
        self._slices = slices
        self._pod_names = pod_names
        self._sets: RecordTuples | None = None

    def records_at(self, key: bytes) -> tuple[Record, ...]:
        return self._built().get(key, ())

    def children(self) -> list[bytes]:
        return [key for key in self._built() if key.endswith(self.parent) and len(key) > len(self.parent)]

    def _built(self) -> RecordTuples:
        if self._sets is None:
            out = _Builder()
            addresses = _ready_addresses(self._service, self._slices, self._pod_names)
            ready = _fitting(self.parent, addresses, [])  # reported when published
            _endpoint_records(self.parent, ready, out)
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


def service_records(
    service: Service,
    slices: Sequence[EndpointSlice],
    domain: str,
    omitted: list[Omission],
    parts: PartCache | None = None,
    *,
    pod_names: bool = False,
    ignore_empty: bool = False,
) -> RecordSets:
    """Every record a Service publishes, from the Service and its EndpointSlices (spec 2.3, 2.4).

    Spec 2.4 defines endpoint names for headless services; CoreDNS publishes them (and their PTR
    records) for the endpoints of every service, which we follow where the spec is silent. For a
    ClusterIP Service they are given on demand (`EndpointNames`).
    A headless service with no ready endpoint publishes nothing, so its name is NXDOMAIN.

    Names are built in wire form: the service's name is encoded once, and each endpoint's name is
    one label in front of it, used as owner, PTR target and SRV target alike.

    A part that would make a name too long for DNS is left out and noted in `omitted`; the rest
    is published (a port name of 63 characters is valid in Kubernetes, but `_` and it are not a
    valid label).

    With `parts` (kept by the caller for this Service object, emptied when it changes), a
    headless Service's slices are built only when they change (`HeadlessPart`).

    `pod_names`: endpoints without a hostname are named after their Pod (CoreDNS's
    `endpoint_pod_names`). `ignore_empty`: a ClusterIP Service with no ready endpoint publishes
    only its PTR records, so its name is NXDOMAIN and a client's search path goes on (CoreDNS's
    `ignore empty_service`, which skips such a Service when it looks names up, not addresses).
    """
    try:
        base = to_wire(service_name(service.namespace, service.name, domain))
    except InvalidName:
        problem = f"the Service's name would be longer than {MAX_NAME_WIRE} bytes: it is left out of DNS"
        omitted.append(Omission(Kind.SERVICE, _ref(service), "metadata.name", problem))
        return {}
    if service.type is ServiceType.EXTERNAL_NAME:  # spec 2.5
        return {base: (rdata.pointer(rdata.CNAME, service.external_name),)}

    out = _Builder()
    if service.type is ServiceType.CLUSTER_IP:  # spec 2.3
        if ignore_empty and service.cluster_ips and not _published_addresses(service, slices):
            for ip in service.cluster_ips:
                out.add(reverse_wire(ip), rdata.Record(rdata.PTR, base))
            return out.result()
        for ip in service.cluster_ips:
            out.add(base, rdata.address(ip))
            out.add(reverse_wire(ip), rdata.Record(rdata.PTR, base))
        if not service.cluster_ips:  # endpoint names alone make the service's name exist
            _endpoint_records(base, _fitting(base, _ready_addresses(service, slices, pod_names), omitted), out)
            return out.result()
        for index, port in enumerate(service.ports):
            if port.name:
                owner = _srv_owner(port, base, service, f"spec.ports[{index}].name", omitted)
                if owner is not None:
                    out.add_srv(owner, port.port, base)
            # CoreDNS: an SRV query for the bare service name lists every port.
            out.add_srv(base, port.port, base)
        sets: dict[bytes, tuple[Record, ...] | OnDemandRecords] = dict(out.result())  # a few names
        addresses = _published_addresses(service, slices)
        if addresses:
            if len(base) > _ROOM_FOR_ANY_LABEL:
                _fitting(base, _ready_addresses(service, slices, pod_names), omitted)  # reported now, not when asked
            names = EndpointNames(base, service, slices, pod_names)
            for address in addresses:
                reverse = reverse_wire(address)
                held = sets.get(reverse)
                # An endpoint at one of the Service's own cluster IPs: both PTRs, given up front.
                if held is None:
                    sets[reverse] = names
                else:
                    assert not isinstance(held, OnDemandRecords)  # one contributor's own PTR records
                    sets[reverse] = (*held, *names.records_at(reverse))
        return sets

    # headless, spec 2.4: the EndpointSlice's ports, one SRV per ready endpoint
    if parts is None:
        return _headless_records(service, slices, base, omitted, pod_names)
    used = _kept_parts(service, slices, base, parts, pod_names)
    merged = _merged_parts(base, used)
    if merged is None:  # two slices share an endpoint name: merged record by record
        return _headless_records(service, slices, base, omitted, pod_names)
    for each in used:
        omitted.extend(each.omitted)
    return merged


class SliceContributions(NamedTuple):
    """A headless Service's records as the zone takes them from `headless_by_slice`: its own
    name and SRV names (which every slice adds to) as one contribution, and each slice's endpoint
    names and their PTR names as one of its own, so that an event re-indexes only the slice it
    changed. `own` maps each slice's name to the very mapping its `HeadlessPart` holds: a slice
    whose mapping is the one published before has not changed."""

    service: RecordTuples
    own: dict[str, RecordTuples]


def headless_by_slice(
    service: Service,
    slices: Sequence[EndpointSlice],
    domain: str,
    omitted: list[Omission],
    parts: PartCache,
    *,
    pod_names: bool = False,
) -> SliceContributions | None:
    """What `service_records` publishes for a headless Service with kept `parts`, split by
    slice (`SliceContributions`); None when the Service is not headless, its name cannot be
    a DNS name, or two slices share an endpoint name: then `service_records` merges them whole.

    An event on one slice of a 3,000-endpoint Service re-indexed all of its 6,000 names (4 to
    5 ms, most of it the zone comparing each name's records with those it held): now the zone
    is given the changed slice's names and the Service's few."""
    if service.type is not ServiceType.HEADLESS:
        return None
    try:
        base = to_wire(service_name(service.namespace, service.name, domain))
    except InvalidName:
        return None
    used = _kept_parts(service, slices, base, parts, pod_names)
    if _own_names(base, used) is None:
        return None
    for each in used:
        omitted.extend(each.omitted)
    return SliceContributions(_service_sets(base, used), {part.slice_.name: part.own for part in used})


def _kept_parts(
    service: Service, slices: Sequence[EndpointSlice], base: bytes, parts: PartCache, pod_names: bool
) -> list[HeadlessPart]:
    """Each slice's part, built again only for a slice that is new or changed; the parts of
    slices gone are forgotten."""
    used: list[HeadlessPart] = []
    for slice_ in slices:
        kept = parts.get(slice_.name)
        if kept is None or kept.slice_ is not slice_:  # new or changed: only this slice is built again
            kept = parts[slice_.name] = HeadlessPart.of(service, slice_, base, pod_names)
        used.append(kept)
    if len(parts) > len(used):
        current = {slice_.name for slice_ in slices}
        for gone in [name for name in parts if name not in current]:
            del parts[gone]
    return used


def _headless_records(
    service: Service, slices: Sequence[EndpointSlice], base: bytes, omitted: list[Omission], pod_names: bool = False
) -> RecordTuples:
    """A headless Service's records built from all of its slices at once."""
    out = _Builder()
    ready = _fitting(base, _ready_addresses(service, slices, pod_names), omitted)
    owners = _endpoint_records(base, ready, out)
    srv_owners = {
        id(slice_): [
            (_srv_owner(port, base, slice_, f"ports[{index}].name", omitted) if port.name else None, port.port)
            for index, port in enumerate(slice_.ports)
        ]
        for slice_ in slices
    }
    for (_, address, slice_, _), target in zip(ready, owners, strict=True):
        out.add(base, rdata.address(address))
        for owner, port_number in srv_owners[id(slice_)]:
            if owner is not None:
                out.add_srv(owner, port_number, target)
            out.add_srv(base, port_number, target)
    return out.result()


class HeadlessPart:
    """What one EndpointSlice of a headless Service publishes, kept by the store between events
    so that an event builds only the slice it changed: one endpoint turning ready in a
    3,000-endpoint Service used to rebuild all 3,000 endpoints' records (70 to 100 ms).

    `own` holds the slice's endpoint names and their PTR names (names no other slice has, unless
    two slices briefly share an endpoint: `_merged_parts` then gives up); `addresses` its records
    at the Service's name; `srv` how many SRV targets it adds under each SRV owner, whose records
    are made per weight (the weight depends on every slice: CoreDNS's 100 / records in the set)
    and kept, since the weight seldom changes (it is 0 beyond 100 targets)."""

    __slots__ = ("_srv_records", "addresses", "omitted", "own", "slice_", "srv")

    def __init__(
        self,
        slice_: EndpointSlice,
        own: RecordTuples,
        addresses: tuple[Record, ...],
        srv: dict[bytes, list[tuple[int, bytes]]],
        omitted: tuple[Omission, ...],
    ) -> None:
        self.slice_ = slice_
        self.own = own
        self.addresses = addresses
        self.srv = srv
        self.omitted = omitted
        self._srv_records: dict[tuple[bytes, int], tuple[Record, ...]] = {}

    @classmethod
    def of(cls, service: Service, slice_: EndpointSlice, base: bytes, pod_names: bool = False) -> HeadlessPart:
        omitted: list[Omission] = []
        out = _Builder()
        ready = _fitting(base, _ready_addresses(service, [slice_], pod_names), omitted)
        address_records: list[Record] = []
        targets = _endpoint_records(base, ready, out, address_records)
        srv: dict[bytes, dict[tuple[int, bytes], None]] = {}
        owners = [
            (_srv_owner(port, base, slice_, f"ports[{index}].name", omitted) if port.name else None, port.port)
            for index, port in enumerate(slice_.ports)
        ]
        for target in targets:
            for owner, port_number in owners:
                if owner is not None:
                    srv.setdefault(owner, {})[(port_number, target)] = None
                srv.setdefault(base, {})[(port_number, target)] = None
        addresses = tuple(dict.fromkeys(address_records))
        by_owner = {owner: list(pairs) for owner, pairs in srv.items()}
        return cls(slice_, out.result(), addresses, by_owner, tuple(omitted))

    def srv_records(self, owner: bytes, weight: int) -> tuple[Record, ...]:
        found = self._srv_records.get((owner, weight))
        if found is None:
            found = tuple(rdata.srv(0, weight, port, target) for port, target in self.srv.get(owner, ()))
            self._srv_records[(owner, weight)] = found
        return found


PartCache = dict[str, HeadlessPart]  # a headless Service's parts, by slice name


def _merged_parts(base: bytes, parts: Sequence[HeadlessPart]) -> RecordTuples | None:
    """The Service's records from its slices' parts: what `_headless_records` makes, in the same
    order, or None when two slices share a name (then only that merges them right)."""
    sets = _own_names(base, parts)
    if sets is None:
        return None
    sets.update(_service_sets(base, parts))
    return sets


def _own_names(base: bytes, parts: Sequence[HeadlessPart]) -> RecordTuples | None:
    """Every slice's own names (endpoint and PTR names) together, or None when two slices
    share a name, or one is the Service's own."""
    names: RecordTuples = {}
    count = 0
    for part in parts:
        names.update(part.own)
        count += len(part.own)
    return names if len(names) == count and base not in names else None


def _service_sets(base: bytes, parts: Sequence[HeadlessPart]) -> RecordTuples:
    """The records every slice adds to: the Service's addresses at its name, and the SRV
    records at its name and its SRV names, with CoreDNS's weights over all of them."""
    sets: RecordTuples = {}
    # Chained in C: at thousands of endpoints a generator here was most of an event's time.
    addresses = tuple(dict.fromkeys(chain.from_iterable([part.addresses for part in parts])))
    counts: dict[bytes, int] = {}
    for part in parts:
        for owner, pairs in part.srv.items():
            counts[owner] = counts.get(owner, 0) + len(pairs)
    if addresses:
        sets[base] = addresses
    for owner, total in counts.items():
        weight = 100 // total  # CoreDNS: the weights of an answer add up to (about) 100
        records = tuple(chain.from_iterable([part.srv_records(owner, weight) for part in parts]))
        sets[owner] = sets.get(owner, ()) + records
    return sets


def _srv_owner(
    port: ServicePort, base: bytes, owner_object: Service | EndpointSlice, field: str, omitted: list[Omission]
) -> bytes | None:
    """`_<port>._<proto>.<service name>` (spec 2.3.2), or None when it cannot be a DNS name."""
    label = "_" + port.name
    fits = len(label) <= MAX_LABEL and len(base) + 2 + len(label) + len(port.protocol.label) <= MAX_NAME_WIRE
    # The API server takes only IANA service names (ASCII); a snapshot may hold anything.
    if label.isascii() and fits:
        return label_wire(label) + label_wire(port.protocol.label) + base
    if not label.isascii():
        problem = f"the SRV label {label!r} is not ASCII"
    elif len(label) > MAX_LABEL:
        problem = f"the SRV label {label!r} is longer than {MAX_LABEL} bytes"
    else:
        problem = f"the SRV name for port {port.name!r} would be longer than {MAX_NAME_WIRE} bytes"
    kind = Kind.SERVICE if isinstance(owner_object, Service) else Kind.ENDPOINT_SLICE
    omitted.append(Omission(kind, _ref(owner_object), field, problem + ": this port has no SRV name"))
    return None


def _ref(obj: Service | EndpointSlice) -> str:
    return f"{obj.namespace}/{obj.name}"


def namespace_records(namespace: str, domain: str, pods_enabled: bool, omitted: list[Omission]) -> RecordSets:
    """The empty non-terminals an existing namespace makes: `<ns>.svc` and `<ns>.pod` NODATA."""
    sets: RecordTuples = {}
    for zone in ("svc", "pod") if pods_enabled else ("svc",):
        try:
            sets[to_wire(f"{namespace}.{zone}.{domain}")] = ()
        except InvalidName:
            problem = f"{namespace}.{zone}.{domain} would be longer than {MAX_NAME_WIRE} bytes"
            omitted.append(Omission(Kind.NAMESPACE, namespace, "metadata.name", problem))
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
