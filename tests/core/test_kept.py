"""The reply cache's store (kdns/core/kept.py): its size is what the process holds for it, and it
never holds more than its budget."""

from __future__ import annotations

import tracemalloc

import dns.message

from kdns.core.kept import KeptReplies, KeptReply
from kdns.pipeline import Pipeline
from tests.builders import endpoint, endpoint_slice, headless, pipeline_of, service, store_of


def _measured(handler: Pipeline, queries: list[bytes], tcp: bool) -> tuple[int, int]:
    """(bytes tracemalloc saw the pipeline keep for `queries`, the bytes its store counts)."""
    for kept in handler.kept:
        kept.clear()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for query in queries:
        handler.answer(query, tcp, ("10.0.0.1", 5353))
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    held = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return held, handler.kept[tcp].size


def test_a_kept_replys_counted_size_is_at_least_what_it_holds() -> None:
    store = store_of(
        service("prod", "web", ["10.96.0.5"]),
        headless("prod", "db"),
        endpoint_slice("prod", "db-1", "db", [endpoint(f"10.244.1.{i}") for i in range(1, 40)]),
    )
    handler = pipeline_of(store, reply_cache_bytes=1 << 30)
    small = [dns.message.make_query(f"n{i}.prod.svc.cluster.local", "A").to_wire() for i in range(3000)]
    large = [
        dns.message.make_query("db.prod.svc.cluster.local", "A", use_edns=0, payload=600 + i).to_wire()
        for i in range(3000)
    ]
    for queries, tcp in ((small, False), (large, False), (large, True)):
        held, counted = _measured(handler, queries, tcp)
        assert len(handler.kept[tcp]) == 3000
        assert held <= counted, f"held {held / 3000:.0f} bytes a reply, counted {counted / 3000:.0f}"


def test_a_kept_reply_of_several_orders_counts_at_least_what_it_holds() -> None:
    store = store_of(
        headless("prod", "db"),
        endpoint_slice("prod", "db-1", "db", [endpoint(f"10.244.1.{i}") for i in range(1, 6)]),
    )
    handler = pipeline_of(store, reply_cache_bytes=1 << 30, loadbalance=True)
    queries = [
        dns.message.make_query("db.prod.svc.cluster.local", "A", use_edns=0, payload=600 + i).to_wire()
        for i in range(2000)
    ]
    held, counted = _measured(handler, queries, False)
    assert all(len(reply.orders) == 5 for reply in handler.kept[0].entries.values())
    assert held <= counted, f"held {held / 2000:.0f} bytes a reply, counted {counted / 2000:.0f}"


def test_the_store_never_passes_its_budget_and_evicts_the_oldest_first() -> None:
    kept = KeptReplies(10_000)
    for i in range(500):
        kept.keep(b"%d" % i, KeptReply(b"x" * 100, 1, ("udp", 1, 1, 0), ("udp", 2, 1, 0), None, None))
        assert kept.size <= 10_000
    assert b"499" in kept.entries and b"0" not in kept.entries
    assert kept.evictions == 500 - len(kept)
    kept.keep(b"big", KeptReply(b"x" * 1000, 1, ("udp", 1, 1, 0), ("udp", 2, 1, 0), None, None))
    assert b"big" not in kept.entries  # over 1/16 of the budget: answered, never kept
