"""kdns against CoreDNS itself (issue 19, point 6): the same Corefile (kubeadm's, as kubeadm writes
it, only its addresses on loopback and a kubeconfig), the same real kube-apiserver, the same
generated questions; both must give the same rcode and the same answer records, order and TTLs
aside. A difference kept on purpose is listed in `KEPT_DIFFERENCES` with its reason (and in the
README). CoreDNS is ../shared/coredns (tests/process.py `coredns_binary`).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import subprocess
import time
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
from tests.process import AKS_COREFILE, K3S_COREFILE, KUBEADM_COREFILE, KdnsServer, coredns_binary

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
        # For `endpoint_pod_names` and `ignore empty_service`: endpoints named after their Pods
        # (one with a hostname, one without a Pod), a ClusterIP Service with ready endpoints and
        # one without any ready.
        headless("prod", "named", ports=db_ports),
        endpoint_slice(
            "prod",
            "named-a",
            "named",
            [
                endpoint("10.244.3.1", pod="named-abc"),
                endpoint("10.244.3.2", hostname="h0", pod="named-h"),
                endpoint("10.244.3.3"),
            ],
            ports=db_ports,
        ),
        service("prod", "busy", ["10.96.0.8"], ports=db_ports),
        endpoint_slice("prod", "busy-a", "busy", [endpoint("10.244.4.1", pod="busy-1")], ports=db_ports),
        service("prod", "idle", ["10.96.0.7"], ports=db_ports),
        endpoint_slice("prod", "idle-a", "idle", [endpoint("10.244.5.1", ready=False, pod="idle-1")], ports=db_ports),
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


def _on_loopback(text: str, kubeconfig: Path, upstream: FakeUpstream) -> str:
    """A cluster's Corefile with its addresses on loopback: a free DNS port (`{PORT}`: read from
    the log for kdns, asked of the kernel for CoreDNS), `{READY}` for /ready, the kubeconfig of the
    test API server, the fake upstream."""
    text = text.replace(".:53 {", ".:{PORT} {\n    bind 127.0.0.1")
    text = re.sub(r"health \{\n( +)lameduck 5s", r"health 127.0.0.1:0 {\n\1lameduck 1s", text)
    text = text.replace("    health\n", "    health 127.0.0.1:0\n")
    text = text.replace("    ready\n", "    ready 127.0.0.1:{READY}\n")
    text = text.replace("prometheus :9153", "prometheus 127.0.0.1:0")
    text = text.replace(
        "kubernetes cluster.local in-addr.arpa ip6.arpa {\n",
        f"kubernetes cluster.local in-addr.arpa ip6.arpa {{\n       kubeconfig {kubeconfig} real\n",
    )
    return text.replace("forward . /etc/resolv.conf", f"forward . {upstream.spec}")


class Side:
    """One server's copy of the Corefile and the files beside it, in its own directory."""

    def __init__(self, directory: Path, text: str, files: dict[str, str], port: int, ready: int) -> None:
        directory.mkdir(parents=True)
        for name, content in files.items():
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            (directory / name).write_text(content.replace("{PORT}", str(port)))
        text = text.replace("{DIR}", str(directory)).replace("{PORT}", str(port)).replace("{READY}", str(ready))
        self.corefile = directory / "Corefile"
        self.corefile.write_text(text)


def _differences(
    tmp_path: Path, text: str, files: dict[str, str], questions: list[tuple[str, str]], kept: dict[tuple[str, str], str]
) -> list[str]:
    """Run CoreDNS and kdns on `text` (and `files` beside it, `{DIR}` their directory), ask both
    every question over TCP; what differs, except `kept`."""
    coredns_port, coredns_ready = free_port(), free_port()
    for_coredns = Side(tmp_path / "for-coredns", text, files, coredns_port, coredns_ready)
    for_kdns = Side(tmp_path / "for-kdns", text, files, 0, 0)
    coredns = subprocess.Popen(
        [str(coredns_binary(tmp_path)), "-conf", str(for_coredns.corefile)],  # unpacked beside the two
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={"GOMAXPROCS": "1", "PATH": "/usr/bin:/bin"},
    )
    kdns = KdnsServer(corefile=for_kdns.corefile, listen=("",))
    try:
        wait(lambda: _ready(coredns_ready), 30, "CoreDNS ready (synced with the API server)")
        wait(lambda: _synced(kdns.port), 30, "kdns synced")
        differences = []
        for name, rdtype in questions:
            ours, theirs = _answer(kdns.port, name, rdtype), _answer(coredns_port, name, rdtype)
            if ours != theirs and (name, rdtype) not in kept:
                differences.append(f"{name} {rdtype}: kdns {ours} coredns {theirs}")
        return differences
    finally:
        kdns.stop()
        coredns.terminate()
        coredns.wait(10)


