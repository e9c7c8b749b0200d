"""kdns against CoreDNS itself (issue 19, point 6): the same Corefile (kubeadm's, as kubeadm writes
it, only its addresses on loopback and a kubeconfig), the same real kube-apiserver, the same
generated questions; both must give the same rcode and the same answer records, order and TTLs
aside. A difference kept on purpose is listed in `KEPT_DIFFERENCES` with its reason (and in the
README). CoreDNS is ../shared/coredns (tests/process.py `coredns_binary`).
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.rdata
import dns.rdatatype
import pytest

from tests.builders import endpoint, endpoint_slice, headless, namespace, service
from tests.fakeupstream import FakeUpstream
from tests.helpers import http_get, wait
from tests.kubeapi import RealApiServer, assets, free_port, real_apiserver
from tests.process import KUBEADM_COREFILE, KdnsServer, coredns_binary

TCP = "TCP"
# Where kdns answers otherwise on purpose, each with its reason (and in the README, "Replacing
# CoreDNS"): the specification, or the DNS itself, says what kdns answers; CoreDNS 1.13.1 says
# otherwise. Found by this test; anything else that differs fails it.
_EXTERNAL_NAME = (
    "spec 2.5 and RFC 1034 3.6.2: an ExternalName's CNAME answers every type, and kdns follows it "
    "to an in-cluster target; CoreDNS gives the CNAME to A queries only, and nothing to the others"
)
_NO_SRV_THERE = (
    "spec 2.4 and 2.3.2 put SRV records at _port._proto names only: an endpoint's or a Pod's name "
    "has none (NODATA); CoreDNS makes one up, with the first port or port 0"
)
_NAME_EXISTS = (
    "RFC 1034 4.3.2 and RFC 8020: a name that exists (the apex, an empty non-terminal, "
    "dns-version with its TXT) is NODATA for a type it lacks, never NXDOMAIN; CoreDNS says NXDOMAIN "
    "for some types"
)
# An artefact of running both on loopback, not a difference in a Pod: CoreDNS takes its own
# addresses for the NS records only from non-loopback addresses it is bound to
# (plugin/kubernetes/local.go), so on 127.0.0.1 it has none and answers no NS.
_LOOPBACK = "on loopback CoreDNS has no address of its own for ns.dns (plugin/kubernetes/local.go)"
KEPT_DIFFERENCES: dict[tuple[str, str], str] = {
    ("cluster.local", "NS"): _LOOPBACK,
    ("ns.dns.cluster.local", "A"): _LOOPBACK,
    **{("ext.prod.svc.cluster.local", rdtype): _EXTERNAL_NAME for rdtype in ("AAAA", "SRV", "TXT")},
    ("db-0.db.prod.svc.cluster.local", "SRV"): _NO_SRV_THERE,
    ("10-244-1-1.cache.prod.svc.cluster.local", "SRV"): _NO_SRV_THERE,
    ("10-244-2-7.prod.pod.cluster.local", "SRV"): _NO_SRV_THERE,
    **{(f"{name}cluster.local", "TXT"): _NAME_EXISTS for name in ("prod.svc.", "svc.", "empty.svc.", "")},
    **{("dns-version.cluster.local", rdtype): _NAME_EXISTS for rdtype in ("A", "AAAA", "SRV")},
}


def _objects() -> list[dict[str, object]]:
    web_ports = [{"name": "http", "port": 80, "protocol": TCP}, {"name": "dns", "port": 53, "protocol": "UDP"}]
    db_ports = [{"name": "pg", "port": 5432, "protocol": TCP}]
    return [
        namespace("prod"),
        namespace("empty"),
        service("kube-system", "kube-dns", ["10.96.0.10"], ports=[{"name": "dns", "port": 53, "protocol": "UDP"}]),
        service("prod", "web", ["10.96.0.5"], ports=web_ports),
        service("prod", "api", ["10.96.0.6"]),
        headless("prod", "db", ports=db_ports),
        endpoint_slice(
            "prod",
            "db-a",
            "db",
            [
                endpoint("10.244.0.1", hostname="db-0"),
                endpoint("10.244.0.2", hostname="db-1"),
                endpoint("10.244.0.3", ready=False, hostname="db-2"),
            ],
            ports=db_ports,
        ),
        headless("prod", "cache"),
        endpoint_slice("prod", "cache-a", "cache", [endpoint(f"10.244.1.{i}") for i in range(1, 5)]),
        headless("prod", "lonely"),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "ext", "namespace": "prod"},
            "spec": {"type": "ExternalName", "externalName": "web.prod.svc.cluster.local"},
        },
    ]


def _questions() -> list[tuple[str, str]]:
    """Every kind of name the spec defines, asked with the types clients ask, and names that
    are not there: generated from the objects above."""
    zone = "cluster.local"
    names = [
        "web.prod.svc",
        "api.prod.svc",
        "db.prod.svc",
        "cache.prod.svc",
        "lonely.prod.svc",
        "ext.prod.svc",
        "db-0.db.prod.svc",
        "db-2.db.prod.svc",
        "10-244-1-1.cache.prod.svc",
        "10-244-2-7.prod.pod",  # `pods insecure`: any address, no Pod needed
        "10-244-2-7.nonamespace.pod",
        "nope.prod.svc",
        "prod.svc",
        "svc",
        "nope.empty.svc",
        "web.nonamespace.svc",
        "empty.svc",
        "",
        "nope",
        "dns-version",
    ]
    questions = [(f"{name}.{zone}".lstrip("."), rdtype) for name in names for rdtype in ("A", "AAAA", "SRV", "TXT")]
    questions += [(f"_http._tcp.web.prod.svc.{zone}", "SRV"), (f"_dns._udp.web.prod.svc.{zone}", "SRV")]
    questions += [(f"_pg._tcp.db.prod.svc.{zone}", "SRV"), (f"_http._udp.web.prod.svc.{zone}", "SRV")]
    questions += [(f"_nope._tcp.web.prod.svc.{zone}", "SRV")]
    questions += [(zone, "SOA"), (zone, "NS"), (f"prod.svc.{zone}", "SOA"), (f"ns.dns.{zone}", "A")]
    for address in ("10.96.0.5", "10.96.0.6", "10.244.0.1", "10.244.1.2"):
        questions.append((ipaddress.ip_address(address).reverse_pointer, "PTR"))
    questions += [("www.example.com", "A")]  # forwarded: the same upstream answers both
    return questions


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealApiServer]:
    assets()
    with real_apiserver(tmp_path_factory.mktemp("apiserver")) as server:
        for obj in _objects():
            server.create(obj)
        yield server


def _corefile(path: Path, kubeconfig: Path, upstream: FakeUpstream, ready_port: int | None = None) -> Path:
    """kubeadm's Corefile with its addresses on loopback: a free DNS port (the listen address is
    read from the log for kdns, and asked of the kernel for CoreDNS), the kubeconfig of the test
    API server, the fake upstream."""
    text = KUBEADM_COREFILE.read_text()
    text = text.replace(".:53 {", ".:{PORT} {\n    bind 127.0.0.1")
    text = text.replace("health {\n       lameduck 5s", "health 127.0.0.1:0 {\n       lameduck 1s")
    text = text.replace("    ready\n", f"    ready 127.0.0.1:{ready_port or 0}\n")
    text = text.replace("prometheus :9153", "prometheus 127.0.0.1:0")
    text = text.replace("       ttl 30\n", f"       ttl 30\n       kubeconfig {kubeconfig} real\n")
    text = text.replace("forward . /etc/resolv.conf", f"forward . {upstream.spec}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _answer(port: int, name: str, rdtype: str) -> tuple[str, list[str]]:
    query = dns.message.make_query(name, rdtype)
    reply = dns.query.tcp(query, "127.0.0.1", port=port, timeout=5)
    records = sorted(
        f"{rrset.name.to_text().lower()} {dns.rdatatype.to_text(rrset.rdtype)} {_rdata(item)}"
        for rrset in reply.answer
        for item in rrset
    )
    return dns.rcode.to_text(reply.rcode()), records


def test_kubeadms_corefile_gives_the_same_answers_from_kdns_and_coredns(api: RealApiServer, tmp_path: Path) -> None:
    upstream = FakeUpstream()
    kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
    coredns_port, coredns_ready = free_port(), free_port()
    for_coredns = _corefile(tmp_path / "for-coredns" / "Corefile", kubeconfig, upstream, coredns_ready)
    for_kdns = _corefile(tmp_path / "for-kdns" / "Corefile", kubeconfig, upstream)
    assert for_coredns.read_text().replace(f"ready 127.0.0.1:{coredns_ready}", "ready 127.0.0.1:0") == (
        for_kdns.read_text()
    )
    for_coredns.write_text(for_coredns.read_text().replace("{PORT}", str(coredns_port)))
    for_kdns.write_text(for_kdns.read_text().replace("{PORT}", "0"))
    coredns = subprocess.Popen(
        [str(coredns_binary(tmp_path)), "-conf", str(for_coredns)],  # unpacked beside the two directories
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={"GOMAXPROCS": "1", "PATH": "/usr/bin:/bin"},
    )
    kdns = KdnsServer(corefile=for_kdns, listen=("",))
    try:
        wait(lambda: _ready(coredns_ready), 30, "CoreDNS ready (synced with the API server)")
        wait(lambda: _answer(kdns.port, "nope.prod.svc.cluster.local", "A")[0] == "NXDOMAIN", 30, "kdns synced")
        differences = []
        for name, rdtype in _questions():
            ours, theirs = _answer(kdns.port, name, rdtype), _answer(coredns_port, name, rdtype)
            if ours != theirs and (name, rdtype) not in KEPT_DIFFERENCES:
                differences.append(f"{name} {rdtype}: kdns {ours} coredns {theirs}")
        assert differences == [], "\n".join(differences)
    finally:
        kdns.stop()
        coredns.terminate()
        coredns.wait(10)
        upstream.close()


def _rdata(item: dns.rdata.Rdata) -> str:
    """A record's data, lowercased; an SOA's serial aside (each server stamps its own time)."""
    if item.rdtype == dns.rdatatype.SOA:
        item = item.replace(serial=0)
    return str(item.to_text()).lower()


def _ready(port: int) -> bool:
    try:
        return http_get(port, "/ready")[0] == 200
    except OSError:
        return False
