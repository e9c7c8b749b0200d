"""Every record the Kubernetes DNS spec (1.1.0) defines, and CoreDNS's answers where it is silent,
asked through the pure handler and read back with dnspython."""

from __future__ import annotations

import random

import dns.rdatatype
import dns.reversename

from kdns.core.convert import convert
from kdns.core.model import EndpointSlice, Service
from kdns.core.records import Omission, PartCache, headless_by_slice, service_records
from kdns.core.store import ClusterStore, PodMode, PublishOptions
from tests.builders import (
    Obj,
    ask,
    endpoint,
    endpoint_slice,
    headless,
    is_authoritative,
    namespace,
    pod,
    rcode,
    records,
    service,
    store_of,
)

SOA = "cluster.local. SOA ns.dns.cluster.local. hostmaster.cluster.local."

# -- schema version, SOA, NS (spec 2.2; CoreDNS for SOA and NS) --------------------------------


def test_dns_version_record_is_txt_1_1_0() -> None:
    reply = ask(store_of(), "dns-version.cluster.local", "TXT")
    assert records(reply) == ['dns-version.cluster.local. TXT "1.1.0"']
    assert is_authoritative(reply)


def test_soa_at_apex_is_coredns_shaped_with_ttl_as_minimum() -> None:
    store = store_of(ttl=17)
    store.zone.set_serial(12345)
    reply = ask(store, "cluster.local", "SOA")
    assert records(reply) == [f"{SOA} 12345 7200 1800 86400 17"]
    assert reply.answer[0].ttl == 17


def test_ns_at_apex_names_ns_dns_with_the_kube_dns_cluster_ip_as_glue() -> None:
    store = store_of(service("kube-system", "kube-dns", ["10.96.0.10"]))
    reply = ask(store, "cluster.local", "NS")
    assert records(reply) == ["cluster.local. NS ns.dns.cluster.local."]
    assert records(reply, "additional") == ["ns.dns.cluster.local. A 10.96.0.10"]
    assert records(ask(store, "ns.dns.cluster.local")) == ["ns.dns.cluster.local. A 10.96.0.10"]


def test_ns_dns_name_follows_the_kube_dns_service_when_it_changes() -> None:
    store = store_of(service("kube-system", "kube-dns", ["10.96.0.10"]))
    store.delete("Service", ("kube-system", "kube-dns"))
    assert records(ask(store, "ns.dns.cluster.local")) == []
    assert rcode(ask(store, "ns.dns.cluster.local")) == "NOERROR"


# -- ClusterIP services (spec 2.3) ---------------------------------------------------------------


def test_cluster_ip_service_answers_its_cluster_ip() -> None:
    reply = ask(store_of(service("prod", "web", ["10.96.0.5"])), "web.prod.svc.cluster.local")
    assert records(reply) == ["web.prod.svc.cluster.local. A 10.96.0.5"]
    assert rcode(reply) == "NOERROR" and is_authoritative(reply)
    assert reply.answer[0].ttl == 30


def test_dual_stack_service_answers_a_and_aaaa_from_its_cluster_ips() -> None:
    store = store_of(service("prod", "web", ["10.96.0.5", "fd00::5"]))
    assert records(ask(store, "web.prod.svc.cluster.local", "A")) == ["web.prod.svc.cluster.local. A 10.96.0.5"]
    assert records(ask(store, "web.prod.svc.cluster.local", "AAAA")) == ["web.prod.svc.cluster.local. AAAA fd00::5"]


def test_ipv6_only_service_answers_aaaa_and_nodata_for_a() -> None:
    store = store_of(service("prod", "v6", ["fd00::7"]))
    assert records(ask(store, "v6.prod.svc.cluster.local", "AAAA")) == ["v6.prod.svc.cluster.local. AAAA fd00::7"]
    reply = ask(store, "v6.prod.svc.cluster.local", "A")
    assert rcode(reply) == "NOERROR" and records(reply) == []


def test_ipv4_only_service_answers_nodata_with_soa_for_aaaa() -> None:
    reply = ask(store_of(service("prod", "web", ["10.96.0.5"])), "web.prod.svc.cluster.local", "AAAA")
    assert rcode(reply) == "NOERROR"
    assert records(reply) == []
    assert [r.split(" 1 ")[0] for r in records(reply, "authority")] == [SOA.split(" 1 ")[0]]


