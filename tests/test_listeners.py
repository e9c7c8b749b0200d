"""Listeners that only listen (issue 9, point 3): the pipeline and its transport alone decide how
many queries are in flight, counted when each is accepted, and TCP answers pipelined queries
concurrently, so a slow forward never delays a zone answer on the same connection (RFC 7766
6.2.1.1)."""

from __future__ import annotations

import socket
import struct

import dns.message
import dns.rcode
import trio

from kdns.address import SocketAddress
from kdns.config import ForwardOptions, TcpLimits
from kdns.core.cache import ForwardCache
from kdns.core.stage import ReplyOptions
from kdns.forward import Forwarder
from kdns.serve import Current, bind, serve
from kdns.state import State
from tests.builders import pipeline_of, service, store_of
from tests.fakeupstream import FakeUpstream


async def _start(nursery: trio.Nursery, fake: FakeUpstream, max_concurrent: int) -> tuple[tuple[str, int], Forwarder]:
    state = State()
    cache = ForwardCache(0, trio.current_time)  # no cache: every query goes upstream
    options = ForwardOptions(timeout=3, max_concurrent=max_concurrent)
    forwarder = Forwarder([[SocketAddress("127.0.0.1", fake.port)]], options, state)
    pipeline = pipeline_of(
        store_of(service("prod", "web", ["10.96.0.5"])),
        options=ReplyOptions(recursion_available=True),
        cache=cache,
        state=state,
        transport=forwarder,
    )
    listener = bind(SocketAddress("127.0.0.1", 0))
    await nursery.start(forwarder.run)
    await nursery.start(serve, [listener], Current(pipeline, TcpLimits()), state)
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


async def test_one_client_flooding_never_answered_names_leaves_anothers_new_names_answered(
    nursery: trio.Nursery,
) -> None:
    """Issue 17, fairness: at --max-concurrent 100 one address flooding names that are never
    answered took every place in flight, and every other client's new names were REFUSED (0 of
    40 answered). The places are now shared max-min fairly: the client over its share is refused,
    and a newcomer takes a place back from the one holding the most (its oldest query REFUSED)."""
    fake = FakeUpstream()
    fake.mode = "script"  # names of the flood are never answered; others at once
    fake.script = lambda query, wire: [] if query.question[0].name.to_text().startswith("flood") else [(wire, 0.0)]
    address, forwarder = await _start(nursery, fake, max_concurrent=100)
    with (
        trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flooder,
        trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other,
    ):
        await flooder.bind(("127.0.0.2", 0))
        await other.bind(("127.0.0.3", 0))
        for i in range(300):
            await flooder.sendto(dns.message.make_query(f"flood{i}.example.com", "A").to_wire(), address)
        with trio.fail_after(10):
            refused = 0
            while refused < 200:  # over its share from the 101st on: refused at once
                refused += dns.message.from_wire(await flooder.recv(65535)).rcode() == dns.rcode.REFUSED
        assert forwarder.in_flight == 100
        answered = 0
        for i in range(40):
            await other.sendto(dns.message.make_query(f"new{i}.example.com", "A").to_wire(), address)
            with trio.fail_after(5):
                reply = dns.message.from_wire(await other.recv(65535))
            answered += reply.rcode() == dns.rcode.NOERROR and bool(reply.answer)
            # The flood goes on: it takes the place back as soon as the newcomer's query is done.
            for j in range(5):
                await flooder.sendto(dns.message.make_query(f"flood{i}-{j}.example.com", "A").to_wire(), address)
            with trio.fail_after(5):
                for _ in range(5):  # its oldest, preempted, and 4 of 5 over its share
                    assert dns.message.from_wire(await flooder.recv(65535)).rcode() == dns.rcode.REFUSED
        assert answered == 40
        state = forwarder.state
        assert state.forward_refused == {"over_share": 200 + 40 * 4, "preempted": 40}
        assert state.queries.by_rcode(dns.rcode.REFUSED) == 400 and forwarder.in_flight == 100
    fake.close()
    nursery.cancel_scope.cancel()
