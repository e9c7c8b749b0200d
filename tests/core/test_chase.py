"""ExternalName chasing (kdns/core/chase.py): the CNAME, then the target's records, in one reply."""

from __future__ import annotations

import ipaddress

import dns.flags
import dns.message
import dns.rcode

from kdns.core import chase, rdata, wire
from kdns.core.answer import Answer
from kdns.core.names import to_wire
from kdns.core.stage import ReplyOptions
from kdns.core.zone import Zone


def _target_answer(ttl: int) -> tuple[wire.Query, wire.Query, Answer]:
    asked = dns.message.make_query("ext.prod.svc.cluster.local", "A", use_edns=0)
    query = wire.parse_query(asked.to_wire())
    target = to_wire("www.example.com")
    target_query = wire.Query(
        query.id, query.flags, target + query.question[-4:], target, query.qtype, query.qclass, query.edns
    )
    zone = Zone("example.com", ttl, None)
    zone.replace("t", {target: (rdata.address(ipaddress.ip_address("192.0.2.7")),)})
    answer = zone.answer(target, rdata.A)
    assert answer is not None
    return query, target_query, answer


def test_the_reply_is_the_cname_then_the_targets_records_under_the_askers_id() -> None:
    query, target_query, target = _target_answer(60)
    reply = dns.message.from_wire(chase.compose(query, target_query, 30, target, False, ReplyOptions()))
    assert reply.id == query.id and reply.flags & dns.flags.AA and reply.rcode() == dns.rcode.NOERROR
    cname, address = reply.answer
    assert cname.name.to_text() == "ext.prod.svc.cluster.local." and cname.ttl == 30
    assert cname[0].target.to_text() == "www.example.com."
    assert address.name.to_text() == "www.example.com." and address[0].address == "192.0.2.7"
    assert reply.edns >= 0  # the client's EDNS is answered with ours


def test_recursion_available_and_rd_are_reported_as_asked() -> None:
    query, target_query, target = _target_answer(60)
    options = ReplyOptions(recursion_available=True)
    reply = dns.message.from_wire(chase.compose(query, target_query, 30, target, False, options))
    assert reply.flags & dns.flags.RA and reply.flags & dns.flags.RD
