"""`kdns explain` (issue 12, point 3): the answer, the objects it comes from, the rule, and for a
name that does not resolve, the reason and the nearest name that does. One test per reason."""

from __future__ import annotations

from kdns.core.store import PodMode
from kdns.explain import Context, explain
from tests.builders import (
    ask,
    endpoint,
    endpoint_slice,
    headless,
    namespace,
    pipeline_of,
    pod,
    rcode,
    service,
    store_of,
)

PORTS = [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 9090, "protocol": "TCP"}]
STORE = store_of(
    namespace("prod"),
    namespace("staging"),
    service("prod", "web", ["10.96.0.5"], PORTS),
    service("staging", "api", ["10.96.0.6"]),
    service("prod", "alias", type_="ExternalName", external_name="db.example.com"),
    headless("prod", "db", ports=[{"name": "pg", "port": 5432, "protocol": "TCP"}]),
    endpoint_slice(
        "prod",
        "db-a",
        "db",
        [endpoint("10.244.0.1", hostname="db-0"), endpoint("10.244.0.2", hostname="db-1", ready=False)],
        ports=[{"name": "pg", "port": 5432, "protocol": "TCP"}],
    ),
    headless("prod", "empty"),
    endpoint_slice("prod", "empty-a", "empty", [endpoint("10.244.0.9", ready=False)]),
)
UPSTREAM = Context(upstreams=("10.0.0.2:53",), upstreams_from="/etc/resolv.conf")


def test_a_cluster_ip_service_answers_its_cluster_ip_naming_the_service_and_spec_2_3_1() -> None:
    found = explain(STORE, "web.prod.svc.cluster.local")
    assert (found.rcode, found.answer) == ("NOERROR", ("web.prod.svc.cluster.local. 30 IN A 10.96.0.5",))
    assert found.objects == ("Service prod/web",)
    assert "2.3.1" in found.rule and found.nearest is None


def test_a_service_in_another_namespace_is_named_as_the_nearest_name() -> None:
    found = explain(STORE, "api.prod.svc.cluster.local.")
    assert found.rcode == "NXDOMAIN"
    assert "there is no Service prod/api" in found.reason
    assert found.nearest is not None and found.nearest.startswith("api.staging.svc.cluster.local")


def test_a_headless_service_with_no_ready_endpoint_says_so_and_lists_them() -> None:
    found = explain(STORE, "empty.prod.svc.cluster.local")
    assert found.rcode == "NXDOMAIN"
    assert "headless Service with no ready endpoint" in found.reason and "10.244.0.9" in found.reason
    assert "EndpointSlice prod/empty-a" in found.objects and "2.4.1" in found.rule


def test_a_headless_service_answers_its_ready_endpoints_and_counts_those_left_out() -> None:
    found = explain(STORE, "db.prod.svc.cluster.local")
    assert found.answer == ("db.prod.svc.cluster.local. 30 IN A 10.244.0.1",)
    assert "1 ready endpoint" in found.reason and "1 not ready left out" in found.reason


def test_an_unnamed_port_has_no_srv_and_the_named_one_is_nearest() -> None:
    found = explain(STORE, "_metrics._tcp.web.prod.svc.cluster.local", "SRV")
    assert found.rcode == "NXDOMAIN"
    assert "port 9090 (tcp) is unnamed, so it has no SRV record" in found.reason
    assert found.nearest == "_http._tcp.web.prod.svc.cluster.local" and "named ports only" in found.rule


def test_a_named_port_answers_its_srv() -> None:
    found = explain(STORE, "_pg._tcp.db.prod.svc.cluster.local", "SRV")
    assert found.rcode == "NOERROR" and found.answer == (
        "_pg._tcp.db.prod.svc.cluster.local. 30 IN SRV 0 100 5432 db-0.db.prod.svc.cluster.local.",
    )
    assert "2.4.2" in found.rule


def test_a_namespace_outside_the_namespaces_flag_is_not_served() -> None:
    found = explain(STORE, "web.prod.svc.cluster.local", context=Context(namespaces=("staging",)))
    assert "outside --namespaces (staging)" in found.reason
    assert "`namespaces`" in found.rule


def test_a_name_outside_the_cluster_domain_is_forwarded_naming_the_upstreams() -> None:
    found = explain(STORE, "example.com", context=UPSTREAM)
    assert found.rcode == "FORWARDED" and found.forwarded_to == ("10.0.0.2:53",)
    assert "forwarded to the upstream resolvers (from /etc/resolv.conf)" in found.reason


def test_a_name_outside_the_cluster_domain_without_upstreams_is_refused() -> None:
    found = explain(STORE, "example.com")
    assert found.rcode == "REFUSED" and "no upstream resolver" in found.reason


