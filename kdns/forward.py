"""The transport to the upstream resolvers (trio): which upstream, its health, the limits and the
sockets. It answers `ask(query, tcp, group, admission)`; what to ask and what to make of the
answer is the stages' (`kdns.core.forwarding`) and the pipeline's (`kdns.pipeline`).

As CoreDNS's `forward`: UDP first and the same query over TCP when the answer is truncated, TCP
for TCP clients; a per-try timeout and failover to the next upstream in policy order; an upstream
that fails twice in a row is marked down and skipped (tried only when every upstream is down)
until a `. IN NS` health probe is answered.

Each upstream has a small pool of connected UDP sockets, so the kernel hands us only datagrams
from that upstream's address, and each query goes out on a random one of them (a random source
port) with a fresh random ID. A datagram whose ID is not awaited or whose question is not ours is
dropped and counted.
"""

from __future__ import annotations

import itertools
import logging
import random
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from kdns.address import SocketAddress
from kdns.config import DEFAULT_MAX_FAILS, ForwardOptions, Policy
from kdns.core.message import RD, TCP_LIMIT, frame, framed_length
from kdns.core.names import to_wire
from kdns.core.upstream import BadResponse, ForwardedAnswer, MalformedResponse, read_response, upstream_query
from kdns.core.wire import Query
from kdns.state import State, UpstreamCounters

log = logging.getLogger(__name__)

SOCKETS_PER_UPSTREAM = 4  # source ports a query may leave from, per upstream
NS = 2  # the health check asks NS (CoreDNS: `. IN NS`, or `health_check ... domain NAME`)


# What a query waiting on a UDP socket receives: the answer, or the malformed answer it got.
Received = ForwardedAnswer | MalformedResponse


@dataclass
class Upstream:
    address: SocketAddress
    counters: UpstreamCounters = field(default_factory=UpstreamCounters)  # in the state seam
    tcp_only: bool = False  # every query over TCP (CoreDNS's `force_tcp`: NodeLocal DNSCache's to the cluster DNS)
    fails: int = 0
    sockets: list[trio.socket.SocketType] = field(default_factory=list)
    pending: dict[tuple[int, int], tuple[bytes, trio.MemorySendChannel[Received]]] = field(default_factory=dict)

    @property
    def down(self) -> bool:
        return self.counters.down

    def succeeded(self) -> None:
        self.fails = 0
        if self.counters.down:
            self.counters.down = False
            log.warning("upstream %s answers again", self.address)

    def failed(self, max_fails: int = DEFAULT_MAX_FAILS) -> None:
        """A try failed; `max_fails` in a row mark it down (0: never, CoreDNS's `max_fails 0`)."""
        self.counters.failures += 1
        self.fails += 1
        if max_fails and self.fails >= max_fails and not self.counters.down:
            self.counters.down = True
            log.warning("upstream %s marked down after %d failures; probing it", self.address, self.fails)


class Preempted(Exception):
    """A question's place among those in flight was given to a client holding fewer."""


class Admission:
    """One forwarded query's place among the `max_concurrent` in flight: the client it is for,
    and the scope that takes it back (`Forwarder.admit` may give it to a client holding less)."""

    __slots__ = ("client", "preempted", "scope")

    def __init__(self, client: str) -> None:
        self.client = client
        self.scope = trio.CancelScope()
        self.preempted = False


# Why a forward was refused (`kdns_forward_refused_total{reason}`).
OVER_SHARE = "over_share"  # at max_concurrent, its client already held its share or more
PREEMPTED = "preempted"  # in flight, taken back for a client that held less (max-min fairness)


