"""The spec's name grammar (kdns/core/names.py): wire form, reverse names, endpoint labels, pod
labels."""

from __future__ import annotations

import ipaddress

import dns.name
import pytest

from kdns.core.model import Endpoint
from kdns.core.names import (
    InvalidName,
    at_label_boundary,
    endpoint_label,
    from_wire,
    parse_pod_label,
    presentation,
    reverse_wire,
    service_name,
    to_wire,
)


def test_wire_form_is_lowercased_and_round_trips() -> None:
    assert to_wire("Web.Prod.svc.Cluster.Local.") == b"\x03web\x04prod\x03svc\x07cluster\x05local\x00"
    assert from_wire(to_wire("web.prod.svc.cluster.local")) == "web.prod.svc.cluster.local"
    assert to_wire("") == b"\x00" and to_wire(".") == b"\x00"


def test_labels_over_63_and_names_over_255_bytes_are_refused() -> None:
    with pytest.raises(InvalidName):
        to_wire("a" * 64 + ".example")
    with pytest.raises(InvalidName):
        to_wire(".".join(["a" * 63] * 4))  # 4 x 64 + 1 = 257 bytes
    assert len(to_wire(".".join(["a" * 63] * 3 + ["a" * 61]))) == 255
    with pytest.raises(InvalidName):
        to_wire("a..b")


def test_suffixes_match_on_label_boundaries_only() -> None:
    suffix = to_wire("corp.example")
    key = b"\x07ab" + suffix  # one label, "ab\x04corp", then "example": the same bytes at the end
    assert key.endswith(suffix) and not at_label_boundary(key, len(key) - len(suffix))
    key = to_wire("a.corp.example")
    assert at_label_boundary(key, len(key) - len(suffix))


def test_reverse_names_of_both_families() -> None:
    assert from_wire(reverse_wire(ipaddress.ip_address("10.96.0.5"))) == "5.0.96.10.in-addr.arpa"
    address = ipaddress.ip_address("fd00::1")
    assert from_wire(reverse_wire(address)) == address.reverse_pointer


def test_endpoint_labels_are_the_hostname_or_the_dashed_address_as_coredns() -> None:
    def endpoint(hostname: str) -> Endpoint:
        return Endpoint((), True, True, False, hostname, "", "")

    assert endpoint_label(endpoint("db-0"), ipaddress.ip_address("10.0.0.1")) == "db-0"
    assert endpoint_label(endpoint(""), ipaddress.ip_address("10.244.1.5")) == "10-244-1-5"
    assert endpoint_label(endpoint(""), ipaddress.ip_address("fd00::1")) == "fd00--1"
    assert service_name("prod", "web", "cluster.local") == "web.prod.svc.cluster.local"


def test_pod_labels_follow_coredns_three_dashes_rule() -> None:
    assert parse_pod_label("10-244-1-5") == ipaddress.ip_address("10.244.1.5")
    assert parse_pod_label("fd00--1") == ipaddress.ip_address("fd00::1")
    assert parse_pod_label("1-2-3") is None
    assert parse_pod_label("10-244-1-x") is None


def test_presentation_format_escapes_what_dig_escapes() -> None:
    """Issue 17, K8: a name quoted in a log is in presentation format (RFC 1035 5.1), as dig and
    dnspython print it: no byte of it can end a log line or reach a terminal as a control."""
    labels = [b"a.b", b"x\ny\r\x00", b"\x1b[31m", b'"();\\@$', b"sp ace", b"caf\xc3\xa9"]
    wire = b"".join(bytes((len(label),)) + label for label in labels) + b"\x00"
    expected = dns.name.Name([*labels, b""]).to_text()
    assert presentation(wire) == expected
    assert expected == 'a\\.b.x\\010y\\013\\000.\\027[31m.\\"\\(\\)\\;\\\\\\@\\$.sp\\032ace.caf\\195\\169.'
    assert presentation(b"\x00") == "." and presentation(to_wire("web.prod.svc.cluster.local")) == (
        "web.prod.svc.cluster.local."
    )
    assert all(0x20 < ord(char) < 0x7F for char in presentation(b"\x3f" + bytes(range(1, 64)) + b"\x00"))
