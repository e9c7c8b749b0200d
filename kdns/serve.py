"""The UDP and TCP listeners (trio). They own the sockets and the limits; answers come from a
`Handler`, and no exception raised while answering ever reaches the loop.

UDP is built for throughput: the task waits until the socket is readable, then drains it with
non-blocking stdlib `recvfrom`/`sendto` in bounded bursts. Awaiting trio's socket methods per
packet costs a scheduler pass and an `epoll_wait` per call (and an address resolution per
`sendto`), about three times the CPU per query on these machines.
"""

from __future__ import annotations

import errno
import logging
import socket
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from time import perf_counter

import trio

from kdns.address import SocketAddress
from kdns.config import TcpLimits
from kdns.connections import BufferBudget, ConnectionTable, Slot
from kdns.core.counters import LATENCY_BUCKETS, RequestDurations
from kdns.core.handler import ClientAddress, Forward, Handler
from kdns.core.message import frame, framed_length
from kdns.errors import KdnsError
from kdns.forward import Admission, Forwarder
from kdns.logs import QueryLog
from kdns.state import State

log = logging.getLogger(__name__)

UDP_BURST = 64  # packets handled per wake-up before yielding to the other tasks
TCP_BATCH = 65536  # bytes of replies gathered on a connection before they are written
UDP_RECEIVE_BUFFER = 4 * 1024 * 1024  # absorbs bursts while the loop is busy
MAX_DATAGRAM = 65535
# Not exported by Python's socket module; the value is Linux's (asm-generic/socket.h).
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
BIND_ATTEMPTS = 20  # for port 0: UDP and TCP must end up on the same free port


@dataclass
class BoundListener:
    address: SocketAddress  # with the port actually bound
    udp: socket.socket
    tcp: socket.socket


def bind(address: SocketAddress, reuse_port: bool = False) -> BoundListener:
    """Bind the UDP and TCP sockets of one listen address (the same port for both). With
    `reuse_port`, more sockets may be bound to the same port (`--workers`: each worker has its
    own, and the kernel spreads clients over them, SO_REUSEPORT)."""
    last_error: OSError | None = None
    for _ in range(BIND_ATTEMPTS if address.port == 0 else 1):
        udp = _socket(address.family, socket.SOCK_DGRAM, reuse_port)
        tcp = _socket(address.family, socket.SOCK_STREAM, reuse_port)
        try:
            udp.bind((address.host, address.port))
            port = udp.getsockname()[1]
            tcp.bind((address.host, port))
            tcp.listen(socket.SOMAXCONN)
        except OSError as error:
            udp.close()
            tcp.close()
            last_error = error
            if error.errno == errno.EADDRINUSE and address.port == 0:
                continue
            break
        _grow_receive_buffer(udp)
        return BoundListener(SocketAddress(address.host, port), udp, tcp)
    raise KdnsError(f"cannot listen on {address}: {last_error}")


def bind_tcp(address: SocketAddress) -> socket.socket:
    """A listening TCP socket (for the health endpoint)."""
    sock = _socket(address.family, socket.SOCK_STREAM)
    try:
        sock.bind((address.host, address.port))
        sock.listen(socket.SOMAXCONN)
    except OSError as error:
        sock.close()
        raise KdnsError(f"cannot listen on {address}: {error}") from None
    return sock


def _socket(family: socket.AddressFamily, kind: socket.SocketKind, reuse_port: bool = False) -> socket.socket:
    sock = socket.socket(family, kind)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # so 0.0.0.0 and :: coexist
    if kind == socket.SOCK_STREAM:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setblocking(False)
    return sock


def _grow_receive_buffer(sock: socket.socket) -> None:
    """Ask for `UDP_RECEIVE_BUFFER`: with SO_RCVBUFFORCE when we may (root or CAP_NET_ADMIN),
    else SO_RCVBUF, which the kernel caps at net.core.rmem_max."""
    for option in (SO_RCVBUFFORCE, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, UDP_RECEIVE_BUFFER)
            break
        except OSError:
            continue
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if granted < UDP_RECEIVE_BUFFER:
        log.warning(
            "UDP receive buffer is %d bytes, less than the %d asked for (raise net.core.rmem_max)",
            granted,
            UDP_RECEIVE_BUFFER,
        )


