"""`kdns explain`: what kdns answers for a name, and why, in plain words.

The answer itself comes from the same stages that answer queries; this module reads the same
store to say which objects the answer comes from, which rule publishes it (a section of the
Kubernetes DNS-Based Service Discovery specification 1.1.0, or the CoreDNS behaviour kdns
follows), and for a name that does not resolve, why, and the nearest name that does.

The caller gives the store and what it knows of forwarding; nothing here does I/O. A report,
not a stage: it lives beside the command line, outside the core.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from dnslib import QTYPE, RCODE, DNSError, DNSRecord

from kdns.core import wire
from kdns.core.blocks import ServerBlock, ServerBlocks
from kdns.core.cluster_zone import ClusterZone
from kdns.core.model import EndpointSlice, IPAddress, Kind, Pod, Service, ServiceType
from kdns.core.names import REVERSE_ZONES, endpoint_label, parse_pod_label
from kdns.core.stage import Reply, ReplyOptions, Request
from kdns.core.store import ClusterStore, PodMode

SPEC = "Kubernetes DNS spec 1.1.0"


@dataclass(frozen=True)
class Explanation:
    """What kdns answers for (`name`, `qtype`) and why."""

    name: str
    qtype: str
    rcode: str  # NOERROR, NXDOMAIN, ...; FORWARDED when the name is asked upstream
    answer: tuple[str, ...]  # the answer section, one record a line
    reason: str  # why, in plain words
    rule: str  # the spec section or CoreDNS behaviour that decides it
    objects: tuple[str, ...] = ()  # the objects the answer comes from: "Service prod/web"
    nearest: str | None = None  # for a name that does not resolve: one that does, and why
    forwarded_to: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        nodata = self.rcode == "NOERROR" and not self.answer
        lines = [f"{self.name}. {self.qtype}: {self.rcode}{' (no records of this type: NODATA)' if nodata else ''}"]
        lines += [f"  {record}" for record in self.answer]
        lines.append(f"why: {self.reason}")
        lines.append(f"rule: {self.rule}")
        if self.objects:
            lines.append("from: " + "; ".join(self.objects))
        if self.forwarded_to:
            lines.append("forwarded to: " + ", ".join(self.forwarded_to))
        if self.nearest:
            lines.append(f"nearest: {self.nearest}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Context:
    """What kdns is configured with, beyond the store."""

    namespaces: tuple[str, ...] = ()  # --namespaces: served only these (empty: all)
    upstreams: tuple[str, ...] = ()
    upstreams_from: str = "--upstream"
    stubs: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass
class _Why:
    reason: str
    rule: str
    objects: list[str] = field(default_factory=list)
    nearest: str | None = None


def explain(store: ClusterStore, name: str, qtype: str = "A", context: Context = Context()) -> Explanation:
    """What kdns answers for `name` and `qtype`, and why."""
    name = name.rstrip(".").lower()
    qtype = qtype.upper()
    forwarding = bool(context.upstreams or context.stubs)
    rcode, answer = _ask(store, name, qtype, forwarding)
    domain = store.domain
    if not _under(name, domain) and not _reverse(name):
        why, upstreams = _outside(name, context)
        return Explanation(
            name, qtype, "FORWARDED" if upstreams else rcode, (), why.reason, why.rule, (), None, upstreams
        )
    if _reverse(name):
        why = _reverse_why(store, name, rcode)
        if rcode == "REFUSED" and context.upstreams:  # not kdns's: CoreDNS's fallthrough to `forward`
            return Explanation(
                name, qtype, "FORWARDED", (), why.reason, why.rule, tuple(why.objects), None, context.upstreams
            )
    else:
        labels = name[: -len(domain)].rstrip(".").split(".") if name != domain else []
        why = _cluster_why(store, labels, qtype, rcode, bool(answer), context)
    return Explanation(name, qtype, rcode, answer, why.reason, why.rule, tuple(why.objects), why.nearest)


def _ask(store: ClusterStore, name: str, qtype: str, forwarding: bool) -> tuple[str, tuple[str, ...]]:
    """The reply a client would get over TCP, from the same stages that answer queries: the
    cluster zone's block, and nothing forwarded (a name kdns would forward is REFUSED here)."""
    options = ReplyOptions(recursion_available=forwarding)
    zones = (store.domain, *REVERSE_ZONES)
    blocks = ServerBlocks(
        lambda _: [
            ServerBlock(zones, [ClusterZone(store.zone, options, synced=lambda: True)], options),
            ServerBlock((".",), [], options),
        ]
    )
    try:
        query = DNSRecord.question(name, qtype)
    except Exception as error:  # dnslib: an unknown type name
        raise ValueError(f"{qtype!r} is not a record type") from error
    packet = bytes(query.pack())
    try:
        parsed_query = wire.checked(packet, wire.parse_query(packet))
    except wire.QueryError:
        return "FORMERR", ()
    outcome = blocks.resolve(Request.of(parsed_query, True, None, options))
    if not isinstance(outcome, Reply):
        return "REFUSED", ()
    parsed = DNSRecord.parse(outcome.message)
    return str(RCODE.get(parsed.header.rcode)), tuple(" ".join(str(rr).split()) for rr in parsed.rr)


