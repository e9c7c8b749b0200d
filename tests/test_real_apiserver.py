"""The real `kdns serve` following a real kube-apiserver and etcd (issue 8, point 8), through the
real `kubernetes` client, with a real ServiceAccount token bound to exactly the ClusterRole of
`manifests/`.

Skipped, saying how to run them, without `KUBEBUILDER_ASSETS` (tests/kubeapi.py); CI prepares
it. The faults a real server will not produce on demand (500s, stalls, truncated streams) stay with
`tests/apiserver.py` in test_live.py.
"""

from __future__ import annotations

import copy
import json
import re
import signal
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.utils import create_from_dict

from tests.builders import endpoint, endpoint_slice, headless, namespace, service
from tests.helpers import FAST, METRICS, QueryLoop, ask_server, failures_grow, http_get, http_port, synced, wait
from tests.kubeapi import ADMIN_TOKEN, MANIFESTS, RealApiServer, _get, assets, real_apiserver
from tests.process import KdnsServer

LONG_PORT = "p" * 63  # valid in Kubernetes; `_` + it is no DNS label


@pytest.fixture(scope="module")
def real_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealApiServer]:
    assets()  # skips the module's tests, saying why, without KUBEBUILDER_ASSETS
    with real_apiserver(tmp_path_factory.mktemp("apiserver")) as server:
        server.apply_manifest(MANIFESTS / "serviceaccount.yaml")
        server.apply_manifest(MANIFESTS / "rbac.yaml")
        server.create(namespace("prod"))
        server.create(service("prod", "web", ["10.96.0.5"]))
        server.create(service("prod", "bad", ["10.96.0.9"], ports=[{"name": LONG_PORT, "port": 81, "protocol": "TCP"}]))
        for i in range(1, 4):
            server.create(service("prod", f"s{i}", [f"10.96.1.{i}"]))
        server.create(headless("prod", "db", ports=[{"name": "pg", "port": 5432, "protocol": "TCP"}]))
        server.create(
            endpoint_slice(
                "prod",
                "db-a",
                "db",
                [endpoint("10.244.0.1", hostname="db-0"), endpoint("10.244.0.2", ready=False)],
                ports=[{"name": "pg", "port": 5432, "protocol": "TCP"}],
            )
        )
        yield server


def _kdns(api: RealApiServer, tmp_path: Path, *args: str) -> KdnsServer:
    """kdns with the kdns ServiceAccount's own token: the permissions of manifests/ and no more."""
    token = api.service_account_token("kube-system", "kdns")
    kubeconfig = api.kubeconfig(tmp_path / "kubeconfig", token)
    return KdnsServer("--kubeconfig", str(kubeconfig), *FAST, *args, listen=("127.0.0.1:0",))


def test_kdns_follows_the_real_api_server_with_exactly_the_manifests_rbac(
    real_api: RealApiServer, tmp_path: Path
) -> None:
    ops = ("--health-listen", "127.0.0.1:0", "--ready-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0")
    server = _kdns(real_api, tmp_path, *ops)  # the Deployment's endpoints, on free ports
    try:
        synced(server)
        assert http_get(http_port(server, "/ready"), "/ready")[0] == 200
        assert http_get(http_port(server, "/health"), "/health")[0] == 200
        scraped = http_get(http_port(server, "/metrics"), "/metrics")
        assert scraped[0] == 200 and "kdns_ready 1.0" in scraped[1]
        assert 'kdns_watch_events_total{resource="Service"}' in scraped[1]
        assert ask_server(server, "web.prod.svc.cluster.local") == ("NOERROR", ["10.96.0.5"])
        assert ask_server(server, "db.prod.svc.cluster.local") == ("NOERROR", ["10.244.0.1"])
        assert ask_server(server, "db-0.db.prod.svc.cluster.local") == ("NOERROR", ["10.244.0.1"])
        srv = ask_server(server, "_pg._tcp.db.prod.svc.cluster.local", "SRV")
        assert srv == ("NOERROR", ["0 100 5432 db-0.db.prod.svc.cluster.local."])
        # Issue 8 D1: a Service with a 63-character port name never takes its neighbours down.
        assert ask_server(server, "bad.prod.svc.cluster.local") == ("NOERROR", ["10.96.0.9"])
        for i in range(1, 4):
            assert ask_server(server, f"s{i}.prod.svc.cluster.local") == ("NOERROR", [f"10.96.1.{i}"])
        assert "left out of DNS: Service prod/bad: field spec.ports[0].name" in server.log_text()
        # Watched changes, from the real watch stream.
        real_api.create(service("prod", "late", ["10.96.0.77"]))
        late = ("NOERROR", ["10.96.0.77"])
        wait(lambda: ask_server(server, "late.prod.svc.cluster.local") == late, 10, "new service")
        # Its programming latency, from the creation time the API server stamped on it.
        metrics = http_get(http_port(server, "/metrics"), "/metrics")[1]
        assert 'kdns_dns_programming_duration_seconds_count{kind="cluster_ip"} 1.0' in metrics
        real_api.delete("Service", "prod", "late")
        wait(lambda: ask_server(server, "late.prod.svc.cluster.local")[0] == "NXDOMAIN", 10, "deleted service")
        # A 403 as kdns logs an API status ("API answered 403 Forbidden"), not as digits that a
        # port (127.0.0.1:40319) or a log line's milliseconds (20:46:16,403) happen to hold.
        assert "answered 403" not in server.log_text() and "Forbidden" not in server.log_text()
    finally:
        assert server.stop() == 0