def test_nodeport_and_loadbalancer_services_answer_with_their_cluster_ip() -> None:
    store = store_of(
        service("prod", "np", ["10.96.0.6"], type_="NodePort"),
        service("prod", "lb", ["10.96.0.7"], type_="LoadBalancer"),
    )
    assert records(ask(store, "np.prod.svc.cluster.local")) == ["np.prod.svc.cluster.local. A 10.96.0.6"]
    assert records(ask(store, "lb.prod.svc.cluster.local")) == ["lb.prod.svc.cluster.local. A 10.96.0.7"]


def test_named_port_srv_targets_the_service_with_its_addresses_in_additional() -> None:
    store = store_of(service("prod", "web", ["10.96.0.5", "fd00::5"]))
    reply = ask(store, "_http._tcp.web.prod.svc.cluster.local", "SRV")
    assert records(reply) == ["_http._tcp.web.prod.svc.cluster.local. SRV 0 100 80 web.prod.svc.cluster.local."]
    assert records(reply, "additional") == [
        "web.prod.svc.cluster.local. A 10.96.0.5",
        "web.prod.svc.cluster.local. AAAA fd00::5",
    ]


def test_srv_for_udp_and_sctp_ports_use_their_protocol_label() -> None:
    ports = [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "sig", "port": 3868, "protocol": "SCTP"}]
    store = store_of(service("prod", "x", ["10.96.0.9"], ports))
    assert records(ask(store, "_dns._udp.x.prod.svc.cluster.local", "SRV")) == [
        "_dns._udp.x.prod.svc.cluster.local. SRV 0 100 53 x.prod.svc.cluster.local."
    ]
    assert records(ask(store, "_sig._sctp.x.prod.svc.cluster.local", "SRV")) == [
        "_sig._sctp.x.prod.svc.cluster.local. SRV 0 100 3868 x.prod.svc.cluster.local."
    ]
    assert rcode(ask(store, "_dns._tcp.x.prod.svc.cluster.local", "SRV")) == "NXDOMAIN"


def test_srv_with_unknown_protocol_label_is_nxdomain_as_coredns() -> None:
    store = store_of(service("prod", "web"))
    assert rcode(ask(store, "_http._foo.web.prod.svc.cluster.local", "SRV")) == "NXDOMAIN"
    assert rcode(ask(store, "_nope._tcp.web.prod.svc.cluster.local", "SRV")) == "NXDOMAIN"


def test_bare_service_srv_lists_every_port_including_unnamed_as_coredns() -> None:
    ports = [{"port": 8080, "protocol": "TCP"}, {"name": "metrics", "port": 9090, "protocol": "TCP"}]
    store = store_of(service("prod", "api", ["10.96.0.8"], ports))
    assert records(ask(store, "api.prod.svc.cluster.local", "SRV")) == [
        "api.prod.svc.cluster.local. SRV 0 50 8080 api.prod.svc.cluster.local.",
        "api.prod.svc.cluster.local. SRV 0 50 9090 api.prod.svc.cluster.local.",
    ]


def test_cluster_ip_ptr_names_the_service() -> None:
    store = store_of(service("prod", "web", ["10.96.0.5", "fd00::5"]))
    assert records(ask(store, "5.0.96.10.in-addr.arpa", "PTR")) == [
        "5.0.96.10.in-addr.arpa. PTR web.prod.svc.cluster.local."
    ]
    v6 = dns.reversename.from_address("fd00::5").to_text()
    assert records(ask(store, v6, "PTR")) == [f"{v6} PTR web.prod.svc.cluster.local."]


def test_endpoint_names_under_a_cluster_ip_service_resolve_as_coredns() -> None:
    store = store_of(
        service("prod", "web", ["10.96.0.5"]),
        endpoint_slice("prod", "web-1", "web", [endpoint("10.244.1.5")]),
    )
    assert records(ask(store, "10-244-1-5.web.prod.svc.cluster.local")) == [
        "10-244-1-5.web.prod.svc.cluster.local. A 10.244.1.5"
    ]
    assert records(ask(store, "web.prod.svc.cluster.local")) == ["web.prod.svc.cluster.local. A 10.96.0.5"]