def _under(name: str, domain: str) -> bool:
    return name == domain or name.endswith("." + domain)


def _reverse(name: str) -> bool:
    return any(_under(name, zone) for zone in REVERSE_ZONES)


def _outside(name: str, context: Context) -> tuple[_Why, tuple[str, ...]]:
    for domain, upstreams in context.stubs:
        if _under(name, domain):
            return _Why(
                f"the name is outside the cluster domain, under the stub domain {domain}: it is asked of that "
                "domain's own resolvers",
                "kube-dns stubDomains (CoreDNS: a `forward` block for the domain)",
            ), upstreams
    if context.upstreams:
        return _Why(
            f"the name is outside the cluster domain and the reverse zones: it is forwarded to the upstream "
            f"resolvers (from {context.upstreams_from}) and their answer cached",
            "CoreDNS's `forward . /etc/resolv.conf` and `cache` in kubeadm's Corefile",
        ), context.upstreams
    return _Why(
        f"the name is outside the cluster domain and kdns has no upstream resolver ({context.upstreams_from} "
        "names none): it answers REFUSED",
        "RFC 1035 4.1.1 (REFUSED: the server will not answer for this name)",
    ), ()


# -- names under the cluster domain ------------------------------------------------------------


def _cluster_why(
    store: ClusterStore, labels: list[str], qtype: str, rcode: str, answered: bool, context: Context
) -> _Why:
    domain = store.domain
    if not labels:
        return _Why(
            "the cluster domain's apex: kdns is authoritative for it (SOA and NS)",
            f"{SPEC} 2.1 (the zone); SOA and NS as CoreDNS's kubernetes plugin gives them",
        )
    if labels == ["dns-version"]:
        return _Why("the version of the DNS specification kdns implements", f"{SPEC} 2.2 (schema version)")
    zone = labels[-1]
    if zone == "svc":
        return _svc_why(store, labels[:-1], qtype, rcode, answered, context)
    if zone == "pod":
        return _pod_why(store, labels[:-1], rcode, context)
    return _Why(
        f"nothing is published under {'.'.join(labels)}.{domain}: only svc.{domain}, pod.{domain} and "
        f"dns-version.{domain} exist in the cluster domain",
        f"{SPEC} 2.1 (only the names the schema defines exist)",
    )


def _svc_why(store: ClusterStore, labels: list[str], qtype: str, rcode: str, answered: bool, context: Context) -> _Why:
    domain = store.domain
    if not labels:
        return _Why(f"svc.{domain} exists with no records of its own", f"{SPEC} 2.1 (an empty non-terminal)")
    namespace = labels[-1]
    outside = _filtered_out(namespace, context)
    if outside is not None:
        return outside
    if len(labels) == 1:
        exists = store.namespace_exists(namespace)
        return _Why(
            f"the namespace {namespace} {'exists' if exists else 'does not exist'}: "
            f"{'its name is NODATA (no records of its own)' if exists else 'so its name does not either'}",
            "CoreDNS: a namespace's name exists while the namespace does",
            [f"Namespace {namespace}"] if exists else [],
        )
    service_label = labels[-2]
    key = (namespace, service_label)
    service = store.services.get(key)
    if service is None:
        return _missing_service(store, namespace, service_label)
    slices = store.slices_of(key)
    rest = labels[:-2]
    if not rest:
        return _service_name_why(service, slices, qtype, rcode, answered, domain)
    if len(rest) == 1 and not rest[0].startswith("_"):
        return _endpoint_why(service, slices, rest[0], domain)
    return _srv_why(service, slices, rest, rcode, domain)


