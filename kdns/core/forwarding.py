"""The last stages of a block that forwards: the forward cache in front (CoreDNS's `cache`), and
the question for the upstreams (CoreDNS's `forward`). The asking itself is the transport's
(`kdns.forward`), driven by the pipeline."""

from __future__ import annotations

from collections.abc import Sequence

from kdns.core.cache import CacheKey, ForwardCache
from kdns.core.message import SERVFAIL
from kdns.core.names import under_any
from kdns.core.stage import Ask, FromCache, Next, Outcome, ReplyOptions, Request, Then, answered, status
from kdns.core.upstream import ForwardedAnswer


class CacheStage:
    """Answers from the forward cache; for a miss, what the stages after it ask upstream is put
    in the cache as it comes, and when every upstream fails an expired answer is served within
    serve-stale (RFC 8767). A cached answer's reply may be kept while the cache serves that same
    answer (`FromCache`)."""

    def __init__(self, cache: ForwardCache, options: ReplyOptions) -> None:
        self.cache = cache
        self._options = options

    def serve(self, request: Request, next: Next) -> Outcome:
        key = ForwardCache.key(request.query)
        answer = self.cache.get(key)
        if answer is not None:
            return answered(request, answer, self._options, FromCache(key, answer))
        outcome = next(request)
        if isinstance(outcome, Ask):
            then = outcome.then
            return outcome._replace(then=lambda forwarded: self._keep(request, key, forwarded, then))
        return outcome

    def _keep(self, request: Request, key: CacheKey, forwarded: ForwardedAnswer | None, then: Then) -> Outcome:
        if forwarded is not None:
            self.cache.put(key, forwarded)
            return then(forwarded)
        stale = self.cache.get_stale(key)
        if stale is not None:
            return answered(request, stale, self._options, None)
        return then(None)


class ForwardStage:
    """Asks upstream, through the transport's group `upstreams`: the reply is its answer, or
    SERVFAIL when every upstream failed. A name under one of `excepted` (wire form) is never
    asked: SERVFAIL (CoreDNS's `except`, whose forward hands it on to no plugin after it)."""

    def __init__(self, upstreams: int, options: ReplyOptions, excepted: Sequence[bytes] = ()) -> None:
        self.upstreams = upstreams
        self._options = options
        self._excepted = tuple(excepted)

    def serve(self, request: Request, next: Next) -> Outcome:
        if self._excepted and under_any(request.query.key, self._excepted):
            return status(request, SERVFAIL, self._options)
        return Ask(request.query, request.tcp, self.upstreams, lambda forwarded: self._reply(request, forwarded))

    def _reply(self, request: Request, forwarded: ForwardedAnswer | None) -> Outcome:
        if forwarded is None:
            return status(request, SERVFAIL, self._options)
        return answered(request, forwarded.answer(), self._options, None)