def _answer(port: int, name: str, rdtype: str) -> tuple[str, list[str]]:
    """The rcode, and the question (when it is not the one asked: `rewrite` may leave it so) and
    answer records, over TCP."""
    query = dns.message.make_query(name, rdtype)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        expiration = time.time() + 5
        dns.query.send_tcp(sock, query, expiration)
        reply, _ = dns.query.receive_tcp(sock, expiration)
    records = sorted(
        f"{rrset.name.to_text().lower()} {dns.rdatatype.to_text(rrset.rdtype)} {_rdata(item)}"
        for rrset in reply.answer
        for item in rrset
    )
    question = [f"question {item.to_text().lower()}" for item in reply.question]
    if question != [f"question {query.question[0].to_text().lower()}"]:
        records = question + records
    return dns.rcode.to_text(reply.rcode()), records


def test_kubeadms_corefile_gives_the_same_answers_from_kdns_and_coredns(api: RealApiServer, tmp_path: Path) -> None:
    upstream = FakeUpstream()
    try:
        text = _on_loopback(KUBEADM_COREFILE.read_text(), api.kubeconfig(tmp_path / "kubeconfig"), upstream)
        differences = _differences(tmp_path, text, {}, _questions(), KEPT_DIFFERENCES)
        assert differences == [], "\n".join(differences)
    finally:
        upstream.close()


_WILDCARD_HOSTS = (
    "CoreDNS 1.14.5 answers `*.apps.lan` in a hosts file for any one label in its place (#8185), and "
    "kdns does; the 1.13.1 of ../shared reads it as a literal name (so the name goes on to forward)"
)
HOST_DIFFERENCES = {("console.apps.lan", rdtype): _WILDCARD_HOSTS for rdtype in ("A", "AAAA", "MX", "TXT")}
NODE_HOSTS = "10.0.0.1 server-0\n10.0.0.2 agent-1 agent-1.lan\nfd00::2 agent-1\n10.0.0.3 *.apps.lan\n"


def _host_questions() -> list[tuple[str, str]]:
    """The NodeHosts names (exact, wildcard, two families, other types), reverse names of the
    nodes and of nothing, and names that fall through to the cluster or the upstream."""
    names = ["server-0", "agent-1", "agent-1.lan", "console.apps.lan", "a.b.apps.lan", "nowhere", "nowhere.lan"]
    questions = [(name, rdtype) for name in names for rdtype in ("A", "AAAA", "MX", "TXT")]
    questions += [("1.0.0.10.in-addr.arpa", "PTR"), ("2.0.0.10.in-addr.arpa", "PTR"), ("9.0.0.10.in-addr.arpa", "PTR")]
    questions += [(ipaddress.ip_address("fd00::2").reverse_pointer, "PTR")]
    questions += [("www.corp.example", "A"), ("corp.example", "A"), ("www.example.com", "A")]
    return questions


def test_a_k3s_corefile_with_nodehosts_and_custom_imports_gives_the_same_answers(
    api: RealApiServer, tmp_path: Path
) -> None:
    """k3s's Corefile as k3s writes it: NodeHosts, `import custom/*.override` inside the main
    block and `import custom/*.server` (a stub domain) beside it, from the coredns-custom
    ConfigMap."""
    upstream, corporate = FakeUpstream(), FakeUpstream("198.51.100.7")
    try:
        text = _on_loopback(K3S_COREFILE.read_text(), api.kubeconfig(tmp_path / "kubeconfig"), upstream)
        text = text.replace("/etc/coredns/", "{DIR}/")
        files = {
            "NodeHosts": NODE_HOSTS,
            "custom/log.override": "log\n",
            "custom/corp.server": f"corp.example:{{PORT}} {{\n    bind 127.0.0.1\n    forward . {corporate.spec}\n}}\n",
        }
        questions = _host_questions() + _questions()
        differences = _differences(tmp_path, text, files, questions, KEPT_DIFFERENCES | HOST_DIFFERENCES)
        assert differences == [], "\n".join(differences)
    finally:
        upstream.close()
        corporate.close()