class Forwarder:
    """Upstream resolvers, in groups (one a forwarding server block: the default upstreams, a
    stub domain's); an address in several groups is one upstream."""

    def __init__(
        self,
        groups: Sequence[Sequence[SocketAddress]],
        options: ForwardOptions,
        state: State | None = None,
        tcp_only: Sequence[SocketAddress] = (),
    ) -> None:
        """`tcp_only` upstreams are always asked over TCP."""
        self.options = options
        self.state = state if state is not None else State()
        known: dict[SocketAddress, Upstream] = {}

        def upstream(address: SocketAddress) -> Upstream:
            if address not in known:
                known[address] = Upstream(address, self.state.upstream(str(address)), address in tcp_only)
            return known[address]

        self.groups = [[upstream(address) for address in group] for group in groups]
        self.upstreams = list(known.values())
        self.upstream_names = tuple(str(upstream.address) for upstream in self.upstreams)
        self._by_name = {str(upstream.address): upstream for upstream in self.upstreams}
        self.in_flight = 0
        # The admissions in flight by client address, oldest first: `max_concurrent` shared max-min
        # fairly among the clients asking (at most `max_concurrent` entries in all).
        self._admitted: dict[str, dict[Admission, None]] = {}
        self._turn = itertools.count()

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the upstream sockets and keep receiving on them, and probe the upstreams that are
        down, until cancelled."""
        async with trio.open_nursery() as nursery:
            for upstream in self.upstreams:
                for index in range(SOCKETS_PER_UPSTREAM):
                    sock = trio.socket.socket(upstream.address.family, socket.SOCK_DGRAM)
                    await sock.connect((upstream.address.host, upstream.address.port))
                    upstream.sockets.append(sock)
                    nursery.start_soon(self._receive, upstream, index, sock)
                nursery.start_soon(self._probe_while_down, upstream)
            task_status.started()

    # -- what listeners call -----------------------------------------------------------------

    def admit(self, client: str = "") -> Admission | None:
        """Take one more query in flight for `client` (an address; "" for kdns's own refreshes),
        or None: the caller answers REFUSED at once (CoreDNS's `max_concurrent`). Counted here,
        when the query is accepted, so that a burst can never overshoot the limit; every admitted
        query must be released (`release`) once answered.

        When every place is taken, the places are shared max-min fairly among the clients that
        hold them (CoreDNS has no answer to one client taking them all: coredns/coredns#7922):
        a client that holds its share (`max_concurrent` / clients) or more is refused; one that
        holds less takes a place back from the client holding the most, whose oldest query is
        answered REFUSED. One client flooding names that are never answered therefore keeps
        every other client's new names answered. O(1), but for a scan of the clients holding
        places when one below its share arrives at a full table."""
        mine = self._admitted.get(client)
        if self.in_flight >= self.options.max_concurrent:
            held = len(mine) if mine is not None else 0
            if held * (len(self._admitted) + (mine is None)) >= self.options.max_concurrent:
                self.state.count_forward_refused(OVER_SHARE)
                return None
            heaviest = max(self._admitted.values(), key=len)
            if len(heaviest) <= held + 1:
                self.state.count_forward_refused(OVER_SHARE)  # no one holds more: shares are even
                return None
            self._preempt(next(iter(heaviest)))
        admission = Admission(client)
        self._admitted.setdefault(client, {})[admission] = None
        self.in_flight += 1
        return admission

    def _preempt(self, admission: Admission) -> None:
        """Take `admission`'s place back now; its query ends REFUSED."""
        admission.preempted = True
        admission.scope.cancel()
        self._release(admission)
        self.state.count_forward_refused(PREEMPTED)

    def release(self, admission: object) -> None:
        """`admission`'s question is answered (or given up): its place is free."""
        assert isinstance(admission, Admission)
        self._release(admission)

    def _release(self, admission: Admission) -> None:
        mine = self._admitted.get(admission.client)
        if mine is None or admission not in mine:
            return  # released already (preempted)
        del mine[admission]
        if not mine:
            del self._admitted[admission.client]
        self.in_flight -= 1

    async def ask(self, query: Query, tcp: bool, group: int, admission: object) -> ForwardedAnswer | None:
        """The upstream answer to `query` from the upstreams of `group`, or None when every one
        failed; `Preempted` if the admitted place was given to a client holding fewer."""
        assert isinstance(admission, Admission)
        with admission.scope:
            return await self.forward(query, tcp, self.groups[group])
        raise Preempted

    def _ordered(self, upstreams: list[Upstream]) -> list[Upstream]:
        policy = self.options.policy
        if policy is Policy.RANDOM:
            ordered = random.sample(upstreams, len(upstreams))
        elif policy is Policy.ROUND_ROBIN:
            start = next(self._turn) % len(upstreams)
            ordered = upstreams[start:] + upstreams[:start]
        else:
            ordered = list(upstreams)
        return [u for u in ordered if not u.down] + [u for u in ordered if u.down]

    async def forward(self, query: Query, tcp: bool, upstreams: list[Upstream]) -> ForwardedAnswer | None:
        """The answer to `query` from one of `upstreams` (in policy order, down ones last), or
        None when every one failed."""
        if not upstreams:
            return None
        if all(upstream.down for upstream in upstreams):
            self.state.healthcheck_broken += 1  # CoreDNS: every upstream down, each tried anyway
        for upstream in self._ordered(upstreams):
            upstream.counters.requests += 1
            answer = None
            started = trio.current_time()
            with trio.move_on_after(self.options.timeout):
                try:
                    over_tcp = tcp or upstream.tcp_only
                    answer = await (self._tcp(upstream, query) if over_tcp else self._udp(upstream, query))
                    if answer.truncated and not over_tcp:
                        answer = await self._tcp(upstream, query)
                except (OSError, BadResponse, trio.BrokenResourceError, trio.ClosedResourceError) as error:
                    log.debug("upstream %s: %s", upstream.address, error)
                    answer = None
            if answer is None:
                upstream.failed(self.options.max_fails)
                continue
            upstream.succeeded()
            upstream.counters.answered(answer.rcode, trio.current_time() - started)
            return answer
        return None

    async def probe(self, upstream_name: str, name: str) -> None:
        """Send `name` HINFO to one upstream and forget the answer: the loop probe."""
        upstream = self._by_name[upstream_name]
        wire_name = to_wire(name)
        question = wire_name + b"\x00\x0d\x00\x01"  # HINFO, IN, as CoreDNS's loop plugin asks
        with trio.move_on_after(self.options.timeout):
            try:
                await self._udp(upstream, Query(0, RD, question, wire_name, 13, 1, None))
            except (OSError, BadResponse) as error:
                log.debug("loop probe to %s: %s", upstream.address, error)

    async def _udp(self, upstream: Upstream, query: Query) -> ForwardedAnswer:
        index = random.randrange(len(upstream.sockets))
        while True:
            query_id, packet = upstream_query(query)
            if (index, query_id) not in upstream.pending:
                break
        send, receive = trio.open_memory_channel[Received](1)
        upstream.pending[(index, query_id)] = (query.question, send)
        try:
            await upstream.sockets[index].send(packet)
            received = await receive.receive()
            if isinstance(received, MalformedResponse):
                raise received
            return received
        finally:
            upstream.pending.pop((index, query_id), None)

    async def _receive(self, upstream: Upstream, index: int, sock: trio.socket.SocketType) -> None:
        options = self.options
        while True:
            try:
                data = await sock.recv(TCP_LIMIT)
            except OSError as error:  # ECONNREFUSED from an ICMP port-unreachable: nobody there
                log.debug("upstream %s: %s", upstream.address, error)
                continue
            query_id = data[0] << 8 | data[1] if len(data) >= 2 else -1
            waiting = upstream.pending.get((index, query_id))
            if waiting is None:
                upstream.counters.dropped += 1
                continue
            answer: Received
            try:
                answer = read_response(
                    data, query_id, waiting[0], options.min_ttl, options.max_ttl, options.max_negative_ttl
                )
            except MalformedResponse as error:
                # The answer to our question, but not one we can relay: this try has failed
                # (SERVFAIL unless another upstream answers), and nothing is cached.
                upstream.counters.malformed += 1
                log.debug("upstream %s: malformed answer: %s", upstream.address, error)
                answer = error
            except BadResponse as error:
                upstream.counters.dropped += 1
                log.debug("upstream %s: dropped a datagram: %s", upstream.address, error)
                continue
            waiting[1].send_nowait(answer)
            del upstream.pending[(index, query_id)]

    async def _tcp(self, upstream: Upstream, query: Query) -> ForwardedAnswer:
        query_id, packet = upstream_query(query)
        stream = await trio.open_tcp_stream(upstream.address.host, upstream.address.port)
        async with stream:
            await stream.send_all(frame(packet))
            data = b""
            while (length := framed_length(data)) is None or len(data) < 2 + length:
                chunk = await stream.receive_some(TCP_LIMIT)
                if not chunk:
                    raise BadResponse("connection closed before the answer")
                data += chunk
        options = self.options
        return read_response(
            data[2 : 2 + length], query_id, query.question, options.min_ttl, options.max_ttl, options.max_negative_ttl
        )

    async def _probe_while_down(self, upstream: Upstream) -> None:
        """Ask `NAME IN NS` (`.` by default) every `health_check` seconds while the upstream is
        down; any answer brings it back (CoreDNS's health check)."""
        options = self.options
        name = to_wire(options.health_check_name)
        question = name + struct.pack("!HH", NS, 1)
        while True:
            await trio.sleep(options.health_check)
            if not upstream.down or not upstream.sockets:
                continue
            probe = Query(0, RD if options.health_check_recursion else 0, question, name, NS, 1, None)
            with trio.move_on_after(self.options.timeout):
                try:
                    await self._udp(upstream, probe)
                except (OSError, BadResponse):
                    upstream.counters.healthcheck_failures += 1
                    continue
                upstream.succeeded()
            if upstream.down:
                upstream.counters.healthcheck_failures += 1  # no answer within the timeout
