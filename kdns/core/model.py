"""The cluster objects kdns serves from: small frozen records trimmed to what an answer needs.

API objects are converted to these at the edge (`kdns.core.convert`); nothing past that point
knows API field names or client classes. CoreDNS trims its objects the same way (plugin/kubernetes
`object/`), which is what kept its memory flat at tens of thousands of endpoints.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass
from typing import NamedTuple

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Kind(enum.StrEnum):
    """The API kinds kdns serves from. A `StrEnum`, so a kind compares equal to its API name."""

    NAMESPACE = "Namespace"
    SERVICE = "Service"
    ENDPOINT_SLICE = "EndpointSlice"
    POD = "Pod"


class ServiceType(enum.Enum):
    """How a Service is published in DNS (spec 2.3 and 2.4)."""

    CLUSTER_IP = "ClusterIP"  # also NodePort and LoadBalancer: they answer with their ClusterIP
    HEADLESS = "Headless"  # spec.clusterIP: None
    EXTERNAL_NAME = "ExternalName"


class Protocol(enum.Enum):
    """The transport protocols an SRV name can carry (`_tcp`, `_udp`, `_sctp`)."""

    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"

    @property
    def label(self) -> str:
        return "_" + self.value.lower()


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str  # "" for an unnamed port: it gets no `_<port>._<proto>` SRV name
    protocol: Protocol
    port: int


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str


@dataclass(frozen=True, slots=True)
class Service:
    namespace: str
    name: str
    type: ServiceType
    cluster_ips: tuple[IPAddress, ...]  # empty for headless and ExternalName services
    ports: tuple[ServicePort, ...]
    external_name: str  # "" unless type is EXTERNAL_NAME
    publish_not_ready_addresses: bool
    has_selector: bool  # False for a selector-less Service, whose EndpointSlices are made by hand

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


class Endpoint(NamedTuple):
    """One endpoint of a slice. A named tuple rather than a frozen dataclass, as `rdata.Record`:
    a large cluster converts hundreds of thousands of them per list, and a frozen dataclass's
    constructor costs three times a tuple's (1.6 against 0.5 µs), for 8 bytes more a tuple."""

    addresses: tuple[IPAddress, ...]
    ready: bool  # conditions.ready, with a missing value counted as ready (API convention)
    serving: bool  # conditions.serving, missing counted as equal to ready
    terminating: bool  # conditions.terminating, missing counted as False
    hostname: str  # "" when unset
    node_name: str  # "" when unset; interned, as thousands of endpoints share a few nodes
    target_pod: str  # name of the Pod in targetRef, "" when the target is not a Pod


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    namespace: str
    name: str
    service_name: str  # the `kubernetes.io/service-name` label that joins a slice to its Service
    ip_version: int  # 4 or 6 (FQDN slices are dropped at conversion: nothing in DNS uses them)
    endpoints: tuple[Endpoint, ...]
    ports: tuple[ServicePort, ...]

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def service_key(self) -> tuple[str, str]:
        return (self.namespace, self.service_name)


@dataclass(frozen=True, slots=True)
class Pod:
    namespace: str
    name: str
    ips: tuple[IPAddress, ...]

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


ClusterObject = Namespace | Service | EndpointSlice | Pod
