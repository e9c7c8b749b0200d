"""Upstream order per policy, and down upstreams last; a name's server block (stub domains) by
the most specific zone that holds it."""

from __future__ import annotations

from collections import Counter

from kdns.address import SocketAddress
from kdns.config import ForwardOptions, Policy
from kdns.core.cache import ForwardCache
from kdns.core.names import to_wire
from kdns.forward import Forwarder
from tests.builders import pipeline_of, store_of

A, B, C = (SocketAddress(f"127.0.0.{i}", 53) for i in (1, 2, 3))


def _forwarder(policy: Policy) -> Forwarder:
    return Forwarder([[A, B, C]], ForwardOptions(policy=policy))


def _first(forwarder: Forwarder) -> SocketAddress:
    return forwarder._ordered(forwarder.groups[0])[0].address


def test_sequential_always_starts_with_the_first_upstream() -> None:
    forwarder = _forwarder(Policy.SEQUENTIAL)
    assert {_first(forwarder) for _ in range(20)} == {A}


def test_round_robin_takes_turns() -> None:
    forwarder = _forwarder(Policy.ROUND_ROBIN)
    assert [_first(forwarder) for _ in range(6)] == [A, B, C, A, B, C]


def test_random_spreads_over_every_upstream() -> None:
    forwarder = _forwarder(Policy.RANDOM)
    counts = Counter(_first(forwarder) for _ in range(3000))
    assert set(counts) == {A, B, C} and min(counts.values()) > 800


def test_down_upstreams_are_tried_last_but_still_tried() -> None:
    forwarder = _forwarder(Policy.SEQUENTIAL)
    default = forwarder.groups[0]
    default[0].failed()
    default[0].failed()
    assert default[0].down
    assert [u.address for u in forwarder._ordered(default)] == [B, C, A]
    default[0].succeeded()
    assert [u.address for u in forwarder._ordered(default)] == [A, B, C]


def test_stub_domains_are_blocks_chosen_by_the_most_specific_zone_on_label_boundaries() -> None:
    """CoreDNS's rule: the server block of the most specific zone that holds the name."""
    blocks = pipeline_of(
        store_of(), cache=ForwardCache(10, lambda: 0.0), stub_domains=("corp.example", "eu.corp.example")
    ).blocks

    def block(name: str) -> tuple[str, ...]:
        return blocks.of(to_wire(name)).zones

    assert block("db.eu.corp.example") == ("eu.corp.example",)
    assert block("db.corp.example") == ("corp.example",)
    assert block("corp.example") == ("corp.example",)
    assert block("notcorp.example") == (".",)
    assert block("example") == (".",)
    assert block("web.prod.svc.cluster.local") == ("cluster.local", "in-addr.arpa", "ip6.arpa")
    assert block("5.0.96.10.in-addr.arpa") == ("cluster.local", "in-addr.arpa", "ip6.arpa")
    assert blocks.of(to_wire("db.eu.corp.example")).upstreams == 2 and blocks.of(to_wire("x.example")).upstreams == 0
