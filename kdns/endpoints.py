"""The operations endpoints of an instance (`/health`, `/ready`, `/metrics`), each on a listener of
its own, moved while the instance serves: a reload's new addresses are bound before anything
changes (`bind_changed`: a port another process holds refuses the reload), then served, and the
old ones closed (`serve_changed`). `kdns.live` runs them for one process, `app` for the
supervisor of `--workers`."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import trio

from kdns.address import SocketAddress
from kdns.config import OpsListeners
from kdns.ops import Route, serve_http
from kdns.serve import bind_tcp

log = logging.getLogger(__name__)

PATHS = ("/health", "/ready", "/metrics")


def addresses_of(ops: OpsListeners) -> dict[str, SocketAddress | None]:
    """Where each endpoint is to listen (None: off)."""
    return {"/health": ops.health, "/ready": ops.ready, "/metrics": ops.metrics}


@dataclass(frozen=True, slots=True)
class Serving:
    sock: socket.socket
    address: SocketAddress  # with the port actually bound
    scope: trio.CancelScope


class Endpoints:
    """The endpoints served now, by path; `routes` answers each path, `on_room` is told of each
    connection closed to admit another."""

    def __init__(self, routes: Mapping[str, Route], on_room: Callable[[], None]) -> None:
        self._routes = routes
        self._on_room = on_room
        self._serving: dict[str, Serving] = {}
        self._ops = OpsListeners()  # what is served now

    def address(self, path: str) -> SocketAddress | None:
        """Where `path` is served, with the port bound; None: off."""
        serving = self._serving.get(path)
        return serving.address if serving is not None else None

    def bind_changed(self, ops: OpsListeners) -> dict[str, socket.socket]:
        """Bind each address of `ops` that is not served now (a `KdnsError` if one cannot be
        bound: the ones bound before it are closed)."""
        bound: dict[str, socket.socket] = {}
        running = addresses_of(self._ops)
        try:
            for path, address in addresses_of(ops).items():
                if address is not None and (address != running[path] or path not in self._serving):
                    bound[path] = bind_tcp(address)
        except BaseException:
            for sock in bound.values():
                sock.close()
            raise
        return bound

    async def serve_changed(self, nursery: trio.Nursery, ops: OpsListeners, bound: dict[str, socket.socket]) -> None:
        """Serve `ops` from now on, on the sockets `bind_changed` bound for it: the new ones
        served, the ones dropped closed, the others served again if the limits changed."""
        old = self._ops
        self._ops = ops
        for path, address in addresses_of(ops).items():
            if path in bound:
                self._stop(path)
                self._serving[path] = await self._serve(nursery, path, bound[path], ops)
            elif address is None and path in self._serving:
                self._stop(path)
                log.info("%s is off", path[1:])
            elif path in self._serving and ops.limits != old.limits:
                serving = self._serving.pop(path)
                serving.scope.cancel()  # served again, with the new limits, on the same socket
                self._serving[path] = await self._serve(nursery, path, serving.sock, ops)

    async def _serve(self, nursery: trio.Nursery, path: str, sock: socket.socket, ops: OpsListeners) -> Serving:
        scope = trio.CancelScope()
        routes = {path: self._routes[path]}

        async def serving(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await serve_http(sock, routes, ops.limits, self._on_room, task_status=task_status)

        await nursery.start(serving)
        host, port = sock.getsockname()[:2]
        address = SocketAddress(host, port)
        log.info("%s on http://%s%s", path[1:], address, path)
        return Serving(sock, address, scope)

    def _stop(self, path: str) -> None:
        serving = self._serving.pop(path, None)
        if serving is not None:
            serving.scope.cancel()
            serving.sock.close()

    def close(self) -> None:
        for path in list(self._serving):
            self._stop(path)
