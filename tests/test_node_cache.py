"""`kdns node-cache` (issue 12, point 2), end to end in network namespaces: a "pod" whose
resolv.conf names the node-local address, a "node" running kdns node-cache on 169.254.20.10
and, behind it, kdns as the cluster DNS (asked over TCP) and Debian's unbound as the node's
resolver. Cluster and external names resolve through glibc; the cluster DNS sees one query per
name per TTL; when it is killed, cached names keep resolving (served stale) and new ones fail
fast."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kdns.config import NODE_LOCAL_ADDRESS
from tests.builders import namespace, service
from tests.helpers import wait
from tests.netns import Namespace, node_namespace, pod_namespace
from tests.process import KdnsServer

POD_RESOLV_CONF = (
    f"nameserver {NODE_LOCAL_ADDRESS}\nsearch prod.svc.cluster.local svc.cluster.local cluster.local\n"
    "options ndots:5 timeout:3 attempts:1\n"
)
CLUSTER_DNS = "127.0.0.1:5300"  # inside the node namespace
NODE_RESOLVER_PORT = 5301


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[str, Namespace]]:
    with node_namespace("nc", NODE_LOCAL_ADDRESS) as node_ns, pod_namespace(8, POD_RESOLV_CONF, peer=node_ns) as pod:
        yield node_ns, pod


def _unbound(node_ns: str, directory: Path) -> subprocess.Popen[str]:
    """Debian's unbound in the node namespace: the node's own resolver, for names outside the cluster."""
    if shutil.which("unbound") is None:
        pytest.fail("unbound is not installed: apt-get install unbound (the README setup does)")
    config = directory / "unbound.conf"
    config.write_text(
        "server:\n"
        f"  interface: 127.0.0.1\n  port: {NODE_RESOLVER_PORT}\n  do-daemonize: no\n"
        '  username: ""\n  chroot: ""\n  pidfile: ""\n  use-syslog: no\n  verbosity: 0\n'
        f'  directory: "{directory}"\n  access-control: 127.0.0.0/8 allow\n  module-config: "iterator"\n'
        '  local-zone: "test." static\n'
        "  local-data: 'test. 3600 IN SOA ns.test. host.test. 1 3600 900 86400 60'\n"
        "  local-data: 'ext.test. 300 IN A 192.0.2.60'\n"
    )
    return subprocess.Popen(["ip", "netns", "exec", node_ns, "unbound", "-d", "-c", str(config)], text=True)


def _cluster_dns(node_ns: str, tmp_path: Path) -> KdnsServer:
    snapshot = tmp_path / "cluster.yaml"
    objects = [
        namespace("prod"),
        service("prod", "web", ["10.96.0.5"]),
        service("prod", "db", ["10.96.0.7"]),
    ]
    snapshot.write_text(yaml.safe_dump({"kind": "List", "items": objects}))
    return KdnsServer(
        "--snapshot", str(snapshot), "--log-queries", listen=(CLUSTER_DNS,), prefix=("ip", "netns", "exec", node_ns)
    )


def _node_cache(node_ns: str, *args: str) -> KdnsServer:
    return KdnsServer(
        "--cluster-dns",
        CLUSTER_DNS,
        "--upstream",
        f"127.0.0.1:{NODE_RESOLVER_PORT}",
        "--health-listen",
        "off",
        "--ready-listen",
        "off",
        "--metrics-listen",
        "off",
        "--lameduck",
        "0",
        *args,
        listen=(f"{NODE_LOCAL_ADDRESS}:53",),
        prefix=("ip", "netns", "exec", node_ns),
        command="node-cache",
    )


def _dig(pod: Namespace, name: str, rdtype: str = "A") -> tuple[str, list[str], list[int]]:
    """(status, A addresses, their TTLs) of `name` asked from the pod, as dig prints them."""
    out = pod.run(
        "dig", f"@{NODE_LOCAL_ADDRESS}", "+time=3", "+tries=1", "+noall", "+comments", "+answer", name, rdtype
    ).stdout
    status = re.search(r"status: (\w+)", out)
    answers = [line.split() for line in out.splitlines() if line and not line.startswith(";") and "\tA\t" in line]
    return (status.group(1) if status else "TIMEOUT", [a[-1] for a in answers], [int(a[1]) for a in answers])


def _asked(cluster_dns: KdnsServer, name: str) -> int:
    """Queries for `name` the cluster DNS answered (its query log), and over which transports."""
    return len(re.findall(rf" (tcp|udp) {re.escape(name)}\. A ", cluster_dns.log_text()))


def test_cluster_and_external_names_resolve_through_the_node_cache(node: tuple[str, Namespace], tmp_path: Path) -> None:
    node_ns, pod = node
    resolver = _unbound(node_ns, tmp_path)
    cluster_dns = _cluster_dns(node_ns, tmp_path)
    cache = _node_cache(node_ns)
    try:
        found = pod.run("getent", "ahostsv4", "web").stdout.split()  # the search path, through glibc
        assert found and found[0] == "10.96.0.5"
        found = pod.run("getent", "ahostsv4", "ext.test").stdout.split()
        assert found and found[0] == "192.0.2.60"
        assert _dig(pod, "5.0.96.10.in-addr.arpa", "PTR")[0] == "NOERROR"  # reverse zones: the cluster DNS's
        # Asked again and again within the TTL: the cluster DNS sees the name once, over TCP.
        for _ in range(5):
            assert _dig(pod, "web.prod.svc.cluster.local")[1] == ["10.96.0.5"]
        assert _asked(cluster_dns, "web.prod.svc.cluster.local") == 1
        assert " tcp web.prod.svc.cluster.local. A " in cluster_dns.log_text()
        assert " udp web.prod.svc.cluster.local. A " not in cluster_dns.log_text()
    finally:
        assert cache.stop() == 0
        cluster_dns.stop()
        resolver.terminate()
        resolver.wait(10)


def test_when_the_cluster_dns_dies_cached_names_are_served_stale_and_new_ones_fail_fast(
    node: tuple[str, Namespace], tmp_path: Path
) -> None:
    node_ns, pod = node
    resolver = _unbound(node_ns, tmp_path)
    cluster_dns = _cluster_dns(node_ns, tmp_path)
    cache = _node_cache(node_ns, "--cache-max-ttl", "1")  # entries expire at once: what is served next is stale
    try:
        assert _dig(pod, "web.prod.svc.cluster.local")[1] == ["10.96.0.5"]
        cluster_dns.stop()
        # Expired and the cluster DNS gone: still answered, with the stale TTL (RFC 8767: 30 s).
        wait(lambda: _dig(pod, "web.prod.svc.cluster.local")[2] == [30], 10, "a stale answer")
        assert _dig(pod, "web.prod.svc.cluster.local")[1] == ["10.96.0.5"]
        started = time.monotonic()
        status = _dig(pod, "db.prod.svc.cluster.local")[0]
        elapsed = time.monotonic() - started
        assert status == "SERVFAIL"
        assert elapsed < 1.5, f"a name never cached failed after {elapsed:.1f} s, not at once"
    finally:
        assert cache.stop() == 0
        cluster_dns.stop()
        resolver.terminate()
        resolver.wait(10)


def test_node_cache_needs_the_cluster_dns() -> None:
    from tests.process import run_kdns

    result = run_kdns("node-cache", "--listen", "127.0.0.1:0")
    assert result.returncode == 2 and "--cluster-dns" in result.stderr
