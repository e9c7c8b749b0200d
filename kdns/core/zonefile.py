"""The zone as RFC 1035 master-file text, for `kdns dump`: what kdns would answer, readably.

Records are decoded and printed by dnslib, so the text is an independent reading of the bytes
the zone serves.
"""

from __future__ import annotations

from dnslib import CLASS, QTYPE, RDMAP, RR, DNSBuffer

from kdns.core import rdata
from kdns.core.names import from_wire
from kdns.core.zone import Zone


def render(zone: Zone) -> str:
    """Every record of the zone, sorted by name (rightmost label first) and type."""
    entries = [(zone.domain, rdata.SOA, [zone.soa()]), *zone.names()]
    entries.sort(key=lambda entry: (tuple(reversed(entry[0].split("."))), entry[1]))
    reverse = ", ".join(from_wire(apex) for apex in zone.apexes[1:])
    lines = [f"; kdns zone for {zone.domain} and the reverse zones {reverse}, serial {zone.serial}"]
    for owner, _type, records in entries:
        for record in records:
            lines.append(_line(owner, record, zone.ttl))
    return "\n".join(lines) + "\n"


def _line(owner: str, record: rdata.Record, ttl: int) -> str:
    parser = RDMAP[QTYPE.get(record.rtype)]  # the zone holds only types dnslib knows
    parsed = parser.parse(DNSBuffer(record.rdata), len(record.rdata))
    rr = RR(rname=owner + ".", rtype=record.rtype, rclass=CLASS.IN, ttl=ttl, rdata=parsed)
    return str(rr.toZone())