def _filtered_out(namespace: str, context: Context) -> _Why | None:
    if context.namespaces and namespace not in context.namespaces:
        return _Why(
            f"the namespace {namespace} is outside --namespaces ({', '.join(context.namespaces)}): kdns does not "
            "serve it, so none of its names exist",
            "CoreDNS's kubernetes `namespaces` option",
        )
    return None


def _missing_service(store: ClusterStore, namespace: str, name: str) -> _Why:
    domain = store.domain
    elsewhere = sorted(ns for ns, service in store.services if service == name and ns != namespace)
    namespace_exists = store.namespace_exists(namespace)
    reason = f"there is no Service {namespace}/{name}"
    if not namespace_exists:
        reason += f" (no namespace {namespace} is known either)"
    nearest = None
    if elsewhere:
        nearest = f"{name}.{elsewhere[0]}.svc.{domain} (a Service {name} exists in namespace {', '.join(elsewhere)})"
    else:
        similar = sorted((abs(len(service) - len(name)), service) for ns, service in store.services if ns == namespace)
        if similar:
            nearest = f"{similar[0][1]}.{namespace}.svc.{domain} (a Service in the same namespace)"
    return _Why(reason, f"{SPEC} 2.3.1 / 2.4.1 (a name exists for each Service)", nearest=nearest)


def _service_name_why(
    service: Service, slices: Sequence[EndpointSlice], qtype: str, rcode: str, answered: bool, domain: str
) -> _Why:
    ref = f"Service {service.namespace}/{service.name}"
    if service.type is ServiceType.EXTERNAL_NAME:
        return _Why(
            f"an ExternalName Service: its name is an alias (CNAME) of {service.external_name}, which kdns "
            "then resolves as a client would",
            f"{SPEC} 2.5 (CNAME for an ExternalName Service)",
            [ref],
        )
    if service.type is ServiceType.CLUSTER_IP:
        if not service.cluster_ips:
            return _Why(
                "the Service has no cluster IP yet; its name exists through its endpoints' names only",
                "CoreDNS: a ClusterIP Service without an address publishes no A record",
                [ref],
            )
        ips = ", ".join(str(ip) for ip in service.cluster_ips)
        if qtype in ("A", "AAAA") and not answered:
            family = "IPv6" if qtype == "AAAA" else "IPv4"
            return _Why(
                f"the Service's cluster IPs ({ips}) include no {family} address: the name exists, with no {qtype}",
                f"{SPEC} 2.3.1 (A and AAAA records for a ClusterIP Service's addresses); RFC 2308 2.2 (NODATA)",
                [ref],
            )
        return _Why(
            f"a ClusterIP Service: its name answers with its cluster IP ({ips}), whatever its endpoints",
            f"{SPEC} 2.3.1 (A/AAAA records for a ClusterIP Service)",
            [ref],
        )
    ready, not_ready = _endpoints(service, slices)
    objects = [ref] + [f"EndpointSlice {s.namespace}/{s.name}" for s in slices]
    if not ready:
        detail = (
            f"its {len(not_ready)} endpoint(s) are not ready ({', '.join(not_ready[:5])})"
            if not_ready
            else "it has no endpoints (no EndpointSlice names it, or they are empty)"
        )
        return _Why(
            f"a headless Service with no ready endpoint: {detail}, so its name does not exist",
            f"{SPEC} 2.4.1 (a headless Service's records are its ready endpoints' addresses)",
            objects,
        )
    return _Why(
        f"a headless Service: its name answers with the addresses of its {len(ready)} ready endpoint(s)"
        + (f"; {len(not_ready)} not ready left out" if not_ready else ""),
        f"{SPEC} 2.4.1 (A/AAAA records for each ready endpoint of a headless Service)",
        objects,
    )