_ANY_ONE_RRSET = "kdns answers ANY at a cluster name with one RRset (RFC 8482 4.1); CoreDNS's kubernetes, NODATA"
STUB_BLOCKS = """\
lan:{PORT} {
    bind 127.0.0.1
    errors
    hosts {
        10.0.0.7 printer.lan
        fd00::7 printer.lan
        fallthrough
    }
    template IN A lan {
        match "^wild-(?P<n>[0-9]+)\\.lan\\.$"
        answer "{{ .Name }} 60 IN A 10.0.1.{{ .Group.n }}"
        fallthrough
    }
    loadbalance
    forward . UPSTREAM
}
corp.example:{PORT} {
    bind 127.0.0.1
    any
    rewrite name exact old.corp.example new.corp.example
    template IN TXT corp.example {
        answer "{{ .Name }} 60 IN TXT \\"from the template\\""
    }
    forward . CORPORATE
}
apps.test:{PORT} {
    bind 127.0.0.1
    template IN A apps.test {
        answer "{{ .Name }} 60 IN A 10.0.0.10"
    }
    hosts {
        10.0.0.11 fixed.apps.test
    }
}
"""


def test_stub_blocks_with_their_own_plugins_give_the_same_answers(api: RealApiServer, tmp_path: Path) -> None:
    """Server blocks of their own zones (as `import custom/*.server` brings them) with hosts,
    template, rewrite, any and loadbalance of their own, one that forwards nothing (what its
    plugins leave is SERVFAIL, CoreDNS's end of a chain): each block answers with its own."""
    upstream, corporate = FakeUpstream(), FakeUpstream("198.51.100.7")
    try:
        text = _on_loopback(KUBEADM_COREFILE.read_text(), api.kubeconfig(tmp_path / "kubeconfig"), upstream)
        text += STUB_BLOCKS.replace("UPSTREAM", upstream.spec).replace("CORPORATE", corporate.spec)
        names = (
            "printer.lan",
            "wild-42.lan",
            "other.lan",
            "old.corp.example",
            "www.corp.example",
            "anything.apps.test",
            "fixed.apps.test",
            "web.prod.svc.cluster.local",
            "printer.example.com",
        )
        questions = [(name, rdtype) for name in names for rdtype in ("A", "AAAA", "TXT", "ANY")]
        questions += [("7.0.0.10.in-addr.arpa", "PTR")]
        kept = KEPT_DIFFERENCES | {("web.prod.svc.cluster.local", "ANY"): _ANY_ONE_RRSET}
        differences = _differences(tmp_path, text, {}, questions, kept)
        assert differences == [], "\n".join(differences)
    finally:
        upstream.close()
        corporate.close()


REWRITES = """\
    rewrite name exact api.example.org web.prod.svc.cluster.local
    rewrite name suffix .apps.example.org .prod.svc.cluster.local answer auto
    rewrite stop {
        name regex (.*)\\.corp\\.internal {1}.prod.svc.cluster.local
        answer name (.*)\\.prod\\.svc\\.cluster\\.local {1}.corp.internal
    }
    rewrite name substring legacy web
    rewrite name regex (.*)\\.noauto\\.example {1}.prod.svc.cluster.local
    rewrite name prefix www.ext. www.example.com.
    rewrite continue type TXT A
    rewrite name exact typed.example.org api.prod.svc.cluster.local
"""


