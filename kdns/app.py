"""`kdns serve`: one trio program that loads or follows the cluster, binds the listeners and
serves. `run` is the program as a task (tests start it in-process with `nursery.start`); `main`
runs it until a signal ends it."""

from __future__ import annotations

import logging
import random
import signal
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import trio

from kdns import logs
from kdns.address import SocketAddress
from kdns.answering import Answerer, check_upstreams, ns_addresses
from kdns.config import LIVE_SETTINGS, ServeConfig, quoted
from kdns.core.store import ClusterStore
from kdns.errors import KdnsError
from kdns.metrics import StateCollector, metrics_route, wall_clock
from kdns.ops import health, readiness, serve_http
from kdns.serve import bind, bind_tcp
from kdns.settings import fingerprint
from kdns.sources import open_sources
from kdns.state import State
from kdns.workers import WorkerPool

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Running:
    """What a started kdns gives the one who started it: where it listens, and its state."""

    addresses: tuple[SocketAddress, ...]  # each listen address, with the port actually bound
    health: SocketAddress | None  # where /health is served, with the port actually bound
    ready: SocketAddress | None
    metrics: SocketAddress | None
    state: State
    store: ClusterStore | None  # None for a node cache


async def run(
    config: ServeConfig,
    *,
    pool: WorkerPool | None = None,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
) -> int:
    """Serve `config` until cancelled, or until a forwarding loop is found (then the exit status
    is 2). Everything runs in one nursery; `task_status` gets a `Running` once every socket is
    bound and the listeners are serving. Setup errors (`KdnsError`) are raised before that.

    With a started `pool` (`--workers`), its workers answer and this process follows the cluster
    for them and serves /health, /ready and /metrics for the instance."""
    if pool is None:
        listeners = [bind(address) for address in config.listen]
        addresses = tuple(listener.address for listener in listeners)
    else:
        listeners, addresses = [], pool.addresses
    http = [
        (bind_tcp(address), path)
        for address, path in (
            (config.ops.health, "/health"),
            (config.ops.ready, "/ready"),
            (config.ops.metrics, "/metrics"),
        )
        if address is not None
    ]
    status = 0
    try:
        if pool is None:
            check_upstreams(config, addresses)  # before the cluster is loaded
            sources = open_sources(config, ns_addresses(addresses))
            answerer = Answerer(config, listeners, sources.state)
        else:
            sources = pool.sources
        state, store = sources.state, sources.store
        async with trio.open_nursery() as nursery:

            async def serving(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                nonlocal status
                if pool is None:
                    zone, pods = (store.zone, store.pods.namespace_of) if store is not None else (None, None)
                    status = await answerer.run(zone, state.synced, pods, task_status=task_status)
                else:
                    status = await pool.run(task_status=task_status)
                nursery.cancel_scope.cancel()  # it ended by itself (a forwarding loop)

            await nursery.start(serving)
            view: Callable[[], State] = (lambda: state) if pool is None else pool.view
            bound: dict[str, SocketAddress] = {}
            names = store.zone.name_count if store is not None else _no_names
            collector = StateCollector(view, f"dns://{addresses[0]}", names, wall_clock)
            routes = {"/health": health, "/ready": readiness(state.ready), "/metrics": metrics_route(collector)}
            for sock, path in http:
                await nursery.start(serve_http, sock, {path: routes[path]}, config.ops.limits, state.http_room_made)
                host, port = sock.getsockname()[:2]
                bound[path] = SocketAddress(host, port)
                log.info("%s on http://%s%s", path[1:], bound[path], path)
            if sources.follower is not None:
                await nursery.start(sources.follower.run)
            task_status.started(
                Running(addresses, bound.get("/health"), bound.get("/ready"), bound.get("/metrics"), state, store)
            )
    finally:
        for listener in listeners:
            listener.udp.close()
            listener.tcp.close()
        for sock, _ in http:
            sock.close()
    return status


def _no_names() -> int:
    return 0  # a node cache holds no zone


Fingerprint = Callable[[str, int], str | None]  # a configuration file's digest (at most so many bytes read)


def main(
    config: ServeConfig, reload: Callable[[], ServeConfig] | None = None, fingerprint: Fingerprint = fingerprint
) -> int:
    """`kdns serve`: run until SIGTERM or SIGINT; the exit status. A setup error is raised as the
    `KdnsError` it is, for the command line to print. With `reload`, SIGHUP (and a change of
    `config.config_file`'s `fingerprint`) reads the configuration again."""
    pool = WorkerPool.start(config) if config.workers > 1 else None
    try:
        return trio.run(_until_signalled, config, reload, pool, fingerprint)
    except BaseExceptionGroup as group:
        errors, rest = group.split(KdnsError)
        if errors is not None and rest is None:
            raise _leaf(errors) from None
        raise
    finally:
        if pool is not None:
            pool.close()


async def _until_signalled(
    config: ServeConfig,
    reload: Callable[[], ServeConfig] | None = None,
    pool: WorkerPool | None = None,
    fingerprint: Fingerprint = fingerprint,
) -> int:
    """Run until SIGINT, or SIGTERM and then `config.lameduck` seconds of answering while /ready
    says 503 (CoreDNS's `health { lameduck }`: the Service stops sending queries before kdns
    stops answering them). A second signal during lameduck stops at once."""
    status = 0
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:

            async def serving(task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED) -> None:
                nonlocal status
                status = await run(config, pool=pool, task_status=task_status)
                nursery.cancel_scope.cancel()  # it ended by itself (a forwarding loop)

            running: Running = await nursery.start(serving)
            reloader = Reloader(config, reload, running.state, fingerprint)
            if reload is not None and config.config_file is not None:
                nursery.start_soon(reloader.watch_file, config.config_file)
            async for signum in signals:
                name = signal.Signals(signum).name
                if signum == signal.SIGHUP:
                    log.info("received SIGHUP: reloading the configuration")
                    nursery.start_soon(reloader.reload)  # off this loop: a signal during it still counts
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
    once (`config.LIVE_SETTINGS`), and every other change is logged as waiting for a restart.

    The file is read, parsed and validated on a worker thread (a 1 MiB file takes a while to
    parse, and DNS is answered meanwhile), one reload at a time. Whatever goes wrong in it, a
    reload is refused, never an exit: a `KdnsError` names the file and the key; anything else
    (a parser's own failure, memory) is logged with its kind."""

    def __init__(
        self,
        config: ServeConfig,
        load: Callable[[], ServeConfig] | None,
        state: State,
        fingerprint: Fingerprint = fingerprint,
    ) -> None:
        self.current = config
        self.load = load
        self.state = state
        self.fingerprint = fingerprint
        self._one_at_a_time = trio.Lock()

    async def reload(self) -> None:
        async with self._one_at_a_time:
            await self._reload()

    async def _reload(self) -> None:
        if self.load is None:
            log.warning("reload: kdns was not started from the command line; nothing to read")
            return
        try:
            new = await trio.to_thread.run_sync(self.load)
        except KdnsError as error:
            self._refused(str(error))
            return
        except Exception as error:  # any fault of reading a new configuration refuses it
            self._refused(f"{type(error).__name__} reading the configuration: {quoted(str(error))}")
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

    def _refused(self, why: str) -> None:
        self.state.reload_failures += 1
        log.error("reload refused, the running configuration stays: %s", why)

    async def watch_file(self, path: str) -> None:
        """Reload when the file's fingerprint changes (polled every `config_poll` seconds, give
        or take half of `config_poll_jitter`: a ConfigMap update swaps a symlink, and a Corefile's
        fingerprint covers the files it imports); read on a worker thread, at most
        `--config-max-bytes` of each file."""
        limit = self.current.config_max_bytes
        seen = await trio.to_thread.run_sync(self.fingerprint, path, limit)
        while True:
            jitter = self.current.config_poll_jitter
            # CoreDNS's reload: the interval, plus or minus half the jitter
            await trio.sleep(self.current.config_poll + random.uniform(-jitter / 2, jitter / 2))
            now = await trio.to_thread.run_sync(self.fingerprint, path, limit)
            if now != seen:
                seen = now
                log.info("%s changed: reloading the configuration", path)
                await self.reload()


async def _stop_after(scope: trio.CancelScope, seconds: float) -> None:
    await trio.sleep(seconds)
    log.info("lameduck over: shutting down")
    scope.cancel()


def _leaf(group: BaseExceptionGroup[KdnsError]) -> KdnsError:
    error = group.exceptions[0]
    return _leaf(error) if isinstance(error, BaseExceptionGroup) else error