def _endpoint_why(service: Service, slices: Sequence[EndpointSlice], label: str, domain: str) -> _Why:
    ref = f"Service {service.namespace}/{service.name}"
    base = f"{service.name}.{service.namespace}.svc.{domain}"
    for slice_ in slices:
        for index, endpoint in enumerate(slice_.endpoints):
            for address in endpoint.addresses:
                if endpoint_label(endpoint, address) != label:
                    continue
                objects = [ref, f"EndpointSlice {slice_.namespace}/{slice_.name} endpoints[{index}] ({address})"]
                named = "its hostname" if endpoint.hostname else "its address with dashes (it has no hostname)"
                if endpoint.ready or service.publish_not_ready_addresses:
                    return _Why(
                        f"an endpoint of the Service, published under {named}",
                        f"{SPEC} 2.4.1 (a name for each endpoint with a hostname); CoreDNS names the others by "
                        "their address, and does so for ClusterIP Services too",
                        objects,
                    )
                return _Why(
                    "the endpoint exists but is not ready: only ready endpoints are published",
                    f"{SPEC} 2.4.1 (ready endpoints only)",
                    objects,
                    nearest=base,
                )
    names = sorted({endpoint_label(e, a) for s in slices for e in s.endpoints for a in e.addresses})
    return _Why(
        f"no endpoint of the Service is named {label}",
        f"{SPEC} 2.4.1 (a name for each endpoint)",
        [ref] + [f"EndpointSlice {s.namespace}/{s.name}" for s in slices],
        nearest=f"{names[0]}.{base} (an endpoint of the Service)" if names else base,
    )


def _srv_why(service: Service, slices: Sequence[EndpointSlice], rest: list[str], rcode: str, domain: str) -> _Why:
    ref = f"Service {service.namespace}/{service.name}"
    base = f"{service.name}.{service.namespace}.svc.{domain}"
    ports = list(service.ports) if service.type is ServiceType.CLUSTER_IP else [p for s in slices for p in s.ports]
    if len(rest) == 1:  # `_tcp.<service>`: exists while a named port of the protocol does
        return _Why(
            f"{rest[0]}.{base} exists with no records while a named port of that protocol does",
            f"{SPEC} 2.3.2 (an empty non-terminal above the SRV names)",
            [ref],
        )
    port_label, protocol_label = rest[-2], rest[-1]
    if len(rest) > 2 or not port_label.startswith("_") or not protocol_label.startswith("_"):
        return _Why(f"nothing is published at {'.'.join(rest)}.{base}", f"{SPEC} 2.3.2 / 2.4.2", [ref])
    wanted = port_label[1:]
    protocol = protocol_label[1:]
    for port in ports:
        if port.name == wanted and port.protocol.label == protocol_label:
            if rcode == "NOERROR":
                return _Why(
                    f"the named port {port.name} ({protocol}, {port.port}): one SRV record per "
                    + ("ready endpoint" if service.type is ServiceType.HEADLESS else "Service"),
                    f"{SPEC} {'2.4.2' if service.type is ServiceType.HEADLESS else '2.3.2'} (SRV records)",
                    [ref],
                )
            return _Why(
                f"the port {port.name} exists but the Service has no ready endpoint to point at",
                f"{SPEC} 2.4.2 (SRV records for ready endpoints)",
                [ref],
                nearest=base,
            )
    unnamed = [port for port in ports if not port.name and port.protocol.label == protocol_label]
    named = sorted({f"_{port.name}.{port.protocol.label}.{base}" for port in ports if port.name})
    if unnamed:
        reason = (
            f"the Service's port {unnamed[0].port} ({protocol}) is unnamed, so it has no SRV record: only named "
            "ports do"
        )
    else:
        reason = f"the Service has no port named {wanted} with protocol {protocol}"
    return _Why(
        reason,
        f"{SPEC} 2.3.2 / 2.4.2 (SRV records for named ports only)",
        [ref],
        nearest=named[0] if named else base,
    )


