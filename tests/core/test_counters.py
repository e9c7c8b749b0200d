"""The counters the query path and the watchers keep (kdns/core/counters.py)."""

from __future__ import annotations

import pytest

from kdns.core.counters import (
    COUNTED_TYPES,
    LATENCY_BUCKETS,
    OTHER_TYPE,
    PROGRAMMING_BUCKETS,
    Histogram,
    ProgrammingDurations,
    QueryCounters,
    RequestDurations,
    counted_type,
)


def test_histogram_buckets_are_inclusive_upper_bounds_as_prometheus_le() -> None:
    histogram = Histogram()
    histogram.observe(0.00025)  # exactly the first bound: in the first bucket
    histogram.observe(0.0003)
    histogram.observe(100.0)  # past the last bound: +Inf only
    assert histogram.counts[0] == 1 and histogram.counts[1] == 1 and histogram.counts[-1] == 1
    cumulative = histogram.cumulative()
    assert cumulative[0] == (0.00025, 1) and cumulative[1] == (0.0005, 2)
    assert cumulative[-2] == (LATENCY_BUCKETS[-1], 2) and cumulative[-1] == (float("inf"), 3)
    assert histogram.total == pytest.approx(100.00055)


def test_coredns_time_buckets_and_programming_buckets() -> None:
    # CoreDNS: plugin.TimeBuckets = ExponentialBuckets(0.00025, 2, 16); programming latency
    # ExponentialBuckets(0.001, 2, 20).
    assert tuple(0.00025 * 2**power for power in range(16)) == LATENCY_BUCKETS
    assert len(PROGRAMMING_BUCKETS) == 20 and PROGRAMMING_BUCKETS[0] == 0.001
    assert PROGRAMMING_BUCKETS[-1] == pytest.approx(524.288)


def test_merged_histograms_add_up_and_refuse_other_bounds() -> None:
    first, second = Histogram(), Histogram()
    first.observe(0.001)
    second.observe(0.001)
    second.observe(1.0)
    merged = Histogram.merged([first, second])
    assert sum(merged.counts) == 3 and merged.total == pytest.approx(1.002)
    with pytest.raises(ValueError):
        Histogram.merged([first, Histogram(PROGRAMMING_BUCKETS)])
    with pytest.raises(ValueError):
        Histogram(LATENCY_BUCKETS, [0, 1])


def test_request_durations_are_kept_per_query_type() -> None:
    durations = RequestDurations()
    durations.observe(1, 0.0001)
    durations.observe(1, 0.0002)
    durations.observe(28, 0.01)
    assert sum(durations.by_type[1].counts) == 2 and sum(durations.by_type[28].counts) == 1


def test_replies_are_counted_by_transport_family_type_and_rcode() -> None:
    counters = QueryCounters()
    counters.count(False, 33, 0)
    counters.count(True, 1, 3, family=2)
    assert counters.replies == {("udp", 1, 33, 0): 1, ("tcp", 2, 1, 3): 1}


def test_programming_latency_behind_the_api_servers_clock_counts_as_zero() -> None:
    programming = ProgrammingDurations()
    programming.observe("cluster_ip", -2.0)
    programming.observe("cluster_ip", 1.5)
    histogram = programming.by_kind["cluster_ip"]
    assert histogram.bounds == PROGRAMMING_BUCKETS
    assert histogram.counts[0] == 1 and histogram.total == 1.5


def test_every_query_type_folds_into_a_bounded_table() -> None:
    """Issue 17, K6: a query of each of the 65,536 types grew the counters to 65,536 keys a
    transport (35 MB), each worker's report to 8.4 MB, and each scrape to 300 ms on the event loop.
    Types CoreDNS does not name are counted as one, before any table is touched."""
    counters, durations = QueryCounters(), RequestDurations()
    for qtype in range(65536):
        for tcp in (False, True):
            counters.count(tcp, qtype, qtype % 16, 1 + qtype % 2)
        durations.observe(qtype, 0.001)
    assert len(counters.replies) <= 2 * 2 * 16 * 16 and len(durations.by_type) <= 16
    assert set(durations.by_type) == set(COUNTED_TYPES.values()) | {OTHER_TYPE}
    assert counted_type(28) == 28 and counted_type(65) == OTHER_TYPE
    assert ("udp", 1, 65, 1) not in counters.replies and counters.replies[("udp", 2, OTHER_TYPE, 1)] > 0
    assert counters.total() == 2 * 65536