def test_endpoint_ptr_under_a_cluster_ip_service_names_the_endpoint_as_coredns() -> None:
    store = store_of(
        service("prod", "web", ["10.96.0.5"]),
        endpoint_slice("prod", "web-1", "web", [endpoint("10.244.1.5")]),
        endpoint_slice("prod", "web-2", "web", [endpoint("fd00::5")], family="IPv6"),
    )
    assert records(ask(store, "5.1.244.10.in-addr.arpa", "PTR")) == [
        "5.1.244.10.in-addr.arpa. PTR 10-244-1-5.web.prod.svc.cluster.local."
    ]
    v6 = dns.reversename.from_address("fd00::5").to_text(omit_final_dot=True)
    assert records(ask(store, v6, "PTR")) == [f"{v6}. PTR fd00--5.web.prod.svc.cluster.local."]
    assert records(ask(store, "fd00--5.web.prod.svc.cluster.local", "AAAA")) == [
        "fd00--5.web.prod.svc.cluster.local. AAAA fd00::5"
    ]


def test_cluster_ip_service_endpoint_names_keep_nxdomain_and_nodata_exact() -> None:
    store = store_of(
        service("prod", "web", ["10.96.0.5"]),
        endpoint_slice("prod", "web-1", "web", [endpoint("10.244.1.5", hostname="web-0")]),
    )
    name = "web-0.web.prod.svc.cluster.local"
    assert records(ask(store, name)) == [f"{name}. A 10.244.1.5"]
    assert is_authoritative(ask(store, name))
    assert rcode(ask(store, name, "AAAA")) == "NOERROR" and records(ask(store, name, "AAAA")) == []
    assert records(ask(store, name, "ANY")) == [f"{name}. A 10.244.1.5"]
    assert rcode(ask(store, f"x.{name}")) == "NXDOMAIN"
    assert rcode(ask(store, "web-1.web.prod.svc.cluster.local")) == "NXDOMAIN"
    assert records(ask(store, "1.244.10.in-addr.arpa", "PTR")) == []  # an empty non-terminal
    assert rcode(ask(store, "1.244.10.in-addr.arpa", "PTR")) == "NOERROR"
    assert records(ask(store, "5.1.244.10.in-addr.arpa", "A")) == []
    assert rcode(ask(store, "5.1.244.10.in-addr.arpa", "A")) == "NOERROR"


def test_endpoint_at_its_own_services_cluster_ip_gets_both_ptrs() -> None:
    store = store_of(
        service("prod", "web", ["10.96.0.5"]),
        endpoint_slice("prod", "web-1", "web", [endpoint("10.96.0.5")]),
    )
    assert records(ask(store, "5.0.96.10.in-addr.arpa", "PTR")) == [
        "5.0.96.10.in-addr.arpa. PTR 10-96-0-5.web.prod.svc.cluster.local.",
        "5.0.96.10.in-addr.arpa. PTR web.prod.svc.cluster.local.",
    ]


def test_service_without_an_allocated_cluster_ip_publishes_no_address() -> None:
    store = store_of(service("prod", "pending", []))
    reply = ask(store, "pending.prod.svc.cluster.local")
    assert rcode(reply) == "NXDOMAIN"


# -- headless services (spec 2.4) ----------------------------------------------------------------


def _db(
    *endpoints: Obj, publish_not_ready: bool | None = None, family: str = "IPv4", ports: list[Obj] | None = None
) -> ClusterStore:
    return store_of(
        headless("prod", "db", publish_not_ready=publish_not_ready),
        endpoint_slice("prod", "db-a", "db", list(endpoints), family=family, ports=ports),
    )


def test_headless_service_lists_only_ready_endpoints() -> None:
    store = _db(endpoint("10.244.1.5"), endpoint("10.244.1.6", ready=False), endpoint("10.244.1.7"))
    assert records(ask(store, "db.prod.svc.cluster.local")) == [
        "db.prod.svc.cluster.local. A 10.244.1.5",
        "db.prod.svc.cluster.local. A 10.244.1.7",
    ]
    assert rcode(ask(store, "10-244-1-6.db.prod.svc.cluster.local")) == "NXDOMAIN"


def test_missing_ready_condition_counts_as_ready() -> None:
    store = _db(endpoint("10.244.1.5", ready=None))
    assert records(ask(store, "db.prod.svc.cluster.local")) == ["db.prod.svc.cluster.local. A 10.244.1.5"]


