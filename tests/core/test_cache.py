"""The forward cache's own counters (kdns/core/cache.py), which the metrics publish as CoreDNS's
`coredns_cache_*`; lifetimes, eviction, serve-stale and prefetch are in test_upstream.py."""

from __future__ import annotations

import tracemalloc

import dns.message
import dns.rcode
import dns.rrset

from kdns.core import wire
from kdns.core.cache import ForwardCache
from kdns.core.upstream import ForwardedAnswer, read_response


def _forwarded(name: str, negative: bool = False) -> tuple[wire.Query, ForwardedAnswer]:
    asked = dns.message.make_query(name, "A")
    query = wire.parse_query(asked.to_wire())
    response = dns.message.make_response(asked)
    if negative:
        response.set_rcode(dns.rcode.NXDOMAIN)
        soa = "ns.example.com. host.example.com. 1 2 3 4 60"
        response.authority.append(dns.rrset.from_text("example.com.", 60, "IN", "SOA", soa))
    else:
        response.answer.append(dns.rrset.from_text(name + ".", 300, "IN", "A", "192.0.2.1"))
    return query, read_response(response.to_wire(), asked.id, query.question, 0, 3600)


def test_hits_denial_hits_misses_inserts_and_entries_by_kind_are_counted() -> None:
    cache = ForwardCache(10, lambda: 0.0)
    positive, positive_answer = _forwarded("a.example.com")
    negative, negative_answer = _forwarded("b.example.com", negative=True)
    assert cache.get(ForwardCache.key(positive)) is None
    cache.put(ForwardCache.key(positive), positive_answer)
    cache.put(ForwardCache.key(negative), negative_answer)
    for _ in range(3):
        assert cache.get(ForwardCache.key(positive)) is not None
    assert cache.get(ForwardCache.key(negative)) is not None
    assert (cache.hits, cache.denial_hits, cache.misses, cache.inserts) == (4, 1, 1, 2)
    assert cache.entries_by_kind() == (1, 1) and len(cache) == 2


def test_evictions_are_counted() -> None:
    cache = ForwardCache(2, lambda: 0.0)
    for name in ("a.example.com", "b.example.com", "c.example.com"):
        query, answer = _forwarded(name)
        cache.put(ForwardCache.key(query), answer)
    assert cache.evictions == 1 and len(cache) == 2


def test_the_same_answer_object_is_served_within_a_second_and_a_new_one_after() -> None:
    """The handler's reply cache relies on it: a kept forwarded reply is sent again only while
    `get` returns the very object it was made from."""
    now = 0.0
    cache = ForwardCache(10, lambda: now)
    query, answer = _forwarded("a.example.com")
    cache.put(ForwardCache.key(query), answer)
    first = cache.get(ForwardCache.key(query))
    now = 0.9
    assert cache.get(ForwardCache.key(query)) is first
    now = 1.0
    assert cache.get(ForwardCache.key(query)) is not first


def test_negative_answers_held_apart_keep_their_own_capacity() -> None:
    """`kdns node-cache`: CoreDNS's cache `success` and `denial` capacities, each an LRU of its own:
    a burst of NXDOMAINs never evicts a positive answer."""
    cache = ForwardCache(2, lambda: 0.0, denial_size=1)
    positive, positive_answer = _forwarded("a.example.com")
    cache.put(ForwardCache.key(positive), positive_answer)
    for index in range(5):
        negative, negative_answer = _forwarded(f"n{index}.example.com", negative=True)
        cache.put(ForwardCache.key(negative), negative_answer)
    assert cache.get(ForwardCache.key(positive)) is not None
    assert cache.get(ForwardCache.key(negative)) is not None  # the last one
    assert cache.entries_by_kind() == (1, 1) and len(cache) == 2 and cache.evictions == 4


def test_a_name_that_changes_kind_is_held_once_in_its_kinds_lru() -> None:
    cache = ForwardCache(5, lambda: 0.0, denial_size=5)
    query, positive_answer = _forwarded("a.example.com")
    _, negative_answer = _forwarded("a.example.com", negative=True)
    cache.put(ForwardCache.key(query), positive_answer)
    cache.put(ForwardCache.key(query), negative_answer)
    assert cache.entries_by_kind() == (0, 1)
    answer = cache.get(ForwardCache.key(query))
    assert answer is not None and not answer.answer_count


