"""The prepared-answer index (kdns/core/zone.py), driven directly: contributors, NXDOMAIN against
NODATA, the serial, and the generation that tells whoever keeps replies that they are stale."""

from __future__ import annotations

import ipaddress

from kdns.core import rdata
from kdns.core.answer import Answer
from kdns.core.answer_table import SharedAnswer
from kdns.core.message import NOERROR, NXDOMAIN
from kdns.core.model import Kind
from kdns.core.names import to_wire
from kdns.core.zone import Zone
from tests.builders import Obj, endpoint, endpoint_slice, headless, namespace, service, store_of, upsert

WEB = to_wire("web.prod.svc.cluster.local")
NS_NAME = to_wire("prod.svc.cluster.local")


def _zone() -> Zone:
    zone = Zone("cluster.local", 30, None)
    zone.replace(("ns", "prod"), {NS_NAME: ()})
    zone.replace(("svc", "web"), {WEB: (rdata.address(ipaddress.ip_address("10.96.0.5")),)})
    return zone


def test_a_contributed_name_is_prepared_and_its_parents_exist() -> None:
    zone = _zone()
    assert (WEB, rdata.A) not in zone.prepared  # made when first asked ...
    answer = zone.answer(WEB, rdata.A)
    assert answer is not None and answer.rcode == NOERROR and answer.answer_count == 1
    assert zone.prepared[(WEB, rdata.A)] is answer  # ... and kept
    nodata = zone.answer(WEB, rdata.AAAA)
    assert nodata is not None and nodata.rcode == NOERROR and nodata.answer_count == 0
    parent = zone.answer(NS_NAME, rdata.A)
    assert parent is not None and parent.rcode == NOERROR  # an empty non-terminal: NODATA
    missing = zone.answer(to_wire("nope.prod.svc.cluster.local"), rdata.A)
    assert missing is not None and missing.rcode == NXDOMAIN and missing.authority_count == 1


def test_names_outside_the_zones_and_unheld_reverse_names_are_not_ours() -> None:
    zone = _zone()
    assert zone.answer(to_wire("www.example.com"), rdata.A) is None
    assert zone.answer(to_wire("9.9.9.9.in-addr.arpa"), rdata.PTR) is None  # falls through, as CoreDNS
    assert zone.in_zones(to_wire("x.cluster.local")) and not zone.in_zones(to_wire("x.example"))


def test_an_unheld_reverse_name_without_fallthrough_is_nxdomain_with_that_zones_soa_as_coredns() -> None:
    """CoreDNS's kubernetes plugin, a reverse zone without `fallthrough`: `errNoItems`, NXDOMAIN
    with the reverse zone's SOA (`ns.dns.in-addr.arpa. hostmaster.in-addr.arpa.`, names
    compressed against the question); asked at the reverse apex, that SOA."""
    zone = _zone()
    missing = zone.missing_reverse(to_wire("9.9.9.9.in-addr.arpa"))
    assert missing is not None and missing.rcode == NXDOMAIN and missing.authority_count == 1
    assert b"\x02ns\x03dns\xc0" in missing.records and b"\x0ahostmaster\xc0" in missing.records
    assert zone.missing_reverse(to_wire("nope.prod.svc.cluster.local")) is None  # the domain's own
    assert zone.missing_reverse(to_wire("www.example.com")) is None
    soa = zone.answer(to_wire("ip6.arpa"), rdata.SOA)
    assert soa is not None and soa.answer_count == 1
    assert b"\x02ns\x03dns\x03ip6\x04arpa\x00" in soa.records and b"cluster" not in soa.records


def test_an_answer_made_on_first_use_is_dropped_when_its_name_changes_and_made_again() -> None:
    zone = _zone()
    before = zone.answer(WEB, rdata.A)
    assert before is not None and zone.answer(WEB, rdata.A) is before  # kept once made
    zone.replace(("svc", "web"), {WEB: (rdata.address(ipaddress.ip_address("10.96.0.6")),)})
    assert (WEB, rdata.A) not in zone.prepared  # dropped by the change, not made again until asked
    after = zone.answer(WEB, rdata.A)
    assert after is not None and after is not before and b"\x0a\x60\x00\x06" in after.records
    zone.replace(("ns", "other"), {to_wire("other.svc.cluster.local"): ()})
    assert zone.prepared[(WEB, rdata.A)] is after  # another name's change leaves it alone


def test_an_srv_answer_made_on_first_use_carries_its_targets_addresses_as_they_are_then() -> None:
    zone = Zone("cluster.local", 30, None)
    target = to_wire("db-0.db.prod.svc.cluster.local")
    srv = to_wire("_pg._tcp.db.prod.svc.cluster.local")
    contribution = {
        srv: (rdata.srv(0, 100, 5432, target),),
        target: (rdata.address(ipaddress.ip_address("10.244.0.1")),),
    }
    zone.replace(("svc", "db"), contribution)
    first = zone.answer(srv, rdata.SRV)
    assert first is not None and first.additional_count == 1 and b"\x0a\xf4\x00\x01" in first.records
    contribution[target] = (rdata.address(ipaddress.ip_address("10.244.0.2")),)
    zone.replace(("svc", "db"), contribution)  # only the target changed: the SRV answer is dropped
    second = zone.answer(srv, rdata.SRV)
    assert second is not None and b"\x0a\xf4\x00\x02" in second.records
    assert b"\x0a\xf4\x00\x01" not in second.records


def test_withdrawing_a_contribution_removes_its_names() -> None:
    zone = _zone()
    zone.replace(("svc", "web"), {})
    answer = zone.answer(WEB, rdata.A)
    assert answer is not None and answer.rcode == NXDOMAIN and (WEB, rdata.A) not in zone.prepared


