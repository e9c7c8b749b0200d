"""The state seam: readiness and the counters that metrics will publish, in one object.

Everything that counts writes plain integers here (or, for the query path and the cache, into
the core's own counters, which this object holds); health, readiness, metrics and tests read
them. Nothing here does I/O or keeps time: times are given by the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from kdns.core.budgets import StoreSize
from kdns.core.cache import ForwardCache
from kdns.core.counters import Histogram, ProgrammingDurations, QueryCounters, RequestDurations


@dataclass(slots=True)
class UpstreamCounters:
    """One upstream resolver: what was asked of it and what came back."""

    requests: int = 0
    failures: int = 0  # tries that timed out, failed or came back malformed
    dropped: int = 0  # datagrams that were not an answer anyone waited for
    malformed: int = 0  # answers to our question that did not parse: never relayed or cached
    responses: dict[int, int] = field(default_factory=dict)  # by rcode
    latency: Histogram = field(default_factory=Histogram)  # seconds from a try sent to its answer
    healthcheck_failures: int = 0
    down: bool = False

    def answered(self, rcode: int, seconds: float) -> None:
        self.responses[rcode] = self.responses.get(rcode, 0) + 1
        self.latency.observe(seconds)


class CacheCounters(Protocol):
    """What metrics read of a forward cache: a `ForwardCache`, or the sum over workers."""

    @property
    def hits(self) -> int: ...
    @property
    def denial_hits(self) -> int: ...
    @property
    def misses(self) -> int: ...
    @property
    def evictions(self) -> int: ...
    def entries_by_kind(self) -> tuple[int, int]: ...


@dataclass(slots=True)
class CacheTotals:
    """A forward cache's counters, copied out of it (sent by a worker, summed over workers)."""

    hits: int = 0
    denial_hits: int = 0
    misses: int = 0
    evictions: int = 0
    positive: int = 0  # entries held now
    negative: int = 0

    @classmethod
    def of(cls, cache: CacheCounters) -> CacheTotals:
        positive, negative = cache.entries_by_kind()
        return cls(cache.hits, cache.denial_hits, cache.misses, cache.evictions, positive, negative)

    def entries_by_kind(self) -> tuple[int, int]:
        return self.positive, self.negative

    def add(self, other: CacheTotals, *, entries: bool) -> None:
        self.hits += other.hits
        self.denial_hits += other.denial_hits
        self.misses += other.misses
        self.evictions += other.evictions
        if entries:
            self.positive += other.positive
            self.negative += other.negative


@dataclass(slots=True)
class WatchCounters:
    """One watcher (a resource, in one namespace or all)."""

    events: int = 0  # watch events that changed the zone
    relists: int = 0  # lists after the first (410 Gone, a malformed stream)
    errors: int = 0  # failed requests and objects that could not be applied
    listed: bool = False  # listed once: its part of the cluster is known
    last_list: float | None = None  # when (Unix time) a list last completed


