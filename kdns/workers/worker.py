"""A worker process of `kdns serve --workers N`: it answers from its own store, which replays the
supervisor's journal, and reports its figures; forked with the zone built, or spawned afresh
(`python -m kdns.workers FEED_FD REPORT_FD`) and sent every object first."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass, replace

import trio

from kdns import logs
from kdns.config import OpsListeners, ServeConfig, worker_share
from kdns.core.store import Change, ClusterStore, bulk_change
from kdns.live import Live
from kdns.serve import BoundListener, bind
from kdns.sources import Sources, report_stores, store_for
from kdns.state import State, WorkerFigures
from kdns.workers.feed import (
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

log = logging.getLogger(__name__)

BULK_REPLAY = 100  # changes in a row beyond which they are replayed with the collector paused


class _Feed:
    """What a worker knows of the cluster beyond its store: whether it has been listed."""

    def __init__(self, synced: bool) -> None:
        self.synced_now = synced

    def synced(self) -> bool:
        return self.synced_now


async def work(
    config: ServeConfig,
    store: ClusterStore,
    listeners: list[BoundListener],
    feed_fd: int,
    report_fd: int,
    synced: bool,
    reader: FrameReader,
) -> int:
    """A worker: answer from `store`, replay the supervisor's feed on it, report figures; until
    the feed closes (0), a forwarding loop is found (LOOP_STATUS), or a new cluster source cannot
    be served (1: the supervisor starts another, with the whole of it). A `Reconfigure` in the
    feed is served at once, beside the running configuration and swapped in (`Live.apply`), in
    its place among the changes; a `NewSource`'s objects are loaded into a new store on another
    thread while the running one answers, and both are swapped in once it is whole."""
    state = State(time_requests=config.ops.metrics is not None)
    report_stores(state, store)
    feed = _Feed(synced)
    live = Live(answering_part(config), Sources(state, store, None), listeners, feed.synced, reuse_port=True)
    one_at_a_time = trio.Lock()
    status = 0
    running = config

    async def reconfigure(new: ServeConfig, sources: Sources | None = None) -> bool:
        nonlocal running
        async with one_at_a_time:
            if (new.log_level, new.log_format) != (running.log_level, running.log_format):
                logs.configure(new.log_level, new.log_format)
            running = new
            try:
                await live.apply(answering_part(new), sources)
            except Exception:  # the supervisor built it already; whatever fails here, keep serving
                log.exception("worker: the new configuration could not be served; the running one stays")
                return False
            return True

    async with trio.open_nursery() as nursery:

        async def answering(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            nonlocal status
            status = await live.run(task_status=task_status)
            nursery.cancel_scope.cancel()

        await nursery.start(answering)
        reports = trio.lowlevel.FdStream(report_fd)
        nursery.start_soon(_report, state, reports)
        loading: _Loading | None = None
        async with trio.lowlevel.FdStream(feed_fd) as stream:
            while data := await stream.receive_some(READ_SIZE):
                changes: list[object] = []
                for message in reader.feed(data):
                    if loading is not None:  # a `NewSource`'s objects come first, all of them
                        assert isinstance(message, Objects)  # the supervisor sends nothing else there
                        await trio.to_thread.run_sync(loading.store.load, message.objects)
                        loading.chunks -= 1
                    elif isinstance(message, Reconfigure):
                        feed.synced_now = apply(store, changes, feed.synced_now)
                        changes = []
                        await reconfigure(message.config)
                    elif isinstance(message, NewSource):
                        feed.synced_now = apply(store, changes, feed.synced_now)
                        changes = []
                        new_store = store_for(message.config, message.fallback_ns_addresses, reports=False)
                        loading = _Loading(message, new_store, message.chunks)
                    else:
                        changes.append(message)
                    if loading is not None and not loading.chunks:  # whole: served from here on
                        source, loaded, loading = loading.source, loading.store, None
                        loaded.zone.set_serial(source.serial)
                        if not await reconfigure(source.config, Sources(state, loaded, None)):
                            nursery.cancel_scope.cancel()  # it cannot follow the supervisor's store:
                            return 1  # ended, and started afresh with the whole of it
                        store, feed.synced_now = loaded, source.synced
                feed.synced_now = apply(store, changes, feed.synced_now)
        nursery.cancel_scope.cancel()  # the supervisor has ended
    return status


@dataclass(slots=True)
class _Loading:
    """A new cluster source being loaded from the feed: its store, and the `Objects` frames of it
    still to come."""

    source: NewSource
    store: ClusterStore
    chunks: int


def answering_part(config: ServeConfig) -> ServeConfig:
    """What a worker serves of `config`: everything but the operations endpoints, which the
    supervisor serves for the instance, with its share of the byte budgets (`worker_share`)."""
    return replace(worker_share(config), ops=OpsListeners(limits=config.ops.limits))


def apply(store: ClusterStore, messages: list[object], synced: bool) -> bool:
    """Replay the journal's changes among `messages`, each under its own guard as the supervisor
    applied them (many in a row with the collector paused); whether the cluster is synced after."""
    changes: list[Change] = []
    for message in messages:
        if isinstance(message, Synced):
            _replay(store, changes)
            changes = []
            synced = message.synced
        else:
            changes.append(message)  # type: ignore[arg-type]  # the supervisor sends nothing else
    _replay(store, changes)
    return synced


def _replay(store: ClusterStore, changes: list[Change]) -> None:
    with bulk_change() if len(changes) > BULK_REPLAY else contextlib.nullcontext():
        for change in changes:
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
    """`python -m kdns.workers FEED_FD REPORT_FD`: a worker started in place of one that ended.
    It loads the objects it is sent, replays what follows, and only then binds its sockets."""
    feed_fd, report_fd = int(argv[0]), int(argv[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    reader = FrameReader()
    start: Start | None = None
    store: ClusterStore | None = None
    chunks = 0
    pending: list[object] = []
    while store is None or chunks:
        data = os.read(feed_fd, READ_SIZE)
        if not data:
            return 0  # the supervisor ended first
        pending += reader.feed(data)
        while pending and (store is None or chunks):
            message = pending.pop(0)
            if store is None:
                assert isinstance(message, Start)
                start, chunks = message, message.chunks
                logs.configure(start.config.log_level, start.config.log_format)
                # It replays the supervisor's journal: it reports nothing the supervisor reports.
                store = store_for(start.config, start.fallback_ns_addresses, reports=False)
            else:
                assert isinstance(message, Objects)
                store.load(message.objects)
                chunks -= 1
    assert start is not None
    store.zone.set_serial(start.serial)
    synced = apply(store, pending, start.synced)
    listeners = [bind(address, reuse_port=True) for address in start.addresses]  # loaded: now it may answer
    config = start.config
    del start, pending
    return trio.run(work, config, store, listeners, feed_fd, report_fd, synced, reader)
