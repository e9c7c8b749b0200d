"""The UDP and TCP listeners (trio). They only move bytes: they own the sockets, the framing and
the limits; every answer comes from the pipeline (`kdns.pipeline`), which owns the query's life
and lets no exception raised while answering reach the loop.

UDP is built for throughput: the task waits until the socket is readable, then drains it with
non-blocking stdlib `recvfrom`/`sendto` in bounded bursts. Awaiting trio's socket methods per
packet costs a scheduler pass and an `epoll_wait` per call (and an address resolution per
`sendto`), about three times the CPU per query on these machines.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from kdns.address import LOCAL_ADDRESS, SocketAddress
from kdns.config import TcpLimits
from kdns.connections import BufferBudget, ConnectionTable, Slot
from kdns.core.message import frame, framed_length
from kdns.core.stage import ClientAddress
from kdns.errors import KdnsError
from kdns.pipeline import Pending, Pipeline
from kdns.state import State

log = logging.getLogger(__name__)

UDP_BURST = 64  # packets handled per wake-up before yielding to the other tasks
TCP_BATCH = 65536  # bytes of replies gathered on a connection before they are written
UDP_RECEIVE_BUFFER = 4 * 1024 * 1024  # absorbs bursts while the loop is busy
MAX_DATAGRAM = 65535
# Not exported by Python's socket module; the value is Linux's (asm-generic/socket.h).
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
BIND_ATTEMPTS = 20  # for port 0: UDP and TCP must end up on the same free port


class Current:
    """What the listeners answer with now: the pipeline and the TCP limits of the configuration
    in force. A reload replaces them (`kdns.live`) and every listener takes the new ones at once:
    UDP at its next wake-up, TCP at its next query (the limits at its next connection); a query
    already waiting on upstream answers finishes on the pipeline that took it."""

    __slots__ = ("pipeline", "tcp")

    def __init__(self, pipeline: Pipeline, tcp: TcpLimits) -> None:
        self.pipeline = pipeline
        self.tcp = tcp

    def replace(self, pipeline: Pipeline, tcp: TcpLimits) -> None:
        self.pipeline = pipeline
        self.tcp = tcp


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
    """A listening TCP socket (for the health endpoint). On `::` it takes IPv4 connections too
    (one socket for both families, as Go listens on `:8080`): an operations endpoint has no
    `0.0.0.0` twin beside it, and the kubelet probes whichever family the Pod's address is."""
    sock = _socket(address.family, socket.SOCK_STREAM)
    if address.host == "::":
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
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


async def serve_udp(sock: socket.socket, current: Current, state: State | None = None) -> None:
    """Answer datagrams on `sock` until cancelled, with the pipeline `current` has at each
    wake-up; a reply that waits on upstream answers is sent from a task of its own."""
    # One buffer for every datagram: receiving into it and copying out what arrived costs less
    # than half of what `recvfrom(65535)` does, which allocates 64 KiB per packet.
    buffer = bytearray(MAX_DATAGRAM)
    view = memoryview(buffer)
    recvfrom_into = sock.recvfrom_into
    sendto = sock.sendto
    pipeline = current.pipeline
    answer = pipeline.answer
    state = state if state is not None else State()
    LOCAL_ADDRESS.set(str(sock.getsockname()[0]))  # this task's, and its replies' tasks'
    async with trio.open_nursery() as nursery:
        while True:
            await trio.lowlevel.wait_readable(sock)
            if current.pipeline is not pipeline:  # a reload: its pipeline from this burst on
                pipeline = current.pipeline
                answer = pipeline.answer
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
                reply = answer(packet, False, peer)
                if reply.__class__ is not bytes:
                    if isinstance(reply, Pending):
                        nursery.start_soon(_send_when_answered, sock, peer, reply)
                    continue
                try:
                    sendto(reply, peer)
                except OSError as error:  # a full send buffer or an unreachable peer: drop it
                    log.debug("udp send to %s failed: %s", peer[0], error)
            else:
                await trio.lowlevel.checkpoint()  # a full burst: let TCP and the rest run


async def _send_when_answered(sock: socket.socket, peer: tuple[str, int], pending: Pending) -> None:
    reply = await pending()
    try:
        sock.sendto(reply, peer)
    except OSError as error:
        log.debug("udp send to %s failed: %s", peer[0], error)


