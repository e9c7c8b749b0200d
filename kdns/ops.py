"""The operations endpoints over HTTP, as CoreDNS serves them: `/health` (its `health` plugin),
`/ready` (`ready`), each on a listener of its own, served by h11 inside the trio program.

`GET /health` answers 200 while the server runs. `GET /ready` answers 200 once every watcher has
listed the cluster once, and 503 before: a kdns that cannot yet answer for the cluster gets no
traffic from the kube-dns Service.

Every listener is bounded so that holding it open cannot starve DNS or the other probes: at most
`max_connections` connections and `max_per_address` from one address (a new one past either
closes the connection idle longest: `kdns.connections`, so no client can keep a probe out),
request headers of at most `max_header_bytes` (else 431), a request must arrive within
`read_timeout` and its response be taken within `write_timeout`. Connections are kept alive
between requests (as Prometheus does), each new request again within `read_timeout`.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import h11
import trio

from kdns.config import HttpLimits
from kdns.connections import ConnectionTable

log = logging.getLogger(__name__)

READ_CHUNK = 4096
LINGER = 1.0  # seconds to drain a refused request before closing


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


Route = Callable[[], Response]


def health() -> Response:
    return Response(200, b"OK\n")


def readiness(is_ready: Callable[[], bool]) -> Route:
    def ready() -> Response:
        if is_ready():
            return Response(200, b"OK\n")
        return Response(503, b"not ready: waiting for the first list of every watcher\n")

    return ready


async def serve_http(
    sock: socket.socket,
    routes: Mapping[str, Route],
    limits: HttpLimits,
    on_room: Callable[[], None] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer HTTP requests on a bound, listening `sock` until cancelled; `on_room` is told of
    each connection closed to admit another."""
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    table = ConnectionTable(limits.max_connections, limits.max_per_address, on_room)

    async def connection(stream: trio.SocketStream) -> None:
        try:
            address = str(stream.socket.getpeername()[0])
        except OSError:
            address = ""  # gone already: served (and closed) as any other
        with trio.CancelScope() as scope:
            slot = table.admit(address, scope)
            try:
                await _serve_connection(stream, routes, limits, lambda: table.active(slot))
            except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass  # the client went away
            finally:
                table.release(slot)
        await trio.aclose_forcefully(stream)

    task_status.started()
    await trio.serve_listeners(connection, [listener])


async def _serve_connection(
    stream: trio.SocketStream, routes: Mapping[str, Route], limits: HttpLimits, active: Callable[[], None]
) -> None:
    """Requests and their responses until the client closes, idles past `read_timeout` or asks
    something we refuse; `active` is told of each request answered."""
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
    while True:
        request = None
        with trio.move_on_after(limits.read_timeout):
            request = await _next_request(stream, connection, limits.max_header_bytes)
        if request is None:
            return  # closed, timed out, or not HTTP we accept (answered already where we could)
        response = _route(request, routes)
        with trio.move_on_after(limits.write_timeout) as writing:
            await _send(stream, connection, request, response)
        if writing.cancelled_caught or connection.our_state is not h11.DONE:
            return
        active()
        try:
            connection.start_next_cycle()
        except h11.LocalProtocolError:
            return  # the client asked to close, or did not finish its request


def _head_size(request: h11.Request) -> int:
    """The bytes of a request's line and headers as sent (h11 checks only an incomplete head
    against its limit: one that arrives whole in a read is taken at any size)."""
    line = len(request.method) + len(request.target) + len(b" HTTP/1.1\r\n") + 1
    return line + sum(len(name) + len(value) + 4 for name, value in request.headers) + 2


async def _next_request(
    stream: trio.SocketStream, connection: h11.Connection, max_header_bytes: int
) -> h11.Request | None:
    """The next complete request (its body, if any, read and dropped); None when there is none,
    or when its head is over `max_header_bytes` (answered 431)."""
    request: h11.Request | None = None
    while True:
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError as error:
            await _refuse(stream, connection, error.error_status_hint)
            return None
        if event is h11.NEED_DATA:
            data = await stream.receive_some(READ_CHUNK)
            connection.receive_data(data)  # b"" marks the end of the stream
            continue
        if isinstance(event, h11.Request):
            if _head_size(event) > max_header_bytes:
                await _refuse(stream, connection, 431)  # RFC 6585 5: Request Header Fields Too Large
                return None
            request = event
        elif isinstance(event, h11.EndOfMessage):
            return request
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


def _route(request: h11.Request, routes: Mapping[str, Route]) -> Response:
    method = request.method.decode("ascii", "replace")
    path = request.target.decode("ascii", "replace").split("?", 1)[0]
    route = routes.get(path)
    if route is None:
        return Response(404, b"not found\n")
    if method not in ("GET", "HEAD"):
        return Response(405, b"GET only\n")
    return route()


async def _send(
    stream: trio.SocketStream, connection: h11.Connection, request: h11.Request, response: Response
) -> None:
    await stream.send_all(_encode(connection, response, body=request.method != b"HEAD"))


def _encode(connection: h11.Connection, response: Response, body: bool = True, close: bool = False) -> bytes:
    """A whole response as bytes for the wire, with its length (and `Connection: close`)."""
    headers = [("Content-Type", response.content_type), ("Content-Length", str(len(response.body)))]
    if close:
        headers.append(("Connection", "close"))
    data = connection.send(h11.Response(status_code=response.status, headers=headers)) or b""
    if body:
        data += connection.send(h11.Data(data=response.body)) or b""
    return data + (connection.send(h11.EndOfMessage()) or b"")


async def _refuse(stream: trio.SocketStream, connection: h11.Connection, status: int) -> None:
    """Answer a request we cannot read (too large, malformed) with its status, if we still may."""
    if connection.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    try:
        data = _encode(connection, Response(status, f"{status}\n".encode()), close=True)
    except h11.LocalProtocolError:
        return
    await stream.send_all(data)
    # A lingering close: stop sending, then read and drop what the client still sends for a
    # moment, so that closing with unread bytes does not reset the connection before the client
    # has read the answer.
    await stream.send_eof()
    with trio.move_on_after(LINGER):
        while await stream.receive_some(READ_CHUNK):
            pass