def test_publish_not_ready_addresses_lists_not_ready_endpoints() -> None:
    store = _db(endpoint("10.244.1.5"), endpoint("10.244.1.6", ready=False), publish_not_ready=True)
    assert records(ask(store, "db.prod.svc.cluster.local")) == [
        "db.prod.svc.cluster.local. A 10.244.1.5",
        "db.prod.svc.cluster.local. A 10.244.1.6",
    ]


def test_headless_service_without_ready_endpoints_is_nxdomain() -> None:
    assert rcode(ask(_db(endpoint("10.244.1.6", ready=False)), "db.prod.svc.cluster.local")) == "NXDOMAIN"
    assert rcode(ask(store_of(headless("prod", "db")), "db.prod.svc.cluster.local")) == "NXDOMAIN"


def test_headless_endpoint_with_hostname_gets_its_own_name() -> None:
    store = _db(endpoint("10.244.1.5", hostname="db-0"), endpoint("10.244.1.7", hostname="db-1"))
    assert records(ask(store, "db-0.db.prod.svc.cluster.local")) == ["db-0.db.prod.svc.cluster.local. A 10.244.1.5"]
    assert records(ask(store, "db-1.db.prod.svc.cluster.local")) == ["db-1.db.prod.svc.cluster.local. A 10.244.1.7"]


def test_endpoint_without_hostname_is_named_by_its_dashed_address_as_coredns() -> None:
    store = _db(endpoint("10.244.1.5"))
    assert records(ask(store, "10-244-1-5.db.prod.svc.cluster.local")) == [
        "10-244-1-5.db.prod.svc.cluster.local. A 10.244.1.5"
    ]
    v6 = _db(endpoint("fd00::1:5"), family="IPv6")
    assert records(ask(v6, "fd00--1-5.db.prod.svc.cluster.local", "AAAA")) == [
        "fd00--1-5.db.prod.svc.cluster.local. AAAA fd00::1:5"
    ]


def test_headless_srv_lists_one_record_per_ready_endpoint_with_the_slice_port() -> None:
    ports = [{"name": "pg", "port": 5432, "protocol": "TCP"}]
    store = _db(
        endpoint("10.244.1.5", hostname="db-0"),
        endpoint("10.244.1.6", ready=False, hostname="db-1"),
        endpoint("10.244.1.7"),
        ports=ports,
    )
    reply = ask(store, "_pg._tcp.db.prod.svc.cluster.local", "SRV")
    assert records(reply) == [
        "_pg._tcp.db.prod.svc.cluster.local. SRV 0 50 5432 10-244-1-7.db.prod.svc.cluster.local.",
        "_pg._tcp.db.prod.svc.cluster.local. SRV 0 50 5432 db-0.db.prod.svc.cluster.local.",
    ]
    assert records(reply, "additional") == [
        "10-244-1-7.db.prod.svc.cluster.local. A 10.244.1.7",
        "db-0.db.prod.svc.cluster.local. A 10.244.1.5",
    ]


def test_headless_ptr_points_to_the_endpoint_name() -> None:
    store = _db(endpoint("10.244.1.5", hostname="db-0"), endpoint("10.244.1.7"))
    assert records(ask(store, "5.1.244.10.in-addr.arpa", "PTR")) == [
        "5.1.244.10.in-addr.arpa. PTR db-0.db.prod.svc.cluster.local."
    ]
    assert records(ask(store, "7.1.244.10.in-addr.arpa", "PTR")) == [
        "7.1.244.10.in-addr.arpa. PTR 10-244-1-7.db.prod.svc.cluster.local."
    ]


def test_ipv6_headless_ptr_is_in_ip6_arpa() -> None:
    store = _db(endpoint("fd00::1:5", hostname="db-0"), family="IPv6")
    name = dns.reversename.from_address("fd00::1:5").to_text()
    assert name.endswith("ip6.arpa.")
    assert records(ask(store, name, "PTR")) == [f"{name} PTR db-0.db.prod.svc.cluster.local."]


