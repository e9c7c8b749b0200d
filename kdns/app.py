"""`kdns serve`: one trio program that loads or follows the cluster, binds the listeners and
serves. `run` is the program as a task (tests start it in-process with `nursery.start`); `main`
runs it until a signal ends it."""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path

import trio

from kdns import logs
from kdns.address import SocketAddress
from kdns.config import LIVE_SETTINGS, ServeConfig
from kdns.core.cache import ForwardCache
from kdns.core.convert import key_of
from kdns.core.handler import Handler, HandlerOptions, LoopProbes
from kdns.core.model import ClusterObject, IPAddress
from kdns.core.records import Omission
from kdns.core.store import ClusterStore, PodMode
from kdns.errors import KdnsError
from kdns.forward import Forwarder
from kdns.logs import QueryLog
from kdns.metrics import StateCollector, metrics_route, wall_clock
from kdns.ops import health, readiness, serve_http
from kdns.serve import BoundListener, bind, bind_tcp, serve
from kdns.settings import fingerprint
from kdns.sources import snapshot
from kdns.state import State

log = logging.getLogger(__name__)

CONFIG_POLL = 2.0  # seconds between looks at the configuration file (CoreDNS's `reload`: 30 s)


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
    log.error("could not apply %s %s: %s: %s", type(obj).__name__, key_of(obj), type(error).__name__, error)


def ns_addresses(listeners: list[BoundListener]) -> tuple[IPAddress, ...]:
    """The addresses `ns.dns.<zone>` falls back to without a kube-dns Service: the specific
    (non-wildcard) listen addresses, which is what CoreDNS falls back to as well."""
    addresses = (ipaddress.ip_address(listener.address.host) for listener in listeners)
    return tuple(address for address in addresses if not address.is_unspecified)


def _forwarding(
    config: ServeConfig, listeners: list[BoundListener], state: State, probes: LoopProbes
) -> tuple[Forwarder | None, ForwardCache | None]:
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
    # The cache reads trio's clock: the one every timeout of the program uses (and tests can mock).
    cache = ForwardCache(
        forward.cache_size, trio.current_time, stale_for=forward.serve_stale, prefetch=forward.prefetch
    )
    return Forwarder(forward.upstreams, stubs, forward.options, state, cache, probes), cache


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


@dataclass(frozen=True, slots=True)
class Running:
    """What a started kdns gives the one who started it: where it listens, and its state."""

    addresses: tuple[SocketAddress, ...]  # each listen address, with the port actually bound
    health: SocketAddress | None  # where /health is served, with the port actually bound
    ready: SocketAddress | None
    metrics: SocketAddress | None
    state: State
    store: ClusterStore


async def run(config: ServeConfig, *, task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED) -> int:
    """Serve `config` until cancelled, or until a forwarding loop is found (then the exit status
    is 2). Everything runs in one nursery; `task_status` gets a `Running` once every socket is
    bound and the listeners are serving. Setup errors (`KdnsError`) are raised before that."""
    # Queries are timed only when someone can read the figures: the metrics endpoint is on.
    state = State(time_requests=config.ops.metrics is not None)
    api_client = None
    if config.snapshot is None:
        # Only a live source needs the kubernetes client: importing it costs about 45 MB and a
        # second at start, which a snapshot (or a node cache) does without.
        from kdns.sources.kube import load_api_client

        api_client = load_api_client(config.kubeconfig, config.context)
    listeners = [bind(address) for address in config.listen]
    http = [
        (bind_tcp(address), path)
        for address, path in (
            (config.ops.health, "/health"),
            (config.ops.ready, "/ready"),
            (config.ops.metrics, "/metrics"),
        )
        if address is not None
    ]
    loop_exit = _LoopExit()
    try:
        forwarder, cache = _forwarding(config, listeners, state, LoopProbes(loop_exit))
        state.cache = cache
        if config.snapshot is not None:
            loaded, store = build_store(
                config.snapshot, config.cluster_domain, config.ttl, config.pod_mode, ns_addresses(listeners)
            )
            snapshot.report(loaded)
            counts = ", ".join(f"{count} {what}" for what, count in store.counts().items())
            log.info("loaded %s: %s", loaded.path, counts)
        else:
            store = ClusterStore(
                config.cluster_domain,
                config.ttl,
                config.pod_mode,
                fallback_ns_addresses=ns_addresses(listeners),
                report=report_omission,
            )
        follower = None
        if api_client is not None:
            from kdns.sources.kube import ClusterFollower

            follower = ClusterFollower(store, api_client, config.watch, state)
        async with trio.open_nursery() as nursery:
            loop_exit.scope = nursery.cancel_scope
            handler = Handler(
                store.zone,
                HandlerOptions(max_udp=config.max_udp, recursion_available=forwarder is not None),
                cache,
                counters=state.queries,
                ready=state.synced,  # not `ready`: that turns False in lameduck
                loop_probes=forwarder.loop_probes if forwarder is not None else None,
            )
            if forwarder is not None:
                await nursery.start(forwarder.run)
            query_log = QueryLog() if config.log_queries else None
            await nursery.start(serve, listeners, handler, config.tcp, forwarder, state, query_log)
            for listener in listeners:
                log.info("listening on %s (udp, tcp)", listener.address)
            bound: dict[str, SocketAddress] = {}
            collector = StateCollector(state, f"dns://{listeners[0].address}", store.zone.name_count, wall_clock)
            routes = {"/health": health, "/ready": readiness(state.ready), "/metrics": metrics_route(collector)}
            for sock, path in http:
                await nursery.start(serve_http, sock, {path: routes[path]}, config.ops.limits)
                host, port = sock.getsockname()[:2]
                bound[path] = SocketAddress(host, port)
                log.info("%s on http://%s%s", path[1:], bound[path], path)
            if follower is not None:
                await nursery.start(follower.run)
            addresses = tuple(listener.address for listener in listeners)
            task_status.started(
                Running(addresses, bound.get("/health"), bound.get("/ready"), bound.get("/metrics"), state, store)
            )
    finally:
        for listener in listeners:
            listener.udp.close()
            listener.tcp.close()
        for sock, _ in http:
            sock.close()
    return loop_exit.status


