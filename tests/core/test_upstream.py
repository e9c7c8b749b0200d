"""Upstream answers and the forward cache, without I/O: checking (RFC 5452), TTLs, negative caching
(RFC 2308), countdown and eviction with an injected clock, and the handler's forwarding decisions."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from kdns.core import message, wire
from kdns.core.answer import Answer
from kdns.core.cache import ForwardCache
from kdns.core.stage import ReplyOptions
from kdns.core.upstream import BadResponse, MalformedResponse, read_response, upstream_query
from kdns.pipeline import Pending, Pipeline
from tests.builders import bytes_of, pending_of, pipeline_of, store_of

NAME = "www.example.com."


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _query(name: str = NAME, rdtype: str = "A", **kwargs: Any) -> wire.Query:
    return wire.parse_query(dns.message.make_query(name, rdtype, **kwargs).to_wire())


def _upstream_answer(
    query: wire.Query,
    rcode: int = dns.rcode.NOERROR,
    answer: Sequence[dns.rrset.RRset] = (),
    authority: Sequence[dns.rrset.RRset] = (),
) -> tuple[int, bytes]:
    """(the ID kdns used, what the upstream sent back) for `query`."""
    query_id, packet = upstream_query(query)
    response = dns.message.make_response(dns.message.from_wire(packet))
    response.set_rcode(dns.rcode.Rcode(rcode))
    response.answer.extend(answer)
    response.authority.extend(authority)
    return query_id, response.to_wire(max_size=65535)


def _a(ttl: int, name: str = NAME, address: str = "192.0.2.1") -> dns.rrset.RRset:
    return dns.rrset.from_text(name, ttl, "IN", "A", address)


def _soa(ttl: int, minimum: int) -> dns.rrset.RRset:
    return dns.rrset.from_text("example.com.", ttl, "IN", "SOA", f"ns.example.com. host.example.com. 1 2 3 4 {minimum}")


# -- the query sent upstream, and checking what comes back ------------------------------------


def test_upstream_query_has_a_fresh_random_id_the_clients_question_and_edns() -> None:
    query = _query("WwW.Example.COM.", want_dnssec=True)
    ids = {upstream_query(query)[0] for _ in range(50)}
    assert len(ids) > 40
    sent = dns.message.from_wire(upstream_query(query)[1])
    assert sent.question[0].name.to_text() == "WwW.Example.COM."  # case kept, for 0x20 checks
    assert sent.edns == 0 and sent.ednsflags & dns.flags.DO
    assert sent.flags & dns.flags.RD


def test_response_with_another_id_or_question_or_no_qr_is_rejected() -> None:
    query = _query()
    query_id, response = _upstream_answer(query, answer=[_a(60)])
    with pytest.raises(BadResponse):
        read_response(response, (query_id + 1) % 65536, query.question, 0, 3600)
    other = _query("other.example.com.")
    with pytest.raises(BadResponse):
        read_response(response, query_id, other.question, 0, 3600)
    not_a_response = bytearray(response)
    not_a_response[2] &= 0x7F
    with pytest.raises(BadResponse):
        read_response(bytes(not_a_response), query_id, query.question, 0, 3600)
    with pytest.raises(BadResponse):
        read_response(response[:30], query_id, query.question, 0, 3600)


def test_response_question_is_compared_case_insensitively() -> None:
    query = _query()
    query_id, response = _upstream_answer(query, answer=[_a(60)])
    shouting = _query(NAME.upper())
    assert read_response(response, query_id, shouting.question, 0, 3600).answer_count == 1


def test_positive_answer_is_cached_for_its_smallest_ttl_within_the_clamps() -> None:
    query = _query()
    query_id, response = _upstream_answer(query, answer=[_a(300), _a(60, "cdn.example.com.", "192.0.2.2")])
    assert read_response(response, query_id, query.question, 0, 3600).cache_ttl == 60
    assert read_response(response, query_id, query.question, 120, 3600).cache_ttl == 120
    assert read_response(response, query_id, query.question, 0, 30).cache_ttl == 30


def test_negative_answers_are_cached_for_the_soa_minimum_per_rfc_2308() -> None:
    query = _query()
    query_id, nxdomain = _upstream_answer(query, dns.rcode.NXDOMAIN, authority=[_soa(900, 120)])
    assert read_response(nxdomain, query_id, query.question, 0, 3600).cache_ttl == 120
    query_id, nodata = _upstream_answer(query, authority=[_soa(50, 120)])
    assert read_response(nodata, query_id, query.question, 0, 3600).cache_ttl == 50
    query_id, bare = _upstream_answer(query, dns.rcode.NXDOMAIN)
    assert read_response(bare, query_id, query.question, 0, 3600).cache_ttl == 0  # no SOA: not cached


def test_servfail_is_cached_only_a_few_seconds_and_truncated_answers_not_at_all() -> None:
    query = _query()
    query_id, servfail = _upstream_answer(query, dns.rcode.SERVFAIL)
    assert read_response(servfail, query_id, query.question, 0, 3600).cache_ttl == 5
    query_id, response = _upstream_answer(query, answer=[_a(300)])
    truncated = bytearray(response)
    truncated[2] |= 0x02
    answer = read_response(bytes(truncated), query_id, query.question, 0, 3600)
    assert answer.truncated and answer.cache_ttl == 0


def test_upstream_opt_record_is_dropped() -> None:
    query = _query()
    query_id, packet = upstream_query(query)
    response = dns.message.make_response(dns.message.from_wire(packet))  # keeps EDNS: an OPT record
    response.answer.append(_a(60))
    answer = read_response(response.to_wire(), query_id, query.question, 0, 3600)
    assert (answer.answer_count, answer.authority_count, answer.additional_count) == (1, 0, 0)


# -- the cache -------------------------------------------------------------------------------------


def _cached(
    cache: ForwardCache, query: wire.Query, ttl: int = 60, rcode: int = dns.rcode.NOERROR, **kwargs: Any
) -> None:
    query_id, response = _upstream_answer(query, rcode=rcode, answer=[_a(ttl)], **kwargs)
    cache.put(ForwardCache.key(query), read_response(response, query_id, query.question, 0, 3600))


def _ttls(answer: Answer | None, query: wire.Query) -> list[int]:
    assert answer is not None
    reply = dns.message.from_wire(wire.reply(query, answer, 65535, 1232, True))
    return [rrset.ttl for rrset in reply.answer]


def test_cached_answer_ttls_count_down_and_expire() -> None:
    clock = Clock()
    cache = ForwardCache(100, clock)
    query = _query()
    _cached(cache, query, ttl=60)
    assert _ttls(cache.get(ForwardCache.key(query)), query) == [60]
    clock.now += 25.5
    assert _ttls(cache.get(ForwardCache.key(query)), query) == [35]
    clock.now += 35
    assert cache.get(ForwardCache.key(query)) is None


def test_cache_keys_on_lowercased_name_type_and_do_bit() -> None:
    cache = ForwardCache(100, Clock())
    _cached(cache, _query())
    assert cache.get(ForwardCache.key(_query(NAME.upper()))) is not None
    assert cache.get(ForwardCache.key(_query(rdtype="AAAA"))) is None
    assert cache.get(ForwardCache.key(_query(want_dnssec=True))) is None


def test_cache_evicts_the_least_recently_used_beyond_its_size() -> None:
    cache = ForwardCache(2, Clock())
    first, second, third = (_query(f"n{i}.example.com.") for i in range(3))
    _cached(cache, first)
    _cached(cache, second)
    assert cache.get(ForwardCache.key(first)) is not None  # first is now the most recently used
    _cached(cache, third)
    assert cache.get(ForwardCache.key(second)) is None
    assert cache.get(ForwardCache.key(first)) is not None and len(cache) == 2


def test_cache_of_size_zero_keeps_nothing() -> None:
    cache = ForwardCache(0, Clock())
    _cached(cache, _query())
    assert cache.get(ForwardCache.key(_query())) is None


# -- the pipeline's decisions --------------------------------------------------------------------


def _forwarding(clock: Clock) -> Pipeline:
    return pipeline_of(store_of(), options=ReplyOptions(recursion_available=True), cache=ForwardCache(100, clock))


def test_name_outside_the_zones_is_forwarded_then_answered_from_the_cache() -> None:
    clock = Clock()
    pipeline = _forwarding(clock)
    packet = dns.message.make_query(NAME, "A").to_wire()
    decision = pending_of(pipeline.answer(packet, False, None))
    asked = decision.ask.query
    assert asked.key == b"\x03www\x07example\x03com\x00"
    query_id, response = _upstream_answer(asked, answer=[_a(60)])
    first = dns.message.from_wire(
        bytes_of(pipeline.resume(decision, read_response(response, query_id, asked.question, 0, 3600)))
    )
    assert first.id == asked.id and first.flags & dns.flags.RA and not first.flags & dns.flags.AA
    again = dns.message.make_query("WWW.example.com.", "A")
    reply = dns.message.from_wire(bytes_of(pipeline.answer(again.to_wire(), False, None)))
    assert reply.id == again.id and reply.question[0].name.to_text() == "WWW.example.com."
    assert [item.address for item in reply.answer[0]] == ["192.0.2.1"]


def test_no_upstream_answer_is_servfail_and_nothing_is_cached() -> None:
    pipeline = _forwarding(Clock())
    decision = pending_of(pipeline.answer(dns.message.make_query(NAME, "A").to_wire(), False, None))
    reply = dns.message.from_wire(bytes_of(pipeline.resume(decision, None)))
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert isinstance(pipeline.answer(dns.message.make_query(NAME, "A").to_wire(), False, None), Pending)


def test_cluster_names_are_never_forwarded() -> None:
    pipeline = _forwarding(Clock())
    reply = pipeline.answer(dns.message.make_query("nope.default.svc.cluster.local", "A").to_wire(), False, None)
    assert dns.message.from_wire(bytes_of(reply)).rcode() == dns.rcode.NXDOMAIN
    reverse = pipeline.answer(dns.message.make_query("9.9.9.9.in-addr.arpa", "PTR").to_wire(), False, None)
    assert isinstance(reverse, Pending)


def test_forwarded_answer_too_large_for_the_client_sets_tc() -> None:
    clock = Clock()
    pipeline = _forwarding(clock)
    decision = pending_of(pipeline.answer(dns.message.make_query(NAME, "A", use_edns=False).to_wire(), False, None))
    many = [_a(60, NAME, f"192.0.2.{i}") for i in range(1, 60)]
    query_id, response = _upstream_answer(decision.ask.query, answer=many)
    answer = read_response(response, query_id, decision.ask.query.question, 0, 3600)
    reply = dns.message.from_wire(bytes_of(pipeline.resume(decision, answer)))
    assert reply.flags & dns.flags.TC


# -- ExternalName chasing ----------------------------------------------------------------------


def test_external_name_pointing_into_the_cluster_is_chased_in_the_zone() -> None:
    from tests.builders import ask, records, service

    store = store_of(
        service("prod", "web", ["10.96.0.5"]),
        service("prod", "alias", type_="ExternalName", external_name="web.prod.svc.cluster.local"),
    )
    reply = ask(store, "Alias.prod.svc.cluster.local", "A")
    assert records(reply) == [
        "alias.prod.svc.cluster.local. CNAME web.prod.svc.cluster.local.",
        "web.prod.svc.cluster.local. A 10.96.0.5",
    ]
    assert reply.question[0].name.to_text() == "Alias.prod.svc.cluster.local."
    assert reply.flags & dns.flags.AA
    assert records(ask(store, "alias.prod.svc.cluster.local", "CNAME")) == [
        "alias.prod.svc.cluster.local. CNAME web.prod.svc.cluster.local."
    ]


def test_external_name_pointing_outside_is_chased_upstream_and_cached() -> None:
    from tests.builders import service

    clock = Clock()
    store = store_of(service("prod", "pay", type_="ExternalName", external_name="www.example.com"))
    pipeline = pipeline_of(store, options=ReplyOptions(recursion_available=True), cache=ForwardCache(100, clock))
    query = dns.message.make_query("pay.prod.svc.cluster.local", "A", use_edns=True)
    decision = pending_of(pipeline.answer(query.to_wire(), False, None))
    asked = decision.ask.query
    assert asked.key == b"\x03www\x07example\x03com\x00"
    query_id, response = _upstream_answer(asked, answer=[_a(60)])
    answer = read_response(response, query_id, asked.question, 0, 3600)
    reply = dns.message.from_wire(bytes_of(pipeline.resume(decision, answer)))
    assert reply.id == query.id and reply.edns == 0
    assert [(rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype)) for rrset in reply.answer] == [
        ("pay.prod.svc.cluster.local.", "CNAME"),
        ("www.example.com.", "A"),
    ]
    again = pipeline.answer(query.to_wire(), False, None)  # the target's answer is now cached
    assert isinstance(again, bytes)
    assert len(dns.message.from_wire(again).answer) == 2


def test_external_name_chase_too_large_for_udp_keeps_the_whole_records_that_fit() -> None:
    from tests.builders import service

    store = store_of(service("prod", "pay", type_="ExternalName", external_name="www.example.com"))
    for use_edns in (False, True):
        options = ReplyOptions(recursion_available=True)
        pipeline = pipeline_of(store, options=options, cache=ForwardCache(100, Clock()))
        query = dns.message.make_query("pay.prod.svc.cluster.local", "A", use_edns=use_edns, payload=512)
        decision = pending_of(pipeline.answer(query.to_wire(), False, None))
        many = [_a(60, NAME, f"192.0.2.{i}") for i in range(1, 80)]
        query_id, response = _upstream_answer(decision.ask.query, answer=many)
        answer = read_response(response, query_id, decision.ask.query.question, 0, 3600)
        wire_reply = bytes_of(pipeline.resume(decision, answer))
        assert len(wire_reply) <= 512
        reply = dns.message.from_wire(wire_reply)
        assert reply.flags & dns.flags.TC and reply.answer[0].rdtype == dns.rdatatype.CNAME
        assert 10 < len(reply.answer[1]) < 79
        assert (reply.edns == 0) == use_edns


# -- serve-stale (RFC 8767) and prefetch --------------------------------------------------------


def test_expired_answer_is_served_stale_with_ttl_30_only_within_the_window() -> None:
    clock = Clock()
    cache = ForwardCache(100, clock, stale_for=60)
    query = _query()
    _cached(cache, query, ttl=10)
    key = ForwardCache.key(query)
    assert cache.get_stale(key) is None  # still fresh: not stale
    clock.now += 11
    assert cache.get(key) is None  # expired: asked upstream again ...
    assert _ttls(cache.get_stale(key), query) == [30]  # ... and served stale if that fails
    clock.now += 60
    assert cache.get_stale(key) is None
    no_stale = ForwardCache(100, clock)
    _cached(no_stale, query, ttl=10)
    clock.now += 11
    assert no_stale.get_stale(key) is None


def test_popular_entry_is_due_for_prefetch_once_in_its_last_tenth() -> None:
    clock = Clock()
    cache = ForwardCache(100, clock, prefetch=True)
    query = _query()
    key = ForwardCache.key(query)
    _cached(cache, query, ttl=100)
    cache.get(key)
    clock.now += 85
    cache.get(key)
    assert cache.prefetch_due == []  # 15 s of 100 left: not yet
    clock.now += 6
    cache.get(key)
    cache.get(key)
    assert cache.prefetch_due == [key]  # once, however often it is asked meanwhile


# -- hostile or broken upstream answers (issue 8: D4, D5, D9) -----------------------------------


def test_cache_keys_on_the_cd_bit_so_unvalidated_data_never_answers_a_validating_client() -> None:
    """RFC 4035 3.2.2 and 4.7; CoreDNS's cache keys on CD for the same reason."""
    cache = ForwardCache(100, Clock())
    checking_disabled = _query()._replace(flags=_query().flags | message.CD)
    _cached(cache, checking_disabled)
    assert cache.get(ForwardCache.key(checking_disabled)) is not None
    assert cache.get(ForwardCache.key(_query())) is None


