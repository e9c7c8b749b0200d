"""loadbalance (kdns/core/loadbalance.py): a reply's address and MX records in turn, as CoreDNS's
`loadbalance` partitions them, without breaking a compression pointer, within its bounds; and the
pipeline serving the orders from its reply cache."""

from __future__ import annotations

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

from kdns.core import wire
from kdns.core.kept import kept_size
from kdns.core.loadbalance import MOST_ORDERS, ORDER_BYTES, LoadBalance, orders
from kdns.core.stage import Reply, ReplyOptions, Request
from kdns.pipeline import REORDER_EVERY, Pipeline
from tests.builders import bytes_of, endpoint, endpoint_slice, headless, pipeline_of, records, service, store_of


def _reply(*answer: str, additional: tuple[str, ...] = (), name: str = "db.example.", rdtype: str = "A") -> bytes:
    """A reply to `name` `rdtype` with records given in presentation format, as dnspython writes
    it (compressing names against earlier ones)."""
    query = dns.message.make_query(name, rdtype)
    response = dns.message.make_response(query)
    for text in answer:
        response.answer.append(dns.rrset.from_text(*text.split(maxsplit=4)))  # type: ignore[arg-type]
    for text in additional:
        response.additional.append(dns.rrset.from_text(*text.split(maxsplit=4)))  # type: ignore[arg-type]
    return response.to_wire()


def _in_order(message: bytes, section: str = "answer") -> list[str]:
    """`owner TYPE rdata` of a section's records in the order they are written (dnspython keeps
    it within a set, and sets in the order they first appear)."""
    parsed = dns.message.from_wire(message)
    return [
        f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} {item}"
        for rrset in getattr(parsed, section)
        for item in rrset
    ]


def _firsts(made: tuple[bytes, ...], section: str = "answer") -> list[str]:
    return [_in_order(order, section)[0] for order in made]


def _same_records(made: tuple[bytes, ...], original: bytes) -> None:
    want = dns.message.from_wire(original)
    for order in made:
        got = dns.message.from_wire(order)
        assert got.id == want.id and got.flags == want.flags
        for section in ("answer", "authority", "additional"):
            assert sorted(records(got, section)) == sorted(records(want, section))


def test_each_address_of_a_small_set_comes_first_in_turn() -> None:
    message = _reply(*(f"db.example. 30 IN A 10.0.0.{i}" for i in range(1, 5)))
    made = orders(message)
    assert len(made) == 4
    assert sorted(_firsts(made)) == [f"db.example. A 10.0.0.{i}" for i in range(1, 5)]
    _same_records(made, message)


def test_one_record_or_an_error_is_left_as_it_is() -> None:
    assert orders(_reply("db.example. 30 IN A 10.0.0.1")) == ()
    stage = LoadBalance()
    query = wire.parse_query(dns.message.make_query("db.example.", "A").to_wire())
    request = Request.of(query, False, None, ReplyOptions())
    failed = dns.message.make_response(dns.message.make_query("db.example.", "A"))
    failed.set_rcode(dns.rcode.NXDOMAIN)
    failed.answer.append(dns.rrset.from_text("db.example.", 30, "IN", "A", "10.0.0.1", "10.0.0.2"))
    message = failed.to_wire()
    assert stage.serve(request, lambda _: Reply(message)) == Reply(message)  # CoreDNS: rcode != NOERROR


def test_cnames_come_first_then_other_types_then_addresses_then_mx_as_coredns_orders_them() -> None:
    message = _reply(
        "db.example. 30 IN A 10.0.0.1",
        "db.example. 30 IN MX 10 mx1.example.",
        "db.example. 30 IN CNAME other.example.",
        "db.example. 30 IN TXT hello",
        "db.example. 30 IN AAAA 2001:db8::1",
        "db.example. 30 IN MX 20 mx2.example.",
        rdtype="ANY",
    )
    made = orders(message)
    assert len(made) == 2
    for order in made:
        types = [line.split()[1] for line in _in_order(order)]
        assert types[:2] == ["CNAME", "TXT"] and sorted(types[2:4]) == ["A", "AAAA"] and types[4:] == ["MX", "MX"]
    assert len({tuple(_in_order(order)[2:]) for order in made}) == 2  # the addresses and the MX rotate
    _same_records(made, message)