def test_dual_stack_headless_answers_each_family_from_its_slice() -> None:
    store = store_of(
        headless("prod", "db"),
        endpoint_slice("prod", "db-v4", "db", [endpoint("10.244.1.5", hostname="db-0")]),
        endpoint_slice("prod", "db-v6", "db", [endpoint("fd00::5", hostname="db-0")], family="IPv6"),
    )
    assert records(ask(store, "db.prod.svc.cluster.local", "A")) == ["db.prod.svc.cluster.local. A 10.244.1.5"]
    assert records(ask(store, "db.prod.svc.cluster.local", "AAAA")) == ["db.prod.svc.cluster.local. AAAA fd00::5"]
    assert records(ask(store, "db-0.db.prod.svc.cluster.local", "AAAA")) == [
        "db-0.db.prod.svc.cluster.local. AAAA fd00::5"
    ]


def test_address_in_two_slices_is_answered_once() -> None:
    store = store_of(
        headless("prod", "db"),
        endpoint_slice("prod", "db-a", "db", [endpoint("10.244.1.5"), endpoint("10.244.1.6")]),
        endpoint_slice("prod", "db-b", "db", [endpoint("10.244.1.5")]),
    )
    assert records(ask(store, "db.prod.svc.cluster.local")) == [
        "db.prod.svc.cluster.local. A 10.244.1.5",
        "db.prod.svc.cluster.local. A 10.244.1.6",
    ]
    assert len(records(ask(store, "db.prod.svc.cluster.local", "SRV"))) == 2


def test_unknown_endpoint_label_under_a_headless_service_is_nxdomain() -> None:
    store = _db(endpoint("10.244.1.5", hostname="db-0"))
    assert rcode(ask(store, "db-9.db.prod.svc.cluster.local")) == "NXDOMAIN"
    assert rcode(ask(store, "x.db-0.db.prod.svc.cluster.local")) == "NXDOMAIN"


def test_fqdn_endpoint_slices_are_ignored() -> None:
    store = store_of(
        headless("prod", "db"),
        endpoint_slice("prod", "db-f", "db", [{"addresses": ["db.example.com"]}], family="FQDN"),
    )
    assert rcode(ask(store, "db.prod.svc.cluster.local")) == "NXDOMAIN"


# -- ExternalName services (spec 2.5) ------------------------------------------------------------


def test_external_name_service_answers_cname_for_every_type() -> None:
    store = store_of(service("prod", "pay", type_="ExternalName", external_name="Payments.Example.com."))
    for rdtype in ("A", "AAAA", "CNAME", "SRV", "TXT"):
        reply = ask(store, "pay.prod.svc.cluster.local", rdtype)
        assert rcode(reply) == "NOERROR"
        assert records(reply) == ["pay.prod.svc.cluster.local. CNAME payments.example.com."]


# -- pod records (spec 2.6.1; CoreDNS's `pods` modes) --------------------------------------------


def test_pod_record_insecure_answers_any_address_in_an_existing_namespace() -> None:
    store = store_of(namespace("prod"))
    assert records(ask(store, "10-1-2-3.prod.pod.cluster.local")) == ["10-1-2-3.prod.pod.cluster.local. A 10.1.2.3"]


def test_pod_record_in_an_unknown_namespace_is_nxdomain_as_coredns() -> None:
    assert rcode(ask(store_of(namespace("prod")), "10-1-2-3.nope.pod.cluster.local")) == "NXDOMAIN"


def test_ipv6_pod_name_is_read_as_coredns_reads_it() -> None:
    store = store_of(namespace("prod"))
    assert records(ask(store, "fd00--1-2.prod.pod.cluster.local", "AAAA")) == [
        "fd00--1-2.prod.pod.cluster.local. AAAA fd00::1:2"
    ]
    assert records(ask(store, "2001-db8-0-0-0-0-0-1.prod.pod.cluster.local", "AAAA")) == [
        "2001-db8-0-0-0-0-0-1.prod.pod.cluster.local. AAAA 2001:db8::1"
    ]


def test_pod_record_of_the_other_family_is_nodata() -> None:
    store = store_of(namespace("prod"))
    reply = ask(store, "10-1-2-3.prod.pod.cluster.local", "AAAA")
    assert rcode(reply) == "NOERROR" and records(reply) == [] and len(reply.authority) == 1