def test_a_stub_domain_names_its_own_resolvers() -> None:
    context = Context(upstreams=("10.0.0.2:53",), stubs=(("corp.example", ("10.1.0.1:53",)),))
    found = explain(STORE, "ldap.corp.example", context=context)
    assert found.forwarded_to == ("10.1.0.1:53",) and "stub domain corp.example" in found.reason


def test_an_endpoint_that_is_not_ready_is_named_with_its_slice() -> None:
    found = explain(STORE, "db-1.db.prod.svc.cluster.local")
    assert found.rcode == "NXDOMAIN" and "not ready" in found.reason
    assert "EndpointSlice prod/db-a endpoints[1] (10.244.0.2)" in found.objects
    assert found.nearest == "db.prod.svc.cluster.local"


def test_an_endpoint_name_that_no_endpoint_has_points_at_one_that_exists() -> None:
    found = explain(STORE, "db-7.db.prod.svc.cluster.local")
    assert "no endpoint of the Service is named db-7" in found.reason
    assert found.nearest is not None and found.nearest.startswith("db-0.db.prod.svc.cluster.local")


def test_an_external_name_service_is_an_alias() -> None:
    found = explain(STORE, "alias.prod.svc.cluster.local", "CNAME")
    assert found.answer == ("alias.prod.svc.cluster.local. 30 IN CNAME db.example.com.",)
    assert "2.5" in found.rule


def test_a_missing_ipv6_address_is_nodata_not_nxdomain() -> None:
    found = explain(STORE, "web.prod.svc.cluster.local", "AAAA")
    assert (found.rcode, found.answer) == ("NOERROR", ())
    assert "no IPv6 address" in found.reason and "NODATA" in found.text()


def test_a_ptr_names_the_service_whose_cluster_ip_it_is() -> None:
    found = explain(STORE, "5.0.96.10.in-addr.arpa", "PTR")
    assert found.answer == ("5.0.96.10.in-addr.arpa. 30 IN PTR web.prod.svc.cluster.local.",)
    assert found.objects == ("Service prod/web (cluster IP)",)


def test_an_address_nobody_has_is_not_kdns_and_goes_upstream() -> None:
    found = explain(STORE, "9.9.9.10.in-addr.arpa", "PTR", UPSTREAM)
    assert found.rcode == "FORWARDED" and "no Service or ready endpoint has 10.9.9.9" in found.reason


def test_pod_records_in_verified_mode_name_the_pod_or_say_none_has_the_address() -> None:
    store = store_of(namespace("prod"), pod("prod", "web-1", "10.244.1.5"), pods=PodMode.VERIFIED)
    found = explain(store, "10-244-1-5.prod.pod.cluster.local")
    assert found.rcode == "NOERROR" and found.objects == ("Pod prod/web-1",)
    missing = explain(store, "10-244-1-6.prod.pod.cluster.local")
    assert missing.rcode == "NXDOMAIN" and "no Pod in prod has 10.244.1.6" in missing.reason


def test_pod_records_disabled_say_so() -> None:
    store = store_of(namespace("prod"), pods=PodMode.DISABLED)
    assert "disabled" in explain(store, "10-244-1-5.prod.pod.cluster.local").reason


def test_the_text_and_json_forms_carry_the_same_facts() -> None:
    found = explain(STORE, "api.prod.svc.cluster.local")
    text = found.text()
    assert text.startswith("api.prod.svc.cluster.local. A: NXDOMAIN")
    assert "why: there is no Service prod/api" in text and "nearest: api.staging.svc.cluster.local" in text
    data = found.as_json()
    assert data["rcode"] == "NXDOMAIN" and data["nearest"].startswith("api.staging")


def test_for_every_name_and_type_explain_says_what_the_pipeline_answers() -> None:
    """Issue 18, point 7: `explain` is a report, but its answer is the one queries get: for every
    name the fixture's zone holds (and some it does not), every type, the rcode and records it
    gives are the pipeline's."""
    names = sorted({owner for owner, _, _ in STORE.zone.names()})
    names += ["nope.prod.svc.cluster.local", "x.db.prod.svc.cluster.local", "10-244-0-1.prod.pod.cluster.local"]
    pipeline = pipeline_of(STORE)
    for name in names:
        for qtype in ("A", "AAAA", "SRV", "PTR", "TXT", "CNAME", "SOA", "NS", "ANY"):
            reply = ask(pipeline, name, qtype, tcp=True)
            found = explain(STORE, name, qtype)
            told = sorted(" ".join(line.split()).lower() for line in found.answer)
            got = sorted(
                " ".join(line.split()).lower() for rrset in reply.answer for line in rrset.to_text().splitlines()
            )
            assert (found.rcode, told) == (rcode(reply), got), (name, qtype)
