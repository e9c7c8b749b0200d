"""API faults a real kube-apiserver will not produce on demand (issue 8, point 5), against the
real `kdns serve` following `tests/apiserver.py`: connections cut mid-event (truncated JSON),
events of unknown types, objects of foreign kinds, objects with missing or wrong-typed fields, a
flood of 10,000 events, and a relist of 50,000 objects. Names that exist keep answering
throughout, and the zone ends where a fresh build of the final objects does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import pytest

from tests.apiserver import FakeApiServer
from tests.builders import Obj, ask, namespace, pipeline_of, records, service, store_of
from tests.helpers import FAST, QueryLoop, ask_server, synced, wait
from tests.process import KdnsServer

STEADY = {"web.prod.svc.cluster.local": ["10.96.0.5"], "db.prod.svc.cluster.local": ["10.96.0.6"]}


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    server = FakeApiServer()
    server.apply(namespace("prod"))
    server.apply(service("prod", "web", ["10.96.0.5"]))
    server.apply(service("prod", "db", ["10.96.0.6"]))
    yield server
    server.stop()


def _start(api: FakeApiServer, tmp_path: Path, *args: str) -> KdnsServer:
    return KdnsServer("--kubeconfig", str(api.kubeconfig(tmp_path)), *FAST, *args, listen=("127.0.0.1:0",))


def _shut_down(server: KdnsServer, loop: QueryLoop | None) -> None:
    """Stop the query loop, if it started, then kdns, which must exit cleanly."""
    if loop is not None:
        loop.stop()
    assert server.stop() == 0


def test_garbled_streams_and_hostile_events_never_disturb_the_names_that_exist(
    api: FakeApiServer, tmp_path: Path
) -> None:
    server = _start(api, tmp_path)
    loop = None
    try:
        synced(server)
        loop = QueryLoop(server, STEADY)
        # A connection cut in the middle of an event: truncated JSON, then the whole event again.
        api.cut_next_event()
        api.apply(service("prod", "cut", ["10.96.0.7"]))
        wait(lambda: ask_server(server, "cut.prod.svc.cluster.local")[1] == ["10.96.0.7"], 10, "the cut event, resent")
        # Events of an unknown type, foreign kinds, and objects kdns cannot read.
        version = {"resourceVersion": "1"}
        hostile = [
            {"type": "WEIRD", "object": service("prod", "weird", ["10.96.0.66"])},
            {
                "type": "ADDED",
                "object": {"kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "prod", **version}},
            },
            {"type": "ADDED", "object": {"metadata": {"namespace": "prod"}}},
            {"type": "ADDED", "object": "not an object"},
            {"type": "ADDED", "object": {"metadata": {"name": 5, "namespace": ["prod"]}}},
            {"type": "MODIFIED", "object": {**service("prod", "web", ["10.96.0.5"]), "spec": {"clusterIP": 7}}},
            {"type": "MODIFIED", "object": {**service("prod", "db", ["10.96.0.6"]), "spec": "nonsense"}},
            {"type": "ADDED", "object": {**service("prod", "huge", ["10.96.0.8"]), "spec": {"ports": [{}] * 5000}}},
        ]
        for event in hostile:
            api.inject("Service", json.dumps(event).encode() + b"\n")
        api.inject("Service", b"[1, 2, 3]\n")
        api.inject("Service", b'{"type": "ADDED", "object": {"metadata": {"name": "x\xff\xfe"}}}\n')
        api.apply(service("prod", "after", ["10.96.0.9"]))  # the watch still follows the cluster
        wait(lambda: ask_server(server, "after.prod.svc.cluster.local")[1] == ["10.96.0.9"], 10, "a change after them")
        assert ask_server(server, "weird.prod.svc.cluster.local")[0] == "NXDOMAIN"
        assert ask_server(server, "cm.prod.svc.cluster.local")[0] == "NXDOMAIN"
        assert ask_server(server, "huge.prod.svc.cluster.local")[0] == "NXDOMAIN"
        loop.wait_for(21)
        loop.stop()
        assert loop.asked > 20 and loop.wrong == []
        log = server.log_text()
        assert "Traceback" not in log and "unexpected error" not in log
        assert "field spec.clusterIP" in log and "ConfigMap" in log
    finally:
        _shut_down(server, loop)


def test_a_flood_of_10000_events_is_followed_to_the_last_with_no_failed_query(
    api: FakeApiServer, tmp_path: Path
) -> None:
    server = _start(api, tmp_path)
    loop = None
    try:
        synced(server)
        loop = QueryLoop(server, STEADY)
        final: dict[str, Obj] = {}
        started = time.monotonic()
        for i in range(10_000):
            name = f"f{i % 500}"
            obj = service("prod", name, [f"10.97.{i % 250}.{i % 200 + 1}"])
            if i % 7 == 3 and name in final:
                api.delete("Service", "prod", name)
                del final[name]
            else:
                api.apply(obj)
                final[name] = obj
        flood_seconds = time.monotonic() - started
        api.apply(service("prod", "sentinel", ["10.96.0.100"]))  # events arrive in order: the last one
        expected = store_of(namespace("prod"), service("prod", "web", ["10.96.0.5"]), *final.values())
        handler = pipeline_of(expected)
        wait(lambda: ask_server(server, "sentinel.prod.svc.cluster.local")[1] == ["10.96.0.100"], 30, "the flood's end")
        loop.wait_for(21)
        loop.stop()
        assert loop.asked > 20 and loop.wrong == [], loop.wrong[:5]
        for i in range(500):  # every name ends where a fresh build of the final objects is
            name = f"f{i}.prod.svc.cluster.local"
            want = ask(handler, name)
            got = ask_server(server, name)
            assert got == (_rcode_text(want), [line.split()[-1] for line in records(want)]), name
        print(f"10,000 events written in {flood_seconds:.1f} s")
    finally:
        _shut_down(server, loop)


def _rcode_text(message: dns.message.Message) -> str:
    import dns.rcode

    return dns.rcode.to_text(message.rcode())


def test_a_relist_of_50000_objects_loses_no_name_and_ends_where_a_fresh_build_does(
    api: FakeApiServer, tmp_path: Path
) -> None:
    for i in range(50_000):
        api.apply(service("prod", f"bulk{i}", [f"10.{98 + i // 65000}.{i // 250 % 256}.{i % 250 + 1}"]))
    server = _start(api, tmp_path, "--api-timeout", "30")
    loop = None
    try:
        wait(
            lambda: ask_server(server, "kdns-sync-check.nowhere.svc.cluster.local")[0] == "NXDOMAIN",
            120,
            "the first list",
        )
        assert ask_server(server, "bulk49999.prod.svc.cluster.local")[0] == "NOERROR"
        loop = QueryLoop(server, {**STEADY, "bulk12345.prod.svc.cluster.local": ["10.98.49.96"]})
        for i in range(0, 50_000, 1000):  # while kdns is away, a fiftieth of the cluster changes
            api.delete("Service", "prod", f"bulk{i}")
        api.apply(service("prod", "relisted", ["10.96.0.44"]))
        api.compact()
        api.drop_connections()  # its watch resumes from a compacted version: 410, and a relist
        try:
            wait(lambda: ask_server(server, "relisted.prod.svc.cluster.local")[1] == ["10.96.0.44"], 300, "the relist")
        except AssertionError as error:
            raise AssertionError(f"{error}\n{server.log_text()[-4000:]}") from None
        # What the relist did not hold goes once its last page is in.
        wait(lambda: ask_server(server, "bulk1000.prod.svc.cluster.local")[0] == "NXDOMAIN", 30, "the deletions")
        assert ask_server(server, "bulk49000.prod.svc.cluster.local")[0] == "NXDOMAIN"
        assert ask_server(server, "bulk1001.prod.svc.cluster.local")[1] == ["10.98.4.2"]
        loop.stop()
        assert loop.asked > 10 and loop.wrong == [], loop.wrong[:5]
        assert "410" in server.log_text()
    finally:
        _shut_down(server, loop)


def test_a_service_published_in_part_never_blanks_its_page_at_start_or_after_a_relist(
    api: FakeApiServer, tmp_path: Path
) -> None:
    """Issue 8 D1, as reported: Services bad, s1, s2, s3 in one namespace, where bad has a
    63-character port name. s1-s3 used to answer NXDOMAIN at start, and again after an outage,
    a compaction and a relist."""
    api.apply(service("prod", "bad", ["10.96.1.9"], ports=[{"name": "p" * 63, "port": 81, "protocol": "TCP"}]))
    for i in range(1, 4):
        api.apply(service("prod", f"s{i}", [f"10.96.1.{i}"]))
    server = _start(api, tmp_path, "--api-page-size", "2")
    try:
        synced(server)
        expected = {f"s{i}.prod.svc.cluster.local": [f"10.96.1.{i}"] for i in range(1, 4)}
        for name, addresses in expected.items():
            assert ask_server(server, name) == ("NOERROR", addresses)
        loop = QueryLoop(server, {**expected, "bad.prod.svc.cluster.local": ["10.96.1.9"]})
        try:
            api.stop()
            wait(lambda: server.log_text().count("cannot reach the API") == 3, 10, "every watcher saw the outage")
            loop.wait_for(11)
            api.apply(service("prod", "s4", ["10.96.1.4"]))
            api.compact()
            api.start()
            wait(lambda: ask_server(server, "s4.prod.svc.cluster.local")[1] == ["10.96.1.4"], 20, "the relist")
        finally:
            loop.stop()
        assert loop.wrong == [] and loop.asked > 10
    finally:
        assert server.stop() == 0