def test_pod_label_that_is_not_an_address_is_nxdomain() -> None:
    store = store_of(namespace("prod"))
    for name in ("web.prod.pod.cluster.local", "10-1-2.prod.pod.cluster.local", "x.10-1-2-3.prod.pod.cluster.local"):
        assert rcode(ask(store, name)) == "NXDOMAIN", name


def test_pod_record_verified_answers_only_an_address_of_a_pod_in_that_namespace() -> None:
    store = store_of(namespace("prod"), namespace("dev"), pod("prod", "web-0", "10.1.2.3"), pods=PodMode.VERIFIED)
    assert records(ask(store, "10-1-2-3.prod.pod.cluster.local")) == ["10-1-2-3.prod.pod.cluster.local. A 10.1.2.3"]
    assert rcode(ask(store, "10-1-2-4.prod.pod.cluster.local")) == "NXDOMAIN"
    assert rcode(ask(store, "10-1-2-3.dev.pod.cluster.local")) == "NXDOMAIN"
    store.delete("Pod", ("prod", "web-0"))
    assert rcode(ask(store, "10-1-2-3.prod.pod.cluster.local")) == "NXDOMAIN"


def test_pod_records_disabled_are_nxdomain() -> None:
    store = store_of(namespace("prod"), pods=PodMode.DISABLED)
    assert rcode(ask(store, "10-1-2-3.prod.pod.cluster.local")) == "NXDOMAIN"
    assert rcode(ask(store, "prod.pod.cluster.local")) == "NXDOMAIN"
    assert rcode(ask(store, "pod.cluster.local")) == "NXDOMAIN"


# -- NXDOMAIN versus NODATA ----------------------------------------------------------------------


def test_empty_non_terminals_are_nodata_with_soa() -> None:
    store = store_of(
        namespace("empty"), service("prod", "web"), endpoint_slice("prod", "w", "web", [endpoint("10.244.1.5")])
    )
    for name in (
        "svc.cluster.local",
        "pod.cluster.local",
        "prod.svc.cluster.local",
        "empty.svc.cluster.local",
        "empty.pod.cluster.local",
        "_tcp.web.prod.svc.cluster.local",
        "dns.cluster.local",
        "96.10.in-addr.arpa",
    ):
        reply = ask(store, name, "A")
        assert rcode(reply) == "NOERROR", name
        assert records(reply) == [], name
        assert len(reply.authority) == 1 and reply.authority[0].rdtype == dns.rdatatype.SOA, name


def test_missing_names_in_the_cluster_domain_are_nxdomain_with_soa() -> None:
    store = store_of(service("prod", "web"))
    for name in (
        "nope.prod.svc.cluster.local",
        "web.nope.svc.cluster.local",
        "nope.cluster.local",
        "a.b.web.prod.svc.cluster.local",
    ):
        reply = ask(store, name)
        assert rcode(reply) == "NXDOMAIN", name
        assert [rrset.rdtype for rrset in reply.authority] == [dns.rdatatype.SOA], name
        assert reply.authority[0].ttl == 30


def test_nodata_in_a_reverse_zone_carries_that_zones_soa() -> None:
    store = store_of(service("prod", "web", ["10.96.0.5"]))
    reply = ask(store, "5.0.96.10.in-addr.arpa", "A")
    assert rcode(reply) == "NOERROR" and records(reply) == []
    assert reply.authority[0].name.to_text() == "in-addr.arpa."


def test_reverse_name_without_a_record_is_not_answered_from_the_zone() -> None:
    # CoreDNS falls through to the forwarder for these; until forwarding exists they are refused.
    assert rcode(ask(store_of(), "9.9.9.9.in-addr.arpa", "PTR")) == "REFUSED"


def test_names_outside_the_zones_are_refused() -> None:
    reply = ask(store_of(), "example.com")
    assert rcode(reply) == "REFUSED" and not is_authoritative(reply)


def test_a_name_merely_ending_like_the_domain_is_outside_it() -> None:
    assert rcode(ask(store_of(), "notcluster.local")) == "REFUSED"


# -- names, TTL and domain -----------------------------------------------------------------------


def test_names_are_case_insensitive_and_the_question_is_echoed_as_sent() -> None:
    store = store_of(service("prod", "web", ["10.96.0.5"]))
    reply = ask(store, "WeB.PrOd.SVC.Cluster.LOCAL")
    assert reply.question[0].name.to_text() == "WeB.PrOd.SVC.Cluster.LOCAL."
    assert [item.address for item in reply.answer[0]] == ["10.96.0.5"]
    assert rcode(ask(store, "NOPE.prod.svc.cluster.local")) == "NXDOMAIN"


