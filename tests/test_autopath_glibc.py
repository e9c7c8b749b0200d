"""Autopath end to end (issue 12, point 1): glibc's resolver in a network namespace whose
resolv.conf is a pod's (search path and ndots:5) and whose address belongs to a Pod in the
snapshot, asking the real kdns process. With `--autopath` an external name costs ONE query
reaching kdns instead of four; in-cluster short names still resolve in the right namespace."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.builders import namespace, pod, service
from tests.fakeupstream import FakeUpstream
from tests.helpers import http_get, http_port, wait
from tests.netns import Namespace, pod_namespace
from tests.process import KdnsServer

POD_RESOLV_CONF = (
    "nameserver {server}\nsearch staging.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
)


@pytest.fixture(scope="module")
def pod_ns() -> Iterator[Namespace]:
    with pod_namespace(7, POD_RESOLV_CONF.format(server="10.250.7.1")) as ns:
        yield ns


def _snapshot(tmp_path: Path, pod_address: str) -> Path:
    objects = [
        namespace("prod"),
        namespace("staging"),
        service("prod", "web", ["10.96.0.5"]),
        service("staging", "web", ["10.96.0.6"]),
        pod("staging", "client", pod_address),  # the namespace's own address: it is this Pod
    ]
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump({"kind": "List", "items": objects}))
    return path


def _requests(server: KdnsServer) -> int:
    text = http_get(http_port(server, "/metrics"), "/metrics")[1]
    return int(sum(float(value) for value in re.findall(r"^coredns_dns_requests_total{[^}]*} (\S+)$", text, re.M)))


def _kdns(tmp_path: Path, ns: Namespace, upstream: FakeUpstream, *args: str) -> KdnsServer:
    return KdnsServer(
        "--snapshot",
        str(_snapshot(tmp_path, ns.address)),
        "--upstream",
        upstream.spec,
        "--metrics-listen",
        "127.0.0.1:0",
        *args,
        listen=(f"{ns.host_address}:53",),
    )


def _getent(ns: Namespace, name: str) -> set[str]:
    result = ns.run("getent", "ahostsv4", name)
    return {line.split()[0] for line in result.stdout.splitlines() if line.strip()}


@pytest.mark.parametrize(("autopath", "expected"), [(True, 1), (False, 4)], ids=["autopath", "without"])
def test_an_external_name_costs_one_query_with_autopath_and_four_without(
    pod_ns: Namespace, tmp_path: Path, autopath: bool, expected: int
) -> None:
    upstream = FakeUpstream(address="192.0.2.44")
    server = _kdns(tmp_path, pod_ns, upstream, *(("--autopath",) if autopath else ()))
    try:
        assert _getent(pod_ns, "ext.example.test") == {"192.0.2.44"}
        wait(lambda: _requests(server) >= expected, 5, f"{expected} queries counted")
        assert _requests(server) == expected
        metrics = http_get(http_port(server, "/metrics"), "/metrics")[1]
        successes = re.search(r"^coredns_autopath_success_total{[^}]*} (\S+)$", metrics, re.M)
        assert successes is not None and float(successes.group(1)) == (1.0 if autopath else 0.0)
    finally:
        assert server.stop() == 0
        upstream.close()


def test_short_names_still_resolve_in_the_pods_own_namespace_first(pod_ns: Namespace, tmp_path: Path) -> None:
    upstream = FakeUpstream(address="192.0.2.44")
    server = _kdns(tmp_path, pod_ns, upstream, "--autopath")
    try:
        assert _getent(pod_ns, "web") == {"10.96.0.6"}  # staging's web, the Pod's namespace
        assert _getent(pod_ns, "web.prod") == {"10.96.0.5"}  # one query, through a CNAME
        assert _getent(pod_ns, "web.prod.svc.cluster.local") == {"10.96.0.5"}
        assert upstream.names == [] or all("kdns-loop-probe" in name for name in upstream.names)
    finally:
        assert server.stop() == 0
        upstream.close()
