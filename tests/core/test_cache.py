"""The forward cache's own counters (kdns/core/cache.py), which the metrics publish as CoreDNS's
`coredns_cache_*`; lifetimes, eviction, serve-stale and prefetch are in test_upstream.py."""

from __future__ import annotations

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
