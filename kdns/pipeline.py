"""The pipeline: the one owner of a query's life, from the bytes a listener read to the bytes it
sends back.

A listener calls `Pipeline.answer(packet, tcp, client)` and gets the reply (bytes), nothing (a
packet that must not be answered), or a `Pending` to await when the reply waits on upstream
answers. In between, in this order:

1. The reply cache (`kdns.core.kept`): a question asked before, byte for byte after its ID, gets
   the reply kept for it with its own ID: a dictionary lookup and a concatenation. This is the
   hot path; nothing below runs for it.
2. Parsing: a malformed query gets FORMERR (or no reply at all, `kdns.core.wire`); classes other
   than IN and zone transfers are REFUSED.
3. The server block of the most specific zone holding the name (`kdns.core.blocks`), and its
   stages in order (`kdns.core.stage`): the cluster zone (with autopath before it), the forward
   cache, loop detection, forwarding. They answer, or ask a question of the upstreams.
4. Admission: a question for the upstreams takes a place among `--max-concurrent` (shared fairly
   among clients by the transport), or is REFUSED at once; then the transport asks, and the
   stage that asked makes the next step of the answer, until there is a reply.
5. Keeping the reply when the stage that made it allows (`Reply.keep`), counting it (by
   transport, family, type and rcode), timing it (from the call to the reply made) and logging
   it (`--log-queries`). A query whose handling raised is answered SERVFAIL, logged and counted.

Stages that vary by client (autopath) mark their replies as not to be kept; loadbalance, which
varies the order of a reply's records, gives several orders of it, and a hit serves them in turn.
"""

from __future__ import annotations

import logging
import random
import secrets
import struct
from bisect import bisect_left
from collections.abc import Awaitable, Sequence
from time import perf_counter
from typing import Protocol

import trio

from kdns.core import rdata, wire
from kdns.core.blocks import ServerBlocks
from kdns.core.budgets import StoreSize
from kdns.core.cache import CacheKey, ForwardCache
from kdns.core.counters import LATENCY_BUCKETS, TCP, UDP, counted_type
from kdns.core.kept import KeptReplies, KeptReply
from kdns.core.loop import LoopProbes
from kdns.core.message import CD, RCODE_MASK, RD, REFUSED, SERVFAIL
from kdns.core.names import to_wire
from kdns.core.stage import Ask, ClientAddress, FromCache, Reply, ReplyOptions, Request, status
from kdns.core.upstream import UPSTREAM_UDP_SIZE, ForwardedAnswer
from kdns.core.zone import Zone
from kdns.forward import Preempted
from kdns.logs import QueryLog
from kdns.state import State

log = logging.getLogger(__name__)

# Seconds between looks at the cache's answers due for a refresh: the refresh window is the last
# tenth of a TTL (3 s of kubeadm's 30), so half a second is soon enough, and costs nothing.
PREFETCH_POLL = 0.5
# A kept reply of several orders (`loadbalance`) is made again after about this many of its hits,
# its rotations starting elsewhere: a group larger than `loadbalance.MOST_ORDERS` then has every
# record first in turn over time, for the cost of one reply made per REORDER_EVERY served.
REORDER_EVERY = 1024
# A kept reply's counter keys, per transport, type and rcode: shared, as few combinations occur.
_COUNTER_KEYS: dict[tuple[str, int, int], tuple[tuple[str, int, int, int], tuple[str, int, int, int]]] = {}


class Background(Protocol):
    """A task a stage needs running beside the pipeline (`HostsFile.run`)."""

    async def __call__(self, *, task_status: trio.TaskStatus[None] = ...) -> None: ...


class Transport(Protocol):
    """What the pipeline asks of the upstreams (`kdns.forward.Forwarder`)."""

    upstream_names: tuple[str, ...]

    def admit(self, client: str) -> object | None: ...

    def release(self, admission: object) -> None: ...

    async def ask(self, query: wire.Query, tcp: bool, upstreams: int, admission: object) -> ForwardedAnswer | None: ...

    async def probe(self, upstream: str, name: str) -> None: ...


