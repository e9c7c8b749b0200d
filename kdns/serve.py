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
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from kdns.address import SocketAddress
from kdns.core.handler import Forward, Handler
from kdns.core.message import frame, framed_length
from kdns.errors import KdnsError
from kdns.forward import Forwarder, refresh

log = logging.getLogger(__name__)

UDP_BURST = 64  # packets handled per wake-up before yielding to the other tasks
UDP_RECEIVE_BUFFER = 4 * 1024 * 1024  # absorbs bursts while the loop is busy
MAX_DATAGRAM = 65535
# Not exported by Python's socket module; the value is Linux's (asm-generic/socket.h).
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
BIND_ATTEMPTS = 20  # for port 0: UDP and TCP must end up on the same free port


@dataclass(frozen=True, slots=True)
class TcpLimits:
    idle_timeout: float = 10.0  # seconds a connection may sit without a complete query
    max_connections: int = 1000  # beyond it, new connections are closed at once
    # Seconds a reply may take to be written: a client that stops reading cannot hold its
    # connection (RFC 7766 6.2.3 and 10); miekg/dns, and so CoreDNS, use 2 s.
    write_timeout: float = 2.0


@dataclass
class BoundListener:
    address: SocketAddress  # with the port actually bound
    udp: socket.socket
    tcp: socket.socket


def bind(address: SocketAddress) -> BoundListener:
    """Bind the UDP and TCP sockets of one listen address (the same port for both)."""
    last_error: OSError | None = None
    for _ in range(BIND_ATTEMPTS if address.port == 0 else 1):
        udp = _socket(address.family, socket.SOCK_DGRAM)
        tcp = _socket(address.family, socket.SOCK_STREAM)
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


def _socket(family: socket.AddressFamily, kind: socket.SocketKind) -> socket.socket:
    sock = socket.socket(family, kind)
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


async def serve_udp(sock: socket.socket, handler: Handler, forwarder: Forwarder | None = None) -> None:
    """Answer datagrams on `sock` until cancelled; queries to forward go on in their own tasks."""
    # One buffer for every datagram: receiving into it and copying out what arrived costs less
    # than half of what `recvfrom(65535)` does, which allocates 64 KiB per packet.
    buffer = bytearray(MAX_DATAGRAM)
    view = memoryview(buffer)
    recvfrom_into = sock.recvfrom_into
    sendto = sock.sendto
    handle = handler.handle
    prefetch_due = handler.cache.prefetch_due if handler.cache is not None and forwarder is not None else None
    async with trio.open_nursery() as nursery:
        while True:
            await trio.lowlevel.wait_readable(sock)
            for _ in range(UDP_BURST):
                try:
                    size, peer = recvfrom_into(buffer)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as error:  # e.g. ECONNREFUSED left by an ICMP error for an earlier reply
                    log.debug("udp receive error: %s", error)
                    continue
                packet = bytes(view[:size])
                try:
                    reply = handle(packet, False)
                except Exception:
                    log.exception("error answering a UDP query from %s", peer[0])
                    reply = handler.failure_reply(packet)
                if reply.__class__ is not bytes:
                    if reply is None:
                        continue
                    assert isinstance(reply, Forward)
                    if forwarder is not None and forwarder.in_flight < forwarder.options.max_concurrent:
                        nursery.start_soon(_forward_udp, sock, peer, reply, handler, forwarder)
                        continue
                    reply = handler.refuse(reply)  # CoreDNS's max_concurrent: REFUSED at once
                try:
                    sendto(reply, peer)
                except OSError as error:  # a full send buffer or an unreachable peer: drop it
                    log.debug("udp send to %s failed: %s", peer[0], error)
                if prefetch_due:
                    _start_refreshes(nursery, handler, forwarder)
            else:
                await trio.lowlevel.checkpoint()  # a full burst: let TCP and the rest run


def _start_refreshes(nursery: trio.Nursery, handler: Handler, forwarder: Forwarder | None) -> None:
    """Refresh, in the background, the cached answers the cache found close to expiry."""
    cache = handler.cache
    if cache is None or forwarder is None:
        return
    for key in cache.prefetch_due:
        nursery.start_soon(refresh, forwarder, cache, key)
    cache.prefetch_due.clear()


async def _forward_udp(
    sock: socket.socket, peer: tuple[str, int], forward: Forward, handler: Handler, forwarder: Forwarder
) -> None:
    reply = await _forwarded_reply(forward, handler, forwarder)
    try:
        sock.sendto(reply, peer)
    except OSError as error:
        log.debug("udp send to %s failed: %s", peer[0], error)


async def _forwarded_reply(forward: Forward, handler: Handler, forwarder: Forwarder) -> bytes:
    try:
        return handler.finish_forward(forward, await forwarder.forward(forward.query, forward.tcp))
    except Exception:
        log.exception("error forwarding a query")
        return handler.finish_forward(forward, None)


async def serve_tcp(
    sock: socket.socket, handler: Handler, limits: TcpLimits, forwarder: Forwarder | None = None
) -> None:
    """Accept TCP connections on `sock` until cancelled (RFC 7766)."""
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    open_connections = 0

    async def connection(stream: trio.SocketStream) -> None:
        nonlocal open_connections
        if open_connections >= limits.max_connections:
            await stream.aclose()
            return
        open_connections += 1
        try:
            await _serve_connection(stream, handler, limits, forwarder, refreshes)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the client went away
        finally:
            open_connections -= 1
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as refreshes:  # prefetches started by TCP queries
        await trio.serve_listeners(connection, [listener])


async def _serve_connection(
    stream: trio.SocketStream, handler: Handler, limits: TcpLimits, forwarder: Forwarder | None, nursery: trio.Nursery
) -> None:
    """Answer length-prefixed queries in the order they arrive, until the client closes the
    connection or goes `limits.idle_timeout` without completing a query (a client that drips
    bytes does not keep a connection open)."""
    buffer = bytearray()
    deadline = trio.current_time() + limits.idle_timeout
    while True:
        while (length := framed_length(buffer)) is not None:
            if len(buffer) < 2 + length:
                break
            packet = bytes(buffer[2 : 2 + length])
            del buffer[: 2 + length]
            try:
                reply = handler.handle(packet, True)
            except Exception:
                log.exception("error answering a TCP query")
                reply = handler.failure_reply(packet)
            if reply is None:
                return  # nothing sensible to say on this stream: close it
            if handler.cache is not None and handler.cache.prefetch_due:
                _start_refreshes(nursery, handler, forwarder)
            if isinstance(reply, Forward):
                if forwarder is not None and forwarder.in_flight < forwarder.options.max_concurrent:
                    reply = await _forwarded_reply(reply, handler, forwarder)
                else:
                    reply = handler.refuse(reply)
            with trio.move_on_after(limits.write_timeout) as writing:
                await stream.send_all(frame(reply))
            if writing.cancelled_caught:
                return  # the client does not read what it asked for: close the connection
            deadline = trio.current_time() + limits.idle_timeout
        with trio.CancelScope(deadline=deadline):
            data = await stream.receive_some(MAX_DATAGRAM)
            if not data:
                return
            buffer += data
            continue
        return  # idle for too long


async def serve(
    listeners: Sequence[BoundListener],
    handler: Handler,
    limits: TcpLimits,
    forwarder: Forwarder | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve UDP and TCP on every bound listener until cancelled."""
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(serve_udp, listener.udp, handler, forwarder)
            nursery.start_soon(serve_tcp, listener.tcp, handler, limits, forwarder)
        task_status.started()
