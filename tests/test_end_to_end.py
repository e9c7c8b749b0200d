"""The real `kdns serve` process on loopback, queried with dig and dnspython over UDP and TCP."""

from __future__ import annotations

import json
import random
import signal
import socket
import struct
import time
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
import yaml

from tests.builders import endpoint, endpoint_slice, headless, service
from tests.fakeupstream import read_exactly
from tests.helpers import http_get, http_port
from tests.process import KdnsServer, dig, run_kdns

pytestmark = pytest.mark.usefixtures("dig_installed")


def _udp(server: KdnsServer, name: str, rdtype: str = "A", **kwargs: Any) -> dns.message.Message:
    return dns.query.udp(dns.message.make_query(name, rdtype, **kwargs), server.host, port=server.port, timeout=3)


def _tcp(server: KdnsServer, name: str, rdtype: str = "A") -> dns.message.Message:
    return dns.query.tcp(dns.message.make_query(name, rdtype), server.host, port=server.port, timeout=3)


# -- dig against the example cluster ------------------------------------------------------------


def test_dig_resolves_a_cluster_ip_service_over_udp_and_tcp(example_server: KdnsServer) -> None:
    for transport in ("+notcp", "+tcp"):
        out = dig(example_server, "web.prod.svc.cluster.local", "A", transport, "+short")
        assert out.split() == ["10.96.12.34"], transport


def test_dig_over_the_ipv6_listener(example_server: KdnsServer) -> None:
    v6 = next(address for address in example_server.addresses if ":" in address[0])
    out = dig(example_server, "web.prod.svc.cluster.local", "AAAA", "+short", address=v6)
    assert out.split() == ["fd00:10:96::1234"]


def test_dig_headless_srv_with_additional_addresses(example_server: KdnsServer) -> None:
    out = dig(example_server, "_postgres._tcp.db.prod.svc.cluster.local", "SRV", "+noall", "+answer", "+additional")
    lines = [line.split() for line in out.strip().splitlines()]
    assert sorted((line[3], line[-1]) for line in lines) == [
        ("A", "10.244.1.20"),
        ("A", "10.244.2.21"),
        ("SRV", "db-0.db.prod.svc.cluster.local."),
        ("SRV", "db-1.db.prod.svc.cluster.local."),
    ]


def test_dig_reverse_lookup_and_external_name(example_server: KdnsServer) -> None:
    assert dig(example_server, "-x", "10.96.12.34", "+short").split() == ["web.prod.svc.cluster.local."]
    assert dig(example_server, "payments.prod.svc.cluster.local", "+short").split() == ["payments.example.com."]


def test_dig_endpoint_names_and_ptrs_of_a_cluster_ip_service_as_coredns(example_server: KdnsServer) -> None:
    # Answered on demand (not prepared at load): the first and a repeated question agree.
    for _ in range(2):
        assert dig(example_server, "-x", "10.244.2.11", "+short").split() == ["10-244-2-11.web.prod.svc.cluster.local."]
        assert dig(example_server, "-x", "fd00:10:244:1::a", "+short").split() == [
            "fd00-10-244-1--a.web.prod.svc.cluster.local."
        ]
    assert dig(example_server, "10-244-2-11.web.prod.svc.cluster.local", "+short").split() == ["10.244.2.11"]
    out = dig(example_server, "10-244-2-11.web.prod.svc.cluster.local", "AAAA", "+noall", "+comments")
    assert "status: NOERROR" in out and "ANSWER: 0" in out
    out = dig(example_server, "10-244-2-99.web.prod.svc.cluster.local", "+noall", "+comments")
    assert "status: NXDOMAIN" in out


def test_dig_nxdomain_carries_the_soa(example_server: KdnsServer) -> None:
    out = dig(example_server, "nothere.prod.svc.cluster.local", "+noall", "+comments", "+authority")
    assert "status: NXDOMAIN" in out
    assert "cluster.local.\t\t30\tIN\tSOA\tns.dns.cluster.local. hostmaster.cluster.local." in out
    assert "flags: qr aa rd" in out


