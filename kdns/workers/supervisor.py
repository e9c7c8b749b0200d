"""The supervisor of `kdns serve --workers N`: it builds the zone, forks the workers, follows the
cluster for them and feeds them its store's journal, watches them, and replaces any that ends,
hangs or falls too far behind.

The shape is nginx's master and workers, with kdns's one set of watches:

- The supervisor (the process started) builds the zone first: it loads the snapshot, or lists
  every resource once (`ClusterFollower.prime`, on its own thread: nothing else runs yet). It
  binds one UDP and one TCP socket per worker on each listen address with SO_REUSEPORT, after
  making sure no other process holds the port (a second kdns would silently join the group and
  take a share of the queries), makes every answer of the zone into one shared table
  (`Zone.share`: read without writing reference counts, so reading it copies no page), freezes
  the heap (`gc.freeze`: the collector never writes to those pages again) and forks the
  workers. Each starts with the zone already built, its pages shared copy-on-write, and answers
  on its own sockets; the kernel spreads clients over them.
- A forked worker's store becomes a replica (`ClusterStore.as_replica`): it journals nothing and
  reports no omission (the supervisor does both, once for the instance).
- Then the supervisor runs trio: it watches the API (one set of watches, whatever N is) and
  applies changes to its own store, whose journal (`ClusterStore(journal=)`) it pickles once per
  change and queues for every worker, within `--worker-queue-bytes` each. It serves /health,
  /ready and /metrics for the instance: ready once synced and every worker serving; metrics the
  sum of the figures each worker sends every REPORT_INTERVAL, and of those of workers that ended.
- A worker that misses its reports for SILENT_AFTER seconds (stopped, or stuck) counts as not
  serving: /ready says 503 and it is logged, until it reports again. One whose queue passes its
  budget is replaced: killed, and started afresh with the whole cluster.
- A worker that ends is logged and started again. Not forked (the supervisor now runs trio and
  the watch threads, which a fork would copy mid-flight) but spawned (`python -m kdns.workers`)
  and sent the configuration and every object, encoded on a worker thread a chunk at a time (the
  event loop keeps answering probes and applying changes); it binds its sockets only once
  loaded, so no query reaches it before it can answer. A spawned worker shares no memory.
- A reload reaches every worker in its feed, in its place among the changes (`apply`); one that
  changes the cluster source is listed here beside the running one and sent whole to every
  worker, which loads it beside the store it serves and swaps both (`NewSource`).
- A worker ends when its feed closes: the supervisor's end (even a SIGKILL) ends every worker.
  A worker that finds a forwarding loop ends with status 2, and so does the instance.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import gc
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

import trio

from kdns.address import SocketAddress
from kdns.answering import check_upstreams, ns_addresses
from kdns.config import ServeConfig
from kdns.core.budgets import StoreSize
from kdns.core.model import ClusterObject, IPAddress
from kdns.core.store import Change
from kdns.errors import KdnsError
from kdns.live import LOOK_EVERY, RESTART_SETTINGS, SOURCE_SETTINGS, SYNC_WITHIN, changed_settings
from kdns.serve import BoundListener, bind
from kdns.sources import Sources, open_sources, report_stores
from kdns.state import State, WorkerFigures
from kdns.workers.feed import (
    OBJECTS_PER_FRAME,
    READ_SIZE,
    REPORT_INTERVAL,
    FrameReader,
    NewSource,
    Objects,
    Reconfigure,
    Start,
    Synced,
    frame,
)
from kdns.workers.worker import work

if TYPE_CHECKING:
    from kdns.sources.kube import ClusterFollower

log = logging.getLogger(__name__)

LOOP_STATUS = 2  # a worker's exit status when it found a forwarding loop (as kdns's own)
SHORT_LIFE = 10.0  # seconds: a worker that ends sooner is restarted after a backoff ...
RESTART_BACKOFF = (0.0, 1.0, 2.0, 5.0, 10.0, 30.0)  # ... this long, more each time in a row
STOP_WAIT = 5.0  # seconds the supervisor waits for workers to end before it kills them
SILENT_AFTER = 3 * REPORT_INTERVAL  # a worker silent this long is not serving


class _Process(Protocol):
    pid: int

    def wait(self) -> int: ...


@dataclass
class _Forked:
    pid: int

    def wait(self) -> int:
        """Its exit code (negative: the signal that ended it), once it has ended."""
        return os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])


@dataclass
class _Worker:
    """One worker's slot: its process now, the pipes to it, what waits to be sent to it."""

    number: int
    process: _Process
    feed_fd: int  # the supervisor's (writing) end of the feed
    report_fd: int  # the supervisor's (reading) end of the figures
    started: float
    queue: list[bytes] = field(default_factory=list)  # frames waiting to be sent, oldest first
    # Bytes of journaled changes queued, and being written to it: together bounded by
    # --worker-queue-bytes (a worker that stops reading blocks the write).
    queued: int = 0
    sending: int = 0
    accepting: bool = True  # its process is to be fed: False from its end (or replacement) to the next
    synced_sent: bool | None = None  # the last `Synced` sent
    wake: trio.Event = field(default_factory=trio.Event)
    figures: WorkerFigures | None = None  # the last sent: None until it is serving
    reported_at: float = 0.0  # when (trio's clock) it last sent figures
    silent: bool = False  # missed its reports for SILENT_AFTER: not serving
    replacing: bool = False  # killed for falling too far behind: its end is expected
    restarts_in_a_row: int = 0
    replaced: int = 0  # times it was replaced for its queue (for the store's figures)


