"""Server blocks: which chain of stages serves a name (CoreDNS's server blocks, one port).

A block holds zones and an ordered chain of stages; a query goes to the block of the most
specific zone that holds its name (CoreDNS's rule), found by walking the name's labels from the
left: one dictionary lookup a label, and the root zone (`.`) holds every name no other does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

from kdns.core.message import REFUSED
from kdns.core.names import to_wire, under_any
from kdns.core.stage import Next, Outcome, ReplyOptions, Request, Stage, status


class ServerBlock:
    """Zones (text, `.` for the root) and the stages that serve them, in order. `serve` walks
    the chain; a request that the last stage hands on gets `end` (REFUSED: nothing serves it;
    a Corefile's block that does not forward, SERVFAIL, CoreDNS's `plugin.NextOrFailure`).
    `upstreams`: the transport's group its forwarding stage asks (None: it forwards nothing), for
    the forward cache's refreshes."""

    def __init__(
        self,
        zones: Sequence[str],
        stages: Sequence[Stage],
        options: ReplyOptions,
        upstreams: int | None = None,
        end: int = REFUSED,
    ) -> None:
        self.zones = tuple(zones)
        self.upstreams = upstreams
        self._end_rcode = end
        self.keys = tuple(to_wire(zone) for zone in zones)
        self.stages = tuple(stages)
        self._options = options
        chain: Next = self._end
        chains = [chain]
        for stage in reversed(self.stages):  # built once: a request walks closures, not a list
            chain = functools.partial(stage.serve, next=chain)
            chains.append(chain)
        self._chains = tuple(reversed(chains))  # from each stage on, and the end
        self.serve: Next = chain

    def after(self, kind: type) -> Next:
        """The chain from the stage after the first of type `kind` (the whole chain if none):
        where a question rewritten by that stage goes on."""
        for index, stage in enumerate(self.stages):
            if isinstance(stage, kind):
                return self._chains[index + 1]
        return self.serve

    def holds(self, key: bytes) -> bool:
        """Whether the wire name `key` is in one of this block's zones: O(zones)."""
        return under_any(key, self.keys)

    def _end(self, request: Request) -> Outcome:
        return status(request, self._end_rcode, self._options)

    def __repr__(self) -> str:
        return f"ServerBlock({' '.join(self.zones)}: {', '.join(type(stage).__name__ for stage in self.stages)})"


class ServerBlocks:
    """The blocks of one listener set, by zone; there must be one for the root.

    Built by `build`, given `resolve`: a stage that asks a question on a client's behalf (an
    ExternalName's target, a search path's names) has it answered by the block that holds it."""

    def __init__(self, build: Callable[[Next], Sequence[ServerBlock]]) -> None:
        self.blocks = tuple(build(self.resolve))
        self._by_zone: dict[bytes, ServerBlock] = {}
        for block in self.blocks:
            for key, zone in zip(block.keys, block.zones, strict=True):
                if key in self._by_zone:
                    raise ValueError(f"zone {zone} is in two server blocks")
                self._by_zone[key] = block
        if b"\x00" not in self._by_zone:
            raise ValueError("no server block holds the root zone (.)")

    def resolve(self, request: Request) -> Outcome:
        """`request` through the stages of the block that holds its name."""
        return self.of(request.query.key).serve(request)

    def of(self, key: bytes) -> ServerBlock:
        """The block of the most specific zone holding the name `key` (wire form, lowercased):
        O(labels of the name)."""
        by_zone = self._by_zone
        at = 0
        while (block := by_zone.get(key[at:] if at else key)) is None:
            at += key[at] + 1
        return block