def test_the_manifests_rbac_forbids_every_write(real_api: RealApiServer) -> None:
    token = real_api.service_account_token("kube-system", "kdns")
    as_kdns = real_api.api_client(token)
    core, discovery = client.CoreV1Api(as_kdns), client.DiscoveryV1Api(as_kdns)
    assert core.list_service_for_all_namespaces(limit=1).items is not None  # reading is allowed
    writes: list[Callable[[], object]] = [
        lambda: core.create_namespaced_service("prod", service("prod", "evil", ["10.96.0.66"])),
        lambda: core.delete_namespaced_service("web", "prod"),
        lambda: core.patch_namespaced_service("web", "prod", {"metadata": {"labels": {"x": "y"}}}),
        lambda: discovery.delete_namespaced_endpoint_slice("db-a", "prod"),
        lambda: core.create_namespace(namespace("evil")),
        lambda: core.list_namespaced_secret("kube-system"),  # nor any read beyond what DNS needs
        lambda: core.list_config_map_for_all_namespaces(),
    ]
    for write in writes:
        with pytest.raises(ApiException) as refused:
            write()
        assert refused.value.status == 403


def test_namespace_and_label_filters_on_the_real_api_server(real_api: RealApiServer, tmp_path: Path) -> None:
    real_api.create(namespace("other"))
    labelled = service("other", "picked", ["10.96.2.1"])
    labelled["metadata"]["labels"] = {"dns": "yes"}
    real_api.create(labelled)
    real_api.create(service("other", "unlabelled", ["10.96.2.2"]))
    server = _kdns(real_api, tmp_path, "--namespaces", "other", "--labels", "dns=yes")
    try:
        synced(server)
        assert ask_server(server, "picked.other.svc.cluster.local") == ("NOERROR", ["10.96.2.1"])
        assert ask_server(server, "unlabelled.other.svc.cluster.local")[0] == "NXDOMAIN"
        assert ask_server(server, "web.prod.svc.cluster.local")[0] == "NXDOMAIN"
    finally:
        assert server.stop() == 0


def test_a_real_410_after_compaction_leads_to_a_relist_that_loses_no_served_name(tmp_path: Path) -> None:
    """kdns is paused while the cluster changes, etcd is compacted and the API server restarts:
    on resuming, its watch asks for a version that is gone (a real 410 Gone), and it relists."""
    with real_apiserver(tmp_path / "api") as api:
        api.apply_manifest(MANIFESTS / "serviceaccount.yaml")
        api.apply_manifest(MANIFESTS / "rbac.yaml")
        api.create(namespace("prod"))
        for i in range(1, 6):
            api.create(service("prod", f"keep{i}", [f"10.96.3.{i}"]))
        api.create(service("prod", "doomed", ["10.96.3.99"]))
        server = _kdns(api, tmp_path)
        try:
            synced(server)
            assert ask_server(server, "doomed.prod.svc.cluster.local") == ("NOERROR", ["10.96.3.99"])
            server.process.send_signal(signal.SIGSTOP)
            try:
                api.delete("Service", "prod", "doomed")
                for i in range(30):
                    api.create(service("prod", f"new{i}", [f"10.96.4.{i + 1}"]))
                api.compact()
                api.stop()
                api.start()
            finally:
                server.process.send_signal(signal.SIGCONT)
            keep = {f"keep{i}.prod.svc.cluster.local": [f"10.96.3.{i}"] for i in range(1, 6)}
            loop = QueryLoop(server, keep)
            try:
                wait(lambda: ask_server(server, "new29.prod.svc.cluster.local")[1] == ["10.96.4.30"], 20, "relisted")
                wait(lambda: ask_server(server, "doomed.prod.svc.cluster.local")[0] == "NXDOMAIN", 5, "deletion")
                loop.wait_for(21)
            finally:
                loop.stop()
            assert loop.asked > 20 and loop.wrong == []
            log = server.log_text()
            assert "410 Gone" in log and "listing again" in log, log
        finally:
            assert server.stop() == 0


