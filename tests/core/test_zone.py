"""The prepared-answer index (kdns/core/zone.py), driven directly: contributors, NXDOMAIN against
NODATA, the serial, and the generation that tells whoever keeps replies that they are stale."""

from __future__ import annotations

import ipaddress

from kdns.core import rdata
from kdns.core.message import NOERROR, NXDOMAIN
from kdns.core.names import to_wire
from kdns.core.zone import Zone

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
