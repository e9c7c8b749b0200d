"""The real kdns process run from a Corefile (`kdns serve --corefile`, what `kdns -conf` runs):
kubeadm's Corefile served, its `loadbalance` seen, its listeners on both families, and a Corefile
edit (an imported file's included) noticed by `reload`, a bad one refused while kdns keeps
answering (issue 19)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import dns.message
import dns.query

from tests.apiserver import FakeApiServer
from tests.builders import namespace, service
from tests.helpers import QueryLoop, ask_server, http_get, http_port, metric, wait
from tests.process import EXAMPLE, KUBEADM_COREFILE, KdnsServer


def _kubeadm_on_loopback(directory: Path) -> Path:
    """kubeadm's Corefile as it is, but for its addresses: loopback and free ports (tests run
    side by side), and upstreams from an empty resolv.conf (test traffic stays here)."""
    resolv = directory / "resolv.conf"
    resolv.write_text("")
    text = KUBEADM_COREFILE.read_text()
    text = text.replace(".:53 {", ".:0 {\n    bind 127.0.0.1 ::1")
    text = text.replace("health {\n       lameduck 5s", "health :0 {\n       lameduck 1s")
    text = text.replace("    ready\n", "    ready 127.0.0.1:0\n")
    text = text.replace("prometheus :9153", "prometheus 127.0.0.1:0")
    text = text.replace("/etc/resolv.conf", str(resolv))
    corefile = directory / "Corefile"
    corefile.write_text(text)
    return corefile


def _first_addresses(server: KdnsServer, name: str, times: int) -> set[str]:
    firsts = set()
    for _ in range(times):
        reply = dns.query.udp(dns.message.make_query(name, "A"), server.host, port=server.port, timeout=3)
        firsts.add(next(iter(reply.answer[0])).to_text())
    return firsts


def test_kubeadms_corefile_serves_the_cluster_with_its_addresses_in_turn(tmp_path: Path) -> None:
    server = KdnsServer("--snapshot", str(EXAMPLE), corefile=_kubeadm_on_loopback(tmp_path), listen=("", ""))
    try:
        assert {address for address, _ in server.addresses} == {"127.0.0.1", "::1"}
        reply = dns.query.udp(
            dns.message.make_query("kubernetes.default.svc.cluster.local", "A"), server.host, port=server.port
        )
        answer = [rrset.to_text() for rrset in reply.answer]
        assert answer == ["kubernetes.default.svc.cluster.local. 30 IN A 10.96.0.1"]  # kubeadm's `ttl 30`
        assert len(_first_addresses(server, "db.prod.svc.cluster.local", 6)) == 2  # both ready ones, in turn
        health = http_port(server, "/health")  # `health :0`: one socket for both families, as CoreDNS
        assert http_get(health, "/health")[0] == 200 and http_get(health, "/health", "::1")[0] == 200
        metrics = http_get(http_port(server, "/metrics"), "/metrics")[1]
        assert metric(metrics, "coredns_reload_failed_total") == 0
        assert f"{tmp_path / 'Corefile'}:" not in server.log_text()  # no line that kdns serves otherwise
    finally:
        server.stop()


def test_a_corefile_edit_in_an_imported_file_is_reloaded_and_a_bad_one_refused_while_kdns_answers(
    tmp_path: Path,
) -> None:
    custom = tmp_path / "custom"
    custom.mkdir()
    corefile = tmp_path / "Corefile"
    # k3s's and AKS's way: users' additions imported from the coredns-custom ConfigMap.
    corefile.write_text(
        ".:0 {\n"
        "    bind 127.0.0.1\n"
        "    kubernetes cluster.local in-addr.arpa ip6.arpa\n"
        "    prometheus 127.0.0.1:0\n"
        "    reload 2s\n"
        "    import custom/*.override\n"
        "}\n"
    )
    server = KdnsServer("--snapshot", str(EXAMPLE), corefile=corefile, listen=("",))
    loop = QueryLoop(server, {"kubernetes.default.svc.cluster.local": ["10.96.0.1"]})
    try:
        port = http_port(server, "/metrics")
        (custom / "bad.override").write_text("# a user's addition\nwhoami\n")
        wait(lambda: "reload refused" in server.log_text(), 15, "the bad Corefile refused")
        refused = re.search(r"reload refused.*", server.log_text())
        assert refused is not None
        assert f"{custom / 'bad.override'}:2: whoami: not a plugin kdns serves" in refused.group(0)
        assert metric(http_get(port, "/metrics")[1], "coredns_reload_failed_total") == 1
        (custom / "bad.override").unlink()
        (custom / "log.override").write_text("log\n")
        wait(lambda: "reload applied: log_queries" in server.log_text(), 15, "the imported file's edit applied")
        # Applied while serving (issue 19, point 4): the loop's queries are logged from now on.
        # CoreDNS's common log format: `ADDR:PORT - ID "A IN NAME udp SIZE DO BUFSIZE" RCODE ...`
        wait(lambda: '"A IN kubernetes.default.svc.cluster.local. udp' in server.log_text(), 10, "a query logged")
        loop.wait_for(20)
        assert loop.wrong == [] and server.alive()
    finally:
        loop.stop()
        server.stop()


def test_the_kubernetes_endpoint_is_asked_without_a_kubeconfig(tmp_path: Path) -> None:
    """CoreDNS's `endpoint URL` with no kubeconfig: that URL, no credentials, not the in-cluster
    configuration (getClientConfig), as behind `kubectl proxy`."""
    api = FakeApiServer(anonymous=True)
    api.apply(namespace("prod"))
    api.apply(service("prod", "web", ["10.96.0.5"]))
    corefile = tmp_path / "Corefile"
    corefile.write_text(
        f".:0 {{\n    bind 127.0.0.1\n    kubernetes cluster.local {{\n        endpoint http://127.0.0.1:{api.port}\n"
        "    }\n}\n"
    )
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("KUBE", "HOME"))}
    server = KdnsServer(corefile=corefile, listen=("",), env={**environment, "HOME": str(tmp_path)})
    try:
        wait(lambda: ask_server(server, "web.prod.svc.cluster.local") == ("NOERROR", ["10.96.0.5"]), 15, "listed")
        assert any("/api/v1/services" in request for request in api.requests) and api.unauthorized == 0
    finally:
        server.stop()
        api.stop()