class State:
    """Readiness and every counter of one kdns instance."""

    def __init__(self, *, time_requests: bool = True, workers_serving: Callable[[], bool] | None = None) -> None:
        """`workers_serving`, with `--workers`: whether every worker process is serving (the
        instance is not ready while one is being restarted)."""
        self.queries = QueryCounters()
        # Each query's duration, when someone reads it (the metrics endpoint is on): two clock
        # reads and a histogram update a query, which the listeners skip when this is None.
        self.durations: RequestDurations | None = RequestDurations() if time_requests else None
        self.upstreams: dict[str, UpstreamCounters] = {}
        self.programming = ProgrammingDurations()  # from a change in the cluster to it being served
        self.watches: dict[str, WatchCounters] = {}
        self.cache: CacheCounters | None = None  # its own counters: hits, misses, inserts, evictions
        self.tcp_connections = 0  # open now
        self.tcp_refused = 0  # closed to admit another: over --max-tcp-connections (the one idle longest)
        self.tcp_buffer_closed = 0  # closed to stay within --tcp-buffer-bytes (the one holding the most)
        self.http_closed_for_room = 0  # HTTP connections closed to admit another (the one idle longest)
        self.udp_receive_errors = 0
        self.objects_rejected = 0  # API objects that could not be converted or applied
        self.panics = 0  # queries whose handling raised (answered SERVFAIL, logged)
        self.healthcheck_broken = 0  # times every upstream was down at once (CoreDNS's "broken")
        self.forward_refused: dict[str, int] = {}  # forwarded queries refused at --max-concurrent, by reason
        self.reloads = 0  # configurations reloaded and applied
        self.reload_failures = 0  # new configurations refused (the old one kept serving)
        self._following = False  # whether a live source must list before kdns is ready
        self.draining = False  # shutting down: still answering, no longer ready (lameduck)
        self._workers_serving = workers_serving
        self.workers = 1  # processes answering queries (`--workers`)
        self.worker_restarts = 0
        self.replies_by_worker: dict[int, int] = {}  # replies sent by each worker now running
        # Readers of the bounded stores this process holds (README "Budgets"), by whoever owns
        # each: read when metrics are scraped or a worker reports, never on the query path.
        # By owner: a reload's new pipeline or cache replaces the old one's reader.
        self._store_readers: dict[str, Callable[[], Mapping[str, StoreSize]]] = {}

    def http_room_made(self) -> None:
        """An HTTP listener closed its connection idle longest to admit another."""
        self.http_closed_for_room += 1

    def count_forward_refused(self, reason: str) -> None:
        """A forwarded query refused at --max-concurrent, for `reason` (`forward.OVER_SHARE`,
        `forward.PREEMPTED`)."""
        self.forward_refused[reason] = self.forward_refused.get(reason, 0) + 1

    def tcp_room_made(self) -> None:
        """A DNS TCP listener closed its connection idle longest to admit another."""
        self.tcp_refused += 1

    def tcp_buffer_overflowed(self) -> None:
        """The TCP connection holding the most was closed to keep within --tcp-buffer-bytes."""
        self.tcp_buffer_closed += 1

    # -- bounded stores ----------------------------------------------------------------------

    def report_cache(self, cache: ForwardCache | None) -> None:
        """The forward cache now in use (a reload may replace it, or take it away): its counters
        and its stores are this state's."""
        self.cache = cache
        if cache is None:
            self.add_stores("forward_cache", dict)
        else:
            self.add_stores("forward_cache", cache.stores)

    def add_stores(self, owner: str, reader: Callable[[], Mapping[str, StoreSize]]) -> None:
        """Report the stores `reader` gives (name -> `StoreSize`) with this state's, in place of
        what `owner` reported before."""
        self._store_readers[owner] = reader

    def store_sizes(self) -> dict[str, StoreSize]:
        """Every bounded store of this process (or instance) now."""
        sizes: dict[str, StoreSize] = {}
        for reader in self._store_readers.values():
            for name, size in reader().items():
                sizes[name] = sizes[name].plus(size) if name in sizes else size
        return sizes

    # -- readiness -------------------------------------------------------------------------

    def staging(self) -> State:
        """A state for a cluster source made beside the running one (a reload that changes what
        is watched): its own watches, so that whether it has listed is its own; this state's
        programming durations. `adopt_watches` makes it this state's once it serves."""
        staged = State(time_requests=False)
        staged.programming = self.programming
        return staged

    def adopt_watches(self, staged: State) -> None:
        """The watches of `staged` are now the ones this state's readiness waits on."""
        self.watches = staged.watches
        self._following = staged._following

    def follow(self, watchers: list[str]) -> None:
        """A live source with these watchers: not ready until each has listed once."""
        self._following = True
        for name in watchers:
            self.watches.setdefault(name, WatchCounters())

    def synced(self) -> bool:
        """Every watcher has listed once (always, for a snapshot): a name missing from the zone
        is missing from the cluster. The cluster zone asks this, never `ready`: while draining,
        missing names are still NXDOMAIN."""
        return not self._following or all(watch.listed for watch in self.watches.values())

    def ready(self) -> bool:
        """Synced, not draining, and every worker serving: what `/ready` says."""
        serving = self._workers_serving is None or self._workers_serving()
        return not self.draining and self.synced() and serving

    # -- registries ------------------------------------------------------------------------

    def upstream(self, address: str) -> UpstreamCounters:
        return self.upstreams.setdefault(address, UpstreamCounters())

    def watch(self, name: str) -> WatchCounters:
        return self.watches.setdefault(name, WatchCounters())

    # -- workers ---------------------------------------------------------------------------

    def with_workers(self, figures: Mapping[int, WorkerFigures], retired: WorkerFigures) -> State:
        """The instance's state with `--workers`: this (the supervisor's) watches, programming,
        readiness and reloads, and the query side summed over the workers' last `figures`
        and what workers that have since ended counted (`retired`); `figures` by worker number."""
        view = State(time_requests=self.durations is not None, workers_serving=self._workers_serving)
        for name in (
            "programming",
            "watches",
            "objects_rejected",
            "reloads",
            "reload_failures",
            "http_closed_for_room",
        ):
            setattr(view, name, getattr(self, name))
        view._following, view.draining = self._following, self.draining
        view.workers, view.worker_restarts = self.workers, self.worker_restarts
        cache = CacheTotals()
        for number, each in figures.items():
            each.add_to(view, cache, live=True)
            view.replies_by_worker[number] = each.queries.total()
        retired.add_to(view, cache, live=False)
        view.cache = cache
        stores = _sum_stores([each.stores for each in figures.values()], retired.stores)
        view.add_stores("supervisor", self.store_sizes)  # the supervisor's own (its queues to the workers)
        view.add_stores("workers", lambda: stores)
        return view


