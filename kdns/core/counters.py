"""Plain integer counters the query path keeps, for the state seam (`kdns.state`) to publish.

Kept in the core because every reply is counted as it is made: one dictionary update per query,
keyed by (transport, type, rcode), costs well under a microsecond; anything richer (labels,
histograms) is built when metrics are read, not per query.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

UDP = "udp"
TCP = "tcp"

# The query types counted by their own number: those CoreDNS's metrics name (plugin/pkg/dnstest's
# monitor). Every other type is counted as OTHER_TYPE before any table is touched, so that a
# client asking each of the 65,536 types grows no counter, histogram or report: every key of
# `QueryCounters.replies` is one of 2 transports x 2 families x 16 types x 16 rcodes (at most
# 1,024 keys, about 100 KB), and `RequestDurations` holds at most 16 histograms.
COUNTED_TYPES = {
    "A": 1,
    "NS": 2,
    "CNAME": 5,
    "SOA": 6,
    "PTR": 12,
    "MX": 15,
    "TXT": 16,
    "AAAA": 28,
    "SRV": 33,
    "NAPTR": 35,
    "DS": 43,
    "DNSKEY": 48,
    "IXFR": 251,
    "AXFR": 252,
    "ANY": 255,
}
OTHER_TYPE = 0  # every type not in COUNTED_TYPES (and a query whose type could not be read)
_COUNTED = frozenset(COUNTED_TYPES.values())


def counted_type(qtype: int) -> int:
    """The type a query is counted under: its own when CoreDNS names it, else OTHER_TYPE."""
    return qtype if qtype in _COUNTED else OTHER_TYPE


# Upper bounds, in seconds, of every latency histogram's buckets: CoreDNS's `plugin.TimeBuckets`
# (prometheus.ExponentialBuckets(0.00025, 2, 16)), so that dashboards' quantiles compare.
LATENCY_BUCKETS = (
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.004,
    0.008,
    0.016,
    0.032,
    0.064,
    0.128,
    0.256,
    0.512,
    1.024,
    2.048,
    4.096,
    8.192,
)


# Upper bounds of the DNS programming latency buckets, 1 ms to about 9 minutes: CoreDNS's
# (plugin/kubernetes metrics.go, prometheus.ExponentialBuckets(0.001, 2, 20)).
PROGRAMMING_BUCKETS = tuple(0.001 * 2**power for power in range(20))


@dataclass(slots=True)
class Histogram:
    """Counts of observations per bucket of `bounds` (plus a last, unbounded one: +Inf), and
    their sum. An observation is a binary search in C and one list update: about 0.1 µs."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)
        elif len(self.counts) != len(self.bounds) + 1:
            raise ValueError(f"{len(self.counts)} counts for {len(self.bounds)} bounds")

    def observe(self, seconds: float) -> None:
        # bisect_left: the first bound >= seconds, as Prometheus's `le` is inclusive.
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    @staticmethod
    def merged(histograms: list[Histogram]) -> Histogram:
        """One histogram holding every observation of `histograms` (which share their bounds)."""
        bounds = histograms[0].bounds if histograms else LATENCY_BUCKETS
        if any(histogram.bounds != bounds for histogram in histograms):
            raise ValueError("histograms with different bounds")
        counts = [sum(column) for column in zip(*(histogram.counts for histogram in histograms), strict=True)]
        return Histogram(bounds, counts, sum(histogram.total for histogram in histograms))

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or under it) per bucket, the last bound infinite."""
        running, buckets = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets


@dataclass(slots=True)
class RequestDurations:
    """How long each answered query took, from its arrival to its reply being sent, per query
    type (CoreDNS's `coredns_dns_request_duration_seconds{type}`). The shell measures; this only
    counts."""

    by_type: dict[int, Histogram] = field(default_factory=dict)

    def observe(self, qtype: int, seconds: float) -> None:
        histogram = self.by_type.get(qtype)  # a folded type, or an unfolded one not kept yet
        if histogram is None:
            histogram = self.histogram(qtype)
        histogram.observe(seconds)

    def histogram(self, qtype: int) -> Histogram:
        """The histogram of `qtype` (folded by `counted_type`), made on its first query (the UDP
        listener inlines `observe` with it, as that runs once per query)."""
        return self.by_type.setdefault(counted_type(qtype), Histogram())


@dataclass(slots=True)
class QueryCounters:
    """Replies by (transport, address family, query type, rcode); queries dropped with no reply.

    The family is 1 for IPv4 and 2 for IPv6 (IANA address family numbers, as CoreDNS labels
    them), told by the client's address: IPv6 socket addresses have four parts. The type is
    folded by `counted_type` and the rcode is the header's four bits: the table is bounded by
    construction (at most 1,024 keys), whatever clients ask."""

    replies: dict[tuple[str, int, int, int], int] = field(default_factory=dict)
    dropped: int = 0  # responses, header fragments: no reply (never amplified)
    autopath: int = 0  # queries answered from the client's search path (CoreDNS's autopath success)

    def count(self, tcp: bool, qtype: int, rcode: int, family: int = 1) -> None:
        qtype = qtype if qtype in _COUNTED else OTHER_TYPE  # `counted_type`, inlined
        key = (TCP if tcp else UDP, family, qtype, rcode)
        self.replies[key] = self.replies.get(key, 0) + 1

    def count_autopath(self) -> None:
        """A query answered from the client's search path (CoreDNS's autopath success)."""
        self.autopath += 1

    def total(self) -> int:
        return sum(self.replies.values())

    def by_rcode(self, rcode: int) -> int:
        return sum(count for (_, _, _, code), count in self.replies.items() if code == rcode)

    def by_transport_type_rcode(self, transport: str, qtype: int, rcode: int) -> int:
        return sum(
            count
            for (proto, _, kind, code), count in self.replies.items()
            if (proto, kind, code) == (transport, qtype, rcode)
        )


@dataclass(slots=True)
class ProgrammingDurations:
    """DNS programming latency: from a change's own time in the cluster (an EndpointSlice's
    last-change-trigger-time, a new Service's creation) to its answers being served, per kind of
    Service (CoreDNS measures headless Services only, as
    `coredns_kubernetes_dns_programming_duration_seconds{service_kind}`)."""

    by_kind: dict[str, Histogram] = field(default_factory=dict)

    def observe(self, kind: str, seconds: float) -> None:
        histogram = self.by_kind.get(kind)
        if histogram is None:
            histogram = self.by_kind[kind] = Histogram(PROGRAMMING_BUCKETS)
        histogram.observe(max(0.0, seconds))  # a clock behind the API server's is not negative time