def test_cd_bit_is_passed_upstream() -> None:
    query = _query()._replace(flags=_query().flags | message.CD)
    assert dns.message.from_wire(upstream_query(query)[1]).flags & dns.flags.CD


def test_served_ttls_never_exceed_the_time_left_in_the_cache() -> None:
    clock = Clock()
    cache = ForwardCache(100, clock)
    query = _query()
    query_id, response = _upstream_answer(query, answer=[_a(299)], authority=[_soa(299, 299)])
    answer = read_response(response, query_id, query.question, 0, 10)  # --cache-max-ttl 10
    assert answer.cache_ttl == 10
    cache.put(ForwardCache.key(query), answer)
    cached = cache.get(ForwardCache.key(query))
    assert cached is not None
    reply = dns.message.from_wire(wire.reply(query, cached, 65535, 1232, True))
    assert [rrset.ttl for rrset in reply.answer + reply.authority] == [10, 10]
    clock.now += 4
    assert _ttls(cache.get(ForwardCache.key(query)), query) == [6]
    # The first client, answered straight from upstream, gets the capped TTL too.
    first = dns.message.from_wire(wire.reply(query, answer.answer(), 65535, 1232, True))
    assert first.answer[0].ttl == 10


def test_ttl_with_the_top_bit_set_is_read_as_zero() -> None:
    """RFC 2181 8."""
    query = _query()
    query_id, response = _upstream_answer(query, answer=[_a(60)])
    raw = bytearray(response)
    ttl_at = 12 + len(query.question) + 6  # the answer's TTL, after its owner pointer, type and class
    raw[ttl_at : ttl_at + 4] = (2**31).to_bytes(4, "big")
    answer = read_response(bytes(raw), query_id, query.question, 0, 3600)
    assert answer.cache_ttl == 0  # not cached
    reply = dns.message.from_wire(wire.reply(query, answer.answer(), 65535, 1232, True))
    assert reply.answer[0].ttl == 0


