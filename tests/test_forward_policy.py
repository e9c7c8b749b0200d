"""Upstream order per policy, and down upstreams last; stub-domain routing by longest suffix."""

from __future__ import annotations

from collections import Counter

from kdns.address import SocketAddress
from kdns.config import ForwardOptions, Policy
from kdns.core.names import to_wire
from kdns.forward import Forwarder

A, B, C = (SocketAddress(f"127.0.0.{i}", 53) for i in (1, 2, 3))


def _forwarder(policy: Policy, stubs: dict[str, list[SocketAddress]] | None = None) -> Forwarder:
    return Forwarder([A, B, C], stubs or {}, ForwardOptions(policy=policy))


def _first(forwarder: Forwarder) -> SocketAddress:
    return forwarder._ordered(forwarder.default)[0].address


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
    forwarder.default[0].failed()
    forwarder.default[0].failed()
    assert forwarder.default[0].down
    assert [u.address for u in forwarder._ordered(forwarder.default)] == [B, C, A]
    forwarder.default[0].succeeded()
    assert [u.address for u in forwarder._ordered(forwarder.default)] == [A, B, C]


def test_stub_domains_route_by_longest_suffix_on_label_boundaries() -> None:
    d, e = SocketAddress("127.0.0.4", 53), SocketAddress("127.0.0.5", 53)
    forwarder = _forwarder(Policy.SEQUENTIAL, {"corp.example": [d], "eu.corp.example": [e]})

    def route(name: str) -> list[SocketAddress]:
        return [u.address for u in forwarder.route(to_wire(name))]

    assert route("db.eu.corp.example") == [e]
    assert route("db.corp.example") == [d]
    assert route("corp.example") == [d]
    assert route("notcorp.example") == [A, B, C]
    assert route("example") == [A, B, C]
