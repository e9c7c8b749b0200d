"""Clients that abuse the listeners (issue 8, point 3), against the real `kdns serve` process and
bounded in time: idle, slow-loris, non-reading and length-lying TCP clients at and above the
connection cap, and a UDP flood of garbage mixed with valid queries. Valid queries keep being
answered, every held slot comes free, and memory stays bounded."""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import time
from collections.abc import Iterator

import dns.message
import dns.query
import dns.rcode
import pytest

from tests.helpers import rss_bytes
from tests.process import EXAMPLE, KdnsServer

CAP = 20
IDLE = 1.0  # --tcp-idle-timeout
WRITE = 0.5  # --tcp-write-timeout
WEB = "web.prod.svc.cluster.local"


@pytest.fixture
def server() -> Iterator[KdnsServer]:
    kdns = KdnsServer(
        "--snapshot",
        str(EXAMPLE),
        "--max-tcp-connections",
        str(CAP),
        "--tcp-idle-timeout",
        str(IDLE),
        "--tcp-write-timeout",
        str(WRITE),
        listen=("127.0.0.1:0",),
    )
    yield kdns
    assert kdns.stop() == 0, kdns.log_text()
    assert "Traceback" not in kdns.log_text()


def _udp_ok(server: KdnsServer) -> bool:
    reply = dns.query.udp(dns.message.make_query(WEB, "A"), server.host, port=server.port, timeout=2)
    return reply.rcode() == dns.rcode.NOERROR and bool(reply.answer)


def _tcp_ok(server: KdnsServer) -> bool:
    try:
        reply = dns.query.tcp(dns.message.make_query(WEB, "A"), server.host, port=server.port, timeout=2)
    except (OSError, EOFError, dns.exception.DNSException):
        return False
    return reply.rcode() == dns.rcode.NOERROR


def _connect(server: KdnsServer, receive_buffer: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect((server.host, server.port))
    return sock


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes `sock` within `within` seconds (data it sent first is drained)."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True
    return False


def _framed(name: str, rdtype: str = "A") -> bytes:
    wire = dns.message.make_query(name, rdtype).to_wire()
    return struct.pack("!H", len(wire)) + wire


def test_idle_clients_at_the_cap_never_stop_udp_or_a_new_tcp_client_and_free_their_slots(server: KdnsServer) -> None:
    """At the cap, a new connection is served and the one idle longest closed for it (issue 17:
    before, the newcomer was closed at once, so idle clients kept every other client out)."""
    held = [_connect(server) for _ in range(CAP)]
    time.sleep(0.1)
    assert _tcp_ok(server), "a new client at the cap must be served"
    assert _closed_by_server(held[0], 0.5), "the connection idle longest makes room"
    assert _udp_ok(server)
    assert all(_closed_by_server(sock, IDLE + 2) for sock in held[1:]), "idle connections outlive the timeout"
    assert _tcp_ok(server)  # the slots are free again
    for sock in held:
        sock.close()


def test_slow_loris_clients_are_closed_at_the_idle_timeout_not_kept_by_each_byte(server: KdnsServer) -> None:
    query = _framed(WEB)
    clients = [_connect(server) for _ in range(CAP)]
    started = time.monotonic()
    open_clients = list(clients)
    sent = 0
    while open_clients and time.monotonic() - started < IDLE + 3:
        for sock in list(open_clients):
            try:
                sock.send(query[sent % (len(query) - 1) : sent % (len(query) - 1) + 1])  # never a whole query
            except OSError:
                open_clients.remove(sock)
        sent += 1
        assert _udp_ok(server)
        time.sleep(0.1)
    assert not open_clients, "a client dripping bytes kept its connection past the idle timeout"
    assert _tcp_ok(server)
    for sock in clients:
        sock.close()


def test_clients_that_never_read_are_dropped_after_the_write_timeout(server: KdnsServer) -> None:
    pipelined = _framed("db.prod.svc.cluster.local", "SRV") * 5000
    clients = []
    for _ in range(CAP):
        sock = _connect(server, receive_buffer=4096)
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.send(pipelined)
        clients.append(sock)
    assert _udp_ok(server)
    deadline = time.monotonic() + WRITE + IDLE + 5
    while not _tcp_ok(server):  # a slot comes free once the write timeout closes a reader-less client
        assert time.monotonic() < deadline, "non-reading clients still hold every TCP slot"
        time.sleep(0.2)
    for sock in clients:
        sock.close()


def test_clients_whose_length_prefix_lies_are_closed(server: KdnsServer) -> None:
    long_promise = _connect(server)
    long_promise.sendall(struct.pack("!H", 65535) + b"\x12\x34" + b"x" * 10)  # promises 65,535, sends 12
    zero = _connect(server)
    zero.sendall(struct.pack("!H", 0))  # an empty message
    short = _connect(server)
    wire = dns.message.make_query(WEB, "A").to_wire()
    short.sendall(struct.pack("!H", 5) + wire)  # says 5 bytes, sends a whole query after them
    assert _closed_by_server(zero, 2)
    assert _closed_by_server(short, IDLE + 2)
    assert _closed_by_server(long_promise, IDLE + 2)
    assert _udp_ok(server) and _tcp_ok(server)
    for sock in (long_promise, zero, short):
        sock.close()


def test_a_udp_flood_of_garbage_mixed_with_queries_loses_no_valid_query_and_no_memory(server: KdnsServer) -> None:
    rng = random.Random(8)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    target = (server.host, server.port)
    valid = {}
    for i in range(200):
        query = dns.message.make_query(WEB, "A")
        query.id = i
        valid[i] = query.to_wire()
    before = rss_bytes(server.process.pid)
    answered: set[int] = set()
    for round_ in range(5):
        for i in range(200):
            for _ in range(20):  # 20 garbage datagrams for each valid query
                sock.sendto(bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 300))), target)
            if i % 10 == round_ % 10:
                sock.sendto(valid[i], target)
                try:
                    while True:
                        data = sock.recv(65535)
                        if data[:2] == valid[i][:2] and data[2] & 0x80:
                            reply = dns.message.from_wire(data)
                            if reply.rcode() == dns.rcode.NOERROR and reply.answer:
                                answered.add(i)
                                break
                except TimeoutError:
                    pass
        time.sleep(0.05)
    asked = {i for i in range(200) for round_ in range(5) if i % 10 == round_ % 10}
    after = rss_bytes(server.process.pid)
    assert answered == asked, f"{len(asked - answered)} valid queries lost in the flood"
    assert after - before < 20 << 20, f"RSS grew from {before >> 10} KiB to {after >> 10} KiB"
    sock.close()