async def serve_udp(
    sock: socket.socket,
    handler: Handler,
    forwarder: Forwarder | None = None,
    state: State | None = None,
    query_log: QueryLog | None = None,
) -> None:
    """Answer datagrams on `sock` until cancelled; queries to forward go on in their own tasks."""
    # One buffer for every datagram: receiving into it and copying out what arrived costs less
    # than half of what `recvfrom(65535)` does, which allocates 64 KiB per packet.
    buffer = bytearray(MAX_DATAGRAM)
    view = memoryview(buffer)
    recvfrom_into = sock.recvfrom_into
    sendto = sock.sendto
    handle = handler.handle
    state = state if state is not None else State()
    durations = state.durations
    by_type = durations.by_type if durations is not None else {}
    counters = handler.counters
    timed = durations is not None or query_log is not None
    async with trio.open_nursery() as nursery:
        while True:
            await trio.lowlevel.wait_readable(sock)
            # Timing costs one clock read a query: a query's time runs from the end of the one
            # before it in the burst (or the wake-up) to its reply sent, its receive included.
            now = perf_counter() if timed else 0.0
            for _ in range(UDP_BURST):
                try:
                    size, peer = recvfrom_into(buffer)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as error:  # e.g. ECONNREFUSED left by an ICMP error for an earlier reply
                    log.debug("udp receive error: %s", error)
                    state.udp_receive_errors += 1
                    continue
                packet = bytes(view[:size])
                started = now
                try:
                    reply = handle(packet, False, peer)
                except Exception:
                    state.panics += 1
                    log.exception("error answering a UDP query from %s", peer[0])
                    reply = handler.failure_reply(packet, False, peer)
                if reply.__class__ is not bytes:
                    if reply is None:
                        continue
                    assert isinstance(reply, Forward)
                    admission = forwarder.admit(peer[0]) if forwarder is not None else None
                    if admission is not None:
                        assert forwarder is not None
                        nursery.start_soon(
                            _forward_udp,
                            sock,
                            peer,
                            packet,
                            reply,
                            handler,
                            forwarder,
                            admission,
                            query_log,
                            durations,
                            started,
                        )
                        now = perf_counter() if timed else 0.0
                        continue
                    reply = handler.refuse(reply)  # CoreDNS's max_concurrent: REFUSED at once
                try:
                    sendto(reply, peer)
                except OSError as error:  # a full send buffer or an unreachable peer: drop it
                    log.debug("udp send to %s failed: %s", peer[0], error)
                if timed:
                    now = perf_counter()
                    took = now - started
                    if durations is not None:
                        # `RequestDurations.observe`, inlined: this runs for every query.
                        histogram = by_type.get(counters.last_qtype)
                        if histogram is None:
                            histogram = durations.histogram(counters.last_qtype)
                        histogram.counts[bisect_left(LATENCY_BUCKETS, took)] += 1
                        histogram.total += took
                    if query_log is not None:
                        query_log.record(peer, packet, reply, False, took)
            else:
                await trio.lowlevel.checkpoint()  # a full burst: let TCP and the rest run


async def _forward_udp(
    sock: socket.socket,
    peer: tuple[str, int],
    packet: bytes,
    forward: Forward,
    handler: Handler,
    forwarder: Forwarder,
    admission: Admission,
    query_log: QueryLog | None,
    durations: RequestDurations | None,
    started: float,
) -> None:
    reply = await forwarder.reply(forward, handler, admission)
    try:
        sock.sendto(reply, peer)
    except OSError as error:
        log.debug("udp send to %s failed: %s", peer[0], error)
    _finished(forward, peer, packet, reply, False, started, durations, query_log)


def _finished(
    forward: Forward,
    peer: ClientAddress,
    packet: bytes,
    reply: bytes,
    tcp: bool,
    started: float,
    durations: RequestDurations | None,
    query_log: QueryLog | None,
) -> None:
    """File a forwarded query's duration, from its arrival to its reply sent, and log it."""
    if durations is None and query_log is None:
        return
    took = perf_counter() - started
    if durations is not None:
        durations.observe((forward.chased_from or forward.query).qtype, took)
    if query_log is not None:
        query_log.record(peer, packet, reply, tcp, took)


async def serve_tcp(
    sock: socket.socket,
    handler: Handler,
    limits: TcpLimits,
    forwarder: Forwarder | None = None,
    state: State | None = None,
    query_log: QueryLog | None = None,
    buffers: BufferBudget | None = None,
) -> None:
    """Accept TCP connections on `sock` until cancelled (RFC 7766). Past `limits.max_connections`
    the connection idle longest is closed for the new one (RFC 7766 6.2.3: a server may close
    idle connections when it needs the resources): idle clients cannot keep others out. Every
    connection of the process holds its buffers within `buffers`."""
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    counts = state if state is not None else State()  # open connections: this listener's and others'
    budget = buffers if buffers is not None else BufferBudget(limits.buffer_bytes, counts.tcp_buffer_overflowed)
    # No cap per address: a node's clients may all come from its address (a node-local cache
    # opens a connection per query it forwards over TCP).
    table = ConnectionTable(limits.max_connections, on_room=counts.tcp_room_made)

    async def connection(stream: trio.SocketStream) -> None:
        try:
            client = stream.socket.getpeername()
        except OSError:
            await trio.aclose_forcefully(stream)
            return  # gone before it was served
        counts.tcp_connections += 1
        with trio.CancelScope() as scope:
            slot = table.admit(str(client[0]), scope)
            try:
                await _serve_connection(
                    stream, client, handler, limits, forwarder, counts, query_log, slot, budget, table
                )
            except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass  # the client went away
            finally:
                table.release(slot)
                budget.release(slot)
                counts.tcp_connections -= 1
        await trio.aclose_forcefully(stream)

    await trio.serve_listeners(connection, [listener])