def test_ttl_option_is_on_every_zone_record() -> None:
    store = store_of(
        service("prod", "web", ["10.96.0.5"]),
        endpoint_slice("prod", "w", "web", [endpoint("10.244.1.5")]),
        ttl=7,
    )
    for name, rdtype in (
        ("web.prod.svc.cluster.local", "A"),
        ("_http._tcp.web.prod.svc.cluster.local", "SRV"),
        ("5.0.96.10.in-addr.arpa", "PTR"),
        ("dns-version.cluster.local", "TXT"),
        ("cluster.local", "NS"),
    ):
        reply = ask(store, name, rdtype)
        assert {rrset.ttl for rrset in (*reply.answer, *reply.additional)} == {7}, name
    assert ask(store, "nope.prod.svc.cluster.local").authority[0].ttl == 7


def test_custom_cluster_domain() -> None:
    store = store_of(service("prod", "web", ["10.96.0.5"]), domain="corp.example")
    assert records(ask(store, "web.prod.svc.corp.example")) == ["web.prod.svc.corp.example. A 10.96.0.5"]
    assert rcode(ask(store, "web.prod.svc.cluster.local")) == "REFUSED"
    assert records(ask(store, "5.0.96.10.in-addr.arpa", "PTR")) == [
        "5.0.96.10.in-addr.arpa. PTR web.prod.svc.corp.example."
    ]


def test_any_query_gets_one_rrset_as_rfc_8482_asks() -> None:
    store = store_of(service("prod", "web", ["10.96.0.5", "fd00::5"]))
    reply = ask(store, "web.prod.svc.cluster.local", "ANY")
    assert rcode(reply) == "NOERROR" and is_authoritative(reply)
    assert records(reply) == ["web.prod.svc.cluster.local. A 10.96.0.5"]
    assert records(reply, "additional") == []


def test_any_query_for_a_headless_service_is_no_larger_than_its_a_query() -> None:
    endpoints = [endpoint(f"10.244.0.{i}", hostname=f"db-{i}") for i in range(1, 21)]
    store = store_of(headless("prod", "db"), endpoint_slice("prod", "db-a", "db", endpoints))
    any_reply = ask(store, "db.prod.svc.cluster.local", "ANY", tcp=True)
    a_reply = ask(store, "db.prod.svc.cluster.local", "A", tcp=True)
    assert records(any_reply) == records(a_reply) and len(records(a_reply)) == 20
    assert rcode(ask(store, "nope.prod.svc.cluster.local", "ANY")) == "NXDOMAIN"


def test_zone_transfers_are_refused() -> None:
    store = store_of(service("prod", "web"))
    assert rcode(ask(store, "cluster.local", "AXFR", tcp=True)) == "REFUSED"
    assert rcode(ask(store, "cluster.local", "IXFR", tcp=True)) == "REFUSED"