def test_api_server_stopped_and_restarted_under_a_query_loop(tmp_path: Path) -> None:
    with real_apiserver(tmp_path / "api") as api:
        api.apply_manifest(MANIFESTS / "serviceaccount.yaml")
        api.apply_manifest(MANIFESTS / "rbac.yaml")
        api.create(namespace("prod"))
        api.create(service("prod", "web", ["10.96.0.5"]))
        api.create(headless("prod", "db"))
        api.create(endpoint_slice("prod", "db-a", "db", [endpoint("10.244.0.1"), endpoint("10.244.0.2")]))
        server = _kdns(api, tmp_path, *METRICS)
        try:
            synced(server)
            expected = {
                "web.prod.svc.cluster.local": ["10.96.0.5"],
                "db.prod.svc.cluster.local": ["10.244.0.1", "10.244.0.2"],
            }
            loop = QueryLoop(server, expected)
            try:
                api.stop()
                # The outage: every watcher (3) fails and retries with backoff, twice at least.
                failures_grow(server, 6, 20, "two failed tries per watcher")
                loop.wait_for(51)
                api.start()
                api.create(service("prod", "after", ["10.96.0.8"]))
                wait(
                    lambda: ask_server(server, "after.prod.svc.cluster.local")[1] == ["10.96.0.8"],
                    20,
                    "change after outage",
                )
            finally:
                loop.stop()
            assert loop.asked > 50 and loop.wrong == []
            log = server.log_text()
            assert "cannot reach the API" in log and "API reachable again" in log
        finally:
            assert server.stop() == 0


def test_every_manifest_passes_a_server_side_dry_run_with_strict_field_validation(tmp_path: Path) -> None:
    """Issue 10, point 6: `kubectl apply --dry-run=server --validate=strict`, through the API
    itself: every object of manifests/ is accepted as it is, and a misspelt field is not."""
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    node_local = yaml.safe_load((MANIFESTS / "node-local" / "kustomization.yaml").read_text())
    documents = [
        document
        for path in [MANIFESTS / name for name in kustomization["resources"]]
        + [MANIFESTS / "node-local" / name for name in node_local["resources"]]
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]
    assert {document["kind"] for document in documents} >= {
        "Deployment",
        "Service",
        "ClusterRole",
        "DaemonSet",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    with real_apiserver(tmp_path / "api") as api:
        admin = api.api_client()
        for document in documents:
            namespace = document["metadata"].get("namespace", kustomization.get("namespace"))
            create_from_dict(admin, document, namespace=namespace, dry_run="All", field_validation="Strict")
        # The client checks bodies itself; the server's own strict validation is asked directly.
        misspelt = copy.deepcopy(next(d for d in documents if d["kind"] == "Deployment"))
        misspelt["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
        path = "/apis/apps/v1/namespaces/kube-system/deployments?dryRun=All&fieldValidation=Strict"
        request = urllib.request.Request(
            api.url + path,
            data=json.dumps(misspelt).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
        )
        context = ssl.create_default_context(cafile=str(api.ca))
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, context=context, timeout=10)
        assert refused.value.code in (400, 422) and b"livenesProbe" in refused.value.read()


def _kdns_watches(api: RealApiServer) -> int:
    """Open WATCH requests on the resources kdns follows, from the API server's own metrics."""
    text = _get(f"{api.url}/metrics", ADMIN_TOKEN, api.ca) or ""
    total = 0.0
    for line in text.splitlines():
        ours = re.search(r'resource="(services|endpointslices|namespaces)"', line)
        if line.startswith("apiserver_longrunning_requests{") and 'verb="WATCH"' in line and ours:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def test_two_workers_cost_the_real_api_server_one_set_of_watches(real_api: RealApiServer, tmp_path: Path) -> None:
    """Issue 11, point 2: whatever the number of workers, the API server sees one set of watches
    (the API server's own informers are counted before kdns starts, and left out)."""
    before = _kdns_watches(real_api)
    server = _kdns(real_api, tmp_path, "--workers", "2", *METRICS)
    try:
        synced(server)
        wait(lambda: _kdns_watches(real_api) - before == 3, 10, "three watches: Namespace, Service, EndpointSlice")
        real_api.create(service("prod", "fanned", ["10.96.0.78"]))
        for _ in range(40):  # from fresh source ports: whichever worker answers has the change
            wait(
                lambda: ask_server(server, "fanned.prod.svc.cluster.local") == ("NOERROR", ["10.96.0.78"]), 3, "change"
            )
        assert _kdns_watches(real_api) - before == 3
        real_api.delete("Service", "prod", "fanned")
    finally:
        assert server.stop() == 0