def _rewrite_questions() -> list[tuple[str, str]]:
    names = [
        "api.example.org",
        "web.apps.example.org",
        "db.apps.example.org",
        "db-0.db.apps.example.org",
        "ext.apps.example.org",
        "nope.apps.example.org",
        "web.corp.internal",
        "ext.corp.internal",
        "legacy.prod.svc.cluster.local",
        "web.noauto.example",
        "www.ext.www.example.com",
        "typed.example.org",
        "unrelated.example.com",
    ]
    questions = [(name, rdtype) for name in names for rdtype in ("A", "AAAA", "SRV", "TXT")]
    questions += [("_http._tcp.web.apps.example.org", "SRV"), ("_pg._tcp.db.apps.example.org", "SRV")]
    questions += [("_http._tcp.web.corp.internal", "SRV")]
    return questions


def test_an_aks_corefile_with_coredns_custom_overrides_gives_the_same_answers(
    api: RealApiServer, tmp_path: Path
) -> None:
    """AKS's Corefile (examples/coredns/aks/Corefile: its own templates, `import custom/*.override`
    inside the main block, `import custom/*.server` beside it) with a `coredns-custom` ConfigMap
    as AKS's documentation shows one: a hosts override, a rewrite override, a stub domain."""
    upstream, corporate = FakeUpstream(), FakeUpstream("198.51.100.7")
    try:
        text = _on_loopback(AKS_COREFILE.read_text(), api.kubeconfig(tmp_path / "kubeconfig"), upstream)
        files = {
            "custom/hosts.override": "hosts {\n    10.0.0.1 example1.org\n    fallthrough\n}\n",
            "custom/rewrite.override": "rewrite name substring legacy.example web.prod.svc.cluster.local\n",
            "custom/corp.server": (
                "corp.example:{PORT} {\n    bind 127.0.0.1\n    errors\n    cache 30\n"
                f"    forward . {corporate.spec}\n}}\n"
            ),
        }
        questions = [
            (name, rdtype)
            for name in (
                "example1.org",
                "www.example1.org",
                "legacy.example",
                "a.b.c.d.internal.cloudapp.net",
                "x.internal.cloudapp.net",
                "vm.reddog.microsoft.com",
                "www.corp.example",
                "web.prod.svc.cluster.local",
                "www.example.com",
            )
            for rdtype in ("A", "AAAA", "TXT")
        ]
        differences = _differences(tmp_path, text, files, questions + _questions(), KEPT_DIFFERENCES)
        assert differences == [], "\n".join(differences)
    finally:
        upstream.close()
        corporate.close()


def test_rewrite_rules_give_the_same_answers(api: RealApiServer, tmp_path: Path) -> None:
    """Users' `rewrite` rules (in-cluster names for outside ones, renamed services) in
    kubeadm's Corefile: exact, suffix with `answer auto`, regex with an `answer name` rule, in a
    block, substring, prefix, a regex without answer rules, `continue` and `type`."""
    upstream = FakeUpstream()
    try:
        text = _on_loopback(KUBEADM_COREFILE.read_text(), api.kubeconfig(tmp_path / "kubeconfig"), upstream)
        text = text.replace("    loadbalance\n", "    loadbalance\n" + REWRITES)
        differences = _differences(tmp_path, text, {}, _rewrite_questions(), KEPT_DIFFERENCES | REWRITE_DIFFERENCES)
        assert differences == [], "\n".join(differences)
    finally:
        upstream.close()


# The kept differences above, met through a rewritten name.
REWRITE_DIFFERENCES: dict[tuple[str, str], str] = {
    ("db-0.db.apps.example.org", "SRV"): _NO_SRV_THERE,
    **{
        (name, rdtype): _EXTERNAL_NAME
        for name in ("ext.apps.example.org", "ext.corp.internal")
        for rdtype in ("AAAA", "SRV", "TXT")
    },
}