def test_a_headless_service_built_from_kept_slice_parts_equals_one_built_whole() -> None:
    """Issue 11: an event on a large headless Service builds only the slice it changed
    (`HeadlessPart`); what it publishes is exactly what building every slice again gives, in the
    same order, across ready flips, slices coming and going, the SRV weight crossing 100
    targets (where it becomes 0), an address in two slices, and a too-long port name; and
    split a contribution a slice (`headless_by_slice`), the same records."""
    rng = random.Random(11)
    ports = [
        {"name": "http", "port": 80, "protocol": "TCP"},
        {"name": "p" * 63, "port": 81, "protocol": "TCP"},  # no SRV name: an omission per slice
    ]
    service_obj = convert("Service", headless("prod", "big", ports=ports))
    assert isinstance(service_obj, Service)

    def make_slice(number: int) -> EndpointSlice:
        endpoints = [
            endpoint(f"10.200.{number}.{j}", ready=rng.random() < 0.8, hostname=f"big-{number}-{j}" if j % 3 else None)
            for j in range(rng.randrange(1, 45))
        ]
        if rng.random() < 0.25:  # briefly in two slices, as during an EndpointSlice controller move
            endpoints.append(endpoint("10.200.0.0"))  # slice 0's first endpoint (ready 4 times in 5)
        obj = convert("EndpointSlice", endpoint_slice("prod", f"big-{number}", "big", endpoints, ports=ports))
        assert isinstance(obj, EndpointSlice)
        return obj

    slices = {number: make_slice(number) for number in range(4)}
    parts: PartCache = {}
    split_parts: PartCache = {}
    overlaps = 0
    for step in range(80):
        number = rng.randrange(6)
        if number in slices and rng.random() < 0.2:
            del slices[number]
        else:
            slices[number] = make_slice(number)
        ordered = [slices[key] for key in sorted(slices)]
        kept_omitted: list[Omission] = []
        whole_omitted: list[Omission] = []
        kept = service_records(service_obj, ordered, "cluster.local", kept_omitted, parts)
        whole = service_records(service_obj, ordered, "cluster.local", whole_omitted)
        assert dict(kept) == dict(whole), step  # every name, and every record in its order
        assert sorted(kept_omitted) == sorted(whole_omitted), step
        assert set(parts) == {slice_.name for slice_ in ordered}
        # Split by slice (one contribution a slice, one for the Service): the same names and
        # records, each name given once; or none, where two slices share a name.
        split_omitted: list[Omission] = []
        split = headless_by_slice(service_obj, ordered, "cluster.local", split_omitted, split_parts)
        if split is None:
            overlaps += 1
            continue
        together = dict(split.service)
        for own in split.own.values():
            assert not together.keys() & own.keys(), step
            together.update(own)
        assert together == dict(whole), step
        assert sorted(split_omitted) == sorted(whole_omitted), step
    assert 0 < overlaps < 80  # both ways were taken


# -- CoreDNS's kubernetes options: endpoint_pod_names, ignore empty_service ------------------------


def test_endpoint_pod_names_name_endpoints_after_their_pods_when_they_have_no_hostname() -> None:
    slice_ = endpoint_slice(
        "prod",
        "db-a",
        "db",
        [
            endpoint("10.244.0.1", pod="db-abc"),
            endpoint("10.244.0.2", hostname="h0", pod="db-h"),
            endpoint("10.244.0.3"),  # no Pod: the dashed address
            endpoint("10.244.0.4", pod="has.dots"),  # not one label: the dashed address
        ],
    )
    store = store_of(namespace("prod"), headless("prod", "db"), slice_, publish=PublishOptions(endpoint_pod_names=True))
    for name, address in (
        ("db-abc", "10.244.0.1"),
        ("h0", "10.244.0.2"),
        ("10-244-0-3", "10.244.0.3"),
        ("10-244-0-4", "10.244.0.4"),
    ):
        assert records(ask(store, f"{name}.db.prod.svc.cluster.local")) == [
            f"{name}.db.prod.svc.cluster.local. A {address}"
        ]
    assert rcode(ask(store, "10-244-0-1.db.prod.svc.cluster.local")) == "NXDOMAIN"
    plain = store_of(namespace("prod"), headless("prod", "db"), slice_)
    assert rcode(ask(plain, "db-abc.db.prod.svc.cluster.local")) == "NXDOMAIN"


def test_ignore_empty_service_makes_a_service_without_ready_endpoints_nxdomain_but_keeps_its_ptr() -> None:
    options = PublishOptions(ignore_empty_service=True)
    idle = [
        service("prod", "idle", ["10.96.0.7"]),
        endpoint_slice("prod", "idle-a", "idle", [endpoint("10.244.5.1", ready=False)]),
    ]
    store = store_of(namespace("prod"), *idle, publish=options)
    assert rcode(ask(store, "idle.prod.svc.cluster.local")) == "NXDOMAIN"
    assert records(ask(store, "7.0.96.10.in-addr.arpa", "PTR")) == [
        "7.0.96.10.in-addr.arpa. PTR idle.prod.svc.cluster.local."
    ]
    # An endpoint turning ready publishes the Service again.
    store.upsert(convert("EndpointSlice", endpoint_slice("prod", "idle-a", "idle", [endpoint("10.244.5.1")])))  # type: ignore[arg-type]
    assert records(ask(store, "idle.prod.svc.cluster.local")) == ["idle.prod.svc.cluster.local. A 10.96.0.7"]
