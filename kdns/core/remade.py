"""Replies made again with dnslib, off the hot path (an ExternalName's chase, a rewritten
question's reply): packed within what the client may take."""

from __future__ import annotations

from dnslib import QTYPE, DNSRecord


def packed_within(reply: DNSRecord, limit: int) -> bytes:
    """`reply` packed; if over `limit` bytes, TC set and whole records dropped from the end
    (additional, then authority, then answer) until it fits: as `wire.reply` cuts prepared
    answers, and CoreDNS (miekg/dns `Msg.Truncate`) does. The OPT record stays."""
    data = bytes(reply.pack())  # bytes, as every reply: the server tells replies from decisions by type
    if len(data) <= limit:
        return data
    reply.header.tc = 1
    opt = [rr for rr in reply.ar if rr.rtype == QTYPE.OPT]
    extra = [rr for rr in reply.ar if rr.rtype != QTYPE.OPT]
    while len(data) > limit and (extra or reply.auth or reply.rr):
        (extra or reply.auth or reply.rr).pop()
        reply.ar = extra + opt
        data = bytes(reply.pack())
    return data
