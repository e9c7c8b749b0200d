"""`kdns serve`: one trio program that loads or follows the cluster, binds the listeners and
serves until a signal ends it."""

from __future__ import annotations

import ipaddress
import logging
import secrets
import signal
import socket
import time
from pathlib import Path

import trio

from kdns.address import SocketAddress
from kdns.config import ServeConfig
from kdns.core.cache import ForwardCache
from kdns.core.handler import Handler, HandlerOptions
from kdns.core.model import ClusterObject, IPAddress
from kdns.core.names import to_wire
from kdns.core.records import Omission
from kdns.core.store import ClusterStore, PodMode
from kdns.errors import KdnsError
from kdns.forward import Forwarder
from kdns.ops import serve_health
from kdns.serve import BoundListener, bind, bind_tcp, serve
from kdns.sources import snapshot
from kdns.sources.kube import ClusterFollower, load_api_client

log = logging.getLogger(__name__)


def build_store(
    path: Path, domain: str, ttl: int, pod_mode: PodMode, fallback_ns_addresses: tuple[IPAddress, ...] = ()
) -> tuple[snapshot.Snapshot, ClusterStore]:
    """A store filled from a snapshot file, its serial set to now, and what the file held."""
    loaded = snapshot.load(path)
    store = ClusterStore(domain, ttl, pod_mode, fallback_ns_addresses=fallback_ns_addresses, report=report_omission)
    store.load(loaded.objects, on_error=_object_failed)
    store.zone.bump_serial(int(time.time()))
    return loaded, store


def report_omission(omission: Omission) -> None:
    """Log, once, a part of an object that DNS cannot carry (the rest of it is served)."""
    log.warning("left out of DNS: %s", omission)


def _object_failed(obj: ClusterObject, error: Exception) -> None:
    """An object the store could not apply: logged; it never stops the others."""
    log.error("could not apply %s %s: %s: %s", type(obj).__name__, obj.key, type(error).__name__, error)


def ns_addresses(listeners: list[BoundListener]) -> tuple[IPAddress, ...]:
    """The addresses `ns.dns.<zone>` falls back to without a kube-dns Service: the specific
    (non-wildcard) listen addresses, which is what CoreDNS falls back to as well."""
    addresses = (ipaddress.ip_address(listener.address.host) for listener in listeners)
    return tuple(address for address in addresses if not address.is_unspecified)


def run(config: ServeConfig) -> int:
    """Serve until SIGTERM or SIGINT; the exit status."""
    api_client = None if config.snapshot is not None else load_api_client(config.kubeconfig, config.context)
    listeners = [bind(address) for address in config.listen]
    health = bind_tcp(config.health) if config.health is not None else None
    forwarder, cache = _forwarding(config, listeners)
    options = HandlerOptions(max_udp=config.max_udp, recursion_available=forwarder is not None)
    if config.snapshot is not None:
        loaded, store = build_store(
            config.snapshot, config.cluster_domain, config.ttl, config.pod_mode, ns_addresses(listeners)
        )
        snapshot.report(loaded)
        log.info("loaded %s: %s", loaded.path, ", ".join(f"{count} {what}" for what, count in store.counts().items()))
    else:
        store = ClusterStore(
            config.cluster_domain,
            config.ttl,
            config.pod_mode,
            fallback_ns_addresses=ns_addresses(listeners),
            report=report_omission,
        )
    handler = Handler(store.zone, options, cache)
    follower = None
    if api_client is not None:
        handler.synced = False

        def synced() -> None:
            handler.synced = True

        follower = ClusterFollower(store, api_client, config.watch, synced)
    return trio.run(_main, listeners, handler, config, follower, health, forwarder)


def _forwarding(config: ServeConfig, listeners: list[BoundListener]) -> tuple[Forwarder | None, ForwardCache | None]:
    """The forwarder and its cache, or (None, None) with one warning when there is no upstream."""
    forward = config.forward
    stubs = dict(forward.stubs)
    for upstream in (*forward.upstreams, *(address for addresses in stubs.values() for address in addresses)):
        for listener in listeners:
            if _is_self(upstream, listener.address.host, listener.address.port):
                raise KdnsError(
                    f"upstream {upstream} (from {forward.upstreams_from}) is kdns's own listen address "
                    f"{listener.address}: forwarding to it would loop"
                )
    if not forward.upstreams and not stubs:
        log.warning(
            "no upstream resolver (%s gives none): names outside %s and the reverse zones are answered REFUSED",
            forward.upstreams_from,
            config.cluster_domain,
        )
        return None, None
    log.info("forwarding to %s", ", ".join(str(u) for u in forward.upstreams) or "stub domains only")
    cache = ForwardCache(forward.cache_size, time.monotonic, stale_for=forward.serve_stale, prefetch=forward.prefetch)
    return Forwarder(forward.upstreams, stubs, forward.options), cache


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


async def _main(
    listeners: list[BoundListener],
    handler: Handler,
    config: ServeConfig,
    follower: ClusterFollower | None,
    health: socket.socket | None,
    forwarder: Forwarder | None,
) -> int:
    status = 0
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            def loop_detected(upstream: str) -> None:
                nonlocal status
                log.error(
                    "forwarding loop: the probe sent to upstream %s came back to kdns, so that upstream "
                    "forwards to kdns (often the node's resolv.conf naming the cluster DNS). Exiting.",
                    upstream,
                )
                status = 2
                nursery.cancel_scope.cancel()

            if forwarder is not None:
                await nursery.start(forwarder.run)
            await nursery.start(serve, listeners, handler, config.tcp, forwarder)
            if forwarder is not None:
                handler.loop_detected = loop_detected
                for upstream in forwarder.upstreams:
                    name = f"{secrets.token_hex(8)}.{secrets.token_hex(8)}.kdns-loop-probe"
                    handler.loop_probes[to_wire(name)] = str(upstream.address)
                    nursery.start_soon(forwarder.probe, upstream, name)
            for listener in listeners:
                log.info("listening on %s (udp, tcp)", listener.address)
            if health is not None:
                nursery.start_soon(serve_health, health, lambda: handler.synced)
                host, port = health.getsockname()[:2]
                log.info(
                    "health on http://%s/health and /ready", f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                )
            if follower is not None:
                await nursery.start(follower.run)
            async for signum in signals:
                log.info("received %s: shutting down", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
    for listener in listeners:
        listener.udp.close()
        listener.tcp.close()
    return status
