"""`kdns serve`: one trio program that loads or follows the cluster, binds the listeners and
serves. `run` is the program as a task (tests start it in-process with `nursery.start`); `main`
runs it until a signal ends it."""

from __future__ import annotations

import logging
import random
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import trio

from kdns import logs
from kdns.address import SocketAddress
from kdns.answering import check_upstreams, ns_addresses
from kdns.config import LIVE_SETTINGS, ServeConfig, quoted
from kdns.endpoints import PATHS, Endpoints
from kdns.errors import KdnsError
from kdns.live import Live, changed_settings
from kdns.metrics import StateCollector, metrics_route, wall_clock
from kdns.ops import health, readiness
from kdns.serve import BoundListener, bind
from kdns.settings import fingerprint
from kdns.sources import open_sources
from kdns.state import State
from kdns.workers import WorkerPool

log = logging.getLogger(__name__)


# `Live.apply`, `WorkerPool.apply`: serve a new configuration; the settings left for a restart.
Apply = Callable[[ServeConfig], Awaitable[list[str]]]


@dataclass(frozen=True, slots=True)
class Running:
    """What a started kdns gives the one who started it: where it listens (at the start), its
    state, and how to serve a new configuration (None with `--workers`: only the settings of
    `config.LIVE_SETTINGS` apply there before a restart)."""

    addresses: tuple[SocketAddress, ...]  # each listen address, with the port actually bound
    health: SocketAddress | None  # where /health is served, with the port actually bound
    ready: SocketAddress | None
    metrics: SocketAddress | None
    state: State
    apply: Apply | None = None


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
    if pool is not None:
        return await _run_pool(config, pool, task_status)
    listeners: list[BoundListener] = []
    try:
        for address in config.listen:
            listeners.append(bind(address))
        addresses = tuple(listener.address for listener in listeners)
        check_upstreams(config, addresses)  # before the cluster is loaded
        sources = open_sources(config, ns_addresses(addresses))
    except BaseException:
        for listener in listeners:
            listener.udp.close()
            listener.tcp.close()
        raise
    live = Live(config, sources, listeners)
    ended = _Ended()
    async with trio.open_nursery() as nursery:
        await nursery.start(ended.serving, live.run, nursery.cancel_scope)
        health_at, ready_at, metrics_at = (live.http_address(path) for path in PATHS)
        task_status.started(Running(live.addresses, health_at, ready_at, metrics_at, sources.state, live.apply))
    return ended.status


class _Ended:
    """The exit status of what serves (2 after a forwarding loop), and the scope it ends."""

    def __init__(self) -> None:
        self.status = 0

    async def serving(
        self,
        run: Callable[..., Awaitable[int]],
        scope: trio.CancelScope,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self.status = await run(task_status=task_status)
        scope.cancel()  # it ended by itself (a forwarding loop): so does everything beside it


async def _run_pool(config: ServeConfig, pool: WorkerPool, task_status: trio.TaskStatus[Running]) -> int:
    """`run` with `--workers`: the pool's workers answer; this process follows the cluster for
    them and serves the operations endpoints for the instance, which a reload moves here while
    the workers take the rest of it (`WorkerPool.apply`)."""
    state = pool.sources.state  # the instance's, whatever source a reload gives it
    addresses = pool.addresses
    collector = StateCollector(pool.view, f"dns://{addresses[0]}", pool.zone_names, wall_clock)
    routes = {"/health": health, "/ready": readiness(state.ready), "/metrics": metrics_route(collector)}
    endpoints = Endpoints(routes, state.http_room_made)
    bound = endpoints.bind_changed(config.ops)  # before anything runs: a taken port is a setup error
    ended = _Ended()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(ended.serving, pool.run, nursery.cancel_scope)
            await endpoints.serve_changed(nursery, config.ops, bound)
            ops = config.ops

            async def apply(new: ServeConfig) -> list[str]:
                nonlocal ops
                moved = endpoints.bind_changed(new.ops) if new.ops != ops else {}
                try:
                    later = await pool.apply(new)
                except BaseException:
                    for sock in moved.values():
                        sock.close()
                    raise
                if new.ops != ops:
                    await endpoints.serve_changed(nursery, new.ops, moved)
                    ops = new.ops
                return later

            health_at, ready_at, metrics_at = (endpoints.address(path) for path in PATHS)
            task_status.started(Running(addresses, health_at, ready_at, metrics_at, state, apply))
    finally:
        endpoints.close()
        for sock in bound.values():
            sock.close()
    return ended.status


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
            reloader = Reloader(config, reload, running.state, fingerprint, running.apply)
            if reload is not None and config.config_file is not None:
                nursery.start_soon(reloader.watch_file, config.config_file)
            async for signum in signals:
                name = signal.Signals(signum).name
                if signum == signal.SIGHUP:
                    log.info("received SIGHUP: reloading the configuration")
                    nursery.start_soon(reloader.reload)  # off this loop: a signal during it still counts
                    continue
                lameduck = reloader.current.lameduck  # as the last reload set it
                if signum == signal.SIGTERM and lameduck > 0 and not running.state.draining:
                    running.state.draining = True
                    log.info("received %s: lameduck for %g s (still answering, /ready 503)", name, lameduck)
                    nursery.start_soon(_stop_after, nursery.cancel_scope, lameduck)
                    continue
                log.info("received %s: shutting down", name)
                nursery.cancel_scope.cancel()
                break
    return status


class Reloader:
    """Reads the configuration again (SIGHUP, or its file changed): a bad one is refused with an
    error and counted, and the old one keeps serving; a good one is applied while serving by
    `apply` (`Live.apply`; with `--workers`, `WorkerPool.apply`), which says what waits for a
    restart (logged as such). Without `apply` only `config.LIVE_SETTINGS` apply before a restart.

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
        apply: Apply | None = None,
    ) -> None:
        self.current = config
        self.load = load
        self.state = state
        self.fingerprint = fingerprint
        self.apply = apply
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
        changed = changed_settings(self.current, new)
        if not changed:
            log.info("reload: the configuration is unchanged")
            return
        later = [name for name in changed if name not in LIVE_SETTINGS]
        if self.apply is not None:
            try:
                later = await self.apply(new)
            except KdnsError as error:
                self._refused(str(error))
                return
            except Exception as error:  # building the new configuration failed: the old one stays
                log.exception("reload: building the new configuration failed")
                self._refused(f"{type(error).__name__} building the new configuration: {quoted(str(error))}")
                return
        applied = [name for name in changed if name not in later]
        if any(name in ("log_level", "log_format") for name in applied):
            logs.configure(new.log_level, new.log_format)
        self.current = replace(self.current, **{name: getattr(new, name) for name in applied})
        self.state.reloads += 1
        log.info("reload applied: %s", ", ".join(applied) if applied else "nothing that applies before a restart")
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
        seen = await trio.to_thread.run_sync(self.fingerprint, path, self.current.config_max_bytes)
        while True:
            jitter = self.current.config_poll_jitter
            # CoreDNS's reload: the interval, plus or minus half the jitter
            await trio.sleep(self.current.config_poll + random.uniform(-jitter / 2, jitter / 2))
            now = await trio.to_thread.run_sync(self.fingerprint, path, self.current.config_max_bytes)
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
