"""Prometheus metrics, built from the state seam (`kdns.state`) when they are scraped.

The query path only bumps plain integers; this module turns them into metric families at scrape
time, under CoreDNS's names, label names and label values (so that the coredns-mixin alerts and
the usual dashboards read kdns unchanged), and kdns's own under `kdns_`.

CoreDNS families published: `coredns_build_info`, `coredns_dns_requests_total`,
`coredns_dns_responses_total`, `coredns_forward_requests_total`,
`coredns_forward_responses_total`, `coredns_forward_request_duration_seconds`,
`coredns_forward_healthcheck_failures_total`, `coredns_forward_healthcheck_broken_total`,
`coredns_cache_entries`, `coredns_cache_hits_total`, `coredns_cache_misses_total`,
`coredns_panics_total`, and `coredns_dns_request_duration_seconds` while the metrics endpoint is
served (the listeners time queries only then).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterator

from dnslib import RCODE
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector, CollectorRegistry

from kdns import __version__
from kdns.core.counters import COUNTED_TYPES, TCP, Histogram
from kdns.ops import Response
from kdns.state import State

ZONE = "."  # kdns is one server block for every name, as kubeadm's Corefile `.:53`
VIEW = ""
# CoreDNS labels the types it names by name and every other type "other"; the counters have
# folded those into OTHER_TYPE already (`counters.counted_type`).
_TYPES: dict[int, str] = {number: name for name, number in COUNTED_TYPES.items()}


def _type_name(qtype: int) -> str:
    return _TYPES.get(qtype, "other")


def _rcode_name(rcode: int) -> str:
    return str(RCODE.get(rcode, str(rcode)))


class StateCollector(Collector):
    """Every metric of one kdns instance, read from its `State`."""

    def __init__(
        self, view: Callable[[], State], server: str, zone_names: Callable[[], int], clock: Callable[[], float]
    ) -> None:
        """`view` gives the state to publish at each scrape: the process's own, or with
        `--workers` the instance's (`State.with_workers`)."""
        self.view = view
        self.state = view()
        self.server = server  # `dns://ADDR:PORT` of the first listener, as CoreDNS labels it
        self.zone_names = zone_names
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        self.state = self.view()  # one view per scrape: every family reads the same figures
        yield from self._build_info()
        yield from self._dns()
        yield from self._forward()
        yield from self._cache()
        yield from self._kdns()

    def _build_info(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "coredns_build_info",
            "A metric with a constant '1' value labeled by version, revision, and goversion "
            "from which CoreDNS was built.",
            labels=["version", "revision", "goversion"],
        )
        info.add_metric([__version__, "kdns", f"python{platform.python_version()}"], 1)
        yield info

    def _dns(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "coredns_dns_requests",
            "Counter of DNS requests made per zone, protocol and family.",
            labels=["server", "zone", "view", "proto", "family", "type"],
        )
        responses = CounterMetricFamily(
            "coredns_dns_responses",
            "Counter of response status codes.",
            labels=["server", "zone", "view", "rcode", "plugin"],
        )
        by_request: dict[tuple[str, str, str], int] = {}
        by_rcode: dict[str, int] = {}
        for (transport, family, qtype, rcode), count in list(self.state.queries.replies.items()):
            proto = "tcp" if transport == TCP else "udp"
            key = (proto, str(family), _type_name(qtype))
            by_request[key] = by_request.get(key, 0) + count
            name = _rcode_name(rcode)
            by_rcode[name] = by_rcode.get(name, 0) + count
        for (proto, family_label, type_name), count in sorted(by_request.items()):
            requests.add_metric([self.server, ZONE, VIEW, proto, family_label, type_name], count)
        for name, count in sorted(by_rcode.items()):
            responses.add_metric([self.server, ZONE, VIEW, name, ""], count)
        yield requests
        yield responses
        if self.state.durations is not None:
            durations = HistogramMetricFamily(
                "coredns_dns_request_duration_seconds",
                "Histogram of the time (in seconds) each request took per zone.",
                labels=["server", "zone", "view", "type"],
            )
            merged: dict[str, list[Histogram]] = {}
            for qtype, histogram in list(self.state.durations.by_type.items()):
                merged.setdefault(_type_name(qtype), []).append(histogram)
            for type_name, histograms in sorted(merged.items()):
                total = Histogram.merged(histograms)  # every type CoreDNS calls "other" in one series
                durations.add_metric([self.server, ZONE, VIEW, type_name], _buckets(total), total.total)
            yield durations
        autopath = CounterMetricFamily(
            "coredns_autopath_success", "Counter of requests that did autopath.", labels=["server"]
        )
        autopath.add_metric([self.server], self.state.queries.autopath)
        yield autopath
        panics = CounterMetricFamily("coredns_panics", "A metrics that counts the number of panics.")
        panics.add_metric([], self.state.panics)
        yield panics

    def _forward(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "coredns_forward_requests", "Counter of requests made per upstream.", labels=["to"]
        )
        responses = CounterMetricFamily(
            "coredns_forward_responses", "Counter of responses received per upstream.", labels=["to", "rcode"]
        )
        durations = HistogramMetricFamily(
            "coredns_forward_request_duration_seconds", "Histogram of the time each request took.", labels=["to"]
        )
        failures = CounterMetricFamily(
            "coredns_forward_healthcheck_failures",
            "Counter of the number of failed healthchecks.",
            labels=["to"],
        )
        for to, upstream in sorted(self.state.upstreams.items()):
            requests.add_metric([to], upstream.requests)
            for rcode, count in sorted(upstream.responses.items()):
                responses.add_metric([to, _rcode_name(rcode)], count)
            durations.add_metric([to], _buckets(upstream.latency), upstream.latency.total)
            failures.add_metric([to], upstream.healthcheck_failures)
        broken = CounterMetricFamily(
            "coredns_forward_healthcheck_broken", "Counter of the number of complete failures of the healthchecks."
        )
        broken.add_metric([], self.state.healthcheck_broken)
        refused = CounterMetricFamily(
            "kdns_forward_refused",
            "Forwarded queries answered REFUSED at --max-concurrent: over_share (their client held its share "
            "or more), preempted (in flight, their place given to a client holding less).",
            labels=["reason"],
        )
        for reason in ("over_share", "preempted"):
            refused.add_metric([reason], self.state.forward_refused.get(reason, 0))
        yield from (requests, responses, durations, failures, broken, refused)

    def _cache(self) -> Iterator[Metric]:
        cache = self.state.cache
        if cache is None:
            return
        positive, negative = cache.entries_by_kind()
        entries = GaugeMetricFamily(
            "coredns_cache_entries", "The number of elements in the cache.", labels=["server", "type"]
        )
        entries.add_metric([self.server, "success"], positive)
        entries.add_metric([self.server, "denial"], negative)
        hits = CounterMetricFamily("coredns_cache_hits", "The count of cache hits.", labels=["server", "type", "view"])
        hits.add_metric([self.server, "success", VIEW], cache.hits - cache.denial_hits)
        hits.add_metric([self.server, "denial", VIEW], cache.denial_hits)
        misses = CounterMetricFamily("coredns_cache_misses", "The count of cache misses.", labels=["server", "view"])
        misses.add_metric([self.server, VIEW], cache.misses)
        evictions = CounterMetricFamily("kdns_cache_evictions", "Cached answers evicted to stay within the size.")
        evictions.add_metric([], cache.evictions)
        yield from (entries, hits, misses, evictions)

    def _kdns(self) -> Iterator[Metric]:
        state = self.state
        events = CounterMetricFamily("kdns_watch_events", "Watch events applied, per watcher.", labels=["resource"])
        relists = CounterMetricFamily("kdns_watch_relists", "Lists after the first, per watcher.", labels=["resource"])
        errors = CounterMetricFamily("kdns_watch_errors", "Failed API requests, per watcher.", labels=["resource"])
        since = GaugeMetricFamily(
            "kdns_watch_seconds_since_last_list",
            "Seconds since a list last completed, per watcher.",
            labels=["resource"],
        )
        now = self.clock()
        for name, watch in sorted(state.watches.items()):
            events.add_metric([name], watch.events)
            relists.add_metric([name], watch.relists)
            errors.add_metric([name], watch.errors)
            if watch.last_list is not None:
                since.add_metric([name], max(0.0, now - watch.last_list))
        yield from (events, relists, errors, since)
        programming = HistogramMetricFamily(
            "kdns_dns_programming_duration_seconds",
            "Seconds from a change in the cluster (an EndpointSlice's last-change-trigger-time, a "
            "Service's creation) to its answers being served, per kind of Service.",
            labels=["kind"],
        )
        for kind, histogram in sorted(list(state.programming.by_kind.items())):
            programming.add_metric([kind], _buckets(histogram), histogram.total)
        yield programming
        ready = GaugeMetricFamily("kdns_ready", "1 once every watcher has listed the cluster once.")
        ready.add_metric([], 1 if state.ready() else 0)
        names = GaugeMetricFamily("kdns_zone_names", "Names held in the zone index.")
        names.add_metric([], self.zone_names())
        dropped = CounterMetricFamily(
            "kdns_dropped_packets", "Packets that got no reply (responses, header fragments)."
        )
        dropped.add_metric([], state.queries.dropped)
        malformed = CounterMetricFamily("kdns_malformed_queries", "Queries answered FORMERR.")
        malformed.add_metric([], state.queries.by_rcode(1))
        tcp = GaugeMetricFamily("kdns_tcp_connections", "Open TCP connections.")
        tcp.add_metric([], state.tcp_connections)
        refused = CounterMetricFamily(
            "kdns_tcp_refused", "TCP connections closed to admit another, over the cap (the one idle longest)."
        )
        refused.add_metric([], state.tcp_refused)
        buffer_closed = CounterMetricFamily(
            "kdns_tcp_buffer_closed",
            "TCP connections closed to keep every connection's buffers within their budget (the one holding most).",
        )
        buffer_closed.add_metric([], state.tcp_buffer_closed)
        http_closed = CounterMetricFamily(
            "kdns_http_connections_closed",
            "HTTP connections (health, ready, metrics) closed to admit another (the one idle longest).",
        )
        http_closed.add_metric([], state.http_closed_for_room)
        reloads = CounterMetricFamily("kdns_reloads", "Configurations reloaded and applied.")
        reloads.add_metric([], state.reloads)
        reload_failures = CounterMetricFamily("kdns_reload_failures", "New configurations refused.")
        reload_failures.add_metric([], state.reload_failures)
        # CoreDNS's reload plugin's own name for the same count, for its alerts and dashboards.
        coredns_reload_failures = CounterMetricFamily(
            "coredns_reload_failed", "Counts the number of failed reload attempts."
        )
        coredns_reload_failures.add_metric([], state.reload_failures)
        workers = GaugeMetricFamily("kdns_workers", "Processes answering queries (--workers).")
        workers.add_metric([], state.workers)
        restarts = CounterMetricFamily("kdns_worker_restarts", "Worker processes that ended and were started again.")
        restarts.add_metric([], state.worker_restarts)
        by_worker = CounterMetricFamily(
            "kdns_worker_replies",
            "Replies sent by each running worker since it started: how evenly the kernel spreads clients.",
            labels=["worker"],
        )
        for number, count in sorted(state.replies_by_worker.items()):
            by_worker.add_metric([str(number)], count)
        yield from (ready, names, dropped, malformed, tcp, refused, reloads, reload_failures, workers, restarts)
        yield from (by_worker, buffer_closed, http_closed, coredns_reload_failures)
        yield from self._stores()

    def _stores(self) -> Iterator[Metric]:
        """Every bounded store (README "Budgets"): its budget, what it holds, its evictions."""
        budget = GaugeMetricFamily("kdns_store_budget_bytes", "Bytes a bounded store may hold.", labels=["store"])
        held = GaugeMetricFamily("kdns_store_bytes", "Bytes a bounded store holds now.", labels=["store"])
        entries = GaugeMetricFamily("kdns_store_entries", "Entries a bounded store holds now.", labels=["store"])
        dropped = CounterMetricFamily(
            "kdns_store_dropped",
            "Entries a bounded store evicted, or did not take in, to stay within its budget.",
            labels=["store"],
        )
        for name, size in sorted(self.state.store_sizes().items()):
            budget.add_metric([name], size.budget)
            held.add_metric([name], size.size)
            entries.add_metric([name], size.entries)
            dropped.add_metric([name], size.dropped)
        yield from (budget, held, entries, dropped)


def _buckets(histogram: Histogram) -> list[tuple[str, float]]:
    return [("+Inf" if bound == float("inf") else repr(bound), count) for bound, count in histogram.cumulative()]


def metrics_route(collector: StateCollector) -> Callable[[], Response]:
    """The `/metrics` endpoint: the text exposition format, built at each scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)

    def metrics() -> Response:
        # The classic text format (0.0.4), which every Prometheus reads, as CoreDNS serves it.
        return Response(200, generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4)

    return metrics


def wall_clock() -> float:
    """Unix time, for `kdns_watch_seconds_since_last_list` (the watchers record Unix times)."""
    return time.time()