class WorkerPool:
    """The supervisor's side of `--workers`: starts the workers, feeds them, restarts them."""

    def __init__(self, config: ServeConfig, addresses: tuple[SocketAddress, ...]) -> None:
        """Load the zone (a snapshot) or make the store that will follow the cluster, journaled
        to the workers to come."""
        self.config = config
        self.addresses = addresses
        self._workers: list[_Worker] = []
        self._retired = WorkerFigures.retired()  # what ended workers counted, kept for the metrics' sums
        self._closed = False
        # The store whose journal feeds the workers: a reload that changes the cluster source
        # makes another, whose changes are fed only once the workers have been sent it whole.
        self._feeding: object = object()
        self._held: _Held | None = None  # a new store's changes while its objects are encoded
        self._nursery: trio.Nursery | None = None
        self._follower_scope: trio.CancelScope | None = None
        journal = functools.partial(self._record, self._feeding)
        self.sources = open_sources(config, ns_addresses(addresses), journal=journal, workers_serving=self.serving)
        self.sources.state.workers = config.workers
        self.sources.state.add_stores("worker_queues", self._queue_sizes)
        if self.sources.store is None:
            raise KdnsError("--workers: only `kdns serve` runs workers (a node cache is one process)")
        self.store = self.sources.store

    # -- before trio -------------------------------------------------------------------------

    @classmethod
    def start(cls, config: ServeConfig) -> WorkerPool:
        """Build the zone, bind every worker's sockets and fork the workers; in the supervisor,
        before trio runs. Setup errors are raised (`KdnsError`) before any worker exists."""
        for address in config.listen:
            _refuse_if_taken(address)
        sets = [[bind(address, reuse_port=True) for address in config.listen]]
        addresses = tuple(listener.address for listener in sets[0])
        try:
            check_upstreams(config, addresses)
            sets += [[bind(address, reuse_port=True) for address in addresses] for _ in range(config.workers - 1)]
            pool = cls(config, addresses)
            follower = pool.sources.follower
            if follower is not None:
                began = time.monotonic()
                complete = follower.prime()
                log.info(
                    "listed the cluster in %.1f s%s",
                    time.monotonic() - began,
                    "" if complete else " (not all of it: the rest follows once the API answers)",
                )
            pool._fork(sets)
            return pool
        finally:
            for listeners in sets:  # each worker holds its own; the supervisor none
                _close(listeners)

    def _fork(self, sets: list[list[BoundListener]]) -> None:
        synced = self.sources.state.synced()
        began = time.monotonic()
        table_bytes = self.store.zone.share()  # the answers the workers read without copying pages
        log.info(
            "made the zone's %d answers for the workers to share (%.1f MB) in %.1f s",
            self.store.zone.shared_entries(),
            table_bytes / 1e6,
            time.monotonic() - began,
        )
        gc.collect()
        gc.freeze()  # the built zone is never scanned by the collector again: its pages stay shared
        for number, listeners in enumerate(sets):
            feed_read, feed_write = os.pipe()
            report_read, report_write = os.pipe()
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:  # the worker: it never returns into the supervisor's code
                status = 1
                try:
                    for other in sets:
                        if other is not listeners:
                            _close(other)
                    for fd in (feed_write, report_read, *self._supervisor_fds()):
                        os.close(fd)
                    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor's to handle
                    store = self.store
                    store.as_replica()  # it replays the supervisor's journal; it keeps none
                    self._workers = []  # the slots of the workers forked before: not this one's
                    status = trio.run(
                        work, self.config, store, listeners, feed_read, report_write, synced, FrameReader()
                    )
                except BaseException:
                    log.exception("worker %d failed", number)
                finally:
                    os._exit(status)
            os.close(feed_read)
            os.close(report_write)
            self._workers.append(_Worker(number, _Forked(pid), feed_write, report_read, time.monotonic()))
            log.info("worker %d started (pid %d)", number, pid)

    def _supervisor_fds(self) -> Iterator[int]:
        for worker in self._workers:
            yield worker.feed_fd
            yield worker.report_fd

    # -- the journal, and what the instance reports ---------------------------------------------

    def _record(self, store: object, change: Change) -> None:
        """The supervisor's store changed: queue the change for every worker, pickled once (on
        trio's thread; before the workers exist, nothing: they are forked with the store as it
        is). A worker whose queue passes --worker-queue-bytes is replaced. `store`: which store's
        journal it is (one being listed for a reload, or one the reload replaced, feeds no one)."""
        if not self._workers or store is not self._feeding:
            return
        data = frame(change)
        if self._held is not None:  # the workers are to be sent the new store first
            self._held.hold(data)
            return
        self._queue(data, counted=True)

    def _queue(self, data: bytes, counted: bool) -> None:
        """Queue `data` for every worker being fed; `counted`: within --worker-queue-bytes (the
        changes of the journal; a whole store sent is not, as a spawned worker's is not)."""
        budget = self.config.worker_queue_bytes
        for worker in self._workers:
            if not worker.accepting:
                continue  # ended: the one that replaces it gets the whole cluster
            worker.queue.append(data)
            worker.wake.set()
            if not counted:
                continue
            worker.queued += len(data)
            if worker.queued + worker.sending > budget:
                self._replace(worker)

    async def apply(self, new: ServeConfig) -> list[str]:
        """A reload with `--workers`: every worker serves `new` from its place in the feed (each
        builds it beside its running one and swaps it in: `Reconfigure`), and a worker started
        later starts with it. A changed cluster source (`live.SOURCE_SETTINGS`, or the listen
        addresses `ns.dns` falls back to) is listed (or loaded) here beside the running one, as
        `Live` does, and sent whole to every worker once listed (`NewSource`): each loads it
        beside the store it serves and swaps both. `live.RESTART_SETTINGS` wait for a restart;
        their names are returned. `KdnsError` refuses the reload before any worker is told."""
        changed = changed_settings(self.config, new)
        later = [name for name in changed if name in RESTART_SETTINGS]
        listen, addresses = self._listen(new.listen)
        check_upstreams(new, addresses)
        kept = replace(new, listen=listen, **{name: getattr(self.config, name) for name in RESTART_SETTINGS})
        if kept == self.config:
            return later
        fallback = ns_addresses(addresses)
        same_source = all(getattr(kept, name) == getattr(self.config, name) for name in SOURCE_SETTINGS)
        if same_source and fallback == self.store.fallback_ns_addresses:
            self.config, self.addresses = kept, addresses
            self._queue(frame(Reconfigure(kept)), counted=False)  # one ending gets `kept` when started again
            return later
        await self._new_source(kept, addresses, fallback)
        return later

    async def _new_source(
        self, new: ServeConfig, addresses: tuple[SocketAddress, ...], fallback: tuple[IPAddress, ...]
    ) -> None:
        """List (or load) the cluster source of `new` beside the running one and, once listed
        (within `live.SYNC_WITHIN`, else `KdnsError`), feed it to the workers in place of the
        running one, with `new`."""
        assert self._nursery is not None
        state = self.sources.state
        staged = state.staging()
        token = object()
        journal = functools.partial(self._record, token)
        sources = await trio.to_thread.run_sync(lambda: open_sources(new, fallback, journal=journal, state=staged))
        store = sources.store
        assert store is not None  # `--workers` is never a node cache
        scope = None
        if sources.follower is not None:
            scope = await self._nursery.start(_followed, sources.follower)
            log.info("reload: listing the cluster for the new configuration")
            with trio.move_on_after(SYNC_WITHIN):
                while not staged.synced():
                    await trio.sleep(LOOK_EVERY)
            if not staged.synced():
                scope.cancel()
                raise KdnsError(f"the new configuration's watches did not all list within {SYNC_WITHIN:g} s")
        # The swap: from here every change fed is the new store's, held until the workers have
        # been queued the whole of it.
        if self._follower_scope is not None:
            self._follower_scope.cancel()  # the old watches
        self._follower_scope = scope
        state.adopt_watches(staged)
        report_stores(state, store)
        self.sources, self.store = Sources(state, store, sources.follower), store
        self.config, self.addresses = new, addresses
        self._feeding, self._held = token, _Held(new.worker_queue_bytes)
        objects = store.snapshot()
        start = NewSource(new, fallback, store.zone.serial, state.synced(), 0)
        try:
            frames = await trio.to_thread.run_sync(_encode_start, start, objects)
        finally:
            held, self._held = self._held, None
        if held.over:  # more changed while encoding than a worker may have queued: each is replaced
            for worker in self._workers:
                if worker.accepting:
                    self._replace(worker)
        for data in frames:
            self._queue(data, counted=False)
        for data in held.frames:
            self._queue(data, counted=True)
        log.info("reload: the new cluster source is sent to the workers")

    def _listen(self, wanted: tuple[SocketAddress, ...]) -> tuple[tuple[SocketAddress, ...], tuple[SocketAddress, ...]]:
        """A reload's listen addresses as the workers are to bind them, and with the ports bound:
        one served now keeps its socket; a new one must be free of other processes (as at
        start), and a new port 0 is settled once, here, for every worker to bind the same port.
        `KdnsError` refuses the reload."""
        serving = dict(zip(self.config.listen, self.addresses, strict=True))
        listen, bound = [], []
        for address in wanted:
            if address in serving:
                listen.append(address)
                bound.append(serving[address])
                continue
            _refuse_if_taken(address)
            if address.port == 0:
                probe = bind(address, reuse_port=True)  # a port free for UDP and TCP alike, then let go
                _close([probe])
                address = probe.address
            listen.append(address)
            bound.append(address)
        return tuple(listen), tuple(bound)

    def _replace(self, worker: _Worker) -> None:
        log.error(
            "worker %d (pid %d) has %d bytes of changes waiting (over --worker-queue-bytes %d): replacing it",
            worker.number,
            worker.process.pid,
            worker.queued + worker.sending,
            self.config.worker_queue_bytes,
        )
        worker.accepting, worker.replacing = False, True
        worker.replaced += 1
        worker.queue, worker.queued = [], 0
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.process.pid, signal.SIGKILL)  # stopped or stuck, it ends all the same

    def _queue_sizes(self) -> dict[str, StoreSize]:
        budget = self.config.worker_queue_bytes
        queues = [
            StoreSize(budget, worker.queued + worker.sending, len(worker.queue), worker.replaced)
            for worker in self._workers
        ]
        total = StoreSize(0, 0, 0, 0)
        for queue in queues:
            total = total.plus(queue)
        return {"worker_queues": total} if queues else {}

    def zone_names(self) -> int:
        """Names in the zone the workers are fed."""
        return self.store.zone.name_count()

    def serving(self) -> bool:
        """Every worker is running, has reported since it started (a spawned one reports once it
        has loaded the zone) and has not gone silent since."""
        return all(worker.figures is not None and not worker.silent for worker in self._workers)

    def view(self) -> State:
        """The instance's state, for metrics."""
        figures = {worker.number: worker.figures for worker in self._workers if worker.figures is not None}
        return self.sources.state.with_workers(figures, self._retired)

    # -- in trio -----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> int:
        """Feed, watch and restart the workers until cancelled; LOOP_STATUS if a worker found a
        forwarding loop (the instance ends)."""
        status = 0
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            follower = self.sources.follower
            if follower is not None:
                self._follower_scope = await nursery.start(_followed, follower)

            async def keep(worker: _Worker) -> None:
                nonlocal status
                if await self._keep(worker) == LOOP_STATUS:
                    status = LOOP_STATUS
                    nursery.cancel_scope.cancel()

            now = trio.current_time()
            for worker in self._workers:
                worker.reported_at = now
                nursery.start_soon(keep, worker)
            nursery.start_soon(self._watch_reports)
            task_status.started()
        return status

    async def _watch_reports(self) -> None:
        """Count a worker that has not reported for SILENT_AFTER as not serving (and log it), and
        as serving again once it reports."""
        while True:
            await trio.sleep(REPORT_INTERVAL)
            now = trio.current_time()
            for worker in self._workers:
                quiet = worker.figures is not None and now - worker.reported_at > SILENT_AFTER
                if quiet and not worker.silent:
                    worker.silent = True
                    log.error(
                        "worker %d (pid %d) has not reported for %.0f s: not serving (/ready 503)",
                        worker.number,
                        worker.process.pid,
                        now - worker.reported_at,
                    )

    async def _keep(self, worker: _Worker) -> int:
        """Serve one slot: feed its worker until it ends, then start another in its place."""
        state = self.sources.state
        while True:
            exit_code = await self._until_ended(worker)
            worker.accepting, worker.queue, worker.queued = False, [], 0
            lived = time.monotonic() - worker.started
            if worker.figures is not None:
                assert self._retired.cache is not None
                worker.figures.add_to(self._retired, self._retired.cache, live=False)
                worker.figures = None
            if exit_code == LOOP_STATUS:
                log.error("worker %d found a forwarding loop: kdns stops", worker.number)
                return LOOP_STATUS
            replaced, worker.replacing, worker.silent = worker.replacing, False, False
            short = lived < SHORT_LIFE and not replaced
            worker.restarts_in_a_row = worker.restarts_in_a_row + 1 if short else 0
            delay = RESTART_BACKOFF[min(max(worker.restarts_in_a_row - 1, 0), len(RESTART_BACKOFF) - 1)]
            log.error(
                "worker %d (pid %d) ended %s after %.1f s; starting another%s",
                worker.number,
                worker.process.pid,
                f"by signal {-exit_code}" if exit_code < 0 else f"with status {exit_code}",
                lived,
                f" in {delay:g} s" if delay else "",
            )
            await trio.sleep(delay)
            await self._spawn(worker)
            state.worker_restarts += 1

    async def _until_ended(self, worker: _Worker) -> int:
        """Send the worker its feed and read its figures until it ends; its exit code."""
        feed = trio.lowlevel.FdStream(worker.feed_fd)
        reports = trio.lowlevel.FdStream(worker.report_fd)
        worker.feed_fd = worker.report_fd = -1  # the streams own them now
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send, worker, feed)
                reader = FrameReader()
                while data := await reports.receive_some(READ_SIZE):
                    for figures in reader.feed(data):
                        worker.figures = figures
                        worker.reported_at = trio.current_time()
                        if worker.silent:
                            worker.silent = False
                            log.warning("worker %d (pid %d) reports again: serving", worker.number, worker.process.pid)
                nursery.cancel_scope.cancel()  # its figures closed: it has ended
        finally:
            await feed.aclose()
            await reports.aclose()
        return await trio.to_thread.run_sync(worker.process.wait)

    async def _send(self, worker: _Worker, feed: trio.lowlevel.FdStream) -> None:
        state = self.sources.state
        try:
            while True:
                await worker.wake.wait()
                worker.wake = trio.Event()
                synced = state.synced()
                if synced != worker.synced_sent:
                    worker.queue.append(frame(Synced(synced)))
                    worker.synced_sent = synced
                data, worker.queue = b"".join(worker.queue), []
                worker.sending, worker.queued = worker.queued, 0
                try:
                    await feed.send_all(data)
                finally:
                    worker.sending = 0
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # it has ended: `_until_ended` sees its figures close

    async def _spawn(self, worker: _Worker) -> None:
        """Start a fresh worker process in the slot and queue it the whole cluster as objects,
        encoded on a worker thread; every change from now on is queued after them."""
        store = self.store
        objects = store.snapshot()  # copies of the indexes, made at once: the loop moves on after
        worker.queue, worker.queued, worker.synced_sent = [], 0, self.sources.state.synced()
        worker.accepting = True  # every change from here on is queued after the objects
        feed_read, feed_write = os.pipe()
        report_read, report_write = os.pipe()
        try:
            process = _spawn_process(feed_read, report_write)  # vfork and exec: no copy of our memory
        finally:
            os.close(feed_read)
            os.close(report_write)
        start = Start(
            self.config, self.addresses, store.fallback_ns_addresses, store.zone.serial, worker.synced_sent, 0
        )
        frames = await trio.to_thread.run_sync(_encode_start, start, objects)
        worker.process, worker.feed_fd, worker.report_fd = process, feed_write, report_read
        worker.started, worker.reported_at = time.monotonic(), trio.current_time()
        worker.queue[:0] = frames
        worker.wake = trio.Event()
        worker.wake.set()
        log.info("worker %d started again (pid %d): loading the zone", worker.number, process.pid)

    # -- after trio ----------------------------------------------------------------------------

    def close(self) -> None:
        """End every worker (their feeds close) and wait for them, killing what lingers."""
        if self._closed:
            return
        self._closed = True
        for worker in self._workers:
            for fd in (worker.feed_fd, worker.report_fd):
                if fd >= 0:  # not yet handed to trio, which closes what it was given
                    os.close(fd)
        deadline = time.monotonic() + STOP_WAIT
        for worker in self._workers:
            pid = worker.process.pid
            while time.monotonic() < deadline:
                try:
                    if os.waitpid(pid, os.WNOHANG)[0] != 0:
                        break
                except ChildProcessError:
                    break  # reaped already
                time.sleep(0.02)
            else:
                log.warning("worker %d (pid %d) did not end: killing it", worker.number, pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass


class _Held:
    """A new store's changes while its objects are encoded for the workers, within `budget`
    bytes (--worker-queue-bytes): past it, they are let go and every worker is replaced (started
    afresh with the whole store)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.frames: list[bytes] = []
        self.size = 0
        self.over = False

    def hold(self, data: bytes) -> None:
        if self.over:
            return
        self.size += len(data)
        if self.size > self.budget:
            self.over, self.frames = True, []
            return
        self.frames.append(data)


async def _followed(
    follower: ClusterFollower, *, task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED
) -> None:
    """Follow the cluster in a scope of its own, which is what starting this gives."""
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(follower.run)
            task_status.started(scope)


def _spawn_process(feed_read: int, report_write: int) -> subprocess.Popen[bytes]:
    # -P: the working directory is not put first on sys.path, so the worker runs the kdns the
    # supervisor runs, not a `kdns` directory that happens to be where it was started.
    return subprocess.Popen(
        [sys.executable, "-P", "-m", "kdns.workers", str(feed_read), str(report_write)],
        pass_fds=(feed_read, report_write),
        stdin=subprocess.DEVNULL,
    )


def _encode_start(start: Start | NewSource, objects: Iterator[ClusterObject]) -> list[bytes]:
    """The frames that start a spawned worker (`Start`) or a new source (`NewSource`): it, the
    objects OBJECTS_PER_FRAME at a time (each chunk pickled apart, so that the GIL is let go
    between them and the event loop keeps its turns), in the order a store loads fastest. On a
    worker thread."""
    frames: list[bytes] = []
    chunk: list[ClusterObject] = []
    for obj in objects:
        chunk.append(obj)
        if len(chunk) == OBJECTS_PER_FRAME:
            frames.append(frame(Objects(chunk)))
            chunk = []
    if chunk:
        frames.append(frame(Objects(chunk)))
    return [frame(start._replace(chunks=len(frames))), *frames]


def _refuse_if_taken(address: SocketAddress) -> None:
    """`KdnsError` if another process holds `address`'s port: SO_REUSEPORT would let this one
    join it silently, each answering part of the queries. A socket without SO_REUSEPORT cannot be
    bound where any other is (port 0 is always free)."""
    if address.port == 0:
        return
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(address.family, kind) as probe:
            if address.family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if kind == socket.SOCK_STREAM:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as our listeners do
            try:
                probe.bind((address.host, address.port))
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise KdnsError(
                        f"cannot listen on {address}: another process holds the port (another kdns?), "
                        "and sharing it (SO_REUSEPORT) would hand that process part of the queries"
                    ) from None
                raise KdnsError(f"cannot listen on {address}: {error}") from None


def _close(listeners: Sequence[BoundListener]) -> None:
    for listener in listeners:
        listener.udp.close()
        listener.tcp.close()