def test_every_change_moves_the_generation() -> None:
    zone = _zone()
    before = zone.generation
    zone.replace(("svc", "web"), {WEB: (rdata.address(ipaddress.ip_address("10.96.0.6")),)})
    after_replace = zone.generation
    zone.bump_serial(1)
    after_serial = zone.generation
    zone.touch()
    assert before < after_replace < after_serial < zone.generation


def test_the_serial_only_moves_forward_and_reaches_negative_answers() -> None:
    zone = _zone()
    zone.bump_serial(1_800_000_000)
    zone.bump_serial(1_800_000_000)  # two changes within a second
    assert zone.serial == 1_800_000_001
    negative = zone.answer(to_wire("nope.prod.svc.cluster.local"), rdata.A)
    assert negative is not None and (1_800_000_001).to_bytes(4, "big") in negative.records


def test_negative_answers_are_shared_by_names_of_the_same_length() -> None:
    zone = _zone()
    first = zone.answer(to_wire("aaaa.prod.svc.cluster.local"), rdata.A)
    same_length = zone.answer(to_wire("bbbb.prod.svc.cluster.local"), rdata.A)
    longer = zone.answer(to_wire("ccccc.prod.svc.cluster.local"), rdata.A)
    assert first is same_length and first is not longer  # the SOA points into the question


def _cluster() -> list[Obj]:
    return [
        namespace("prod"),
        service("prod", "web", ["10.96.0.5"], [{"name": "http", "port": 80, "protocol": "TCP"}]),
        headless("prod", "db", [{"name": "pg", "port": 5432, "protocol": "TCP"}]),
        endpoint_slice(
            "prod",
            "db-a",
            "db",
            [endpoint("10.244.0.1", hostname="db-0"), endpoint("10.244.0.2"), endpoint("10.244.0.3", ready=False)],
            ports=[{"name": "pg", "port": 5432, "protocol": "TCP"}],
        ),
        endpoint_slice("prod", "web-a", "web", [endpoint("10.244.1.1"), endpoint("10.244.1.2")]),
        service("prod", "ext", type_="ExternalName", external_name="example.com"),
    ]


def _every_question(zone: Zone) -> list[tuple[bytes, int]]:
    questions = {(to_wire(owner), rtype) for owner, rtype, _ in zone.names()}
    return sorted(questions | {(key, rdata.AAAA) for key, _ in questions} | {(WEB, rdata.ANY)})


def _wire(answer: Answer | None) -> tuple[object, ...] | None:
    return None if answer is None else (answer.flags, answer.counts, answer.records, answer.ends)


def test_a_shared_zone_answers_every_question_as_the_unshared_one_does() -> None:
    shared, plain = store_of(*_cluster()).zone, store_of(*_cluster()).zone
    assert shared.share() > 0 and shared.shared_entries() > 0
    assert not shared.prepared  # made into the table, not kept twice
    for key, qtype in _every_question(plain):
        answer = shared.answer(key, qtype)
        assert _wire(answer) == _wire(plain.answer(key, qtype)), (key, qtype)
    found = shared.answer(WEB, rdata.A)
    assert isinstance(found, SharedAnswer) and (WEB, rdata.A) not in shared.prepared
    assert shared.keeps(WEB, rdata.A, found)  # a reply made from it may be kept


def test_a_name_changed_after_sharing_is_answered_from_the_index_and_the_others_from_the_table() -> None:
    store = store_of(*_cluster())
    zone = store.zone
    zone.share()
    srv = to_wire("_http._tcp.web.prod.svc.cluster.local")
    upsert(store, service("prod", "web", ["10.96.0.9"], [{"name": "http", "port": 80, "protocol": "TCP"}]))
    answer = zone.answer(WEB, rdata.A)
    assert answer is not None and not isinstance(answer, SharedAnswer) and b"\x0a\x60\x00\x09" in answer.records
    assert zone.keeps(WEB, rdata.A, answer)
    db = zone.answer(to_wire("db.prod.svc.cluster.local"), rdata.A)
    assert isinstance(db, SharedAnswer)  # untouched by the change
    fresh = store_of(*_cluster()[:1], service("prod", "web", ["10.96.0.9"], [{"name": "http", "port": 80}]))
    assert _wire(zone.answer(srv, rdata.SRV)) == _wire(fresh.zone.answer(srv, rdata.SRV))
    store.delete(Kind.SERVICE, ("prod", "db"))
    gone = zone.answer(to_wire("db.prod.svc.cluster.local"), rdata.A)
    assert gone is not None and gone.rcode == NXDOMAIN


def test_the_table_is_dropped_once_more_than_half_its_entries_names_changed() -> None:
    """The names changed since sharing are a set bounded by half the table's entries: past it
    the table is dropped (and the set with it), and every name is answered from the index."""
    services = [service("prod", f"svc-{i}", [f"10.96.0.{i + 1}"]) for i in range(40)]
    store = store_of(namespace("prod"), *services)
    zone = store.zone
    zone.share()
    entries = zone.shared_entries()  # each Service: A and SRV at its name, SRV at _http._tcp, PTR
    assert entries >= 40 * 4
    for i in range(40):  # each change: the Service's name and its SRV name (its PTR unchanged)
        upsert(store, service("prod", f"svc-{i}", [f"10.96.0.{i + 1}"], [{"name": "http", "port": 81}]))
        assert zone.shared_entries() == (entries if 2 * (i + 1) <= entries // 2 else 0), i
    after = zone.answer(to_wire("svc-0.prod.svc.cluster.local"), rdata.SRV)
    assert after is not None and not isinstance(after, SharedAnswer) and b"\x00\x51" in after.records  # port 81