TEMPLATES = r"""
    template ANY ANY internal.cloudapp.net {
        match "^(?:[^.]+\.){4,}internal\.cloudapp\.net\.$"
        rcode NXDOMAIN
        fallthrough
    }
    template ANY ANY reddog.microsoft.com {
        rcode NXDOMAIN
    }
    template IN A apps.example.org {
        match "^(?P<app>[a-z0-9-]+)\.apps\.example\.org\.$"
        answer "{{ .Name }} 60 IN A 10.96.0.5"
        fallthrough
    }
    template IN AAAA apps.example.org {
        authority "apps.example.org. 60 IN SOA ns.apps.example.org. hostmaster.apps.example.org. (1 60 60 60 60)"
    }
    template IN A ip.example.org {
        match ^ip-(?P<a>[0-9]+)-(?P<b>[0-9]+)-(?P<c>[0-9]+)-(?P<d>[0-9]+)\.ip\.example\.org\.$
        answer "{{ .Name }} 60 IN A {{ .Group.a }}.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"
    }
    template IN A cname.example.org {
        answer "{{ .Name }} 60 IN CNAME web.prod.svc.cluster.local."
    }
    template IN TXT hex.example.org {
        match ^(?P<x>[0-9a-z]+)\.hex\.example\.org\.$
        answer "{{ .Name }} IN TXT {{ parseInt .Group.x 16 8 }}-{{ index .Match 1 }}-{{ .Type }}-{{ .Zone }}"
    }
"""


def _template_questions() -> list[tuple[str, str]]:
    names = [
        "a.b.c.d.internal.cloudapp.net",
        "x.internal.cloudapp.net",
        "foo.reddog.microsoft.com",
        "shop.apps.example.org",
        "a.b.apps.example.org",
        "ip-10-1-2-3.ip.example.org",
        "bad.ip.example.org",
        "www.cname.example.org",
        "ff.hex.example.org",
        "zz.hex.example.org",
        "1ff.hex.example.org",
        "web.prod.svc.cluster.local",
        "www.blocked.example",
        "blocked.example",
    ]
    return [(name, rdtype) for name in names for rdtype in ("A", "AAAA", "MX", "TXT")]


def test_template_answers_are_the_same(api: RealApiServer, tmp_path: Path) -> None:
    """AKS's own templates (NXDOMAIN for search-path guesses, with fallthrough), a wildcard apps
    domain with named groups, a NODATA with an SOA, addresses from groups, a CNAME followed into
    the cluster, and parseInt, index .Match, .Type and .Zone; and forward's `except`."""
    upstream = FakeUpstream()
    try:
        text = _on_loopback(KUBEADM_COREFILE.read_text(), api.kubeconfig(tmp_path / "kubeconfig"), upstream)
        text = text.replace("    loadbalance\n", "    loadbalance\n" + TEMPLATES)
        text = text.replace("max_concurrent 1000\n", "max_concurrent 1000\n       except blocked.example\n")
        differences = _differences(tmp_path, text, {}, _template_questions(), KEPT_DIFFERENCES)
        assert differences == [], "\n".join(differences)
    finally:
        upstream.close()


def _kubernetes_questions() -> list[tuple[str, str]]:
    names = [
        "named.prod.svc",
        "named-abc.named.prod.svc",
        "h0.named.prod.svc",
        "10-244-3-1.named.prod.svc",
        "10-244-3-3.named.prod.svc",
        "busy.prod.svc",
        "busy-1.busy.prod.svc",
        "10-244-4-1.busy.prod.svc",
        "idle.prod.svc",
        "api.prod.svc",
        "db.prod.svc",
        "db-0.db.prod.svc",
        "cache.prod.svc",
        "nope.prod.svc",
        "nope.svc",
    ]
    questions = [(f"{name}.cluster.local", rdtype) for name in names for rdtype in ("A", "SRV")]
    questions += [(f"_pg._tcp.{name}.prod.svc.cluster.local", "SRV") for name in ("named", "busy", "idle", "db")]
    for address in ("10.244.3.1", "10.244.3.2", "10.244.4.1", "10.96.0.7", "10.96.0.8", "10.244.0.1"):
        questions.append((ipaddress.ip_address(address).reverse_pointer, "PTR"))
    return questions


