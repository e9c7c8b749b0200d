"""API-shaped dicts (the JSON or YAML the API server returns) to the frozen model.

This is the only module that knows Kubernetes API field names. A malformed object raises
`ConversionError` naming its kind, namespace/name and the field, so that the caller can report it
and go on with the other objects.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import re
import sys
from collections.abc import Callable
from socket import AF_INET, AF_INET6, inet_pton  # pure functions of the C library: no I/O
from typing import Any

from kdns.core.model import (
    ClusterObject,
    Endpoint,
    EndpointSlice,
    IPAddress,
    Kind,
    Namespace,
    Pod,
    Protocol,
    Service,
    ServicePort,
    ServiceType,
)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"  # joins an EndpointSlice to its Service
DEFAULT_NAMESPACE = "default"  # what kubectl assumes for a namespaced object without one

# A DNS label as Kubernetes names use them (RFC 1123 label, case-insensitive here: it is folded).
_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# A label of an ExternalName target: any LDH label, underscores allowed as in real-world names.
_EXTERNAL_LABEL_RE = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")

KINDS = tuple(Kind)
ObjectKey = tuple[str, str]  # (namespace, name); ("", name) for a Namespace


class ConversionError(ValueError):
    """An API object that cannot be served; names the object and the field at fault."""

    def __init__(self, kind: str, ref: str, field: str, problem: str) -> None:
        self.kind = kind
        self.ref = ref
        self.field = field
        self.problem = problem
        super().__init__(f"{kind} {ref}: field {field}: {problem}")


@functools.cache
def _parts(path: str) -> tuple[str, ...]:
    """A field path's parts (paths are the constants of this module)."""
    return tuple(path.split("."))


class _Reader:
    """Typed access to one object's fields, raising `ConversionError` that names the field.

    Objects are parsed JSON or YAML, so mappings are tested as `dict`: a `Mapping` test goes
    through the ABC machinery, a measurable cost over hundreds of thousands of endpoints."""

    def __init__(self, kind: str, obj: Any) -> None:
        self.kind = kind
        self.ref = "?"
        if not isinstance(obj, dict):
            raise ConversionError(kind, self.ref, "(object)", f"expected a mapping, got {_type(obj)}")
        self.obj = obj

    def fail(self, field: str, problem: str) -> ConversionError:
        return ConversionError(self.kind, self.ref, field, problem)

    def get(self, path: str, expected: type | tuple[type, ...], default: Any = None) -> Any:
        node: Any = self.obj
        for depth, part in enumerate(_parts(path)):
            if node is None:
                return default
            if not isinstance(node, dict):
                raise self.fail(".".join(_parts(path)[:depth]), f"expected a mapping, got {_type(node)}")
            node = node.get(part)
        if node is None:
            return default
        if expected is int and isinstance(node, bool):
            raise self.fail(path, f"expected {_type_name(expected)}, got {_type(node)}")
        if not isinstance(node, expected):
            raise self.fail(path, f"expected {_type_name(expected)}, got {_type(node)}")
        return node

    def label(self, path: str, value: Any, what: str) -> str:
        if not isinstance(value, str) or not _LABEL_RE.match(value.lower()):
            raise self.fail(path, f"{value!r} is not a valid {what} (a DNS label)")
        return value.lower()

    def identify(self, namespaced: bool) -> tuple[str, str]:
        name = self.get("metadata.name", str)
        if name is None:
            raise self.fail("metadata.name", "missing")
        namespace = ""
        if namespaced:
            namespace = self.get("metadata.namespace", str, None) or DEFAULT_NAMESPACE
            self.ref = f"{namespace}/{name}"
            namespace = self.label("metadata.namespace", namespace, "namespace name")
        else:
            self.ref = name
        return namespace, name

    def ip(self, path: str, value: Any, version: int | None = None) -> IPAddress:
        address = parse_address(value) if isinstance(value, str) else None
        if address is None:
            raise self.fail(path, f"{value!r} is not an IP address")
        if version is not None and address.version != version:
            raise self.fail(path, f"{value!r} is not an IPv{version} address")
        return address

    def ports(self, path: str, allow_missing_port: bool) -> tuple[ServicePort, ...]:
        """The ports listed at `path` (an EndpointSlice port without a number means "all ports",
        which no SRV record can say: it is left out when `allow_missing_port`)."""
        out = []
        for i, item in enumerate(self.get(path, list, [])):
            if not isinstance(item, dict):
                raise self.fail(f"{path}[{i}]", f"expected a mapping, got {_type(item)}")
            name = item.get("name") or ""
            if not isinstance(name, str):
                raise self.fail(f"{path}[{i}].name", f"expected a string, got {_type(name)}")
            protocol_text = item.get("protocol") or "TCP"  # the API's default
            number = item.get("port")
            if number is None and allow_missing_port:
                continue
            protocol = _PROTOCOLS.get(protocol_text) if isinstance(protocol_text, str) else None
            if protocol is None:
                raise self.fail(f"{path}[{i}].protocol", f"{protocol_text!r} is not TCP, UDP or SCTP")
            if number.__class__ is not int or not 1 <= number <= 65535:
                raise self.fail(f"{path}[{i}].port", f"{number!r} is not a port number (1-65535)")
            out.append(_service_port(name.lower(), protocol, number))
        return tuple(out)


