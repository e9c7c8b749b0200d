"""Listeners that only listen (issue 9, point 3): the forwarder alone decides how many queries are
in flight, counted when each is accepted, and TCP answers pipelined queries concurrently, so a
slow forward never delays a zone answer on the same connection (RFC 7766 6.2.1.1)."""

from __future__ import annotations

import socket
import struct

import dns.message
import dns.rcode
import trio

from kdns.address import SocketAddress
from kdns.config import ForwardOptions, TcpLimits
from kdns.core.cache import ForwardCache
from kdns.core.handler import Handler, HandlerOptions
from kdns.forward import Forwarder
from kdns.serve import bind, serve
from kdns.state import State
from tests.builders import service, store_of
from tests.fakeupstream import FakeUpstream


async def _start(nursery: trio.Nursery, fake: FakeUpstream, max_concurrent: int) -> tuple[tuple[str, int], Forwarder]:
    state = State()
    cache = ForwardCache(0, trio.current_time)  # no cache: every query goes upstream
    handler = Handler(
        store_of(service("prod", "web", ["10.96.0.5"])).zone,
        HandlerOptions(recursion_available=True),
        cache,
        counters=state.queries,
    )
    options = ForwardOptions(timeout=3, max_concurrent=max_concurrent)
    forwarder = Forwarder([SocketAddress("127.0.0.1", fake.port)], {}, options, state)
    listener = bind(SocketAddress("127.0.0.1", 0))
    await nursery.start(forwarder.run)
    await nursery.start(serve, [listener], handler, TcpLimits(), forwarder, state)
    return (listener.address.host, listener.address.port), forwarder


async def test_a_burst_never_overshoots_max_concurrent(nursery: trio.Nursery) -> None:
    fake = FakeUpstream()
    fake.mode = "held"  # every forward stays in flight until released
    address, forwarder = await _start(nursery, fake, max_concurrent=10)
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for i in range(64):  # one burst: the listener reads them all before any forward starts
            query = dns.message.make_query(f"n{i}.example.com", "A")
            await sock.sendto(query.to_wire(), address)
        rcodes: list[int] = []
        with trio.fail_after(10):
            while len(rcodes) < 54:  # the refusals come at once, while ten forwards are held
                rcodes.append(dns.message.from_wire(await sock.recv(65535)).rcode())
            assert rcodes == [dns.rcode.REFUSED] * 54
            fake.release()
            while len(rcodes) < 64:
                rcodes.append(dns.message.from_wire(await sock.recv(65535)).rcode())
    assert rcodes.count(dns.rcode.REFUSED) == 54 and rcodes.count(dns.rcode.NOERROR) == 10
    assert fake.udp_queries == 10 and forwarder.in_flight == 0
    assert forwarder.state.queries.by_rcode(dns.rcode.REFUSED) == 54
    fake.close()
    nursery.cancel_scope.cancel()


def _framed(name: str, query_id: int) -> bytes:
    query = dns.message.make_query(name, "A")
    query.id = query_id
    wire = query.to_wire()
    return struct.pack("!H", len(wire)) + wire


async def test_tcp_answers_a_zone_query_while_a_forward_on_the_same_connection_waits(nursery: trio.Nursery) -> None:
    fake = FakeUpstream()
    fake.mode = "held"  # the forward stays in flight until released
    address, _ = await _start(nursery, fake, max_concurrent=10)
    stream = await trio.open_tcp_stream(*address)
    await stream.send_all(_framed("slow.example.com", 1) + _framed("web.prod.svc.cluster.local", 2))
    replies: list[dns.message.Message] = []
    buffer = b""

    async def read_until(count: int) -> None:
        nonlocal buffer
        while len(replies) < count:
            buffer += await stream.receive_some(65535)
            while len(buffer) >= 2 and len(buffer) >= 2 + struct.unpack("!H", buffer[:2])[0]:
                length = struct.unpack("!H", buffer[:2])[0]
                replies.append(dns.message.from_wire(buffer[2 : 2 + length]))
                buffer = buffer[2 + length :]

    with trio.fail_after(10):
        await read_until(1)  # the zone answer, while the forward before it is still held upstream
        assert len(replies) == 1  # the forward cannot have been answered: it is held
        fake.release()
        await read_until(2)
    assert [reply.id for reply in replies] == [2, 1]  # the zone answer first, each with its own ID
    assert replies[0].answer[0][0].address == "10.96.0.5"
    assert replies[1].answer[0][0].address == "192.0.2.1"
    await stream.aclose()
    fake.close()
    nursery.cancel_scope.cancel()
