"""The one process of `kdns serve` (without `--workers`), and a new configuration applied while
it serves: CoreDNS's `reload`, SIGHUP, or the YAML file's change (`app.Reloader` reads it).

A new configuration is built beside the one serving and swapped in at once (`Current.replace`):
no listener stops, and a query already waiting on upstream answers finishes on the pipeline that
took it. What changed decides what is built again; the rest is kept:

- the cluster source (`SOURCE_SETTINGS`, or the listen addresses `ns.dns` falls back to): a new
  store, listed (or loaded) while the old one serves, swapped in once every new watch has listed
  (within `SYNC_WITHIN`, else the reload is refused); the old watches stop after the swap;
- the upstreams and the forward cache (`forward`): a new forwarder and cache (CoreDNS's reload
  also starts its cache empty); the old forwarder stops once nothing it forwards is in flight,
  or after `RETIRE_WITHIN`;
- anything else that answers: a new pipeline (its reply cache starts empty), always, so that
  every answer after the swap is made by the new configuration;
- the listen addresses: new ones are bound before the swap (a port another process holds
  refuses the reload), the ones no longer listed are closed after it; likewise the /health,
  /ready and /metrics listeners;
- TCP limits: every connection accepted after the swap, and the caps at once.

`workers`, `node_cache` and `config_file` wait for a restart (`RESTART_SETTINGS`). A new
configuration that cannot be built raises `KdnsError` from `apply`, everything made for it is
closed, and the running configuration stays, whole.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields, replace
from typing import Any

import trio

from kdns.address import SocketAddress
from kdns.answering import LoopExit, check_upstreams, forwarding, ns_addresses, pipeline_for
from kdns.config import LIVE_SETTINGS, ServeConfig
from kdns.core.cache import ForwardCache
from kdns.endpoints import Endpoints
from kdns.errors import KdnsError
from kdns.forward import Forwarder
from kdns.metrics import StateCollector, metrics_route, wall_clock
from kdns.ops import health, readiness
from kdns.pipeline import Pipeline
from kdns.serve import BoundListener, Current, bind, serve_listener, tcp_buffers
from kdns.sources import Sources, open_sources, report_stores

log = logging.getLogger(__name__)

# What the cluster source is made from: a change re-lists (or reloads the snapshot).
SOURCE_SETTINGS = frozenset(
    {
        "snapshot",
        "kubeconfig",
        "context",
        "watch",
        "cluster_domain",
        "pod_mode",
        "ttl",
        "pod_index_bytes",
        "publish",
        "api_endpoint",
    }
)
# What only a restart changes: the processes, the mode, and the file the configuration is read from.
RESTART_SETTINGS = frozenset({"workers", "node_cache", "config_file"})
# Seconds a new cluster source may take to list everything before its reload is refused (a first
# sync's own bound, `sources.kube.HOLD_LIMIT`, is as long).
SYNC_WITHIN = 30.0
# Seconds an old forwarder is kept for the queries it still forwards: the longest a forwarded
# query lives (each upstream tried for its timeout, a few tries).
RETIRE_WITHIN = 30.0
# Seconds between looks at whether a new source has listed, or an old forwarder is idle.
LOOK_EVERY = 0.05
OPS_PATHS = ("/health", "/ready", "/metrics")


@dataclass(frozen=True, slots=True)
class Forwarding:
    """The forwarder and its cache (None, None: nothing is forwarded), running in `scope`."""

    forwarder: Forwarder | None
    cache: ForwardCache | None
    scope: trio.CancelScope


@dataclass(frozen=True, slots=True)
class Listening:
    """A bound listener and the scope serving it (None until it is served)."""

    listener: BoundListener
    scope: trio.CancelScope


def changed_settings(old: ServeConfig, new: ServeConfig) -> list[str]:
    """The names of the settings that differ, in the order `ServeConfig` declares them."""
    return [field.name for field in fields(new) if getattr(new, field.name) != getattr(old, field.name)]


class Live:
    """Serves `config` from `sources` on `listeners` (bound by the caller, one per address of
    `config.listen`, in order) until cancelled or a forwarding loop is found; `apply` replaces
    the configuration while it serves."""

    def __init__(
        self,
        config: ServeConfig,
        sources: Sources,
        listeners: list[BoundListener],
        synced: Callable[[], bool] | None = None,
        reuse_port: bool = False,
    ) -> None:
        """`synced`: whether the cluster has been listed (the state's own readiness by default;
        a worker's, from the supervisor's feed). `reuse_port`: new listen addresses are bound
        with SO_REUSEPORT (a worker, beside the others on the same ports)."""
        self._reuse_port = reuse_port
        self.config = config
        self.sources = sources
        self.state = sources.state
        self._synced = synced if synced is not None else self.state.synced
        self.loop_exit = LoopExit()
        self._bound = dict(zip(config.listen, listeners, strict=True))  # until `run` serves them
        self._listening: dict[SocketAddress, Listening] = {}  # by the configured address
        self._nursery: trio.Nursery | None = None
        self._current: Current | None = None
        self._forwarding: Forwarding | None = None
        self._pipeline_scope: trio.CancelScope | None = None
        self._follower_scope: trio.CancelScope | None = None
        self._buffers = tcp_buffers(config.tcp, self.state)
        collector = StateCollector(lambda: self.state, f"dns://{listeners[0].address}", self._zone_names, wall_clock)
        routes = {"/health": health, "/ready": readiness(self.state.ready), "/metrics": metrics_route(collector)}
        self._endpoints = Endpoints(routes, self.state.http_room_made)

    # -- what is serving -----------------------------------------------------------------------

    @property
    def addresses(self) -> tuple[SocketAddress, ...]:
        """Each listen address, with the port actually bound, in the configuration's order."""
        return tuple(self._listening[address].listener.address for address in self.config.listen)

    def http_address(self, path: str) -> SocketAddress | None:
        """Where `path` (/health, /ready, /metrics) is served, with the port bound; None: off."""
        return self._endpoints.address(path)

    def _zone_names(self) -> int:
        store = self.sources.store
        return store.zone.name_count() if store is not None else 0  # a node cache holds no zone

    # -- serving -------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> int:
        """Serve until cancelled, or until a forwarding loop is found: then the status is 2."""
        config = self.config
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self.loop_exit.scope = nursery.cancel_scope
                self._forwarding = await self._start_forwarding(config)
                self.state.report_cache(self._forwarding.cache)
                pipeline, self._pipeline_scope = await self._start_pipeline(config, self._forwarding, self.sources)
                self._current = Current(pipeline, config.tcp)
                for address, listener in self._bound.items():
                    self._listening[address] = await self._serve(listener)
                self._bound = {}
                await self._endpoints.serve_changed(nursery, config.ops, self._endpoints.bind_changed(config.ops))
                if self.sources.follower is not None:
                    self._follower_scope = await self._scoped(self.sources.follower.run)
                task_status.started()
        finally:
            self._close_all()
        return self.loop_exit.status

    async def _scoped(self, function: Callable[..., Awaitable[Any]], *args: Any) -> trio.CancelScope:
        """Start `function(*args, task_status=...)` in a scope of its own, under `run`'s nursery;
        the scope, once it has started. An error before it started is raised here."""
        assert self._nursery is not None

        async def scoped(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    await nursery.start(function, *args)
                    task_status.started(scope)

        scope: trio.CancelScope = await self._nursery.start(scoped)
        return scope

    async def _start_forwarding(self, config: ServeConfig) -> Forwarding:
        """A forwarder and cache for `config`, running (its cache reported once it serves)."""
        forwarder, cache = forwarding(config, self.state)
        if forwarder is None:
            return Forwarding(None, cache, trio.CancelScope())
        return Forwarding(forwarder, cache, await self._scoped(forwarder.run))

    async def _start_pipeline(
        self, config: ServeConfig, forwarding: Forwarding, sources: Sources
    ) -> tuple[Pipeline, trio.CancelScope]:
        store = sources.store
        zone, namespace_of = (store.zone, store.pods.namespace_of) if store is not None else (None, None)
        pipeline = pipeline_for(
            config,
            self.state,
            forwarding.forwarder,
            forwarding.cache,
            zone,
            self._synced,
            namespace_of,
            self.loop_exit,
        )
        return pipeline, await self._scoped(pipeline.run)

    async def _serve(self, listener: BoundListener) -> Listening:
        assert self._current is not None
        scope = await self._scoped(serve_listener, listener, self._current, self.state, self._buffers)
        log.info("listening on %s (udp, tcp)", listener.address)
        return Listening(listener, scope)

    def _close_all(self) -> None:
        for listener in self._bound.values():
            _close_listener(listener)
        for listening in self._listening.values():
            _close_listener(listening.listener)
        self._endpoints.close()

    # -- a new configuration -------------------------------------------------------------------

    async def apply(self, new: ServeConfig, sources: Sources | None = None) -> list[str]:
        """Serve `new` from now on; the settings that changed and wait for a restart
        (`RESTART_SETTINGS`: the caller says so). Raises `KdnsError` when `new` cannot be served;
        then nothing has changed. `sources`: the cluster source to serve `new` from, made and
        followed by the caller (a worker's, loaded from the supervisor's feed); by default the
        running one, or one listed here when `new` watches something else."""
        old = self.config
        changed = changed_settings(old, new)
        later = [name for name in changed if name in RESTART_SETTINGS]
        answering = [name for name in changed if name not in LIVE_SETTINGS and name not in RESTART_SETTINGS]
        if not answering and sources is None:
            return later
        new = _keeping(new, old)  # restart-only settings keep their running values
        made: list[Callable[[], None]] = []  # how to undo what was made for `new`, if it is refused
        try:
            listeners = self._bind_new(new, made)
            addresses = [
                (listeners[address] if address in listeners else self._listening[address].listener).address
                for address in new.listen
            ]
            check_upstreams(new, addresses)
            http = self._endpoints.bind_changed(new.ops)
            made.extend(sock.close for sock in http.values())
            follower_scope: trio.CancelScope | None = None  # a source followed elsewhere
            if sources is None:
                sources, follower_scope = await self._new_sources(new, addresses, made)
            forwarding = self._forwarding
            assert forwarding is not None
            if new.forward != old.forward:
                forwarding = await self._start_forwarding(new)
                made.append(forwarding.scope.cancel)
            pipeline, pipeline_scope = await self._start_pipeline(new, forwarding, sources)
            made.append(pipeline_scope.cancel)
        except BaseException:
            for undo in reversed(made):
                undo()
            raise
        self._swap(new, sources, follower_scope, forwarding, pipeline, pipeline_scope)
        await self._after_swap(new, listeners, http)
        return later

    def _swap(
        self,
        new: ServeConfig,
        sources: Sources,
        follower_scope: trio.CancelScope | None,
        forwarding: Forwarding,
        pipeline: Pipeline,
        pipeline_scope: trio.CancelScope,
    ) -> None:
        """The one step (no checkpoint) after which every query is answered by `new`."""
        assert self._current is not None and self._pipeline_scope is not None and self._forwarding is not None
        self._current.replace(pipeline, new.tcp)
        self._pipeline_scope.cancel()  # the old pipeline's probes and prefetch
        self._pipeline_scope = pipeline_scope
        self._buffers.resize(new.tcp.buffer_bytes)
        if sources is not self.sources:
            if sources.store is not None:
                report_stores(self.state, sources.store)
            self.state.adopt_watches(sources.state)
            if self._follower_scope is not None:
                self._follower_scope.cancel()  # the old watches
            self._follower_scope = follower_scope
            self.sources = Sources(self.state, sources.store, sources.follower)
        if forwarding is not self._forwarding:
            assert self._nursery is not None
            self._nursery.start_soon(_retire, self._forwarding)
            self._forwarding = forwarding
            self.state.report_cache(forwarding.cache)
        self.config = new

    async def _after_swap(
        self,
        new: ServeConfig,
        listeners: dict[SocketAddress, BoundListener],
        http: dict[str, socket.socket],
    ) -> None:
        for address, listener in listeners.items():
            self._listening[address] = await self._serve(listener)
        for address in [address for address in self._listening if address not in new.listen]:
            listening = self._listening.pop(address)
            listening.scope.cancel()
            _close_listener(listening.listener)
            log.info("no longer listening on %s", listening.listener.address)
        assert self._nursery is not None
        await self._endpoints.serve_changed(self._nursery, new.ops, http)

    def _bind_new(self, new: ServeConfig, made: list[Callable[[], None]]) -> dict[SocketAddress, BoundListener]:
        """Bind each listen address of `new` not yet listened on (a `KdnsError` if one cannot be)."""
        bound: dict[SocketAddress, BoundListener] = {}
        for address in new.listen:
            if address in self._listening or address in bound:
                continue
            listener = bind(address, reuse_port=self._reuse_port)
            made.append(lambda listener=listener: _close_listener(listener))  # type: ignore[misc]
            bound[address] = listener
        return bound

    async def _new_sources(
        self, new: ServeConfig, addresses: list[SocketAddress], made: list[Callable[[], None]]
    ) -> tuple[Sources, trio.CancelScope | None]:
        """The running sources if `new` watches the same, else new ones, listed (or loaded);
        with the scope its watches run in."""
        old = self.config
        fallback = ns_addresses(addresses)
        same = all(getattr(new, name) == getattr(old, name) for name in SOURCE_SETTINGS)
        if same and fallback == ns_addresses(self.addresses):
            return self.sources, self._follower_scope
        staged = self.state.staging()
        sources = await trio.to_thread.run_sync(lambda: open_sources(new, fallback, state=staged))
        if sources.follower is None:
            return sources, None
        scope = await self._scoped(sources.follower.run)
        made.append(scope.cancel)
        log.info("reload: listing the cluster for the new configuration")
        with trio.move_on_after(SYNC_WITHIN):
            while not staged.synced():
                await trio.sleep(LOOK_EVERY)
        if not staged.synced():
            raise KdnsError(f"the new configuration's watches did not all list within {SYNC_WITHIN:g} s")
        return sources, scope


def _keeping(new: ServeConfig, old: ServeConfig) -> ServeConfig:
    """`new` with the running values of what only a restart changes."""
    return replace(new, **{name: getattr(old, name) for name in RESTART_SETTINGS})


def _close_listener(listener: BoundListener) -> None:
    listener.udp.close()
    listener.tcp.close()


async def _retire(forwarding: Forwarding) -> None:
    """Stop an old forwarder once nothing it forwards is in flight, or after `RETIRE_WITHIN`."""
    forwarder = forwarding.forwarder
    if forwarder is not None:
        with trio.move_on_after(RETIRE_WITHIN):
            while forwarder.in_flight:
                await trio.sleep(LOOK_EVERY)
    forwarding.scope.cancel()
