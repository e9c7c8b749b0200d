"""The trio listeners in-process: a stage that raises never stops them, and TCP framing holds up
against queries split across reads."""

from __future__ import annotations

import socket
import struct

import dns.message
import dns.rcode
import pytest
import trio
import trio.testing

from kdns.address import SocketAddress
from kdns.config import TcpLimits
from kdns.core.blocks import ServerBlock, ServerBlocks
from kdns.core.cluster_zone import ClusterZone
from kdns.core.names import REVERSE_ZONES
from kdns.core.stage import Next, Outcome, ReplyOptions, Request, Stage
from kdns.pipeline import Pipeline
from kdns.serve import Current, bind, serve
from kdns.state import State
from tests.builders import pipeline_of, service, store_of

BOOM = "boom.prod.svc.cluster.local"


class _Boom:
    """A stage with a bug: it raises for one name."""

    def serve(self, request: Request, next: Next) -> Outcome:
        if b"\x04boom" in request.query.key:
            raise RuntimeError("a bug in a stage")
        return next(request)


async def _start(nursery: trio.Nursery) -> tuple[str, int]:
    listener = bind(SocketAddress("127.0.0.1", 0))
    zone = store_of(service("prod", "web", ["10.96.0.5"])).zone
    options = ReplyOptions()
    cluster: list[Stage] = [_Boom(), ClusterZone(zone, options, lambda: True)]
    blocks = ServerBlocks(
        lambda resolve: [
            ServerBlock(("cluster.local", *REVERSE_ZONES), cluster, options),
            ServerBlock((".",), [], options),
        ]
    )
    pipeline = Pipeline(blocks, options, State(), zone=zone, reply_cache_bytes=1 << 20)
    await nursery.start(serve, [listener], Current(pipeline, TcpLimits()))
    return listener.address.host, listener.address.port


async def _udp_query(address: tuple[str, int], name: str) -> dns.message.Message:
    query = dns.message.make_query(name, "A")
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.sendto(query.to_wire(), address)
        with trio.fail_after(5):
            data = await sock.recv(65535)
    return dns.message.from_wire(data)


async def test_udp_query_that_makes_a_stage_raise_gets_servfail_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with trio.open_nursery() as nursery:
        address = await _start(nursery)
        failed = await _udp_query(address, BOOM)
        assert failed.rcode() == dns.rcode.SERVFAIL
        ok = await _udp_query(address, "web.prod.svc.cluster.local")
        assert ok.answer[0][0].address == "10.96.0.5"
        nursery.cancel_scope.cancel()
    assert "error answering a UDP query" in caplog.text


async def test_tcp_query_that_makes_a_stage_raise_gets_servfail_on_a_connection_that_stays_open() -> None:
    async with trio.open_nursery() as nursery:
        host, port = await _start(nursery)
        stream = await trio.open_tcp_stream(host, port)
        replies = []
        for name in (BOOM, "web.prod.svc.cluster.local"):
            wire = dns.message.make_query(name, "A").to_wire()
            await stream.send_all(struct.pack("!H", len(wire)) + wire)
            replies.append(dns.message.from_wire(await _read_framed(stream)))
        assert [reply.rcode() for reply in replies] == [dns.rcode.SERVFAIL, dns.rcode.NOERROR]
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_tcp_query_split_into_single_bytes_is_reassembled() -> None:
    async with trio.open_nursery() as nursery:
        host, port = await _start(nursery)
        stream = await trio.open_tcp_stream(host, port)
        wire = dns.message.make_query("web.prod.svc.cluster.local", "A").to_wire()
        for byte in struct.pack("!H", len(wire)) + wire:
            await stream.send_all(bytes([byte]))
            await trio.sleep(0.001)
        reply = dns.message.from_wire(await _read_framed(stream))
        assert reply.answer[0][0].address == "10.96.0.5"
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_tcp_stream_carrying_a_response_is_closed() -> None:
    async with trio.open_nursery() as nursery:
        host, port = await _start(nursery)
        stream = await trio.open_tcp_stream(host, port)
        response = dns.message.make_response(dns.message.make_query("web.prod.svc.cluster.local", "A")).to_wire()
        await stream.send_all(struct.pack("!H", len(response)) + response)
        with trio.fail_after(5):
            assert await stream.receive_some(10) == b""
        nursery.cancel_scope.cancel()


async def _read_framed(stream: trio.SocketStream) -> bytes:
    data = b""
    with trio.fail_after(5):
        while len(data) < 2 or len(data) < 2 + struct.unpack("!H", data[:2])[0]:
            chunk = await stream.receive_some(65535)
            assert chunk, "connection closed"
            data += chunk
    return data[2:]