@pytest.mark.parametrize(
    "options",
    [
        ("endpoint_pod_names", "ignore empty_service"),
        ("noendpoints",),
        ("fallthrough",),  # in place of kubeadm's `fallthrough in-addr.arpa ip6.arpa`: every zone
    ],
)
def test_kubernetes_options_give_the_same_answers(api: RealApiServer, tmp_path: Path, options: tuple[str, ...]) -> None:
    """The `kubernetes` plugin's `endpoint_pod_names`, `ignore empty_service`, `noendpoints`, and
    `fallthrough` for every zone (a cluster name that does not exist is forwarded)."""
    upstream = FakeUpstream()
    try:
        text = _on_loopback(KUBEADM_COREFILE.read_text(), api.kubeconfig(tmp_path / "kubeconfig"), upstream)
        if "fallthrough" in options:
            text = text.replace("       fallthrough in-addr.arpa ip6.arpa\n", "")
        lines = "".join(f"       {option}\n" for option in options)
        text = text.replace("       pods insecure\n", "       pods insecure\n" + lines)
        differences = _differences(tmp_path, text, {}, _kubernetes_questions(), KEPT_DIFFERENCES | OPTION_DIFFERENCES)
        assert differences == [], "\n".join(differences)
    finally:
        upstream.close()


# The kept difference above, at the endpoints' names (`endpoint_pod_names`'s and the dashed ones).
OPTION_DIFFERENCES: dict[tuple[str, str], str] = {
    (f"{name}.cluster.local", "SRV"): _NO_SRV_THERE
    for name in (
        "named-abc.named.prod.svc",
        "h0.named.prod.svc",
        "10-244-3-1.named.prod.svc",
        "10-244-3-3.named.prod.svc",
        "busy-1.busy.prod.svc",
        "10-244-4-1.busy.prod.svc",
    )
}


def _reverse_questions() -> list[tuple[str, str]]:
    """PTRs of Services' and Pods' addresses and of addresses nothing holds, in both families, and
    the SOAs of the reverse zones."""
    addresses = ("10.96.0.5", "10.96.0.6", "10.244.1.2", "10.96.0.99", "192.0.2.9", "fd00::99", "2001:db8::1")
    questions = [(ipaddress.ip_address(address).reverse_pointer, "PTR") for address in addresses]
    return [*questions, ("in-addr.arpa", "SOA"), ("ip6.arpa", "SOA"), ("web.prod.svc.cluster.local", "A")]


@pytest.mark.parametrize(
    ("kubernetes", "fallthrough"),
    [
        ("kubernetes cluster.local in-addr.arpa ip6.arpa", ""),  # NXDOMAIN for what it holds nothing of
        ("kubernetes cluster.local in-addr.arpa ip6.arpa", "fallthrough ip6.arpa"),  # one zone goes on
        ("kubernetes cluster.local", ""),  # the reverse zones are not its own: forwarded
    ],
)
def test_reverse_zones_answer_as_the_kubernetes_line_lists_them(
    api: RealApiServer, tmp_path: Path, kubernetes: str, fallthrough: str
) -> None:
    """CoreDNS's kubernetes plugin serves the reverse zones its line lists, and hands on the
    names it holds nothing of only in the zones its `fallthrough` covers (kubeadm's covers both):
    a reverse name elsewhere is NXDOMAIN with the reverse zone's SOA, or, in a zone it does not
    list, the next block's (forwarded)."""
    upstream = FakeUpstream()
    try:
        text = _on_loopback(KUBEADM_COREFILE.read_text(), api.kubeconfig(tmp_path / "kubeconfig"), upstream)
        text = text.replace("kubernetes cluster.local in-addr.arpa ip6.arpa {", kubernetes + " {")
        covered = f"       {fallthrough}\n" if fallthrough else ""
        text = text.replace("       fallthrough in-addr.arpa ip6.arpa\n", covered)
        assert kubernetes + " {" in text
        differences = _differences(tmp_path, text, {}, _reverse_questions(), {})
        assert differences == [], "\n".join(differences)
    finally:
        upstream.close()