class _LoopExit:
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


def main(config: ServeConfig, reload: Callable[[], ServeConfig] | None = None) -> int:
    """`kdns serve`: run until SIGTERM or SIGINT; the exit status. A setup error is raised as the
    `KdnsError` it is, for the command line to print. With `reload`, SIGHUP (and a change of
    `config.config_file`) reads the configuration again."""
    try:
        return trio.run(_until_signalled, config, reload)
    except BaseExceptionGroup as group:
        errors, rest = group.split(KdnsError)
        if errors is not None and rest is None:
            raise _leaf(errors) from None
        raise


async def _until_signalled(config: ServeConfig, reload: Callable[[], ServeConfig] | None = None) -> int:
    """Run until SIGINT, or SIGTERM and then `config.lameduck` seconds of answering while /ready
    says 503 (CoreDNS's `health { lameduck }`: the Service stops sending queries before kdns
    stops answering them). A second signal during lameduck stops at once."""
    status = 0
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:

            async def serving(task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED) -> None:
                nonlocal status
                status = await run(config, task_status=task_status)
                nursery.cancel_scope.cancel()  # it ended by itself (a forwarding loop)

            running: Running = await nursery.start(serving)
            reloader = Reloader(config, reload, running.state)
            if reload is not None and config.config_file is not None:
                nursery.start_soon(reloader.watch_file, config.config_file)
            async for signum in signals:
                name = signal.Signals(signum).name
                if signum == signal.SIGHUP:
                    log.info("received SIGHUP: reloading the configuration")
                    reloader.reload()
                    continue
                if signum == signal.SIGTERM and config.lameduck > 0 and not running.state.draining:
                    running.state.draining = True
                    log.info("received %s: lameduck for %g s (still answering, /ready 503)", name, config.lameduck)
                    nursery.start_soon(_stop_after, nursery.cancel_scope, config.lameduck)
                    continue
                log.info("received %s: shutting down", name)
                nursery.cancel_scope.cancel()
                break
    return status


class Reloader:
    """Reads the configuration again (SIGHUP, or its file changed): a bad one is refused with an
    error and counted, and the old one keeps serving; a good one is applied where it can be at
    once (`config.LIVE_SETTINGS`), and every other change is logged as waiting for a restart."""

    def __init__(self, config: ServeConfig, load: Callable[[], ServeConfig] | None, state: State) -> None:
        self.current = config
        self.load = load
        self.state = state

    def reload(self) -> None:
        if self.load is None:
            log.warning("reload: kdns was not started from the command line; nothing to read")
            return
        try:
            new = self.load()
        except KdnsError as error:
            self.state.reload_failures += 1
            log.error("reload refused, the running configuration stays: %s", error)
            return
        changed = [field.name for field in fields(new) if getattr(new, field.name) != getattr(self.current, field.name)]
        if not changed:
            log.info("reload: the configuration is unchanged")
            return
        live = [name for name in changed if name in LIVE_SETTINGS]
        later = [name for name in changed if name not in LIVE_SETTINGS]
        if live:
            logs.configure(new.log_level, new.log_format)
        self.current = replace(self.current, **{name: getattr(new, name) for name in live})
        self.state.reloads += 1
        log.info("reload applied: %s", ", ".join(live) if live else "nothing that applies live")
        if later:
            log.warning("reload: %s changed; applied at the next restart", ", ".join(later))

    async def watch_file(self, path: str) -> None:
        """Reload when the file's content changes (polled: a ConfigMap update swaps a symlink)."""
        seen = fingerprint(path)
        while True:
            await trio.sleep(CONFIG_POLL)
            now = fingerprint(path)
            if now != seen:
                seen = now
                log.info("%s changed: reloading the configuration", path)
                self.reload()


async def _stop_after(scope: trio.CancelScope, seconds: float) -> None:
    await trio.sleep(seconds)
    log.info("lameduck over: shutting down")
    scope.cancel()


def _leaf(group: BaseExceptionGroup[KdnsError]) -> KdnsError:
    error = group.exceptions[0]
    return _leaf(error) if isinstance(error, BaseExceptionGroup) else error
