"""Forwarding loops (CoreDNS's `loop`): a probe name sent through each upstream at start, which
only a loop brings back to kdns. The stage answers such a probe REFUSED and says which upstream
it came back through; what to do then (kdns exits 2) is the caller's."""

from __future__ import annotations

from collections.abc import Callable

from kdns.core.message import REFUSED
from kdns.core.stage import Next, Outcome, ReplyOptions, Request, status


class LoopProbes:
    """The loop probes sent upstream: a random name per upstream. `on_loop` is told which
    upstream a probe came back through."""

    def __init__(self, on_loop: Callable[[str], None]) -> None:
        self._names: dict[bytes, str] = {}
        self._on_loop = on_loop

    def add(self, name_wire: bytes, upstream: str) -> None:
        self._names[name_wire] = upstream

    def came_back(self, key: bytes) -> bool:
        """Whether `key` is a probe of ours; if so, `on_loop` has been told."""
        upstream = self._names.get(key)
        if upstream is None:
            return False
        self._on_loop(upstream)
        return True


class LoopStage:
    """Before forwarding: a query for one of our probe names is a loop (it is REFUSED)."""

    def __init__(self, probes: LoopProbes, options: ReplyOptions) -> None:
        self._probes = probes
        self._options = options

    def serve(self, request: Request, next: Next) -> Outcome:
        if self._probes.came_back(request.query.key):
            return status(request, REFUSED, self._options)
        return next(request)
