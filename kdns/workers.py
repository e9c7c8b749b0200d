"""`kdns serve --workers N`: N processes answer on the same ports; one follows the cluster.

The shape is nginx's master and workers, with kdns's one set of watches:

- The supervisor (the process started) builds the zone first: it loads the snapshot, or lists
  every resource once (`ClusterFollower.prime`, on its own thread: nothing else runs yet). It
  binds one UDP and one TCP socket per worker on each listen address with SO_REUSEPORT, freezes
  the heap (`gc.freeze`: the collector never writes to those pages again) and forks the workers.
  Each starts with the zone already built, its pages shared copy-on-write, and answers on its own
  sockets; the kernel spreads clients over them by address and port.
- Then the supervisor runs trio: it watches the API (one set of watches, whatever N is) and
  applies changes to its own store, whose journal (`ClusterStore(journal=)`) it streams to every
  worker over a pipe; each worker replays it on its store. It serves /health, /ready and
  /metrics for the instance: ready once synced and every worker serving; metrics the sum of the
  figures each worker sends it every `REPORT_INTERVAL`, and of those of workers that ended.
- A worker that ends is logged and started again. Not forked (the supervisor now runs trio and
  the watch threads, which a fork would copy mid-flight) but spawned afresh (`python -m
  kdns.workers`), sent the configuration and every object, and only then does it bind its
  sockets: no query reaches it before it can answer. A spawned worker shares no memory.
- A worker ends when its feed closes: the supervisor's end (even a SIGKILL) ends every worker.
  A worker that finds a forwarding loop ends with status 2, and so does the instance.

Pipes carry frames: a 4-byte length and a pickle. Both ends are this program.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import trio

from kdns import logs
from kdns.address import SocketAddress
from kdns.answering import Answerer, check_upstreams, ns_addresses
from kdns.config import ServeConfig
from kdns.core.model import ClusterObject, IPAddress
from kdns.core.store import Change, ClusterStore, bulk_change
from kdns.errors import KdnsError
from kdns.serve import BoundListener, bind
from kdns.sources import open_sources
from kdns.state import State, WorkerFigures

log = logging.getLogger(__name__)

REPORT_INTERVAL = 1.0  # seconds between a worker's figures sent to the supervisor
LOOP_STATUS = 2  # a worker's exit status when it found a forwarding loop (as kdns's own)
SHORT_LIFE = 10.0  # seconds: a worker that ends sooner is restarted after a backoff ...
RESTART_BACKOFF = (0.0, 1.0, 2.0, 5.0, 10.0, 30.0)  # ... this long, more each time in a row
STOP_WAIT = 5.0  # seconds the supervisor waits for workers to end before it kills them
BULK_REPLAY = 100  # changes in a batch beyond which it is replayed with the collector paused
_LENGTH = struct.Struct("!I")
_READ = 1 << 16


class Batch(NamedTuple):
    """Supervisor to worker: changes to replay, and whether the cluster is synced after them."""

    synced: bool
    changes: list[Change]


class Start(NamedTuple):
    """Supervisor to a spawned worker, first: all it needs to answer as the others do."""

    config: ServeConfig
    addresses: tuple[SocketAddress, ...]  # with the ports the supervisor bound
    fallback_ns_addresses: tuple[IPAddress, ...]
    objects: list[ClusterObject]
    serial: int
    synced: bool


def frame(message: object) -> bytes:
    data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


class FrameReader:
    """Whole messages out of the bytes of a pipe, however they were split."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        self._buffer += data
        messages, offset, buffer = [], 0, self._buffer
        while len(buffer) - offset >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buffer, offset)
            end = offset + _LENGTH.size + length
            if end > len(buffer):
                break
            messages.append(pickle.loads(buffer[offset + _LENGTH.size : end]))
            offset = end
        del buffer[:offset]
        return messages


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
    frames: list[bytes] = field(default_factory=list)  # whole messages to send first (a `Start`)
    changes: list[Change] = field(default_factory=list)  # journaled since the last batch sent
    wake: trio.Event = field(default_factory=trio.Event)
    figures: WorkerFigures | None = None  # the last sent: None until it is serving
    restarts_in_a_row: int = 0


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
        self.sources = open_sources(config, ns_addresses(addresses), journal=self.record, workers_serving=self.serving)
        self.sources.state.workers = config.workers
        if self.sources.store is None:
            raise KdnsError("--workers: only `kdns serve` runs workers (a node cache is one process)")
        self.store = self.sources.store

    # -- before trio -------------------------------------------------------------------------

    @classmethod
    def start(cls, config: ServeConfig) -> WorkerPool:
        """Build the zone, bind every worker's sockets and fork the workers; in the supervisor,
        before trio runs. Setup errors are raised (`KdnsError`) before any worker exists."""
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
                    reader = FrameReader()
                    status = trio.run(_work, self.config, store, listeners, feed_read, report_write, synced, reader)
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

    def record(self, change: Change) -> None:
        """The supervisor's store changed: queue the change for every worker (on trio's thread;
        before the workers exist, nothing: they are forked with the store as it is)."""
        for worker in self._workers:
            worker.changes.append(change)
            worker.wake.set()

    def serving(self) -> bool:
        """Every worker is running and has reported since it started (a spawned one reports once
        it has loaded the zone)."""
        return all(worker.figures is not None for worker in self._workers)

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

            async def keep(worker: _Worker) -> None:
                nonlocal status
                if await self._keep(worker) == LOOP_STATUS:
                    status = LOOP_STATUS
                    nursery.cancel_scope.cancel()

            for worker in self._workers:
                nursery.start_soon(keep, worker)
            task_status.started()
        return status

    async def _keep(self, worker: _Worker) -> int:
        """Serve one slot: feed its worker until it ends, then start another in its place."""
        state = self.sources.state
        while True:
            exit_code = await self._until_ended(worker)
            lived = time.monotonic() - worker.started
            if worker.figures is not None:
                assert self._retired.cache is not None
                worker.figures.add_to(self._retired, self._retired.cache, live=False)
                worker.figures = None
            if exit_code == LOOP_STATUS:
                log.error("worker %d found a forwarding loop: kdns stops", worker.number)
                return LOOP_STATUS
            worker.restarts_in_a_row = worker.restarts_in_a_row + 1 if lived < SHORT_LIFE else 0
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
            self._spawn(worker)
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
                while data := await reports.receive_some(_READ):
                    for figures in reader.feed(data):
                        worker.figures = figures
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
                frames, worker.frames = worker.frames, []
                if worker.changes or not frames:
                    changes, worker.changes = worker.changes, []
                    frames.append(frame(Batch(state.synced(), changes)))
                await feed.send_all(b"".join(frames))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # it has ended: `_until_ended` sees its figures close

    def _spawn(self, worker: _Worker) -> None:
        """Start a fresh worker process in the slot: sent the whole zone as objects, then the feed."""
        feed_read, feed_write = os.pipe()
        report_read, report_write = os.pipe()
        process = subprocess.Popen(
            [sys.executable, "-m", "kdns.workers", str(feed_read), str(report_write)],
            pass_fds=(feed_read, report_write),
            stdin=subprocess.DEVNULL,
        )
        os.close(feed_read)
        os.close(report_write)
        store = self.store
        start = Start(
            self.config,
            self.addresses,
            store.fallback_ns_addresses,
            list(store.objects()),
            store.zone.serial,
            self.sources.state.synced(),
        )
        # From here every change is queued after the objects: the worker misses none.
        worker.process, worker.feed_fd, worker.report_fd = process, feed_write, report_read
        worker.started, worker.frames, worker.changes = time.monotonic(), [frame(start)], []
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