def test_a_section_another_name_points_into_keeps_its_order() -> None:
    # dnspython compresses each additional record's owner to a pointer into the answer's MX data:
    # moving the MX records would break those pointers, so only the additional section (which
    # nothing points into) is reordered.
    message = _reply(
        "db.example. 30 IN MX 10 mx1.example.",
        "db.example. 30 IN MX 20 mx2.example.",
        additional=("mx1.example. 30 IN A 10.0.1.1", "mx2.example. 30 IN A 10.0.1.2"),
        rdtype="MX",
    )
    made = orders(message)
    assert len(made) == 2
    assert {tuple(_in_order(order)) for order in made} == {tuple(_in_order(message))}
    assert len({tuple(_in_order(order, "additional")) for order in made}) == 2
    _same_records(made, message)


def test_a_large_set_gets_at_most_MOST_ORDERS_orders_spread_over_it_and_a_new_start_each_time() -> None:
    message = _reply(*(f"db.example. 30 IN A 10.0.{i // 250}.{i % 250 + 1}" for i in range(100)))
    made = orders(message)
    assert len(made) == MOST_ORDERS
    firsts = _firsts(made)
    assert len(set(firsts)) == MOST_ORDERS
    assert set(_firsts(orders(message, turn=1))).isdisjoint(firsts)  # a new set starts elsewhere
    _same_records(made, message)


def test_the_orders_of_a_large_reply_stay_within_ORDER_BYTES() -> None:
    message = _reply(*(f"db.example. 30 IN AAAA 2001:db8::{i:x}" for i in range(1, 2000)))
    made = orders(message)
    assert len(message) > ORDER_BYTES // 2
    assert len(made) == 2  # at least two orders, however large


def test_the_pipeline_serves_a_headless_services_addresses_first_in_turn_from_its_reply_cache() -> None:
    store = store_of(
        headless("prod", "db"),
        endpoint_slice("prod", "db-1", "db", [endpoint(f"10.244.1.{i}") for i in range(1, 6)]),
        service("prod", "web", ["10.96.0.5"]),
    )
    balanced = pipeline_of(store, loadbalance=True)
    plain = pipeline_of(store)
    query = dns.message.make_query("db.prod.svc.cluster.local", "A")

    def first(pipeline: Pipeline) -> str:
        return _in_order(bytes_of(pipeline.answer(query.to_wire(), False, ("10.0.0.1", 5353))))[0]

    assert len({first(plain) for _ in range(10)}) == 1  # the same first address to every client
    firsts = [first(balanced) for _ in range(10)]
    assert len(set(firsts)) == 5  # each of the five, in turn
    assert len(balanced.kept[0]) == 1  # served from the one kept reply
    kept = next(iter(balanced.kept[0].entries.items()))
    assert len(kept[1].orders) == 5 and balanced.kept[0].size == kept_size(*kept)
    assert kept_size(*kept) > 5 * len(kept[1].body)  # every order counted in the reply cache's budget
    web = dns.message.make_query("web.prod.svc.cluster.local", "A").to_wire()
    balanced.answer(web, False, None)
    assert not next(reversed(balanced.kept[0].entries.values())).orders  # one record: one order


def test_a_balanced_reply_is_made_again_every_REORDER_EVERY_hits() -> None:
    store = store_of(
        headless("prod", "db"),
        endpoint_slice("prod", "db-1", "db", [endpoint(f"10.244.1.{i}") for i in range(1, 40)]),
    )
    pipeline = pipeline_of(store, loadbalance=True)
    query = dns.message.make_query("db.prod.svc.cluster.local", "A", use_edns=0, payload=4096).to_wire()
    first_address = len(query) - 11 + 12  # the question, the first record's owner (a pointer) and fixed part
    firsts = set()
    for _ in range(3 * REORDER_EVERY):
        reply = bytes_of(pipeline.answer(query, False, None))
        firsts.add(reply[first_address : first_address + 4])
    assert _in_order(reply)[0].endswith(".".join(map(str, reply[first_address : first_address + 4])))
    assert len(firsts) > MOST_ORDERS  # 39 addresses: more come first than one set of orders holds
