"""One process answering queries from a zone: the forwarder and its cache, the handler and the
UDP and TCP listeners, and what ends them (a forwarding loop). `kdns serve` runs it in its one
process, or in each worker process with `--workers`."""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Sequence

import trio

from kdns.address import SocketAddress
from kdns.config import ServeConfig
from kdns.core.autopath import Autopath
from kdns.core.cache import ForwardCache
from kdns.core.handler import Handler, HandlerOptions, LoopProbes
from kdns.core.model import IPAddress
from kdns.core.names import to_wire
from kdns.core.zone import Zone
from kdns.errors import KdnsError
from kdns.forward import Forwarder
from kdns.logs import QueryLog
from kdns.serve import BoundListener, serve
from kdns.state import State

log = logging.getLogger(__name__)


class Answerer:
    """Answers on `listeners` from a zone and upstream. Its upstreams are checked by whoever bound
    the listeners (`check_upstreams`), once, before the cluster is loaded."""

    def __init__(self, config: ServeConfig, listeners: list[BoundListener], state: State) -> None:
        self.config = config
        self.listeners = listeners
        self.state = state
        self.loop_exit = LoopExit()
        self.forwarder, self.cache = forwarding(config, state, LoopProbes(self.loop_exit))
        state.cache = self.cache
        if self.cache is not None:
            state.add_stores(self.cache.stores)

    async def run(
        self,
        zone: Zone | None,
        synced: Callable[[], bool],
        namespace_of: Callable[[str], str | None] | None = None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> int:
        """Answer until cancelled, or until a forwarding loop is found: then the status is 2.
        `synced` says whether the cluster has been listed (before that, a name missing from the
        zone is not known to be missing); not readiness, which turns False in lameduck.
        `namespace_of` gives the namespace of the Pod at a client address (`--autopath`)."""
        config, forwarder = self.config, self.forwarder
        autopath = None
        if config.autopath and namespace_of is not None:
            search = tuple(to_wire(domain) for domain in config.search)
            autopath = Autopath(to_wire(config.cluster_domain), search, namespace_of)
        async with trio.open_nursery() as nursery:
            self.loop_exit.scope = nursery.cancel_scope
            handler = Handler(
                zone,
                HandlerOptions(
                    max_udp=config.max_udp,
                    recursion_available=forwarder is not None,
                    reply_cache_bytes=config.reply_cache_bytes,
                ),
                self.cache,
                counters=self.state.queries,
                ready=synced,
                loop_probes=forwarder.loop_probes if forwarder is not None else None,
                autopath=autopath,
            )
            kept = handler.kept
            self.state.add_stores(lambda: {"reply_cache_udp": kept[0].figures(), "reply_cache_tcp": kept[1].figures()})
            if forwarder is not None:
                await nursery.start(forwarder.run)
            query_log = QueryLog() if config.log_queries else None
            await nursery.start(serve, self.listeners, handler, config.tcp, forwarder, self.state, query_log)
            for listener in self.listeners:
                log.info("listening on %s (udp, tcp)", listener.address)
            task_status.started()
        return self.loop_exit.status


def ns_addresses(addresses: Sequence[SocketAddress]) -> tuple[IPAddress, ...]:
    """The addresses `ns.dns.<zone>` falls back to without a kube-dns Service: the specific
    (non-wildcard) listen addresses, which is what CoreDNS falls back to as well."""
    ips = (ipaddress.ip_address(address.host) for address in addresses)
    return tuple(ip for ip in ips if not ip.is_unspecified)


def forwarding(config: ServeConfig, state: State, probes: LoopProbes) -> tuple[Forwarder | None, ForwardCache | None]:
    """The forwarder and its cache, or (None, None) with one warning when there is no upstream."""
    forward = config.forward
    stubs = dict(forward.stubs)
    if not forward.upstreams and not stubs:
        log.warning(
            "no upstream resolver (%s gives none): names outside %s and the reverse zones are answered REFUSED",
            forward.upstreams_from,
            config.cluster_domain,
        )
        return None, None
    log.info("forwarding to %s", ", ".join(str(u) for u in forward.upstreams) or "stub domains only")
    # The cache reads trio's clock: the one every timeout of the program uses (and tests can mock).
    cache = ForwardCache(
        forward.cache_size,
        trio.current_time,
        stale_for=forward.serve_stale,
        prefetch=forward.prefetch,
        denial_size=forward.denial_cache_size,
        max_bytes=forward.cache_bytes,
        denial_max_bytes=forward.denial_cache_bytes,
    )
    forwarder = Forwarder(forward.upstreams, stubs, forward.options, state, cache, probes, forward.tcp_upstreams)
    return forwarder, cache


def check_upstreams(config: ServeConfig, addresses: Sequence[SocketAddress]) -> None:
    """Refuse an upstream that is one of kdns's own listen `addresses` (`KdnsError`)."""
    forward = config.forward
    stubs = (address for _, addresses in forward.stubs for address in addresses)
    for upstream in (*forward.upstreams, *stubs):
        for address in addresses:
            if _is_self(upstream, address.host, address.port):
                raise KdnsError(
                    f"upstream {upstream} (from {forward.upstreams_from}) is kdns's own listen address "
                    f"{address}: forwarding to it would loop"
                )


def _is_self(upstream: SocketAddress, host: str, port: int) -> bool:
    """Whether `upstream` is this kdns: the same port, and the same address or, for a wildcard
    listener, an address of this machine."""
    if upstream.port != port:
        return False
    if upstream.host == host:
        return True
    if not ipaddress.ip_address(host).is_unspecified:
        return False
    try:
        with socket.socket(upstream.family, socket.SOCK_DGRAM) as probe:
            probe.bind((upstream.host, 0))  # binds only to an address this machine has
    except OSError:
        return False
    return True


class LoopExit:
    """What a forwarding loop does (CoreDNS's `loop`): log it and end kdns with status 2."""

    def __init__(self) -> None:
        self.status = 0
        self.scope: trio.CancelScope | None = None

    def __call__(self, upstream: str) -> None:
        log.error(
            "forwarding loop: the probe sent to upstream %s came back to kdns, so that upstream "
            "forwards to kdns (often the node's resolv.conf naming the cluster DNS). Exiting.",
            upstream,
        )
        self.status = 2
        if self.scope is not None:
            self.scope.cancel()