async def test_a_tcp_client_that_never_reads_loses_its_connection_after_the_write_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Issue 8 D3: `send_all` had no deadline, so 20 clients that pipelined queries and never
    read held every TCP slot. The mock clock makes the 2 s write timeout pass at once."""
    async with trio.open_nursery() as nursery:
        listener = bind(SocketAddress("127.0.0.1", 0))
        pipeline = pipeline_of(store_of(service("prod", "web", ["10.96.0.5"])))
        await nursery.start(serve, [listener], Current(pipeline, TcpLimits(idle_timeout=600, max_connections=1)))
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect((listener.address.host, listener.address.port))
        client.setblocking(False)
        wire = dns.message.make_query("web.prod.svc.cluster.local", "SRV").to_wire()
        framed = (struct.pack("!H", len(wire)) + wire) * 5000
        sock = trio.socket.from_stdlib_socket(client)
        sent = 0
        with trio.move_on_after(5):
            while sent < len(framed):
                sent += await sock.send(framed[sent : sent + 65536])
        await trio.sleep(10)  # virtual: long past the write timeout, well within the idle timeout
        closed = False
        with trio.move_on_after(30):
            while True:  # drain what was written before the server gave up
                try:
                    if not await sock.recv(65536):
                        closed = True
                        break
                except ConnectionResetError:
                    closed = True
                    break
        assert closed, "the server still holds a connection whose client never reads"
        # Its slot is free again: a new client is served.
        stream = await trio.open_tcp_stream(listener.address.host, listener.address.port)
        await stream.send_all(struct.pack("!H", len(wire)) + wire)
        assert dns.message.from_wire(await _read_framed(stream)).rcode() == dns.rcode.NOERROR
        await stream.aclose()
        sock.close()
        nursery.cancel_scope.cancel()


async def test_an_idle_or_dripping_tcp_client_is_closed_at_the_idle_timeout_on_virtual_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The idle timeout counts from the last complete query, not from the last byte: a client
    that drips a byte a second is closed 10 s (virtual) after it connected, like an idle one."""
    async with trio.open_nursery() as nursery:
        listener = bind(SocketAddress("127.0.0.1", 0))
        pipeline = pipeline_of(store_of(service("prod", "web", ["10.96.0.5"])))
        await nursery.start(serve, [listener], Current(pipeline, TcpLimits(idle_timeout=10, max_connections=5)))
        idle = await trio.open_tcp_stream(listener.address.host, listener.address.port)
        dripping = await trio.open_tcp_stream(listener.address.host, listener.address.port)
        started = trio.current_time()
        wire = dns.message.make_query("web.prod.svc.cluster.local", "A").to_wire()
        partial_query = struct.pack("!H", len(wire)) + wire[:-1]
        closed_at: dict[str, float] = {}

        async def drip() -> None:
            try:
                for byte in partial_query:
                    await dripping.send_all(bytes([byte]))
                    await trio.sleep(1)
            except trio.BrokenResourceError:
                pass

        async def watch(name: str, stream: trio.SocketStream) -> None:
            try:
                while await stream.receive_some(100):
                    pass
            except trio.BrokenResourceError:
                pass  # closed forcefully: a reset
            closed_at[name] = trio.current_time() - started

        async with trio.open_nursery() as clients:
            clients.start_soon(drip)
            clients.start_soon(watch, "idle", idle)
            clients.start_soon(watch, "dripping", dripping)
        assert 9.5 <= closed_at["idle"] <= 11 and 9.5 <= closed_at["dripping"] <= 11
        nursery.cancel_scope.cancel()


async def test_pipelined_tcp_queries_in_one_read_are_all_answered_in_order_with_their_ids() -> None:
    """Replies to the queries one read brings are written together (`TCP_BATCH`); every one is
    there, whole, with its own ID, including the SERVFAIL of a query a stage raised on."""
    async with trio.open_nursery() as nursery:
        address = await _start(nursery)
        names = ["web.prod.svc.cluster.local", "nope.prod.svc.cluster.local", BOOM] * 400  # > TCP_BATCH of replies
        wire = b""
        for query_id, name in enumerate(names):
            query = dns.message.make_query(name, "A")
            query.id = query_id
            data = query.to_wire()
            wire += struct.pack("!H", len(data)) + data
        stream = await trio.open_tcp_stream(*address)
        await stream.send_all(wire)
        received = b""
        replies: list[dns.message.Message] = []
        with trio.fail_after(10):
            while len(replies) < len(names):
                received += await stream.receive_some(65536)
                while len(received) >= 2 and len(received) >= 2 + struct.unpack("!H", received[:2])[0]:
                    length = struct.unpack("!H", received[:2])[0]
                    replies.append(dns.message.from_wire(received[2 : 2 + length]))
                    received = received[2 + length :]
        assert [reply.id for reply in replies] == list(range(len(names)))
        rcodes = [reply.rcode() for reply in replies[:3]]
        assert rcodes == [dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.SERVFAIL]
        await stream.aclose()
        nursery.cancel_scope.cancel()