async def serve_tcp(
    sock: socket.socket,
    current: Current,
    state: State | None = None,
    buffers: BufferBudget | None = None,
) -> None:
    """Accept TCP connections on `sock` until cancelled (RFC 7766), with the limits `current`
    has when each is accepted. Past `max_connections` the connection idle longest is closed for
    the new one (RFC 7766 6.2.3: a server may close idle connections when it needs the
    resources): idle clients cannot keep others out. Every connection of the process holds its
    buffers within `buffers`."""
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    counts = state if state is not None else State()  # open connections: this listener's and others'
    budget = buffers if buffers is not None else BufferBudget(current.tcp.buffer_bytes, counts.tcp_buffer_overflowed)
    # No cap per address: a node's clients may all come from its address (a node-local cache
    # opens a connection per query it forwards over TCP).
    table = ConnectionTable(current.tcp.max_connections, on_room=counts.tcp_room_made)

    async def connection(stream: trio.SocketStream) -> None:
        try:
            client = stream.socket.getpeername()
            LOCAL_ADDRESS.set(str(stream.socket.getsockname()[0]))  # this connection's task's
        except OSError:
            await trio.aclose_forcefully(stream)
            return  # gone before it was served
        counts.tcp_connections += 1
        limits = current.tcp
        table.resize(limits.max_connections)
        budget.resize(limits.buffer_bytes)
        with trio.CancelScope() as scope:
            slot = table.admit(str(client[0]), scope)
            try:
                await _serve_connection(stream, client, current, limits, slot, budget, table)
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
    current: Current,
    limits: TcpLimits,
    slot: Slot,
    budget: BufferBudget,
    table: ConnectionTable,
) -> None:
    """Answer length-prefixed queries until the client closes the connection, goes
    `limits.idle_timeout` without completing a query (a client that drips bytes does not keep a
    connection open), or does not take a reply within `limits.write_timeout`.

    Queries are answered concurrently (RFC 7766 6.2.1.1): a zone answer is written at once, one
    that waits on upstream answers when they come, each with its own ID, so a slow upstream never
    holds the answers behind it. Replies are written whole, one at a time. What the connection
    holds (its partial query, the replies being written) is held within `budget`: past it, the
    connection stalled longest, maybe this one, is closed.
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

    async def when_answered(waiting: Pending) -> None:
        await write(frame(await waiting()))
        table.active(slot)

    # Replies to the queries a read brought are written together, in one send (up to
    # `TCP_BATCH` bytes): a client that pipelines gets them at the cost of one write rather than
    # one each.
    batch = bytearray()

    async def flush() -> None:
        if not batch:
            return
        data = bytes(batch)
        batch.clear()
        holding(len(data), progressed=True)  # until it is written; the queries it answers are done
        await write(data)
        holding(progressed=True)
        table.active(slot)

    async with trio.open_nursery() as pending:
        deadline = trio.current_time() + limits.idle_timeout
        while True:
            completed = False
            while (length := framed_length(buffer)) is not None and len(buffer) >= 2 + length:
                packet = bytes(buffer[2 : 2 + length])
                del buffer[: 2 + length]
                completed = True
                reply = current.pipeline.answer(packet, True, client)
                if reply is None:
                    await flush()  # what was answered before it is still sent
                    pending.cancel_scope.cancel()  # nothing sensible to say on this stream: close it
                    return
                if isinstance(reply, Pending):
                    pending.start_soon(when_answered, reply)
                    continue
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


def tcp_buffers(limits: TcpLimits, state: State) -> BufferBudget:
    """The budget every TCP connection of the process shares, reported with the state's stores."""
    buffers = BufferBudget(limits.buffer_bytes, state.tcp_buffer_overflowed)
    state.add_stores("tcp_buffers", lambda: {"tcp_buffers": buffers.figures()})
    return buffers


async def serve_listener(
    listener: BoundListener,
    current: Current,
    state: State,
    buffers: BufferBudget,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve UDP and TCP on `listener` until cancelled, answering with what `current` has."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_udp, listener.udp, current, state)
        nursery.start_soon(serve_tcp, listener.tcp, current, state, buffers)
        task_status.started()


async def serve(
    listeners: Sequence[BoundListener],
    current: Current,
    state: State | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve UDP and TCP on every bound listener until cancelled, answering with `current`."""
    state = state if state is not None else State()
    buffers = tcp_buffers(current.tcp, state)
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            await nursery.start(serve_listener, listener, current, state, buffers)
        task_status.started()
