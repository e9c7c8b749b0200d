"""What a stage of a server block is given and gives back (CoreDNS's plugin chain, in kdns's terms).

A server block is a set of zones with an ordered chain of stages (`kdns.core.blocks`); a query
goes to the block of the most specific zone that holds its name, and walks that block's stages:
each has one job and serves a `Request` with `serve(request, next)`, answering it or handing it
to `next`. The outcome is a `Reply` (the bytes to send, and whether the reply cache may keep
them), or an `Ask`: a question for the upstreams, with what to do with their answer (`then`),
which is again an outcome. Stages are pure: the pipeline (`kdns.pipeline`) asks the transport
and calls `then`; a stage that needs several answers (autopath, an ExternalName's target)
chains them through `then`, so nothing climbs back up the chain.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from kdns.core import wire
from kdns.core.answer import Answer
from kdns.core.cache import CacheKey
from kdns.core.message import DEFAULT_MAX_UDP, TCP_LIMIT
from kdns.core.upstream import ForwardedAnswer

ClientAddress = tuple[str, int] | tuple[str, int, int, int]  # IPv4, IPv6 socket addresses


@dataclass(frozen=True, slots=True)
class ReplyOptions:
    """How every reply is made: the largest UDP reply (and what OPT advertises), and whether RA
    is set (kdns forwards what is not its own)."""

    max_udp: int = DEFAULT_MAX_UDP
    recursion_available: bool = False


class Request(NamedTuple):
    """One query on its way through a block's stages: as parsed and checked, how it came (TCP or
    UDP), from whom, and the largest reply it may get (a client's UDP limit; TCP_LIMIT for a
    question a stage asks on its behalf, whose reply it takes apart)."""

    query: wire.Query
    tcp: bool
    client: ClientAddress | None
    limit: int

    @classmethod
    def of(cls, query: wire.Query, tcp: bool, client: ClientAddress | None, options: ReplyOptions) -> Request:
        return cls(query, tcp, client, TCP_LIMIT if tcp else wire.udp_limit(query.edns, options.max_udp))

    def asking(self, target: bytes) -> Request:
        """The same question for `target` (wire form), answered in full: for a stage that
        answers with a CNAME to it and its records."""
        query = self.query
        target_query = wire.Query(
            query.id, query.flags, target + query.question[-4:], target, query.qtype, query.qclass, query.edns
        )
        return Request(target_query, self.tcp, self.client, TCP_LIMIT)


class FromZone(NamedTuple):
    """A reply made from an answer the zone holds: the same bytes serve the same question until
    the zone changes."""


class FromCache(NamedTuple):
    """A reply made from the forward cache's answer `served` for `key`: the same bytes serve the
    same question while the cache serves that same answer (its TTLs move once a second)."""

    key: CacheKey
    served: Answer


KEEP_FROM_ZONE = FromZone()


class Reply(NamedTuple):
    """The bytes to send, and whether (and on what terms) the reply cache may keep them."""

    message: bytes
    keep: FromZone | FromCache | None = None
    # The same reply in other orders, `message` first, for the reply cache to serve in turn
    # (`kdns.core.loadbalance`); () when it has one order.
    orders: tuple[bytes, ...] = ()


class Ask(NamedTuple):
    """Ask the upstreams of `upstreams` (a group of the transport) `query`, over TCP if `tcp`,
    then `then(their answer, or None when every one failed)`."""

    query: wire.Query
    tcp: bool
    upstreams: int
    then: Then


Outcome = Reply | Ask
Next = Callable[[Request], Outcome]
Then = Callable[[ForwardedAnswer | None], Outcome]


class Stage(Protocol):
    """One job of a server block: answer `request`, or hand it to `next`."""

    def serve(self, request: Request, next: Next) -> Outcome: ...


def status(request: Request, rcode: int, options: ReplyOptions) -> Reply:
    """A reply with `rcode` and no records (never kept)."""
    return Reply(wire.status_reply(request.query, rcode, options.max_udp, options.recursion_available))


def answered(request: Request, answer: Answer, options: ReplyOptions, keep: FromZone | FromCache | None) -> Reply:
    """`answer` as the reply to `request`, cut to its limit."""
    query = request.query
    message = wire.reply(query, answer, request.limit, options.max_udp, options.recursion_available)
    return Reply(message, keep)


def then_reply(outcome: Outcome, change: Callable[[Reply], Outcome]) -> Outcome:
    """`change` applied to the reply `outcome` comes to, once every upstream answer it waits for
    has come: how a stage works on what the stages after it answered, asks included."""
    if isinstance(outcome, Reply):
        return change(outcome)
    inner = outcome.then
    return outcome._replace(then=lambda answer: then_reply(inner(answer), change))