def test_dig_dns_version_and_pod_record(example_server: KdnsServer) -> None:
    assert dig(example_server, "dns-version.cluster.local", "TXT", "+short").split() == ['"1.1.0"']
    assert dig(example_server, "10-244-1-10.prod.pod.cluster.local", "+short").split() == ["10.244.1.10"]


def test_outside_the_cluster_domain_is_refused(example_server: KdnsServer) -> None:
    assert "status: REFUSED" in dig(example_server, "example.com", "+noall", "+comments")


def test_dnspython_over_udp_and_tcp_agree(example_server: KdnsServer) -> None:
    udp = _udp(example_server, "db.prod.svc.cluster.local")
    tcp = _tcp(example_server, "db.prod.svc.cluster.local")
    assert udp.answer == tcp.answer
    assert sorted(item.address for item in udp.answer[0]) == ["10.244.1.20", "10.244.2.21"]


def test_tcp_answers_several_queries_on_one_connection_in_order(example_server: KdnsServer) -> None:
    names = ["web.prod.svc.cluster.local", "nope.prod.svc.cluster.local", "db.prod.svc.cluster.local"]
    queries = [dns.message.make_query(name, "A") for name in names]
    with socket.create_connection((example_server.host, example_server.port), timeout=5) as conn:
        conn.sendall(b"".join(struct.pack("!H", len(w)) + w for w in (q.to_wire() for q in queries)))
        replies = [dns.message.from_wire(_read_framed(conn)) for _ in queries]
    assert [reply.id for reply in replies] == [query.id for query in queries]
    assert [dns.rcode.to_text(reply.rcode()) for reply in replies] == ["NOERROR", "NXDOMAIN", "NOERROR"]


def _read_framed(conn: socket.socket) -> bytes:
    header = read_exactly(conn, 2)
    return read_exactly(conn, struct.unpack("!H", header)[0])


def test_garbage_on_the_wire_never_stops_the_server(example_server: KdnsServer) -> None:
    rng = random.Random(7)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for _ in range(2000):
            udp.sendto(
                bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 300))),
                (example_server.host, example_server.port),
            )
    for _ in range(20):  # TCP: garbage lengths, short frames, abrupt closes
        with socket.create_connection((example_server.host, example_server.port), timeout=5) as conn:
            conn.sendall(bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 200))))
    assert example_server.alive()
    assert _udp(example_server, "web.prod.svc.cluster.local").answer[0][0].address == "10.96.12.34"
    assert "Traceback" not in example_server.log_text()


# -- servers with their own options --------------------------------------------------------------


@pytest.fixture
def big_headless(tmp_path: Path) -> Path:
    endpoints = [endpoint(f"10.244.{i // 200}.{i % 200 + 1}", hostname=f"m-{i}") for i in range(300)]
    ports = [{"name": "peer", "port": 7000, "protocol": "TCP"}]
    items = [headless("prod", "big", ports=ports), endpoint_slice("prod", "big-a", "big", endpoints, ports=ports)]
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump({"kind": "List", "items": items}))
    return path


def test_large_headless_answer_truncates_over_udp_and_comes_whole_over_tcp(big_headless: Path) -> None:
    """Over UDP: TC with the whole records that fit (CoreDNS), so a client that never retries
    over TCP (musl before 1.2.4) still gets addresses; over TCP: all 300."""
    server = KdnsServer("--snapshot", str(big_headless))
    try:
        truncated = _udp(server, "big.prod.svc.cluster.local", use_edns=False)
        assert truncated.flags & dns.flags.TC and 0 < len(truncated.answer[0]) < 300
        whole = _tcp(server, "big.prod.svc.cluster.local")
        assert len(whole.answer[0]) == 300
        # dig sees TC and retries over TCP by itself, as resolvers do.
        assert len(dig(server, "big.prod.svc.cluster.local", "+short").split()) == 300
        out = dig(server, "big.prod.svc.cluster.local", "+ignore", "+noedns", "+comments")
        flags = next(line for line in out.splitlines() if line.startswith(";; flags:"))
        assert "tc" in flags.split(";")[2].split()
    finally:
        assert server.stop() == 0


