"""The state seam: readiness and the counters that metrics will publish, in one object.

Everything that counts writes plain integers here (or, for the query path and the cache, into
the core's own counters, which this object holds); health, readiness, metrics and tests read
them. Nothing here does I/O or keeps time: times are given by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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

    def __init__(self, *, time_requests: bool = True) -> None:
        self.queries = QueryCounters()
        # Each query's duration, when someone reads it (the metrics endpoint is on): two clock
        # reads and a histogram update a query, which the listeners skip when this is None.
        self.durations: RequestDurations | None = RequestDurations() if time_requests else None
        self.upstreams: dict[str, UpstreamCounters] = {}
        self.programming = ProgrammingDurations()  # from a change in the cluster to it being served
        self.watches: dict[str, WatchCounters] = {}
        self.cache: ForwardCache | None = None  # its own counters: hits, misses, inserts, evictions
        self.tcp_connections = 0  # open now
        self.tcp_refused = 0  # closed at once: over --max-tcp-connections
        self.udp_receive_errors = 0
        self.objects_rejected = 0  # API objects that could not be converted or applied
        self.panics = 0  # queries whose handling raised (answered SERVFAIL, logged)
        self.healthcheck_broken = 0  # times every upstream was down at once (CoreDNS's "broken")
        self.reloads = 0  # configurations reloaded and applied
        self.reload_failures = 0  # new configurations refused (the old one kept serving)
        self._following = False  # whether a live source must list before kdns is ready
        self.draining = False  # shutting down: still answering, no longer ready (lameduck)

    # -- readiness -------------------------------------------------------------------------

    def follow(self, watchers: list[str]) -> None:
        """A live source with these watchers: not ready until each has listed once."""
        self._following = True
        for name in watchers:
            self.watches.setdefault(name, WatchCounters())

    def synced(self) -> bool:
        """Every watcher has listed once (always, for a snapshot): a name missing from the zone
        is missing from the cluster. The handler asks this, never `ready`: while draining,
        missing names are still NXDOMAIN."""
        return not self._following or all(watch.listed for watch in self.watches.values())

    def ready(self) -> bool:
        """Synced and not draining: what `/ready` says."""
        return not self.draining and self.synced()

    # -- registries ------------------------------------------------------------------------

    def upstream(self, address: str) -> UpstreamCounters:
        return self.upstreams.setdefault(address, UpstreamCounters())

    def watch(self, name: str) -> WatchCounters:
        return self.watches.setdefault(name, WatchCounters())
