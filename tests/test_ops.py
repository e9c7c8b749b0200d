"""The HTTP operations endpoints (kdns/ops.py, over h11), in-process on virtual time and against
the real process: routes and methods, keep-alive, and the bounds that keep idle, slow and
oversized clients from starving the probes or DNS."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

import dns.message
import dns.query
import trio
import trio.testing

from kdns.address import SocketAddress
from kdns.config import HttpLimits
from kdns.ops import health, readiness, serve_http
from kdns.serve import bind_tcp
from tests.helpers import http_get, http_port
from tests.process import EXAMPLE, KdnsServer


async def _start(nursery: trio.Nursery, limits: HttpLimits, ready: bool = True) -> tuple[str, int]:
    sock = bind_tcp(SocketAddress("127.0.0.1", 0))
    routes = {"/health": health, "/ready": readiness(lambda: ready)}
    await nursery.start(serve_http, sock, routes, limits)
    host, port = sock.getsockname()[:2]
    return host, port


async def _request(address: tuple[str, int], raw: bytes) -> bytes:
    stream = await trio.open_tcp_stream(*address)
    await stream.send_all(raw)
    with trio.fail_after(10):
        data = await _receive_all(stream)
    await stream.aclose()
    return data


async def test_routes_methods_and_keep_alive(nursery: trio.Nursery) -> None:
    address = await _start(nursery, HttpLimits())
    ok = await _request(address, b"GET /health HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200 ") and ok.endswith(b"\r\n\r\nOK\n")
    head = await _request(address, b"HEAD /ready HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")
    assert (await _request(address, b"POST /health HTTP/1.1\r\nHost: k\r\nContent-Length: 0\r\n\r\n")).startswith(
        b"HTTP/1.1 405 "
    )
    assert (await _request(address, b"GET /nope HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n")).startswith(
        b"HTTP/1.1 404 "
    )
    assert (await _request(address, b"GARBAGE\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
    two = b"GET /health HTTP/1.1\r\nHost: k\r\n\r\nGET /ready HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n"
    both = await _request(address, two)  # kept alive: two answers on one connection
    assert both.count(b"HTTP/1.1 200 ") == 2
    nursery.cancel_scope.cancel()


async def test_ready_is_503_until_ready(nursery: trio.Nursery) -> None:
    address = await _start(nursery, HttpLimits(), ready=False)
    reply = await _request(address, b"GET /ready HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 503 ")
    nursery.cancel_scope.cancel()


async def test_oversized_headers_are_refused_with_431(nursery: trio.Nursery) -> None:
    address = await _start(nursery, HttpLimits(max_header_bytes=1024))
    big = b"GET /health HTTP/1.1\r\nHost: k\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n"
    assert (await _request(address, big)).startswith(b"HTTP/1.1 431 ")
    nursery.cancel_scope.cancel()


async def test_idle_and_slow_clients_beyond_the_cap_never_starve_a_probe(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    address = await _start(nursery, HttpLimits(max_connections=5, read_timeout=5))
    held = [await trio.open_tcp_stream(*address) for _ in range(5)]
    for stream in held[:2]:
        await stream.send_all(b"GET /hea")  # slow-loris: never finishes its request
    await trio.sleep(0.1)
    # Beyond the cap, the newcomer is served and the connection idle longest is closed.
    reply = await _request(address, b"GET /health HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 ")
    with trio.fail_after(1):
        assert await _receive_all(held[0]) == b""
    await trio.sleep(6)  # virtual: past the read timeout, every held connection is closed
    for stream in held[1:]:
        with trio.fail_after(1):
            await _receive_all(stream)
    reply = await _request(address, b"GET /health HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 ")
    nursery.cancel_scope.cancel()


async def _keep_alive(stream: trio.SocketStream, every: float) -> None:
    """A client that holds its connection by asking /health every `every` seconds, forever."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        while True:
            await stream.send_all(b"GET /health HTTP/1.1\r\nHost: k\r\n\r\n")
            if not await stream.receive_some(4096):
                return
            await trio.sleep(every)


async def test_a_probe_gets_through_while_64_keep_alive_connections_are_held(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Issue 17, K3: 64 keep-alive connections asking /health every 4 s filled the cap, and every
    probe was reset (24 of 24) for as long as the holder liked: the liveness probe restarted
    kdns, readiness took it out of the Service. Now a newcomer closes the connection idle
    longest; one address may hold at most `max_per_address`, making room among its own."""
    address = await _start(nursery, HttpLimits())  # 64 connections, 8 per address
    # 8 connections from each of 8 addresses: the listener is full, no address past its cap.
    holders = [await trio.open_tcp_stream(*address, local_address=f"127.0.0.{2 + i % 8}") for i in range(64)]
    for stream in holders:
        nursery.start_soon(_keep_alive, stream, 4.0)
    await trio.sleep(1)
    for _ in range(24):  # the kubelet's probes: a new connection each, every 10 s
        probe = await _request(address, b"GET /health HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n")
        assert probe.startswith(b"HTTP/1.1 200 "), probe
        await trio.sleep(10)
    nursery.cancel_scope.cancel()


async def test_headers_over_the_limit_are_refused_even_when_they_arrive_in_one_read(nursery: trio.Nursery) -> None:
    """Issue 17, K11: a 9 KB request head got 200 (h11 checks only heads still incomplete)."""
    address = await _start(nursery, HttpLimits())
    head = b"GET /health HTTP/1.1\r\nHost: k\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
    stream = await trio.open_tcp_stream(*address)
    await stream.send_all(head)  # arrives in one piece over loopback
    with trio.fail_after(10):
        reply = await _receive_all(stream)
    assert reply.startswith(b"HTTP/1.1 431 "), reply[:40]
    just_under = b"GET /health HTTP/1.1\r\nHost: k\r\nConnection: close\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n"
    assert (await _request(address, just_under)).startswith(b"HTTP/1.1 200 ")
    nursery.cancel_scope.cancel()


async def _receive_all(stream: trio.SocketStream) -> bytes:
    data = b""
    try:
        while chunk := await stream.receive_some(4096):
            data += chunk
    except trio.BrokenResourceError:
        pass
    return data


def test_a_crowd_of_idle_http_clients_never_starves_dns_or_the_other_probe() -> None:
    """Issue 10: 2,100 idle connections to the health port used to exhaust kdns's file
    descriptors, after which DNS over TCP and /health itself timed out."""
    server = KdnsServer(
        "--snapshot",
        str(EXAMPLE),
        "--health-listen",
        "127.0.0.1:0",
        "--ready-listen",
        "127.0.0.1:0",
        listen=("127.0.0.1:0",),
    )
    crowd: list[socket.socket] = []
    try:
        health_port, ready_port = http_port(server, "/health"), http_port(server, "/ready")
        for _ in range(600):
            crowd.append(socket.create_connection(("127.0.0.1", health_port), timeout=5))
        time.sleep(0.1)
        reply = dns.query.tcp(
            dns.message.make_query("web.prod.svc.cluster.local", "A"), server.host, port=server.port, timeout=3
        )
        assert reply.answer
        assert http_get(ready_port, "/ready")[0] == 200
        fds = len(list(Path(f"/proc/{server.process.pid}/fd").iterdir()))
        assert fds < 200, f"{fds} open file descriptors"
    finally:
        for sock in crowd:
            sock.close()
        assert server.stop() == 0
