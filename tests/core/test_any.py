"""any (kdns/core/any.py): RFC 8482's HINFO for a query of type ANY, as CoreDNS's `any` makes it;
every other type goes on."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rdatatype

from kdns.core import wire
from kdns.core.any import HINFO_TTL, AnyStage
from kdns.core.stage import Reply, ReplyOptions, Request

NEXT = Reply(b"next stage")
OPTIONS = ReplyOptions()


def _serve(name: str, rdtype: str) -> Reply:
    query = wire.parse_query(dns.message.make_query(name, rdtype).to_wire())
    outcome = AnyStage(OPTIONS).serve(Request.of(query, False, None, OPTIONS), lambda request: NEXT)
    assert isinstance(outcome, Reply)
    return outcome


def test_any_gets_one_hinfo_record_under_the_name_as_asked_and_nothing_else() -> None:
    reply = dns.message.from_wire(_serve("Web.Example.", "ANY").message)
    assert len(reply.answer) == 1
    rrset = reply.answer[0]
    assert rrset.name.to_text() == "Web.Example." and rrset.rdtype == dns.rdatatype.HINFO
    assert rrset.ttl == HINFO_TTL == 8482
    assert rrset[0].cpu == b"ANY obsoleted" and rrset[0].os == b"See RFC 8482"
    assert not reply.flags & dns.flags.AA  # plugin/any: SetReply, not authoritative


def test_every_other_type_goes_on() -> None:
    for rdtype in ("A", "AAAA", "TXT", "HINFO"):
        assert _serve("web.example.", rdtype) is NEXT