def test_idle_tcp_connection_is_closed() -> None:
    server = KdnsServer("--snapshot", "examples/cluster.yaml", "--tcp-idle-timeout", "0.5")
    try:
        with socket.create_connection((server.host, server.port), timeout=5) as conn:
            conn.sendall(b"\x00")  # half a length prefix, then nothing
            started = time.monotonic()
            assert conn.recv(10) == b""
            assert time.monotonic() - started < 4
    finally:
        assert server.stop() == 0


def test_a_tcp_connection_beyond_the_cap_closes_the_one_idle_longest() -> None:
    """RFC 7766 6.2.3: a server that needs the room closes idle connections; the newcomer is
    served (issue 17: closing the newcomer let idle clients keep every other one out)."""
    server = KdnsServer("--snapshot", "examples/cluster.yaml", "--max-tcp-connections", "2")
    try:
        held = [socket.create_connection((server.host, server.port), timeout=5) for _ in range(2)]
        for conn in held:  # each accepted and served: both now count against the cap
            query = dns.message.make_query("web.prod.svc.cluster.local", "A")
            dns.query.send_tcp(conn, query, expiration=time.time() + 5)
            assert dns.query.receive_tcp(conn, expiration=time.time() + 5)[0].answer
        with socket.create_connection((server.host, server.port), timeout=5) as extra:
            query = dns.message.make_query("web.prod.svc.cluster.local", "A")
            dns.query.send_tcp(extra, query, expiration=time.time() + 5)
            assert dns.query.receive_tcp(extra, expiration=time.time() + 5)[0].answer
            assert held[0].recv(10) == b""  # idle longest: closed for it
        for conn in held:
            conn.close()
    finally:
        assert server.stop() == 0


def test_sigterm_and_sigint_stop_the_server_cleanly() -> None:
    import signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        server = KdnsServer("--snapshot", "examples/cluster.yaml")
        assert server.stop(sig) == 0
        assert f"received {signal.Signals(sig).name}" in server.log_text()


def test_snapshot_with_a_malformed_object_serves_all_the_others(tmp_path: Path) -> None:
    items = [
        service("prod", "web", ["10.96.0.5"]),
        service("prod", "bad", ["999.1.1.1"]),
        service("prod", "db", ["10.96.0.6"]),
    ]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"kind": "List", "items": items}))
    server = KdnsServer("--snapshot", str(path))
    try:
        assert _udp(server, "web.prod.svc.cluster.local").answer[0][0].address == "10.96.0.5"
        assert _udp(server, "db.prod.svc.cluster.local").answer[0][0].address == "10.96.0.6"
        assert _udp(server, "bad.prod.svc.cluster.local").rcode() == dns.rcode.NXDOMAIN
        assert "Service prod/bad: field spec.clusterIPs[0]" in server.log_text()
    finally:
        assert server.stop() == 0


def test_snapshot_with_a_service_published_in_part_serves_it_and_all_the_others(tmp_path: Path) -> None:
    """Issue 8 D1: `serve --snapshot` used to die at start on a 63-character port name."""
    ports = [{"name": "p" * 63, "port": 81}, {"name": "http", "port": 80}]
    items = [service("a", "bad", ["10.96.0.9"], ports=ports), service("a", "s1", ["10.96.0.1"])]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"kind": "List", "items": items}))
    server = KdnsServer("--snapshot", str(path))
    try:
        assert _udp(server, "s1.a.svc.cluster.local").answer[0][0].address == "10.96.0.1"
        assert _udp(server, "bad.a.svc.cluster.local").answer[0][0].address == "10.96.0.9"
        assert len(_udp(server, "_http._tcp.bad.a.svc.cluster.local", "SRV").answer) == 1
        log = server.log_text()
        assert "left out of DNS: Service a/bad: field spec.ports[0].name" in log and "Traceback" not in log
    finally:
        assert server.stop() == 0