def _a_record_response(query: wire.Query, rdata: bytes, owner: bytes = b"\xc0\x0c") -> tuple[int, bytes]:
    query_id, _packet = upstream_query(query)
    header = struct.pack("!HHHHHH", query_id, 0x8180, 1, 1, 0, 0)
    record = owner + struct.pack("!HHIH", 1, 1, 60, len(rdata)) + rdata
    return query_id, header + query.question + record


def test_malformed_upstream_answers_are_refused_not_relayed() -> None:
    """CoreDNS answers SERVFAIL for an upstream answer it cannot parse, and caches nothing."""
    query = _query()
    itself = 0xC000 | (12 + len(query.question))
    cases = [
        _a_record_response(query, b"\xc0\x00\x02"),  # A with 3 bytes of data
        _a_record_response(query, b"\xc0\x00\x02\x01\x05"),  # A with 5
        _a_record_response(query, b"\xc0\x00\x02\x01", owner=itself.to_bytes(2, "big")),  # points at itself
        _a_record_response(query, b"\xc0\x00\x02\x01", owner=b"\xc0\xff"),  # points past the message
        _a_record_response(query, b"\xc0\x00\x02\x01", owner=b"\x41abc\x00"),  # reserved label type
    ]
    for query_id, response in cases:
        with pytest.raises(MalformedResponse):
            read_response(response, query_id, query.question, 0, 3600)
    query_id, good = _a_record_response(query, b"\xc0\x00\x02\x01")
    assert read_response(good, query_id, query.question, 0, 3600).answer_count == 1
    query_id, response = cases[0]
    with pytest.raises(MalformedResponse):
        read_response(response + b"\x00", query_id, query.question, 0, 3600)


def test_names_inside_record_data_are_checked_too() -> None:
    query = _query()
    query_id, _packet = upstream_query(query)
    header = struct.pack("!HHHHHH", query_id, 0x8180, 1, 1, 0, 0)
    for rtype, data in ((5, b"\xc0\x40"), (12, b"\x03abc"), (33, b"\x00\x01"), (2, b"\x03www\x00\x00")):
        record = b"\xc0\x0c" + struct.pack("!HHIH", rtype, 1, 60, len(data)) + data
        with pytest.raises(MalformedResponse):
            read_response(header + query.question + record, query_id, query.question, 0, 3600)
    cname = b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 60, 2) + b"\xc0\x0c"
    assert read_response(header + query.question + cname, query_id, query.question, 0, 3600).answer_count == 1