def _pod_why(store: ClusterStore, labels: list[str], rcode: str, context: Context) -> _Why:
    domain = store.domain
    mode = store.pod_mode
    if mode is PodMode.DISABLED:
        return _Why(
            "pod records are disabled (--pods disabled)",
            "CoreDNS's kubernetes `pods disabled` (the default there)",
        )
    if len(labels) != 2:
        return _Why(
            f"pod names are <address with dashes>.<namespace>.pod.{domain}",
            "CoreDNS's kubernetes `pods` option (the spec's pod records are deprecated)",
        )
    label, namespace = labels
    outside = _filtered_out(namespace, context)
    if outside is not None:
        return outside
    address = parse_pod_label(label)
    if address is None:
        return _Why(f"{label} does not spell an address", "CoreDNS's kubernetes `pods` option (findPods)")
    if mode is PodMode.INSECURE:
        exists = store.namespace_exists(namespace)
        return _Why(
            "with --pods insecure any address in an existing namespace answers, Pod or not"
            + ("" if exists else f"; the namespace {namespace} does not exist"),
            "CoreDNS's kubernetes `pods insecure`",
        )
    owners = [
        f"Pod {ns}/{name}" for ns, name in store.keys(Kind.POD, namespace) if _pod_has(store, (ns, name), address)
    ]
    if owners:
        return _Why(
            "with --pods verified, a Pod in the namespace has this address", "CoreDNS's `pods verified`", owners
        )
    return _Why(
        f"with --pods verified only a Pod's own address answers, and no Pod in {namespace} has {address}",
        "CoreDNS's `pods verified`",
    )


def _pod_has(store: ClusterStore, key: tuple[str, str], address: IPAddress) -> bool:
    pod = store.get(Kind.POD, key)
    return isinstance(pod, Pod) and address in pod.ips


# -- reverse names ---------------------------------------------------------------------------


def _reverse_why(store: ClusterStore, name: str, rcode: str) -> _Why:
    address = _address_of_reverse(name)
    if address is None:
        return _Why(
            "not the reverse name of one address: kdns answers only whole addresses' PTR names",
            f"{SPEC} 2.3.3 / 2.4.3",
        )
    objects = [
        f"Service {s.namespace}/{s.name} (cluster IP)" for s in store.services.values() if address in s.cluster_ips
    ]
    for slice_ in store.slices.values():
        for index, endpoint in enumerate(slice_.endpoints):
            if address in endpoint.addresses:
                state = "ready" if endpoint.ready else "not ready"
                objects.append(f"EndpointSlice {slice_.namespace}/{slice_.name} endpoints[{index}] ({state})")
    if rcode == "NOERROR":
        return _Why(
            f"{address} is a cluster IP or a ready endpoint's address: its PTR names the Service or endpoint",
            f"{SPEC} 2.3.3 / 2.4.3 (PTR records)",
            objects,
        )
    return _Why(
        f"no Service or ready endpoint has {address}: the name is not kdns's"
        + (" (it is forwarded upstream when kdns has an upstream)" if rcode == "REFUSED" else ""),
        f"{SPEC} 2.3.3 / 2.4.3; CoreDNS's `fallthrough in-addr.arpa ip6.arpa`",
        objects,
    )


def _address_of_reverse(name: str) -> IPAddress | None:
    try:
        if name.endswith(".in-addr.arpa"):
            parts = name[: -len(".in-addr.arpa")].split(".")
            return ipaddress.IPv4Address(".".join(reversed(parts))) if len(parts) == 4 else None
        if name.endswith(".ip6.arpa"):
            nibbles = name[: -len(".ip6.arpa")].split(".")
            if len(nibbles) != 32:
                return None
            return ipaddress.IPv6Address(int("".join(reversed(nibbles)), 16))
    except ValueError:
        return None
    return None


# -- reading the store -------------------------------------------------------------------------


def _endpoints(service: Service, slices: Sequence[EndpointSlice]) -> tuple[list[str], list[str]]:
    ready: list[str] = []
    not_ready: list[str] = []
    for slice_ in slices:
        for endpoint in slice_.endpoints:
            for address in endpoint.addresses:
                shown = f"{endpoint_label(endpoint, address)} ({address})"
                (ready if endpoint.ready or service.publish_not_ready_addresses else not_ready).append(shown)
    return ready, not_ready


def qtype_known(qtype: str) -> bool:
    """Whether dnslib knows the type name (as `dig` would take it)."""
    try:
        getattr(QTYPE, qtype.upper())
    except (DNSError, AttributeError):
        return False
    return True
