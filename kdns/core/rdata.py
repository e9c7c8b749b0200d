"""Resource records as the zone holds them: a type and ready-encoded RDATA.

RDATA is encoded here directly (RFC 1035 3.3, RFC 3596, RFC 2782) rather than through dnslib's
record classes because the zone encodes one record per endpoint on every rebuild, and a 100k
endpoint cluster must build in seconds; dnslib does the decoding for `kdns dump` and the tests.
Names inside RDATA are never compressed, so an encoded record is valid in any message.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

from kdns.core.model import IPAddress
from kdns.core.names import to_wire

A = 1
NS = 2
CNAME = 5
SOA = 6
PTR = 12
HINFO = 13
MX = 15
TXT = 16
AAAA = 28
SRV = 33
DNAME = 39
OPT = 41
ANY = 255
IXFR = 251
AXFR = 252

CLASS_IN = 1

# Record types whose data is, or holds, one domain name that may be compressed (RFC 3597 4: the
# types of RFC 1035; SRV, RFC 2782, is read the same way), with the fixed bytes before it. SOA's
# data holds two (RFC 1035 3.3.13). In any other type's data no name is compressed (RFC 3597 4).
NAME_IN_RDATA = {NS: 0, CNAME: 0, PTR: 0, DNAME: 0, MX: 2, SRV: 6}


class Record(NamedTuple):
    """One record without owner and TTL: those come from where the zone stores it.

    A named tuple rather than a frozen dataclass: a large cluster makes hundreds of thousands of
    them per build, and a frozen dataclass's constructor costs several times a tuple's."""

    rtype: int
    rdata: bytes


def address(ip: IPAddress) -> Record:
    return Record(A if ip.version == 4 else AAAA, ip.packed)


def pointer(rtype: int, target: str) -> Record:
    """A record whose RDATA is one domain name: CNAME, PTR, NS."""
    return Record(rtype, to_wire(target))


def srv(priority: int, weight: int, port: int, target_wire: bytes) -> Record:
    return Record(SRV, struct.pack("!HHH", priority, weight, port) + target_wire)


def txt(*strings: str) -> Record:
    out = bytearray()
    for text in strings:
        raw = text.encode()
        out.append(len(raw))
        out += raw
    return Record(TXT, bytes(out))


@dataclass(frozen=True, slots=True)
class SOAFields:
    """The SOA of a zone kdns answers for (CoreDNS's values, plugin/pkg/dnsutil and kubernetes)."""

    mname: str
    rname: str
    serial: int
    refresh: int = 7200
    retry: int = 1800
    expire: int = 86400
    minimum: int = 30  # the negative-caching TTL (RFC 2308 5): set to the zone's TTL

    def record(self) -> Record:
        times = struct.pack("!IIIII", self.serial & 0xFFFFFFFF, self.refresh, self.retry, self.expire, self.minimum)
        return Record(SOA, to_wire(self.mname) + to_wire(self.rname) + times)


def encode_rr(owner_wire: bytes, record: Record, ttl: int) -> bytes:
    """One resource record on the wire; `owner_wire` may be a 2-byte compression pointer."""
    return owner_wire + struct.pack("!HHIH", record.rtype, CLASS_IN, ttl, len(record.rdata)) + record.rdata


def srv_targets(record: Record) -> bytes:
    """The wire-form target name of an SRV record (for its additional-section addresses)."""
    return record.rdata[6:]
