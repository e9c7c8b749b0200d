"""The real `kdns serve --kubeconfig` process following the test API server through the real
`kubernetes` client, queried with dnspython while the test changes and breaks the API."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
import yaml

from tests.apiserver import TOKEN, FakeApiServer, make_tls_files
from tests.builders import Obj, endpoint, endpoint_slice, headless, namespace, pod, service
from tests.helpers import (
    FAST,
    METRICS,
    QueryLoop,
    ask_server,
    failures_grow,
    http_get,
    http_port,
    synced,
    wait,
)
from tests.process import EXAMPLE, KdnsServer, run_kdns


def _start(api: FakeApiServer, tmp_path: Path, *args: str) -> KdnsServer:
    return KdnsServer("--kubeconfig", str(api.kubeconfig(tmp_path)), *FAST, *args, listen=("127.0.0.1:0",))


def _count_is(count: Callable[[], int], expected: int) -> bool:
    return count() == expected


def test_service_created_after_start_resolves_and_deleted_goes_nxdomain_within_2s(
    api: FakeApiServer, tmp_path: Path
) -> None:
    server = _start(api, tmp_path)
    try:
        synced(server)
        api.apply(service("prod", "late", ["10.96.0.9"]))
        wait(lambda: ask_server(server, "late.prod.svc.cluster.local") == ("NOERROR", ["10.96.0.9"]), 2, "new service")
        api.delete("Service", "prod", "late")
        wait(lambda: ask_server(server, "late.prod.svc.cluster.local")[0] == "NXDOMAIN", 2, "deleted service")
        api.apply(service("prod", "web", ["10.96.0.5", "fd00::5"]))
        wait(lambda: ask_server(server, "web.prod.svc.cluster.local", "AAAA")[1] == ["fd00::5"], 2, "modified service")
    finally:
        assert server.stop() == 0


def test_endpoint_turning_not_ready_leaves_the_headless_answer_and_publish_not_ready_keeps_it(
    api: FakeApiServer, tmp_path: Path
) -> None:
    def slice_(name: str, second_ready: bool) -> Obj:
        return endpoint_slice("prod", f"{name}-a", name, [endpoint("10.244.0.1"), endpoint("10.244.0.2", second_ready)])

    api.apply(headless("prod", "db"))
    api.apply(headless("prod", "all", publish_not_ready=True))
    api.apply(slice_("db", True))
    api.apply(slice_("all", True))
    server = _start(api, tmp_path)
    try:
        both = ["10.244.0.1", "10.244.0.2"]
        wait(lambda: ask_server(server, "db.prod.svc.cluster.local")[1] == both, 5, "both endpoints")
        api.apply(slice_("db", False))
        api.apply(slice_("all", False))
        wait(lambda: ask_server(server, "db.prod.svc.cluster.local")[1] == ["10.244.0.1"], 2, "not-ready endpoint gone")
        assert ask_server(server, "all.prod.svc.cluster.local")[1] == both
    finally:
        assert server.stop() == 0


def test_before_the_first_list_completes_cluster_names_get_servfail_not_nxdomain(
    api: FakeApiServer, tmp_path: Path
) -> None:
    api.stall()
    server = _start(api, tmp_path)
    try:
        for name in ("web.prod.svc.cluster.local", "nope.prod.svc.cluster.local", "prod.svc.cluster.local"):
            assert ask_server(server, name)[0] == "SERVFAIL", name
        api.stall(False)
        synced(server)
        assert ask_server(server, "nope.prod.svc.cluster.local")[0] == "NXDOMAIN"
    finally:
        assert server.stop() == 0


def test_api_server_stopped_names_keep_resolving_through_retries_and_changes_appear_after(
    api: FakeApiServer, tmp_path: Path
) -> None:
    server = _start(api, tmp_path, *METRICS)
    try:
        synced(server)
        loop = QueryLoop(server, {"web.prod.svc.cluster.local": ["10.96.0.5"]})
        api.stop()
        api.apply(service("prod", "while-down", ["10.96.0.7"]))  # made while kdns cannot see it
        # Down until every watcher (3) has failed and retried at least twice more, and the loop
        # has been answered throughout.
        failures_grow(server, 9, 15, "three failed tries per watcher")
        loop.wait_for(100)
        api.start()
        wait(
            lambda: ask_server(server, "while-down.prod.svc.cluster.local") == ("NOERROR", ["10.96.0.7"]),
            5,
            "change made during the outage",
        )
        loop.stop()
        assert loop.asked > 100 and loop.wrong == []
        wait(lambda: server.log_text().count("API reachable again") == 3, 3, "every watcher recovered")
        log = server.log_text()
        # One warning per watcher for the whole outage, not one per retry.
        assert log.count("cannot reach the API") == 3, log
        assert "urllib3" not in log
    finally:
        assert server.stop() == 0


def test_410_during_watch_relists_without_any_name_flapping(api: FakeApiServer, tmp_path: Path) -> None:
    api.apply(service("prod", "doomed", ["10.96.0.8"]))
    server = _start(api, tmp_path)
    try:
        synced(server)
        loop = QueryLoop(server, {"web.prod.svc.cluster.local": ["10.96.0.5"]})
        api.stop()
        api.apply(service("prod", "added", ["10.96.0.9"]))
        api.delete("Service", "prod", "doomed")
        api.compact()  # kdns's last resourceVersion is now too old: 410 Gone on resume
        api.start()
        wait(lambda: ask_server(server, "added.prod.svc.cluster.local")[0] == "NOERROR", 5, "relist after 410")
        wait(lambda: ask_server(server, "doomed.prod.svc.cluster.local")[0] == "NXDOMAIN", 2, "deletion seen by relist")
        loop.wait_for(20)
        loop.stop()
        assert loop.wrong == [] and loop.asked > 20
        assert "410 Gone" in server.log_text()
    finally:
        assert server.stop() == 0


def test_api_answering_500_or_stalling_never_empties_the_zone(api: FakeApiServer, tmp_path: Path) -> None:
    # A stalled watch times out after its own timeout plus --api-timeout: 1 + 2 s here.
    server = _start(api, tmp_path, *METRICS, "--watch-timeout", "1")
    try:
        synced(server)
        loop = QueryLoop(server, {"web.prod.svc.cluster.local": ["10.96.0.5"]})
        api.fail()
        failures_grow(server, 6, 15, "two 500s per watcher")
        api.fail(False)
        api.stall()
        failures_grow(server, 3, 15, "a read timed out (--api-timeout) per watcher")
        loop.wait_for(20)
        api.stall(False)
        api.apply(service("prod", "after", ["10.96.0.4"]))
        wait(lambda: ask_server(server, "after.prod.svc.cluster.local")[0] == "NOERROR", 8, "recovery")
        loop.stop()
        assert loop.wrong == [] and loop.asked > 50
        assert "API answered 500" in server.log_text()
    finally:
        assert server.stop() == 0


def test_relist_answered_500_keeps_the_zone_until_a_list_succeeds(api: FakeApiServer, tmp_path: Path) -> None:
    server = _start(api, tmp_path)
    try:
        synced(server)
        loop = QueryLoop(server, {"web.prod.svc.cluster.local": ["10.96.0.5"]})
        api.stop()
        api.compact()  # the resumed watch gets 410 ...
        api.fail(lists_only=True)  # ... and the list it leads to fails
        api.start()

        def relists() -> int:
            return sum(request.startswith("/api/v1/services?limit") for request in api.requests)

        first = relists()
        wait(lambda: relists() >= first + 3, 10, "three relist attempts, each answered 500")
        assert ask_server(server, "web.prod.svc.cluster.local") == ("NOERROR", ["10.96.0.5"])
        api.fail(False)
        api.apply(service("prod", "after", ["10.96.0.4"]))
        wait(lambda: ask_server(server, "after.prod.svc.cluster.local")[0] == "NOERROR", 5, "relist succeeded")
        loop.stop()
        assert loop.wrong == []
        # Refused while stopped, then 500: one outage, so one warning (which of the two comes first
        # depends on timing) and one recovery per watcher.
        assert "cannot reach the API" in server.log_text()
    finally:
        assert server.stop() == 0


def test_lists_are_read_page_by_page(api: FakeApiServer, tmp_path: Path) -> None:
    for i in range(30):
        api.apply(service("prod", f"paged-{i}", [f"10.96.9.{i + 1}"]))
    server = _start(api, tmp_path, "--api-page-size", "7")
    try:
        synced(server)
        for i in (0, 13, 29):
            assert ask_server(server, f"paged-{i}.prod.svc.cluster.local")[1] == [f"10.96.9.{i + 1}"]
        pages = [
            request for request in api.requests if request.startswith("/api/v1/services?") and "watch" not in request
        ]
        assert len(pages) == 5 and sum("continue=" in page for page in pages) == 4  # 31 services, 7 a page
    finally:
        assert server.stop() == 0


def test_watch_ending_normally_is_resumed_from_the_last_version(api: FakeApiServer, tmp_path: Path) -> None:
    server = _start(api, tmp_path, "--watch-timeout", "1")  # each watch asks the server to end it in 1 s
    try:
        synced(server)
        wait(lambda: api.watch_count() >= 9, 10, "every watch ended and resumed twice")
        api.apply(service("prod", "later", ["10.96.0.3"]))
        wait(lambda: ask_server(server, "later.prod.svc.cluster.local")[0] == "NOERROR", 2, "event after resume")
        lists = [request for request in api.requests if "watch=true" not in request]
        assert len(lists) == 3  # resumed by watching again, never by listing again
        assert api.watch_count() >= 6
    finally:
        assert server.stop() == 0


def test_namespaces_flag_watches_only_those_namespaces(api: FakeApiServer, tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        api.apply(namespace(name))
        api.apply(service(name, "svc", ["10.96.1." + str(ord(name))]))
    server = _start(api, tmp_path, "--namespaces", "a,b")
    try:
        synced(server)
        wait(lambda: ask_server(server, "svc.a.svc.cluster.local")[0] == "NOERROR", 5, "namespace a")
        assert ask_server(server, "svc.b.svc.cluster.local")[1] == ["10.96.1.98"]
        assert ask_server(server, "svc.c.svc.cluster.local")[0] == "NXDOMAIN"
        assert ask_server(server, "c.svc.cluster.local")[0] == "NXDOMAIN"
        assert ask_server(server, "web.prod.svc.cluster.local")[0] == "NXDOMAIN"
        api.apply(service("c", "more", ["10.96.1.200"]))
        api.apply(service("a", "more", ["10.96.1.201"]))
        wait(lambda: ask_server(server, "more.a.svc.cluster.local")[0] == "NOERROR", 2, "event in a")
        assert ask_server(server, "more.c.svc.cluster.local")[0] == "NXDOMAIN"
        service_paths = {request.split("?")[0] for request in api.requests if "services" in request}
        assert service_paths == {"/api/v1/namespaces/a/services", "/api/v1/namespaces/b/services"}
    finally:
        assert server.stop() == 0


def test_labels_flag_serves_only_matching_services(api: FakeApiServer, tmp_path: Path) -> None:
    chosen = service("prod", "chosen", ["10.96.0.20"])
    chosen["metadata"]["labels"] = {"dns": "public"}
    api.apply(chosen)
    server = _start(api, tmp_path, "--labels", "dns=public")
    try:
        synced(server)
        wait(lambda: ask_server(server, "chosen.prod.svc.cluster.local")[0] == "NOERROR", 5, "labelled service")
        assert ask_server(server, "web.prod.svc.cluster.local")[0] == "NXDOMAIN"
        relabelled = service("prod", "chosen", ["10.96.0.20"])
        relabelled["metadata"]["labels"] = {"dns": "private"}
        api.apply(relabelled)  # no longer matches: the API sends DELETED to this watch
        wait(lambda: ask_server(server, "chosen.prod.svc.cluster.local")[0] == "NXDOMAIN", 2, "relabelled service gone")
        later = service("prod", "later", ["10.96.0.21"])
        later["metadata"]["labels"] = {"dns": "public"}
        api.apply(later)
        wait(lambda: ask_server(server, "later.prod.svc.cluster.local")[0] == "NOERROR", 2, "matching service")
    finally:
        assert server.stop() == 0


def test_service_with_three_slices_of_100_endpoints_updated_one_at_a_time(api: FakeApiServer, tmp_path: Path) -> None:
    def slice_(index: int, ready_count: int) -> Obj:
        endpoints = [endpoint(f"10.244.{index}.{i + 1}", i < ready_count) for i in range(100)]
        return endpoint_slice("prod", f"big-{index}", "big", endpoints)

    api.apply(headless("prod", "big"))
    for index in range(3):
        api.apply(slice_(index, 100))
    server = _start(api, tmp_path)
    try:

        def count() -> int:
            return len(ask_server(server, "big.prod.svc.cluster.local", tcp=True)[1])

        wait(lambda: count() == 300, 5, "300 endpoints")
        expected = 300
        for index in range(3):
            api.apply(slice_(index, 50))
            expected -= 50
            wait(partial(_count_is, count, expected), 2, f"slice {index} update")
        api.delete("EndpointSlice", "prod", "big-1")
        wait(lambda: count() == 100, 2, "slice deleted")
        assert ask_server(server, "10-244-0-1.big.prod.svc.cluster.local")[1] == ["10.244.0.1"]
        assert ask_server(server, "10-244-1-1.big.prod.svc.cluster.local")[0] == "NXDOMAIN"
    finally:
        assert server.stop() == 0


def test_verified_pod_records_follow_the_pod_watch(api: FakeApiServer, tmp_path: Path) -> None:
    api.apply(pod("prod", "web-0", "10.244.3.3"))
    server = _start(api, tmp_path, "--pods", "verified")
    try:
        synced(server)
        wait(lambda: ask_server(server, "10-244-3-3.prod.pod.cluster.local")[0] == "NOERROR", 5, "pod record")
        assert ask_server(server, "10-244-3-4.prod.pod.cluster.local")[0] == "NXDOMAIN"
        api.delete("Pod", "prod", "web-0")
        wait(lambda: ask_server(server, "10-244-3-3.prod.pod.cluster.local")[0] == "NXDOMAIN", 2, "pod gone")
    finally:
        assert server.stop() == 0


# -- live answers equal snapshot answers -------------------------------------------------------

QUESTIONS = [
    ("web.prod.svc.cluster.local", "A"),
    ("web.prod.svc.cluster.local", "AAAA"),
    ("web.prod.svc.cluster.local", "SRV"),
    ("_https._tcp.web.prod.svc.cluster.local", "SRV"),
    ("db.prod.svc.cluster.local", "A"),
    ("db-0.db.prod.svc.cluster.local", "A"),
    ("db-2.db.prod.svc.cluster.local", "A"),
    ("_postgres._tcp.db.prod.svc.cluster.local", "SRV"),
    ("cache.prod.svc.cluster.local", "SRV"),
    ("payments.prod.svc.cluster.local", "A"),
    ("api.staging.svc.cluster.local", "A"),
    ("v6only.staging.svc.cluster.local", "AAAA"),
    ("34.12.96.10.in-addr.arpa", "PTR"),
    ("20.1.244.10.in-addr.arpa", "PTR"),
    ("11.2.244.10.in-addr.arpa", "PTR"),  # an endpoint of a ClusterIP service: answered on demand
    ("10-244-2-11.web.prod.svc.cluster.local", "A"),
    ("10-244-1-10.prod.pod.cluster.local", "A"),
    ("ns.dns.cluster.local", "A"),
    ("staging.svc.cluster.local", "A"),
    ("nope.prod.svc.cluster.local", "A"),
    ("monitoring.pod.cluster.local", "A"),
]


def _load_example(api: FakeApiServer) -> None:
    for item in yaml.safe_load(EXAMPLE.read_text())["items"]:
        if item["kind"] in ("Namespace", "Service", "EndpointSlice", "Pod"):
            api.apply(item)


def test_serving_from_the_api_answers_as_serving_from_a_snapshot_of_the_same_objects(tmp_path: Path) -> None:
    api = FakeApiServer()
    _load_example(api)
    live = _start(api, tmp_path)
    snapshot = KdnsServer("--snapshot", str(EXAMPLE), listen=("127.0.0.1:0",))
    try:
        synced(live)
        for name, rdtype in QUESTIONS:
            assert ask_server(live, name, rdtype) == ask_server(snapshot, name, rdtype), (name, rdtype)
    finally:
        assert live.stop() == 0 and snapshot.stop() == 0
        api.stop()


def test_rbac_refusing_one_resource_keeps_cluster_names_servfail_and_says_why(
    api: FakeApiServer, tmp_path: Path
) -> None:
    api.forbidden.add("EndpointSlice")
    server = _start(api, tmp_path)
    try:
        wait(lambda: "403" in server.log_text(), 5, "the refusal logged")
        assert ask_server(server, "nothing.prod.svc.cluster.local")[0] == "SERVFAIL"
        assert "EndpointSlice: cannot reach the API (API answered 403 Forbidden: kdns's account may not list" in (
            server.log_text()
        )
        api.forbidden.clear()  # the grant is added: kdns lists and serves
        synced(server)
        assert ask_server(server, "web.prod.svc.cluster.local") == ("NOERROR", ["10.96.0.5"])
    finally:
        assert server.stop() == 0


def test_kdns_snapshot_writes_a_file_that_serve_accepts(tmp_path: Path) -> None:
    api = FakeApiServer()
    _load_example(api)
    output = tmp_path / "taken.yaml"
    try:
        result = run_kdns("snapshot", "--kubeconfig", str(api.kubeconfig(tmp_path)), "--output", str(output))
        assert result.returncode == 0, result.stderr
        assert "33 objects" in result.stderr  # 5 namespaces, 9 services, 8 slices, 11 pods

        def records(path: Path) -> list[str]:  # the zone without its header and SOA (serial: load time)
            lines = run_kdns("dump", "--snapshot", str(path)).stdout.splitlines()[1:]
            return [line for line in lines if " SOA " not in line.replace("\t", " ")]

        assert records(output) == records(EXAMPLE)
        assert len(records(EXAMPLE)) > 60
    finally:
        api.stop()


def test_kdns_snapshot_against_an_unreachable_api_exits_2(tmp_path: Path) -> None:
    api = FakeApiServer()
    kubeconfig = api.kubeconfig(tmp_path)
    api.stop()
    result = run_kdns("snapshot", "--kubeconfig", str(kubeconfig), "--api-timeout", "2")
    assert result.returncode == 2 and "listing the cluster failed" in result.stderr


def test_ready_endpoint_is_503_until_every_watcher_has_listed(api: FakeApiServer, tmp_path: Path) -> None:
    api.stall()
    server = _start(api, tmp_path, "--health-listen", "127.0.0.1:0", "--ready-listen", "127.0.0.1:0")
    try:
        ready, health = http_port(server, "/ready"), http_port(server, "/health")
        assert ready != health  # each on its own listener, as CoreDNS's health and ready
        assert http_get(ready, "/ready")[0] == 503
        assert http_get(health, "/health") == (200, "OK\n")
        api.stall(False)
        synced(server)
        assert http_get(ready, "/ready") == (200, "OK\n")
        assert http_get(ready, "/health")[0] == 404 and http_get(health, "/nope")[0] == 404
    finally:
        assert server.stop() == 0


def test_snapshot_server_is_ready_at_once() -> None:
    server = KdnsServer("--snapshot", str(EXAMPLE), "--ready-listen", "127.0.0.1:0", listen=("127.0.0.1:0",))
    try:
        assert http_get(http_port(server, "/ready"), "/ready")[0] == 200
    finally:
        assert server.stop() == 0


# Inside a pod: the service account's token and CA at their fixed paths, the API's address in the
# environment. The tests run kdns in a mount namespace of its own, with a tmpfs over /run, so the
# files sit where the official client reads them without touching this machine's /run.
_IN_POD = (
    'mount -t tmpfs tmpfs /run && mkdir -p /run/secrets/kubernetes.io/serviceaccount && cp "$0/token" "$0/ca.crt" '
    '/run/secrets/kubernetes.io/serviceaccount/ && exec "$@"'
)


def _in_pod(api: FakeApiServer, tmp_path: Path, token: str, *args: str) -> KdnsServer:
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text(token)
    assert api.tls is not None
    shutil.copy(api.tls[0], account / "ca.crt")
    env = {key: value for key, value in os.environ.items() if key != "KUBECONFIG"}
    env.update(KUBERNETES_SERVICE_HOST="127.0.0.1", KUBERNETES_SERVICE_PORT=str(api.port), HOME=str(tmp_path))
    prefix = ("unshare", "--mount", "sh", "-c", _IN_POD, str(account))
    return KdnsServer(*FAST, *args, listen=("127.0.0.1:0",), prefix=prefix, env=env)


@pytest.fixture
def tls_api(tmp_path: Path) -> Iterator[FakeApiServer]:
    server = FakeApiServer(tls=make_tls_files(tmp_path))
    server.apply(namespace("prod"))
    server.apply(service("prod", "web", ["10.96.0.5"]))
    yield server
    server.stop()


def test_in_cluster_configuration_follows_the_api_over_tls_with_the_service_account_token(
    tls_api: FakeApiServer, tmp_path: Path
) -> None:
    server = _in_pod(tls_api, tmp_path, TOKEN)
    try:
        synced(server)
        assert ask_server(server, "web.prod.svc.cluster.local") == ("NOERROR", ["10.96.0.5"])
        tls_api.apply(service("prod", "new", ["10.96.0.9"]))
        wait(
            lambda: ask_server(server, "new.prod.svc.cluster.local") == ("NOERROR", ["10.96.0.9"]),
            2,
            "a watched change",
        )
        assert tls_api.unauthorized == 0
        assert "in-cluster" not in server.log_text()  # no configuration error
    finally:
        assert server.stop() == 0


def test_service_account_token_the_api_refuses_keeps_cluster_names_servfail(
    tls_api: FakeApiServer, tmp_path: Path
) -> None:
    server = _in_pod(tls_api, tmp_path, "expired-token")
    try:
        wait(lambda: tls_api.unauthorized >= 3, 10, "kdns retrying with backoff")
        assert ask_server(server, "web.prod.svc.cluster.local")[0] == "SERVFAIL"
        assert ask_server(server, "nothing.prod.svc.cluster.local")[0] == "SERVFAIL"
        assert "API answered 401 Unauthorized: it refuses kdns's credentials" in server.log_text()
    finally:
        assert server.stop() == 0