_PROTOCOLS = {protocol.value: protocol for protocol in Protocol}


@functools.lru_cache(maxsize=4096)
def _service_port(name: str, protocol: Protocol, number: int) -> ServicePort:
    """One shared object per distinct port: most Services use a few (`http` 80, `metrics` ...)."""
    return ServicePort(name, protocol, number)


def parse_address(text: str) -> IPAddress | None:
    """An IP address in its textual form, or None. Parsed by the C library's `inet_pton`, which
    accepts exactly what `ipaddress` does for unscoped addresses at a quarter of the cost (a
    large cluster has hundreds of thousands of endpoint addresses)."""
    try:
        return ipaddress.IPv4Address(inet_pton(AF_INET, text))
    except OSError:
        pass
    try:
        return ipaddress.IPv6Address(inet_pton(AF_INET6, text))
    except OSError:
        return None


def parse_ipv4(text: Any) -> IPAddress | None:
    """An IPv4 address, or None (the fast path of `parse_address`)."""
    try:
        return ipaddress.IPv4Address(inet_pton(AF_INET, text))
    except (OSError, TypeError):
        return None


def parse_ipv6(text: Any) -> IPAddress | None:
    """An IPv6 address, or None."""
    try:
        return ipaddress.IPv6Address(inet_pton(AF_INET6, text))
    except (OSError, TypeError):
        return None


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _type_name(expected: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", bool: "a boolean", list: "a list", dict: "a mapping"}
    if isinstance(expected, tuple):
        return " or ".join(names.get(t, t.__name__) for t in expected)
    return names.get(expected, expected.__name__)


def convert_namespace(obj: Any) -> Namespace:
    r = _Reader("Namespace", obj)
    _, name = r.identify(namespaced=False)
    return Namespace(r.label("metadata.name", name, "namespace name"))


def convert_service(obj: Any) -> Service:
    r = _Reader("Service", obj)
    namespace, name = r.identify(namespaced=True)
    name = r.label("metadata.name", name, "service name")
    type_text = r.get("spec.type", str, "ClusterIP")
    if type_text not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        raise r.fail("spec.type", f"{type_text!r} is not a Service type")
    cluster_ip = r.get("spec.clusterIP", str, "")
    cluster_ips_raw = r.get("spec.clusterIPs", list, [])
    external_name = ""
    cluster_ips: tuple[IPAddress, ...] = ()
    if type_text == "ExternalName":
        service_type = ServiceType.EXTERNAL_NAME
        external_name = _external_name(r, r.get("spec.externalName", str, ""))
    elif cluster_ip == "None" or cluster_ips_raw[:1] == ["None"]:
        service_type = ServiceType.HEADLESS
    else:
        service_type = ServiceType.CLUSTER_IP
        texts = cluster_ips_raw or ([cluster_ip] if cluster_ip else [])
        cluster_ips = tuple(r.ip(f"spec.clusterIPs[{i}]", t) for i, t in enumerate(texts))
        if len({ip.version for ip in cluster_ips}) != len(cluster_ips):
            raise r.fail("spec.clusterIPs", "holds two addresses of the same family")
    ports = r.ports("spec.ports", allow_missing_port=False)
    publish = r.get("spec.publishNotReadyAddresses", bool, False)
    has_selector = bool(r.get("spec.selector", dict, {}))
    return Service(namespace, name, service_type, cluster_ips, ports, external_name, publish, has_selector)


def _external_name(r: _Reader, text: str) -> str:
    target = text.rstrip(".").lower()
    if not target:
        raise r.fail("spec.externalName", "missing for a Service of type ExternalName")
    try:
        ipaddress.ip_address(target)
    except ValueError:
        pass
    else:  # CoreDNS publishes nothing for an address here: a CNAME must name a host
        raise r.fail("spec.externalName", f"{text!r} is an IP address, not a DNS name")
    labels = target.split(".")
    if len(target) > 253 or not all(_EXTERNAL_LABEL_RE.match(label) for label in labels):
        raise r.fail("spec.externalName", f"{text!r} is not a valid DNS name")
    return target


def convert_endpoint_slice(obj: Any) -> EndpointSlice | None:
    """The slice, or None for one that DNS never uses (FQDN addresses, no owning Service)."""
    r = _Reader("EndpointSlice", obj)
    namespace, name = r.identify(namespaced=True)
    address_type = r.get("addressType", str)
    if address_type not in ("IPv4", "IPv6", "FQDN"):
        raise r.fail("addressType", f"{address_type!r} is not IPv4, IPv6 or FQDN")
    labels = r.get("metadata.labels", dict, {})
    service_name = labels.get(SERVICE_NAME_LABEL)
    if address_type == "FQDN" or service_name is None:
        return None
    service_name = r.label(f"metadata.labels[{SERVICE_NAME_LABEL}]", service_name, "service name")
    version = 4 if address_type == "IPv4" else 6
    parse = parse_ipv4 if version == 4 else parse_ipv6
    endpoints = []
    # The loop below runs for every endpoint of the cluster: field paths for messages are made
    # only when a field is at fault.
    for i, item in enumerate(r.get("endpoints", list, [])):
        if not isinstance(item, dict):
            raise r.fail(f"endpoints[{i}]", f"expected a mapping, got {_type(item)}")
        addresses_raw = item.get("addresses")
        if not isinstance(addresses_raw, list) or not addresses_raw:
            raise r.fail(f"endpoints[{i}].addresses", "expected a non-empty list of addresses")
        if len(addresses_raw) == 1:  # nearly every endpoint (the API allows one address only, so far)
            text = addresses_raw[0]
            addresses: tuple[IPAddress, ...] = (parse(text) or _address(r, i, 0, text, version),)
        else:
            addresses = tuple([parse(text) or _address(r, i, j, text, version) for j, text in enumerate(addresses_raw)])
        conditions = item.get("conditions") or {}
        if not isinstance(conditions, dict):
            raise r.fail(f"endpoints[{i}].conditions", f"expected a mapping, got {_type(conditions)}")
        ready = conditions.get("ready")
        serving = conditions.get("serving")
        terminating = conditions.get("terminating")
        if not (ready.__class__ in _FLAG and serving.__class__ in _FLAG and terminating.__class__ in _FLAG):
            raise _condition_error(r, i, conditions)
        hostname = item.get("hostname") or ""
        if hostname:
            hostname = r.label(f"endpoints[{i}].hostname", hostname, "hostname")
        target = item.get("targetRef") or {}
        target_pod = ""
        if isinstance(target, dict) and target.get("kind") == "Pod":
            target_pod = str(target.get("name") or "")
        node_name = item.get("nodeName") or ""
        if not isinstance(node_name, str):
            raise r.fail(f"endpoints[{i}].nodeName", f"expected a string, got {_type(node_name)}")
        is_ready = ready is not False
        endpoints.append(
            Endpoint(
                addresses,
                is_ready,
                is_ready if serving is None else serving,
                terminating is True,
                hostname,
                sys.intern(node_name),
                target_pod,
            )
        )
    ports = r.ports("ports", allow_missing_port=True)
    return EndpointSlice(namespace, name, service_name, version, tuple(endpoints), ports)


_FLAG = (bool, type(None))  # what a condition may hold


def _address(r: _Reader, i: int, j: int, text: Any, version: int) -> IPAddress:
    """An endpoint address the fast parse refused: the reader names the problem (or it parses)."""
    return r.ip(f"endpoints[{i}].addresses[{j}]", text, version)


def _condition_error(r: _Reader, i: int, conditions: dict[str, Any]) -> ConversionError:
    name, value = next(
        (name, conditions[name])
        for name in ("ready", "serving", "terminating")
        if conditions.get(name).__class__ not in _FLAG
    )
    return r.fail(f"endpoints[{i}].conditions.{name}", f"expected a boolean, got {_type(value)}")


# Pods that have finished or can no longer be running: CoreDNS lists and watches Pods with the
# field selector `status.phase!=Succeeded,status.phase!=Failed,status.phase!=Unknown`
# (plugin/kubernetes/controller.go podListFunc), so such a Pod leaves its index as it finishes.
FINISHED_PHASES = frozenset({"Succeeded", "Failed", "Unknown"})


def convert_pod(obj: Any) -> Pod | None:
    """A Pod's addresses; None (so it is removed, or never added) for a Pod that is terminating
    or has finished: its address may be handed to another Pod at any moment, and a name it
    verifies, or an autopath answer from its address, would then speak for the wrong namespace.
    CoreDNS ignores terminating Pods (object/pod.go `errPodTerminating`) and lists no finished
    ones (FINISHED_PHASES)."""
    r = _Reader("Pod", obj)
    namespace, name = r.identify(namespaced=True)
    if r.get("metadata.deletionTimestamp", str) or r.get("status.phase", str) in FINISHED_PHASES:
        return None
    texts = [item.get("ip") if isinstance(item, dict) else item for item in r.get("status.podIPs", list, [])]
    if not texts:
        single = r.get("status.podIP", str)
        texts = [single] if single else []
    ips = tuple(dict.fromkeys(r.ip(f"status.podIPs[{i}].ip", t) for i, t in enumerate(texts)))
    return Pod(namespace, name, ips)


_CONVERTERS: dict[Kind, Callable[[Any], ClusterObject | None]] = {
    Kind.NAMESPACE: convert_namespace,
    Kind.SERVICE: convert_service,
    Kind.ENDPOINT_SLICE: convert_endpoint_slice,
    Kind.POD: convert_pod,
}


def convert(kind: str, obj: Any) -> ClusterObject | None:
    """Convert one API object of a kind in `KINDS`; None when DNS has no use for it."""
    return _CONVERTERS[Kind(kind)](obj)


def object_key(kind: str, raw: Any) -> ObjectKey | None:
    """(namespace, name) of an API object as sent, even a malformed one (so that a bad update can
    be told apart from others, and deleted by key); None when it has no readable name. The
    namespace is defaulted as `convert` does, and both are folded to lower case as DNS names are."""
    metadata = raw.get("metadata") if isinstance(raw, dict) else None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
        return None
    name = metadata["name"].lower()
    if kind == Kind.NAMESPACE:
        return ("", name)
    namespace = metadata.get("namespace")
    return ((namespace if isinstance(namespace, str) and namespace else DEFAULT_NAMESPACE).lower(), name)


# Set by the EndpointSlice controller to when the change that led to this version of the slice
# happened (a Pod or Service change), as RFC 3339: what DNS programming latency counts from.
TRIGGER_TIME_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"


def change_time(kind: str, raw: Any) -> float | None:
    """When the change an object carries happened in the cluster, as Unix time: an EndpointSlice's
    last-change-trigger-time annotation, a Service's creation time; None when it has none (or
    not a readable one: this only feeds a metric, and never rejects an object)."""
    metadata = raw.get("metadata") if isinstance(raw, dict) else None
    if not isinstance(metadata, dict):
        return None
    if kind == Kind.ENDPOINT_SLICE:
        annotations = metadata.get("annotations")
        text = annotations.get(TRIGGER_TIME_ANNOTATION) if isinstance(annotations, dict) else None
    elif kind == Kind.SERVICE:
        text = metadata.get("creationTimestamp")
    else:
        return None
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.datetime.fromisoformat(text)  # RFC 3339, with "Z" and any fraction (3.11)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None  # RFC 3339 times carry their offset: without one, it is not the API's
    return moment.timestamp()


def key_of(obj: ClusterObject) -> ObjectKey:
    """The key of a converted object, as `object_key` gives it for the API object."""
    return ("", obj.name) if isinstance(obj, Namespace) else obj.key