def _close(listeners: Sequence[BoundListener]) -> None:
    for listener in listeners:
        listener.udp.close()
        listener.tcp.close()


# -- the worker ------------------------------------------------------------------------------


class _Feed:
    """What a worker knows of the cluster beyond its store: whether it has been listed."""

    def __init__(self, synced: bool) -> None:
        self.synced_now = synced

    def synced(self) -> bool:
        return self.synced_now


async def _work(
    config: ServeConfig,
    store: ClusterStore,
    listeners: list[BoundListener],
    feed_fd: int,
    report_fd: int,
    synced: bool,
    reader: FrameReader,
) -> int:
    """A worker: answer from `store`, replay the supervisor's feed on it, report figures; until
    the feed closes (0) or a forwarding loop is found (LOOP_STATUS)."""
    state = State(time_requests=config.ops.metrics is not None)
    feed = _Feed(synced)
    answerer = Answerer(config, listeners, state)
    status = 0
    async with trio.open_nursery() as nursery:

        async def answering(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            nonlocal status
            status = await answerer.run(store.zone, feed.synced, store.pods.namespace_of, task_status=task_status)
            nursery.cancel_scope.cancel()

        await nursery.start(answering)
        reports = trio.lowlevel.FdStream(report_fd)
        nursery.start_soon(_report, state, reports)
        async with trio.lowlevel.FdStream(feed_fd) as stream:
            while data := await stream.receive_some(_READ):
                for batch in reader.feed(data):
                    _replay(store, batch)
                    feed.synced_now = batch.synced
        nursery.cancel_scope.cancel()  # the supervisor has ended
    return status


def _replay(store: ClusterStore, batch: Batch) -> None:
    """Apply the supervisor's changes, each under its own guard as the supervisor applied them."""
    with bulk_change() if len(batch.changes) > BULK_REPLAY else contextlib.nullcontext():
        for change in batch.changes:
            try:
                store.replay(change)
            except Exception:  # it failed in the supervisor too: the zone keeps what it had
                log.debug("replaying %r failed, as it did in the supervisor", change, exc_info=True)


async def _report(state: State, reports: trio.lowlevel.FdStream) -> None:
    """Send the worker's figures now (it is serving), then every REPORT_INTERVAL."""
    try:
        while True:
            await reports.send_all(frame(WorkerFigures.of(state)))
            await trio.sleep(REPORT_INTERVAL)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return  # the supervisor has ended: the feed closes too


def spawned(argv: Sequence[str]) -> int:
    """`python -m kdns.workers FEED_FD REPORT_FD`: a worker started in place of one that ended."""
    feed_fd, report_fd = int(argv[0]), int(argv[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    reader = FrameReader()
    start: Start | None = None
    while start is None:
        data = os.read(feed_fd, _READ)
        if not data:
            return 0  # the supervisor ended first
        messages = reader.feed(data)
        if messages:
            start = messages[0]
            leftover = messages[1:]
    config = start.config
    logs.configure(config.log_level, config.log_format)
    store = ClusterStore(
        config.cluster_domain, config.ttl, config.pod_mode, fallback_ns_addresses=start.fallback_ns_addresses
    )
    store.load(start.objects)
    store.zone.set_serial(start.serial)
    for batch in leftover:
        _replay(store, batch)
    synced = leftover[-1].synced if leftover else start.synced
    listeners = [bind(address, reuse_port=True) for address in start.addresses]  # loaded: now it may answer
    del start, leftover  # the objects: the store holds what it needs of them
    return trio.run(_work, config, store, listeners, feed_fd, report_fd, synced, reader)


if __name__ == "__main__":
    sys.exit(spawned(sys.argv[1:]))
