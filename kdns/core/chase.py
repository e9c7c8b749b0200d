"""ExternalName chasing: one reply with the service's CNAME followed by its target's records.

CoreDNS answers a query for an ExternalName service with the CNAME and what its target resolves
to (the spec's example does the same). Off the hot path, so assembled with dnslib: the target's
records come from another message, whose compression does not carry over byte for byte.
"""

from __future__ import annotations

from dnslib import CNAME, EDNS0, QTYPE, RR, DNSHeader, DNSQuestion, DNSRecord

from kdns.core import wire
from kdns.core.answer import Answer
from kdns.core.message import RD, TCP_LIMIT
from kdns.core.names import from_wire
from kdns.core.remade import packed_within
from kdns.core.stage import ReplyOptions


def compose(
    query: wire.Query,
    target_query: wire.Query,
    ttl: int,
    target: Answer,
    tcp: bool,
    options: ReplyOptions,
    max_ttl: int | None = None,
) -> bytes:
    """The reply to `query` (for an ExternalName service, or a name found by autopath): its
    CNAME to `target_query`'s name, then the records of `target`, the answer to `target_query`,
    under the target's rcode; with `max_ttl`, no record's TTL above it."""
    target_reply = wire.reply(target_query, target, TCP_LIMIT, options.max_udp, False)
    return compose_reply(query, target_query, ttl, target_reply, tcp, options, max_ttl)


def compose_reply(
    query: wire.Query,
    target_query: wire.Query,
    ttl: int,
    target_reply: bytes,
    tcp: bool,
    options: ReplyOptions,
    max_ttl: int | None = None,
) -> bytes:
    """`compose`, from the whole reply to `target_query` (as a stage after this one gave it)."""
    target_message = DNSRecord.parse(target_reply)
    if max_ttl is not None:
        for rr in (*target_message.rr, *target_message.auth, *target_message.ar):
            if rr.rtype != QTYPE.OPT:
                rr.ttl = min(rr.ttl, max_ttl)
    qname = from_wire(query.question[:-4]) + "."
    header = DNSHeader(
        id=query.id,
        qr=1,
        aa=1,  # the CNAME, at the name asked, is ours
        rd=int(bool(query.flags & RD)),
        ra=int(options.recursion_available),
        rcode=target_message.header.rcode,
    )
    reply = DNSRecord(header, q=DNSQuestion(qname, query.qtype, query.qclass))
    reply.add_answer(RR(qname, QTYPE.CNAME, ttl=ttl, rdata=CNAME(from_wire(target_query.key) + ".")))
    reply.add_answer(*target_message.rr)
    reply.add_auth(*target_message.auth)
    reply.add_ar(*(rr for rr in target_message.ar if rr.rtype != QTYPE.OPT))
    if query.edns is not None:
        reply.add_ar(EDNS0(udp_len=options.max_udp, flags="do" if query.edns.dnssec_ok else ""))
    return packed_within(reply, TCP_LIMIT if tcp else wire.udp_limit(query.edns, options.max_udp))
