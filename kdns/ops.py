"""Health and readiness over HTTP, for the kubelet's probes (CoreDNS's `health` and `ready`).

`GET /health` answers 200 while the server runs. `GET /ready` answers 200 once every watcher has
listed the cluster once, and 503 before: a kdns that cannot yet answer for the cluster gets no
traffic from the kube-dns Service. One small request per connection; anything else gets 404 or 405.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

import trio

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 5.0  # seconds a probe may take to send its request
MAX_REQUEST = 8192


def _response(status: str, body: str) -> bytes:
    data = body.encode()
    head = f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    return head.encode() + data


async def serve_health(sock: socket.socket, is_ready: Callable[[], bool]) -> None:
    """Answer probes on a bound, listening `sock` until cancelled."""
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))

    async def probe(stream: trio.SocketStream) -> None:
        try:
            with trio.move_on_after(REQUEST_TIMEOUT):
                request = b""
                while b"\r\n\r\n" not in request and len(request) < MAX_REQUEST:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        break
                    request += chunk
                await stream.send_all(_answer(request, is_ready))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    await trio.serve_listeners(probe, [listener])


def _answer(request: bytes, is_ready: Callable[[], bool]) -> bytes:
    parts = request.split(b"\r\n", 1)[0].split()
    if len(parts) < 2:
        return _response("400 Bad Request", "bad request\n")
    method, path = parts[0], parts[1].split(b"?", 1)[0]
    if method not in (b"GET", b"HEAD"):
        return _response("405 Method Not Allowed", "GET only\n")
    reply = _route(path, is_ready)
    return reply.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" if method == b"HEAD" else reply


def _route(path: bytes, is_ready: Callable[[], bool]) -> bytes:
    if path == b"/health":
        return _response("200 OK", "OK\n")
    if path == b"/ready":
        if is_ready():
            return _response("200 OK", "OK\n")
        return _response("503 Service Unavailable", "not ready: waiting for the first list of every watcher\n")
    return _response("404 Not Found", "not found\n")