def test_garbage_snapshot_file_exits_2_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.yaml"
    path.write_bytes(b"kind: List\nitems: [\x00\x01 {{{\n")
    result = run_kdns("serve", "--snapshot", str(path), "--listen", "127.0.0.1:0")
    assert result.returncode == 2
    assert str(path) in result.stderr


def test_bad_flags_exit_2_with_a_message() -> None:
    for args, text in (
        (["--listen", "nowhere:53"], "--listen"),
        (["--ttl", "-1"], "--ttl"),
        (["--cluster-domain", "a..b"], "--cluster-domain"),
        (["--max-udp-size", "100"], "--max-udp-size"),
    ):
        result = run_kdns("serve", "--snapshot", "examples/cluster.yaml", *args)
        assert result.returncode == 2, args
        assert text in result.stderr, args


def test_listen_address_in_use_exits_2() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = run_kdns("serve", "--snapshot", "examples/cluster.yaml", "--listen", f"127.0.0.1:{port}")
    assert result.returncode == 2 and "cannot listen on 127.0.0.1" in result.stderr


def test_sigterm_starts_a_lameduck_that_answers_every_query_while_ready_turns_503() -> None:
    """CoreDNS's `health { lameduck 5s }`: after SIGTERM the kube-dns Service stops routing to
    the pod (ready 503) while the pod still answers what is in flight or already routed to it."""

    server = KdnsServer("--snapshot", "examples/cluster.yaml", "--lameduck", "2s", "--ready-listen", "127.0.0.1:0")
    ready = http_port(server, "/ready")
    assert http_get(ready, "/ready")[0] == 200
    answered, failed = 0, 0
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    saw_503 = False
    while time.monotonic() - started < 1.5:  # well inside the lameduck
        try:
            reply = _udp(server, "web.prod.svc.cluster.local")
            answered += bool(reply.answer)
            # Names that do not exist stay NXDOMAIN: draining is not "not synced" (no SERVFAIL).
            assert _udp(server, "nope.prod.svc.cluster.local").rcode() == dns.rcode.NXDOMAIN
        except dns.exception.Timeout:
            failed += 1
        if not saw_503:
            saw_503 = http_get(ready, "/ready")[0] == 503
        time.sleep(0.02)
    assert saw_503 and answered > 20 and failed == 0
    assert server.process.wait(10) == 0
    assert time.monotonic() - started >= 2.0
    assert "lameduck for 2 s" in server.log_text()


def test_json_logs_and_the_query_log() -> None:
    server = KdnsServer("--snapshot", "examples/cluster.yaml", "--log-format", "json", "--log-queries")
    try:
        _udp(server, "web.prod.svc.cluster.local")
        _tcp(server, "nope.prod.svc.cluster.local")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and server.log_text().count('"logger":"kdns.queries"') < 2:
            time.sleep(0.05)
        lines = [json.loads(line) for line in server.log_text().splitlines() if line.strip()]
        assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
        assert any(line["message"].startswith("listening on") for line in lines)
        queries = [line for line in lines if line["logger"] == "kdns.queries"]
        assert [(q["transport"], q["name"], q["type"], q["rcode"]) for q in queries] == [
            ("udp", "web.prod.svc.cluster.local.", "A", "NOERROR"),
            ("tcp", "nope.prod.svc.cluster.local.", "A", "NXDOMAIN"),
        ]
        assert all(q["client"] in ("127.0.0.1", "::1") and q["duration"] >= 0 for q in queries)
    finally:
        assert server.stop() == 0


def test_no_query_log_by_default(example_server: KdnsServer) -> None:
    _udp(example_server, "web.prod.svc.cluster.local")
    assert "kdns.queries" not in example_server.log_text()