def test_the_query_log_is_corednss_line_for_line(api: RealApiServer, tmp_path: Path) -> None:
    """The `log` plugin's lines as CoreDNS writes them (the common format; a scope with the
    `denial` class; a format of one's own), for the same queries with the same IDs; the client's
    port and the duration aside."""
    upstream = FakeUpstream()
    try:
        text = _on_loopback(KUBEADM_COREFILE.read_text(), api.kubeconfig(tmp_path / "kubeconfig"), upstream)
        logs = (
            "    log prod.svc.cluster.local {\n        class denial\n    }\n"
            '    log example.com "{name} {type} {>rflags} {rcode} {/meta} {unknown} {proto} {local}"\n'
            "    log\n"
        )
        text = text.replace("    errors\n", "    errors\n" + logs)
        coredns_port, coredns_ready = free_port(), free_port()
        for_coredns = Side(tmp_path / "for-coredns", text, {}, coredns_port, coredns_ready)
        for_kdns = Side(tmp_path / "for-kdns", text, {}, 0, 0)
        coredns_log = tmp_path / "coredns.log"
        with open(coredns_log, "w") as out:
            coredns = subprocess.Popen(
                [str(coredns_binary(tmp_path)), "-conf", str(for_coredns.corefile)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={"GOMAXPROCS": "1", "PATH": "/usr/bin:/bin"},
            )
        kdns = KdnsServer(corefile=for_kdns.corefile, listen=("",))
        try:
            wait(lambda: _ready(coredns_ready), 30, "CoreDNS ready")
            wait(lambda: _answer(kdns.port, "nope.prod.svc.cluster.local", "A")[0] == "NXDOMAIN", 30, "kdns synced")
            asked = [
                ("web.prod.svc.cluster.local", "A", 4242),  # success: not in the denial scope's log
                ("nope.prod.svc.cluster.local", "AAAA", 4243),  # denial
                ("www.example.com", "A", 4244),  # the format of its own
                ("kubernetes.default.svc.cluster.local", "SRV", 4245),  # the last rule, common format
                ("www.example.com", "AAAA", 4246),  # over TCP: {local} is the connection's address
            ]
            for port in (coredns_port, kdns.port):
                for name, rdtype, query_id in asked:
                    query = dns.message.make_query(name, rdtype, use_edns=0, payload=1232)
                    query.id = query_id
                    send = dns.query.tcp if query_id == 4246 else dns.query.udp
                    send(query, "127.0.0.1", port=port, timeout=5)
            theirs = _query_lines(coredns_log.read_text(), "[INFO] ")
            wait(lambda: len(_query_lines(kdns.log_text(), "kdns.queries: ")) >= 4, 10, "kdns's lines")
            ours = _query_lines(kdns.log_text(), "kdns.queries: ")
            assert ours == theirs and len(ours) == 4, f"kdns {ours}\ncoredns {theirs}"
            assert ours[1].endswith(" udp 127.0.0.1") and ours[3].endswith(" tcp 127.0.0.1")
        finally:
            kdns.stop()
            coredns.terminate()
            coredns.wait(10)
    finally:
        upstream.close()


def _query_lines(text: str, marker: str) -> list[str]:
    """The query-log lines of the test's queries (IDs 4242-4245, or the format of its own) after
    `marker`, with what differs on purpose masked: the client's port and the duration; the reply's
    size (CoreDNS compresses a reply only when it must, kdns always: the same records in fewer
    bytes); its `ra` flag (kdns says it recurses for the names it forwards, RFC 1035 4.1.1;
    CoreDNS never sets RA itself and relays the upstream's)."""
    lines = [line.split(marker, 1)[1] for line in text.splitlines() if marker in line]
    ours = [line for line in lines if re.search(r" - 424\d ", line) or line.startswith("www.example.com. ")]
    masked = [re.sub(r"^(\S+):\d+ ", r"\1:PORT ", line) for line in ours]
    masked = [re.sub(r" \d+ [0-9.]+s$", " RSIZE DURATIONs", line) for line in masked]
    return [line.replace(",ra ", " ") for line in masked]


def _rdata(item: dns.rdata.Rdata) -> str:
    """A record's data, lowercased; an SOA's serial aside (each server stamps its own time)."""
    if item.rdtype == dns.rdatatype.SOA:
        item = item.replace(serial=0)
    return str(item.to_text()).lower()


def _synced(port: int) -> bool:
    """Whether kdns has listed the cluster: a missing name is NXDOMAIN (before, SERVFAIL), or,
    with `fallthrough`, a Service's name answers (before, SERVFAIL too)."""
    return (
        _answer(port, "nope.prod.svc.cluster.local", "A")[0] == "NXDOMAIN"
        or _answer(port, "web.prod.svc.cluster.local", "A")[1] != []
    )


def _ready(port: int) -> bool:
    try:
        return http_get(port, "/ready")[0] == 200
    except OSError:
        return False