def test_negative_answers_are_cached_no_longer_than_their_own_cap() -> None:
    asked = dns.message.make_query("gone.example.com", "A")
    query = wire.parse_query(asked.to_wire())
    response = dns.message.make_response(asked)
    response.set_rcode(dns.rcode.NXDOMAIN)
    soa = "ns.example.com. host.example.com. 1 2 3 4 600"
    response.authority.append(dns.rrset.from_text("example.com.", 600, "IN", "SOA", soa))
    capped = read_response(response.to_wire(), asked.id, query.question, 0, 30, max_negative_ttl=5)
    assert capped.cache_ttl == 5 and max(capped.ttls) == 5  # what clients are told too
    assert read_response(response.to_wire(), asked.id, query.question, 0, 30).cache_ttl == 30


def _many(name: str, count: int) -> tuple[wire.Query, ForwardedAnswer]:
    """An answer of `count` A records with TTLs over 256 (Python keeps only small ints shared)."""
    asked = dns.message.make_query(name, "A", use_edns=0)
    query = wire.parse_query(asked.to_wire())
    response = dns.message.make_response(asked)
    addresses = [f"192.0.{i // 250}.{i % 250}" for i in range(count)]
    response.answer.append(dns.rrset.from_text_list(name + ".", 3000, "IN", "A", addresses))
    return query, read_response(response.to_wire(max_size=65535), asked.id, query.question, 0, 3600)


def test_an_entrys_counted_size_is_at_least_what_the_cache_holds_for_it() -> None:
    now = 0.0
    cache = ForwardCache(100_000, lambda: now, max_bytes=1 << 30)
    for count in (1, 8, 100):
        before_bytes = cache.bytes_by_kind()[0]
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        for i in range(200):
            query, answer = _many(f"n{i}-{count}.example.com", count)
            key = ForwardCache.key(query)
            cache.put(key, answer)
            now += 1.5
            assert cache.get(key) is not None  # served with lowered TTLs: a copy of its records
        del query, answer
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        held = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        counted = cache.bytes_by_kind()[0] - before_bytes
        assert held <= counted, f"{count} records: held {held / 200:.0f} bytes an entry, counted {counted / 200:.0f}"


def test_the_cache_stays_within_its_bytes_whatever_the_entry_count() -> None:
    """Issue 17, K2: 10,000 names with 60 KB answers took the node cache to 803 MB: it was bounded
    by count only. Now each LRU is bounded in bytes too, the least recently used going first, and
    an answer over a sixteenth of the budget is relayed but not cached."""
    budget = 400_000
    cache = ForwardCache(10_000, lambda: 0.0, max_bytes=budget, denial_size=10_000, denial_max_bytes=budget // 4)
    for i in range(300):
        query, answer = _many(f"n{i}.example.com", 40)
        cache.put(ForwardCache.key(query), answer)
        negative, denial = _forwarded(f"x{i}.example.com", negative=True)
        cache.put(ForwardCache.key(negative), denial)
        positive_bytes, negative_bytes = cache.bytes_by_kind()
        assert positive_bytes <= budget and negative_bytes <= budget // 4
    assert cache.evictions > 0 and cache.get(ForwardCache.key(query)) is not None  # the newest stays
    huge, answer = _many("huge.example.com", 600)
    cache.put(ForwardCache.key(huge), answer)
    assert cache.get(ForwardCache.key(huge)) is None and cache.too_large == 1


def test_keep_ttl_serves_one_answer_with_the_stored_ttls_until_it_expires() -> None:
    """CoreDNS's `keepttl`: the answer as stored, the same object (the pipeline keeps its reply
    until `served` says: the entry's expiry, not the next second)."""
    now = 0.0
    cache = ForwardCache(10, lambda: now, keep_ttl=True)
    query, answer = _forwarded("a.example.com")
    key = ForwardCache.key(query)
    cache.put(key, answer)
    first = cache.get(key)
    now = 250.0
    assert cache.get(key) is first
    served = cache.served(key)
    assert served is not None and served[1] == 300.0
    now = 300.0
    assert cache.get(key) is None
