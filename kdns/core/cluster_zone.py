"""The cluster zone stage (CoreDNS's `kubernetes`): answers for the cluster domain and the
reverse zones from the zone index, as prepared when the cluster changed.

- A name with a prepared answer of the type asked: that answer, kept by the reply cache until
  the zone changes.
- An ExternalName service: its CNAME and what the target resolves to (as CoreDNS answers, and
  the spec's example shows): from the zone when the target is in it, else asked of the blocks
  that hold the target (`resolve`); the bare CNAME without either.
- Names the zone holds, with no records of the type (NODATA), or names under the cluster domain
  it does not hold (NXDOMAIN): the negative answer with the zone's SOA; but until every watcher
  has listed once, SERVFAIL, which resolvers retry, rather than an NXDOMAIN or NODATA they would
  cache (SPEC-NOTES 5.1).
- A reverse name the zone holds nothing for goes on to the next stage (CoreDNS's `fallthrough
  in-addr.arpa ip6.arpa`, kubeadm's): the forward cache and the upstreams; in a reverse zone
  without that fallthrough, NXDOMAIN with the reverse zone's SOA (CoreDNS's `errNoItems`).
"""

from __future__ import annotations

from collections.abc import Callable

from kdns.core import chase, rdata
from kdns.core.message import NXDOMAIN, RCODE_MASK, SERVFAIL
from kdns.core.names import REVERSE_ZONES, to_wire, under_any
from kdns.core.stage import (
    KEEP_FROM_ZONE,
    Next,
    Outcome,
    Reply,
    ReplyOptions,
    Request,
    answered,
    status,
    then_reply,
)
from kdns.core.zone import Zone


class ClusterZone:
    """Answers from `zone`. `synced` says whether the cluster has been listed once; `resolve`
    answers a question through the block that holds its name (None: nothing outside the zone is
    asked, and an ExternalName to an outside name gets its CNAME alone)."""

    def __init__(
        self,
        zone: Zone,
        options: ReplyOptions,
        synced: Callable[[], bool],
        resolve: Next | None = None,
        fallthrough: bool = False,
        reverse_fallthrough: tuple[str, ...] = REVERSE_ZONES,
    ) -> None:
        """`fallthrough`: a cluster name that does not exist goes on to the next stage instead
        of NXDOMAIN (CoreDNS's `fallthrough` covering the cluster domain); `reverse_fallthrough`:
        the reverse zones whose names the zone holds nothing of go on (by default both, as
        kubeadm's `fallthrough in-addr.arpa ip6.arpa`), the others' are NXDOMAIN."""
        self.zone = zone
        self._options = options
        self._synced = synced
        self._resolve = resolve
        self._fallthrough = fallthrough
        self._reverse_fallthrough = tuple(to_wire(apex) for apex in reverse_fallthrough)
        self._prepared = zone.prepared  # read directly: one dictionary lookup a question

    def serve(self, request: Request, next: Next) -> Outcome:
        query = request.query
        key, qtype = query.key, query.qtype
        answer = self._prepared.get((key, qtype))
        if answer is not None:
            return answered(request, answer, self._options, KEEP_FROM_ZONE)
        zone = self.zone
        target = zone.cname_target(key)
        if target is not None and qtype not in (rdata.CNAME, rdata.ANY):
            chased = self._chase(request, target)
            if chased is not None:
                return chased
        answer = zone.answer(key, qtype)
        if answer is None:  # a reverse name it holds nothing for
            passes_on = under_any(key, self._reverse_fallthrough)  # its zone's `fallthrough`
            missing = None if passes_on else zone.missing_reverse(key)
            if missing is None:
                return next(request)
            if not self._synced():
                return status(request, SERVFAIL, self._options)
            return answered(request, missing, self._options, KEEP_FROM_ZONE)
        if not answer.answer_count and not self._synced():
            return status(request, SERVFAIL, self._options)
        if self._fallthrough and answer.rcode == NXDOMAIN:
            return next(request)  # plugin/kubernetes: `fallthrough` passes an NXDOMAIN on down the chain
        # Kept only if it is an answer the zone holds, not one made for this question (pods).
        keep = KEEP_FROM_ZONE if zone.keeps(key, qtype, answer) else None
        return answered(request, answer, self._options, keep)

    def _chase(self, request: Request, target: bytes) -> Outcome | None:
        """An ExternalName's CNAME and its target's records; None for the CNAME alone."""
        inner = request.asking(target)
        zone = self.zone
        if zone.in_zones(target):
            found = zone.answer(target, inner.query.qtype)
            if found is None or zone.cname_target(target) is not None:
                return None  # no chains of CNAMEs inside the cluster: the CNAME alone
            message = chase.compose(request.query, inner.query, zone.ttl, found, request.tcp, self._options)
            return Reply(message)
        if self._resolve is None:
            return None
        return then_reply(self._resolve(inner), lambda target_reply: self._composed(request, inner, target_reply))

    def _composed(self, request: Request, inner: Request, target: Reply) -> Outcome:
        if target.message[3] & RCODE_MASK == SERVFAIL:
            return status(request, SERVFAIL, self._options)  # the target could not be resolved
        query = request.query
        message = chase.compose_reply(query, inner.query, self.zone.ttl, target.message, request.tcp, self._options)
        return Reply(message)
