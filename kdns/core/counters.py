"""Plain integer counters the query path keeps, for the state seam (`kdns.state`) to publish.

Kept in the core because the handler counts as it answers: one dictionary update per query,
keyed by (transport, type, rcode), costs well under a microsecond; anything richer (labels,
histograms) is built when metrics are read, not per query.
"""

from __future__ import annotations

from dataclasses import dataclass, field

UDP = "udp"
TCP = "tcp"


@dataclass(slots=True)
class QueryCounters:
    """Replies by (transport, address family, query type, rcode); queries dropped with no reply.

    The family is 1 for IPv4 and 2 for IPv6 (IANA address family numbers, as CoreDNS labels
    them), told by the client's address: IPv6 socket addresses have four parts."""

    replies: dict[tuple[str, int, int, int], int] = field(default_factory=dict)
    dropped: int = 0  # responses, header fragments: no reply (never amplified)

    def count(self, tcp: bool, qtype: int, rcode: int, family: int = 1) -> None:
        key = (TCP if tcp else UDP, family, qtype, rcode)
        self.replies[key] = self.replies.get(key, 0) + 1

    def total(self) -> int:
        return sum(self.replies.values())

    def by_rcode(self, rcode: int) -> int:
        return sum(count for (_, _, _, code), count in self.replies.items() if code == rcode)

    def by_transport_type_rcode(self, transport: str, qtype: int, rcode: int) -> int:
        return sum(
            count
            for (proto, _, kind, code), count in self.replies.items()
            if (proto, kind, code) == (transport, qtype, rcode)
        )