@dataclass(slots=True)
class WorkerFigures:
    """What one worker process counted: the query side of its `State`, sent to the supervisor
    (pickled) to be summed for metrics. Counters only grow; `tcp_connections` and the cache's
    entries are gauges, summed over live workers only."""

    queries: QueryCounters = field(default_factory=QueryCounters)
    durations: RequestDurations | None = None
    upstreams: dict[str, UpstreamCounters] = field(default_factory=dict)
    cache: CacheTotals | None = None
    tcp_connections: int = 0
    tcp_refused: int = 0
    tcp_buffer_closed: int = 0
    udp_receive_errors: int = 0
    panics: int = 0
    healthcheck_broken: int = 0
    forward_refused: dict[str, int] = field(default_factory=dict)
    stores: dict[str, StoreSize] = field(default_factory=dict)  # for ended workers: only evictions count

    @classmethod
    def of(cls, state: State) -> WorkerFigures:
        cache = CacheTotals.of(state.cache) if state.cache is not None else None
        return cls(
            state.queries,
            state.durations,
            state.upstreams,
            cache,
            state.tcp_connections,
            state.tcp_refused,
            state.tcp_buffer_closed,
            state.udp_receive_errors,
            state.panics,
            state.healthcheck_broken,
            state.forward_refused,
            state.store_sizes(),
        )

    @classmethod
    def retired(cls) -> WorkerFigures:
        """Where the counters of workers that have ended are kept for good (`add_to` it with
        `live=False`, its own `cache` as the cache's sum)."""
        return cls(durations=RequestDurations(), cache=CacheTotals())

    def add_to(self, view: State | WorkerFigures, cache: CacheTotals, *, live: bool) -> None:
        """Add these figures to `view`'s, and the cache's to `cache`; gauges (open connections,
        cache entries) only from a `live` worker."""
        view.queries.dropped += self.queries.dropped
        view.queries.autopath += self.queries.autopath
        _add_counts(view.queries.replies, self.queries.replies)
        if view.durations is not None and self.durations is not None:
            _add_histograms(view.durations.by_type, self.durations.by_type)
        for address, upstream in self.upstreams.items():
            _add_upstream(view.upstreams.setdefault(address, UpstreamCounters()), upstream)
        if self.cache is not None:
            cache.add(self.cache, entries=live)
        if live:
            view.tcp_connections += self.tcp_connections
        view.tcp_refused += self.tcp_refused
        view.tcp_buffer_closed += self.tcp_buffer_closed
        view.udp_receive_errors += self.udp_receive_errors
        view.panics += self.panics
        view.healthcheck_broken += self.healthcheck_broken
        _add_rcodes(view.forward_refused, self.forward_refused)  # a count per key, as rcodes are
        if not live and isinstance(view, WorkerFigures):  # an ended worker: what it evicted stays counted
            for name, size in self.stores.items():
                evicted = StoreSize(0, 0, 0, size.dropped)
                view.stores[name] = view.stores[name].plus(evicted) if name in view.stores else evicted


def _sum_stores(live: list[dict[str, StoreSize]], retired: dict[str, StoreSize]) -> dict[str, StoreSize]:
    """The stores of every live worker summed, with what ended workers evicted."""
    total: dict[str, StoreSize] = {}
    for stores in (*live, retired):
        for name, size in stores.items():
            total[name] = total[name].plus(size) if name in total else size
    return total


def _add_counts(into: dict[tuple[str, int, int, int], int], counts: dict[tuple[str, int, int, int], int]) -> None:
    for key, count in counts.items():
        into[key] = into.get(key, 0) + count


def _add_histograms(into: dict[int, Histogram], histograms: dict[int, Histogram]) -> None:
    for key, histogram in histograms.items():
        mine = into.get(key)
        into[key] = histogram if mine is None else Histogram.merged([mine, histogram])


def _add_upstream(into: UpstreamCounters, other: UpstreamCounters) -> None:
    into.requests += other.requests
    into.failures += other.failures
    into.dropped += other.dropped
    into.malformed += other.malformed
    _add_rcodes(into.responses, other.responses)
    into.latency = Histogram.merged([into.latency, other.latency])
    into.healthcheck_failures += other.healthcheck_failures
    into.down = into.down or other.down


def _add_rcodes(into: dict[Any, int], counts: dict[Any, int]) -> None:
    for key, count in counts.items():
        into[key] = into.get(key, 0) + count
