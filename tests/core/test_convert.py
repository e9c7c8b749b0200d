"""API dicts to the model: defaults as the API applies them, and errors that name the object and field."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from kdns.core.convert import (
    ConversionError,
    convert,
    convert_endpoint_slice,
    convert_pod,
    convert_service,
)
from kdns.core.model import EndpointSlice, Protocol, ServiceType
from tests.builders import endpoint, endpoint_slice, pod, service


def _slice(obj: Any) -> EndpointSlice:
    converted = convert_endpoint_slice(obj)
    assert converted is not None
    return converted


def _error(kind: str, obj: Any) -> ConversionError:
    with pytest.raises(ConversionError) as caught:
        convert(kind, obj)
    return caught.value


def test_service_types_and_defaults() -> None:
    assert convert_service(service("a", "x", ["10.96.0.1"])).type is ServiceType.CLUSTER_IP
    assert convert_service(service("a", "x", ["None"])).type is ServiceType.HEADLESS
    ext = convert_service(service("a", "x", type_="ExternalName", external_name="Example.COM."))
    assert ext.type is ServiceType.EXTERNAL_NAME and ext.external_name == "example.com"
    minimal = convert_service({"metadata": {"name": "x"}, "spec": {"clusterIP": "10.96.0.3", "ports": [{"port": 1}]}})
    assert minimal.namespace == "default"
    assert minimal.ports[0].protocol is Protocol.TCP and minimal.ports[0].name == ""
    assert minimal.cluster_ips == (ipaddress.ip_address("10.96.0.3"),)


def test_cluster_ip_used_when_cluster_ips_is_absent() -> None:
    obj = {"metadata": {"name": "x", "namespace": "a"}, "spec": {"clusterIP": "10.96.0.3"}}
    assert convert_service(obj).cluster_ips == (ipaddress.ip_address("10.96.0.3"),)


def test_service_errors_name_kind_object_and_field() -> None:
    bad_ip = _error("Service", service("prod", "web", ["10.96.0.300"]))
    assert (bad_ip.kind, bad_ip.ref, bad_ip.field) == ("Service", "prod/web", "spec.clusterIPs[0]")
    assert "prod/web" in str(bad_ip) and "spec.clusterIPs[0]" in str(bad_ip)

    bad_port = _error("Service", service("prod", "web", ports=[{"name": "x", "port": 70000}]))
    assert bad_port.field == "spec.ports[0].port"
    bad_protocol = _error("Service", service("prod", "web", ports=[{"name": "x", "port": 1, "protocol": "ICMP"}]))
    assert bad_protocol.field == "spec.ports[0].protocol"
    for odd in ({"port": [80]}, {"port": True}, {"port": 1, "protocol": ["TCP"]}, {"port": "80"}):
        assert _error("Service", service("prod", "web", ports=[{"name": "x", **odd}])).field.startswith("spec.ports[0]")
    bad_slice = _error("EndpointSlice", endpoint_slice("a", "s", "svc", [endpoint("10.0.0.1")], ports=[{"port": -1}]))
    assert bad_slice.field == "ports[0].port"
    bad_name = _error("Service", service("prod", "Web_Site"))
    assert bad_name.field == "metadata.name"
    no_name = _error("Service", {"metadata": {}, "spec": {}})
    assert no_name.field == "metadata.name"
    wrong_type = _error("Service", {"metadata": {"name": "x"}, "spec": {"ports": "80"}})
    assert wrong_type.field == "spec.ports"
    not_a_mapping = _error("Service", ["not", "an", "object"])
    assert not_a_mapping.field == "(object)"


def test_external_name_must_be_a_dns_name() -> None:
    assert _error("Service", service("a", "x", type_="ExternalName", external_name="10.0.0.1")).field == (
        "spec.externalName"
    )
    assert _error("Service", service("a", "x", type_="ExternalName", external_name="bad name.com")).field == (
        "spec.externalName"
    )
    assert _error("Service", service("a", "x", type_="ExternalName", external_name=None)).field == "spec.externalName"


def test_endpoint_slice_fields_and_defaults() -> None:
    converted = _slice(endpoint_slice("a", "s", "svc", [endpoint("10.0.0.1", ready=None)]))
    assert converted.service_name == "svc" and converted.ip_version == 4
    assert converted.endpoints[0].ready is True
    not_ready = _slice(endpoint_slice("a", "s", "svc", [endpoint("10.0.0.1", ready=False)]))
    assert not_ready.endpoints[0].ready is False


def test_endpoint_slice_without_service_label_or_with_fqdn_addresses_is_not_used() -> None:
    unowned = endpoint_slice("a", "s", "svc", [endpoint("10.0.0.1")])
    del unowned["metadata"]["labels"]
    assert convert_endpoint_slice(unowned) is None
    assert convert_endpoint_slice(endpoint_slice("a", "s", "svc", [{"addresses": ["x.com"]}], family="FQDN")) is None


def test_endpoint_slice_port_without_number_is_skipped() -> None:
    obj = endpoint_slice("a", "s", "svc", [endpoint("10.0.0.1")], ports=[{"name": "all", "protocol": "TCP"}])
    assert _slice(obj).ports == ()


def test_endpoint_slice_errors_name_the_field() -> None:
    wrong_family = _error("EndpointSlice", endpoint_slice("a", "s", "svc", [endpoint("fd00::1")]))
    assert (wrong_family.ref, wrong_family.field) == ("a/s", "endpoints[0].addresses[0]")
    assert "IPv4" in wrong_family.problem
    no_addresses = _error("EndpointSlice", endpoint_slice("a", "s", "svc", [{"addresses": []}]))
    assert no_addresses.field == "endpoints[0].addresses"
    bad_ready = _error("EndpointSlice", endpoint_slice("a", "s", "svc", [endpoint("10.0.0.1", ready="yes")]))  # type: ignore[arg-type]
    assert bad_ready.field == "endpoints[0].conditions.ready"
    bad_hostname = _error("EndpointSlice", endpoint_slice("a", "s", "svc", [endpoint("10.0.0.1", hostname="a.b")]))
    assert bad_hostname.field == "endpoints[0].hostname"
    bad_type = _error("EndpointSlice", {**endpoint_slice("a", "s", "svc", []), "addressType": "IPv5"})
    assert bad_type.field == "addressType"


def _pod_ips(obj: Any) -> list[str]:
    converted = convert_pod(obj)
    assert converted is not None
    return [str(ip) for ip in converted.ips]


def test_pod_ips_from_pod_ips_or_pod_ip() -> None:
    assert _pod_ips(pod("a", "p", "10.0.0.1", "fd00::1")) == ["10.0.0.1", "fd00::1"]
    single = {"metadata": {"name": "p", "namespace": "a"}, "status": {"podIP": "10.0.0.2"}}
    assert _pod_ips(single) == ["10.0.0.2"]
    pending = {"metadata": {"name": "p", "namespace": "a"}, "status": {"phase": "Pending"}}
    assert _pod_ips(pending) == []
    assert _error("Pod", pod("a", "p", "nope")).field == "status.podIPs[0].ip"


def test_terminating_and_finished_pods_are_not_kept_as_coredns_leaves_them_out() -> None:
    """Issue 17, K10: a Pod being deleted, or one that has Succeeded, Failed or is Unknown, gives
    up its address (CoreDNS: object/pod.go errPodTerminating, and controller.go's field selector
    status.phase!=Succeeded,status.phase!=Failed,status.phase!=Unknown)."""
    running = {**pod("a", "p", "10.0.0.1"), "status": {"phase": "Running", "podIP": "10.0.0.1"}}
    assert _pod_ips(running) == ["10.0.0.1"]
    deleting = {**running, "metadata": {"name": "p", "namespace": "a", "deletionTimestamp": "2026-12-07T10:00:00Z"}}
    assert convert_pod(deleting) is None
    for phase in ("Succeeded", "Failed", "Unknown"):
        assert convert_pod({**running, "status": {"phase": phase, "podIP": "10.0.0.1"}}) is None


def test_endpoint_conditions_node_and_selector_are_kept() -> None:
    item = {
        "addresses": ["10.0.0.1"],
        "conditions": {"ready": False, "serving": True, "terminating": True},
        "nodeName": "node-1",
        "targetRef": {"kind": "Pod", "name": "web-0"},
    }
    converted = _slice(endpoint_slice("a", "s", "svc", [item])).endpoints[0]
    assert (converted.ready, converted.serving, converted.terminating) == (False, True, True)
    assert converted.node_name == "node-1" and converted.target_pod == "web-0"
    bare = _slice(endpoint_slice("a", "s", "svc", [endpoint("10.0.0.1")])).endpoints[0]
    assert (bare.ready, bare.serving, bare.terminating, bare.node_name) == (True, True, False, "")
    bad = _error("EndpointSlice", endpoint_slice("a", "s", "svc", [{**item, "conditions": {"serving": "no"}}]))
    assert bad.field == "endpoints[0].conditions.serving"


def test_selector_less_service_is_marked() -> None:
    with_selector = service("a", "x")
    with_selector["spec"]["selector"] = {"app": "x"}
    assert convert_service(with_selector).has_selector is True
    assert convert_service(service("a", "x")).has_selector is False