class Pending:
    """A query waiting for upstream answers: call and await it for the reply."""

    __slots__ = ("admission", "ask", "client", "packet", "pipeline", "request", "started")

    def __init__(
        self,
        pipeline: Pipeline,
        packet: bytes,
        request: Request,
        ask: Ask,
        admission: object | None,
        client: ClientAddress | None,
        started: float,
    ) -> None:
        self.pipeline = pipeline
        self.packet = packet
        self.request = request
        self.ask = ask  # the first question for the upstreams
        self.admission = admission  # its place in flight (None without a transport)
        self.client = client
        self.started = started

    def __call__(self) -> Awaitable[bytes]:
        return self.pipeline.asking(self)


class Pipeline:
    """Answers queries for one process: the reply cache, the server blocks and their stages, the
    transport to the upstreams (None: nothing is asked upstream), and the state it counts in."""

    def __init__(
        self,
        blocks: ServerBlocks,
        options: ReplyOptions,
        state: State,
        *,
        zone: Zone | None = None,
        cache: ForwardCache | None = None,
        transport: Transport | None = None,
        query_log: QueryLog | None = None,
        reply_cache_bytes: int,
        probes: LoopProbes | None = None,
        background: Sequence[Background] = (),
    ) -> None:
        """`zone` (if any): its changes empty the reply cache; `cache`: the forward cache its
        kept replies come from and whose popular answers `run` refreshes; `probes`: the loop
        probes `run` sends through every upstream; `background`: what else its stages need
        running (a hosts file followed), started by `run`."""
        self.blocks = blocks
        self.options = options
        self.state = state
        self.counters = state.queries
        self._zone = zone
        self._cache = cache
        self.transport = transport
        self._query_log = query_log
        self._probes = probes
        self._background = tuple(background)
        self._durations = state.durations
        self._timed = state.durations is not None or query_log is not None
        # The reply cache: every reply a stage allows to be kept, by the query's bytes after its
        # ID, per transport (a UDP reply may be cut to fit), within half of `reply_cache_bytes`
        # each. A reply made from the zone serves until the zone changes (`Zone.generation`); one
        # made from a forward cache answer while the cache serves that same answer: its TTLs move
        # once a second, and until then a hit costs one clock read and no LRU lookup.
        half = reply_cache_bytes // 2
        self.kept = (KeptReplies(half), KeptReplies(half))  # UDP, TCP
        self._kept = (self.kept[0].entries, self.kept[1].entries)  # read on the hot path
        self._kept_generation = zone.generation if zone is not None else 0
        self._turn = 0  # replies served from their orders (`loadbalance`): which order is next
        state.add_stores("pipeline", self._kept_sizes)

    def _kept_sizes(self) -> dict[str, StoreSize]:
        return {"reply_cache_udp": self.kept[0].figures(), "reply_cache_tcp": self.kept[1].figures()}

    # -- a query's life ----------------------------------------------------------------------

    def answer(self, packet: bytes, tcp: bool, client: ClientAddress | None) -> bytes | Pending | None:
        """The reply to `packet` from `client`; a `Pending` to await when it waits on upstream
        answers; None when it must not be answered (a response, a fragment of a header)."""
        started = perf_counter() if self._timed else 0.0
        zone = self._zone
        if zone is not None and zone.generation != self._kept_generation:
            self._forget_replies(zone.generation)
        hit = self._kept[tcp].get(packet[2:])
        if hit is not None and hit.cache_key is not None:
            cache = self._cache
            assert cache is not None
            now = cache.clock()
            if hit.entry is None or now >= hit.served_until or not cache.kept_hit(hit.entry, now):
                hit = None  # its TTLs moved on, or a newer answer replaced it: made again below
        if hit is not None:
            body, qtype, ipv4_key, ipv6_key, _, _, _, _, orders = hit
            if orders:  # `loadbalance`: the reply's orders in turn
                turn = self._turn = self._turn + 1
                body = orders[turn % len(orders)]
                if not turn % REORDER_EVERY:
                    self.kept[tcp].drop(packet[2:])  # made again, its rotations from a new start
            replies = self.counters.replies
            key = ipv6_key if client is not None and len(client) == 4 else ipv4_key
            replies[key] = replies.get(key, 0) + 1  # `QueryCounters.count`, inlined
            reply = packet[:2] + body
            if started:  # `_finished`, inlined: this is the path of nearly every query
                took = perf_counter() - started
                durations = self._durations
                if durations is not None:
                    histogram = durations.by_type.get(qtype)
                    if histogram is None:
                        histogram = durations.histogram(qtype)
                    histogram.counts[bisect_left(LATENCY_BUCKETS, took)] += 1
                    histogram.total += took
                if self._query_log is not None and client is not None:
                    self._query_log.record(client, packet, reply, tcp, took)
            return reply
        try:
            return self._answer(packet, tcp, client, started)
        except Exception:
            return self._failed(packet, tcp, client, started)

    def _answer(self, packet: bytes, tcp: bool, client: ClientAddress | None, started: float) -> bytes | Pending | None:
        family = _family(client)
        try:
            query = wire.checked(packet, wire.parse_query(packet))
        except wire.QueryError as error:
            options = self.options
            reply = wire.error_reply(error, options.max_udp, options.recursion_available)
            if reply is None:
                self.counters.dropped += 1
                return None
            self.counters.count(tcp, 0, error.rcode & RCODE_MASK, family)  # type unknown: 0
            self._finished(0, client, packet, reply, tcp, started)
            return reply
        request = Request.of(query, tcp, client, self.options)
        if query.qclass != rdata.CLASS_IN or query.qtype in (rdata.AXFR, rdata.IXFR):
            # Only class IN is served; no zone transfers (CoreDNS needs its `transfer` plugin).
            outcome: Reply | Ask = status(request, REFUSED, self.options)
        else:
            outcome = self.blocks.of(query.key).serve(request)
        if isinstance(outcome, Reply):
            return self._replied(packet, request, outcome, started)
        transport = self.transport
        admission = transport.admit(client[0] if client is not None else "") if transport is not None else None
        if transport is not None and admission is None:
            # CoreDNS's max_concurrent: REFUSED at once (its client holds its share or more).
            return self._replied(packet, request, status(request, REFUSED, self.options), started)
        return Pending(self, packet, request, outcome, admission, client, started)

    async def asking(self, pending: Pending) -> bytes:
        """Ask the upstreams what `pending` waits on, step after step, until the reply is made;
        REFUSED if its place in flight is given to a client holding fewer."""
        transport = self.transport
        assert transport is not None and pending.admission is not None
        request = pending.request
        try:
            try:
                reply = await self._steps(transport, pending.ask, pending.admission)
            finally:
                transport.release(pending.admission)
            return self._replied(
                pending.packet, request, reply or status(request, REFUSED, self.options), pending.started
            )
        except Exception:
            return self._failed(pending.packet, request.tcp, pending.client, pending.started) or b""

    @staticmethod
    async def _steps(transport: Transport, ask: Ask, admission: object) -> Reply | None:
        """Ask, and make the next step of, until a reply; None if the place was preempted."""
        while True:
            try:
                forwarded = await transport.ask(ask.query, ask.tcp, ask.upstreams, admission)
            except Preempted:
                return None
            except Exception:
                log.exception("error forwarding a query")
                forwarded = None
            outcome = ask.then(forwarded)
            if isinstance(outcome, Reply):
                return outcome
            ask = outcome

    def resume(self, pending: Pending, forwarded: ForwardedAnswer | None) -> bytes | Pending:
        """The next step of `pending` given the upstreams' answer to its question, without a
        transport (for tests and for `kdns explain`): the reply, or the next `Pending`."""
        outcome = pending.ask.then(forwarded)
        if isinstance(outcome, Reply):
            return self._replied(pending.packet, pending.request, outcome, pending.started)
        return Pending(self, pending.packet, pending.request, outcome, None, pending.client, pending.started)

    def _replied(self, packet: bytes, request: Request, outcome: Reply, started: float) -> bytes:
        """Keep (if allowed), count, time and log the reply to `request`; its bytes."""
        message = outcome.message
        query, tcp = request.query, request.tcp
        rcode = message[3] & RCODE_MASK
        if outcome.keep is not None:
            self._keep(packet, query.qtype, rcode, tcp, outcome)
        self.counters.count(tcp, query.qtype, rcode, _family(request.client))
        self._finished(query.qtype, request.client, packet, message, tcp, started)
        return message

    def _keep(self, packet: bytes, qtype: int, rcode: int, tcp: bool, outcome: Reply) -> None:
        """Keep `outcome` (a reply whose `keep` allows it) for the question `packet` asks."""
        keep = outcome.keep
        counted = counted_type(qtype)  # as `QueryCounters.count` files it
        transport = TCP if tcp else UDP
        counter_keys = _COUNTER_KEYS.get((transport, counted, rcode))
        if counter_keys is None:
            counter_keys = (transport, 1, counted, rcode), (transport, 2, counted, rcode)
            _COUNTER_KEYS[(transport, counted, rcode)] = counter_keys
        cache_key: CacheKey | None = None
        served = None
        entry = None
        served_until = 0.0
        if isinstance(keep, FromCache):
            assert self._cache is not None
            serving = self._cache.served(keep.key)
            if serving is None or serving[0].served is not keep.served:
                return  # the cache no longer serves that answer
            cache_key, served, (entry, served_until) = keep.key, keep.served, serving
        orders = tuple(order[2:] for order in outcome.orders)
        body = orders[0] if orders else outcome.message[2:]  # the message sent is the first order
        self.kept[tcp].keep(
            packet[2:], KeptReply(body, counted, *counter_keys, cache_key, served, entry, served_until, orders)
        )

    def _finished(
        self, qtype: int, client: ClientAddress | None, packet: bytes, reply: bytes, tcp: bool, started: float
    ) -> None:
        """File the query's duration (CoreDNS's request duration, by type) and log it."""
        if not self._timed:
            return
        took = perf_counter() - started
        if self._durations is not None:
            self._durations.observe(qtype, took)
        if self._query_log is not None and client is not None:
            self._query_log.record(client, packet, reply, tcp, took)

    def _failed(self, packet: bytes, tcp: bool, client: ClientAddress | None, started: float) -> bytes | None:
        """SERVFAIL for a query whose handling raised (counted as any reply): logged, and kdns
        keeps serving."""
        self.state.panics += 1
        log.exception("error answering a %s query from %s", "TCP" if tcp else "UDP", client[0] if client else "?")
        try:
            query = wire.checked(packet, wire.parse_query(packet))
        except wire.QueryError:
            self.counters.dropped += 1
            return None
        options = self.options
        reply = wire.status_reply(query, SERVFAIL, options.max_udp, options.recursion_available)
        self.counters.count(tcp, query.qtype, SERVFAIL, _family(client))
        self._finished(query.qtype, client, packet, reply, tcp, started)
        return reply

    def _forget_replies(self, generation: int) -> None:
        """The zone changed: no reply made before may be sent again."""
        for kept in self.kept:
            kept.clear()
        self._kept_generation = generation

    # -- in the background -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send a loop probe through every upstream (CoreDNS's `loop`), and refresh the forward
        cache's popular answers before they expire (prefetch), until cancelled."""
        async with trio.open_nursery() as nursery:
            transport = self.transport
            if transport is not None and self._probes is not None:
                for upstream in transport.upstream_names:
                    name = f"{secrets.token_hex(8)}.{secrets.token_hex(8)}.kdns-loop-probe"
                    self._probes.add(to_wire(name), upstream)
                    nursery.start_soon(transport.probe, upstream, name)
            if transport is not None and self._cache is not None and self._cache.prefetch:
                nursery.start_soon(self._prefetch, transport, self._cache)
            for task in self._background:
                await nursery.start(task)
            task_status.started()

    async def _prefetch(self, transport: Transport, cache: ForwardCache) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                await trio.sleep(PREFETCH_POLL)
                for key in cache.take_prefetch_due():
                    upstreams = self.blocks.of(key[0]).upstreams
                    admission = transport.admit("")  # refreshes count against max_concurrent like any query
                    if upstreams is not None and admission is not None:
                        nursery.start_soon(self._refresh, transport, cache, key, upstreams, admission)

    async def _refresh(
        self, transport: Transport, cache: ForwardCache, key: CacheKey, upstreams: int, admission: object
    ) -> None:
        """Ask upstream again for a cached answer close to expiry and cache the new one."""
        name, qtype, qclass, dnssec_ok, checking_disabled = key
        question = name + struct.pack("!HH", qtype, qclass)
        flags = RD | (CD if checking_disabled else 0)
        edns = wire.Edns(UPSTREAM_UDP_SIZE, 0, True) if dnssec_ok else None
        query = wire.Query(random.randrange(65536), flags, question, name, qtype, qclass, edns)
        try:
            answer = await transport.ask(query, False, upstreams, admission)
        except Exception:
            log.debug("refreshing a cached answer failed", exc_info=True)
            return
        finally:
            transport.release(admission)
        if answer is not None:
            cache.put(key, answer)


def _family(client: ClientAddress | None) -> int:
    """1 for an IPv4 client, 2 for IPv6 (whose socket addresses have four parts)."""
    return 2 if client is not None and len(client) == 4 else 1