async def _serve_connection(
    stream: trio.SocketStream,
    client: ClientAddress,
    handler: Handler,
    limits: TcpLimits,
    forwarder: Forwarder | None,
    state: State,
    query_log: QueryLog | None,
    slot: Slot,
    budget: BufferBudget,
    table: ConnectionTable,
) -> None:
    """Answer length-prefixed queries until the client closes the connection, goes
    `limits.idle_timeout` without completing a query (a client that drips bytes does not keep a
    connection open), or does not take a reply within `limits.write_timeout`.

    Queries are answered concurrently (RFC 7766 6.2.1.1): a zone answer is written at once, a
    forwarded one when upstream answers, each with its own ID, so a slow upstream never holds
    the answers behind it. Replies are written whole, one at a time. What the connection holds
    (its partial query, the replies being written) is held within `budget`: past it, the
    connection holding the most, maybe this one, is closed.
    """
    buffer = bytearray()
    writing = trio.Lock()

    def holding(extra: int = 0, progressed: bool = False) -> None:
        budget.hold(slot, len(buffer) + extra, progressed)

    async def write(framed: bytes) -> None:
        """Write length-prefixed replies, whole; close the connection if the client does not
        take them within the write timeout."""
        async with writing:
            with trio.move_on_after(limits.write_timeout) as timer:
                await stream.send_all(framed)
        if timer.cancelled_caught:
            pending.cancel_scope.cancel()  # the client does not read what it asked for: close

    durations = state.durations
    counters = handler.counters

    async def forwarded(
        forward: Forward, forwarder: Forwarder, admission: Admission, packet: bytes, started: float
    ) -> None:
        reply = await forwarder.reply(forward, handler, admission)
        await write(frame(reply))
        table.active(slot)
        _finished(forward, client, packet, reply, True, started, durations, query_log)

    # Zone and cache answers to the queries a read brought are written together, in one send
    # (up to `TCP_BATCH` bytes): a client that pipelines gets them at the cost of one write
    # rather than one each.
    batch = bytearray()
    answered: list[tuple[int, bytes, bytes, float]] = []  # type, query, reply, when it arrived

    async def flush() -> None:
        if not batch:
            return
        data = bytes(batch)
        batch.clear()
        holding(len(data), progressed=True)  # until it is written; the queries it answers are done
        await write(data)
        holding(progressed=True)
        table.active(slot)
        now = perf_counter()
        for qtype, packet, reply, started in answered:
            if durations is not None:
                durations.observe(qtype, now - started)
            if query_log is not None:
                query_log.record(client, packet, reply, True, now - started)
        answered.clear()

    async with trio.open_nursery() as pending:
        deadline = trio.current_time() + limits.idle_timeout
        while True:
            completed = False
            while (length := framed_length(buffer)) is not None and len(buffer) >= 2 + length:
                packet = bytes(buffer[2 : 2 + length])
                del buffer[: 2 + length]
                completed = True
                started = perf_counter()
                try:
                    reply = handler.handle(packet, True, client)
                except Exception:
                    state.panics += 1
                    log.exception("error answering a TCP query")
                    reply = handler.failure_reply(packet, True, client)
                if reply is None:
                    await flush()  # what was answered before it is still sent
                    pending.cancel_scope.cancel()  # nothing sensible to say on this stream: close it
                    return
                if isinstance(reply, Forward):
                    admission = forwarder.admit(str(client[0])) if forwarder is not None else None
                    if admission is not None:
                        assert forwarder is not None
                        pending.start_soon(forwarded, reply, forwarder, admission, packet, started)
                        continue
                    reply = handler.refuse(reply)
                # The type counted by `handle`, `refuse` or `failure_reply` just now.
                answered.append((counters.last_qtype, packet, reply, started))
                batch += frame(reply)
                if len(batch) >= TCP_BATCH:
                    await flush()
            await flush()
            if completed:  # only a whole query resets the idle timeout, never a dripped byte
                deadline = trio.current_time() + limits.idle_timeout
            with trio.CancelScope(deadline=deadline):
                data = await stream.receive_some(MAX_DATAGRAM)
                if not data:
                    return  # the client is done sending: its pending answers are still written
                buffer += data
                holding()
                continue
            return  # idle for too long (answers in flight are still written)


async def serve(
    listeners: Sequence[BoundListener],
    handler: Handler,
    limits: TcpLimits,
    forwarder: Forwarder | None = None,
    state: State | None = None,
    query_log: QueryLog | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve UDP and TCP on every bound listener until cancelled; with `query_log`, one log line
    per answered query."""
    state = state if state is not None else State()
    buffers = BufferBudget(limits.buffer_bytes, state.tcp_buffer_overflowed)  # every TCP connection's
    state.add_stores(lambda: {"tcp_buffers": buffers.figures()})
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(serve_udp, listener.udp, handler, forwarder, state, query_log)
            nursery.start_soon(serve_tcp, listener.tcp, handler, limits, forwarder, state, query_log, buffers)
        task_status.started()
