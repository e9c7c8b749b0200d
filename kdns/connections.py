"""Who may keep a connection open, and how many bytes connections may hold (trio).

A listener that is full makes room rather than turn the newcomer away: the connection idle
longest is closed (nginx's choice for keep-alive connections; RFC 7766 6.2.3 lets a DNS server
close idle TCP connections when it needs the resources). So no client can hold every slot: a
probe always gets in, however many keep-alive connections others hold, and a client that keeps
its connections busy still loses its oldest idle one to each newcomer. With a per-address cap, a
client at its cap makes room among its own connections first.

The connections of a process also share one budget of buffered bytes (`BufferBudget`): a
connection that would take it past its budget closes the connection that has held bytes longest
without progress (a partial query never finished, replies its client never reads), never one
that keeps completing queries and taking replies, however much it has in flight.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import trio

from kdns.core.budgets import StoreSize


class Slot:
    """One open connection: where it comes from, and the scope that closes it."""

    __slots__ = ("address", "held", "scope", "stalled_since")

    def __init__(self, address: str, scope: trio.CancelScope) -> None:
        self.address = address
        self.scope = scope
        self.held = 0  # bytes it holds now (`BufferBudget`)
        self.stalled_since = 0.0  # when (trio's clock) it last made progress while holding bytes

    def close(self) -> None:
        self.scope.cancel()


class ConnectionTable:
    """The open connections of one listener, least recently active first (an `OrderedDict`:
    admitting, touching and closing are O(1))."""

    def __init__(
        self, max_connections: int, max_per_address: int | None = None, on_room: Callable[[], None] | None = None
    ) -> None:
        """`on_room` is told of each connection closed to admit another (for a counter)."""
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self._on_room = on_room
        self._slots: OrderedDict[Slot, None] = OrderedDict()
        self._by_address: dict[str, OrderedDict[Slot, None]] = {}
        self.closed_for_room = 0  # connections closed to admit another

    def __len__(self) -> int:
        return len(self._slots)

    def admit(self, address: str, scope: trio.CancelScope) -> Slot:
        """Take a new connection from `address`, closed through `scope`; close the one idle
        longest from the same address if that address is at its cap, else the one idle longest
        of all if the listener is full."""
        mine = self._by_address.get(address)
        if self.max_per_address is not None and mine is not None and len(mine) >= self.max_per_address:
            self._make_room(next(iter(mine)))
        while self._slots and len(self._slots) >= self.max_connections:  # a loop: `resize` may have lowered it
            self._make_room(next(iter(self._slots)))
        slot = Slot(address, scope)
        self._slots[slot] = None
        self._by_address.setdefault(address, OrderedDict())[slot] = None
        return slot

    def resize(self, max_connections: int) -> None:
        """A new cap (a reload): past it, the next connection admitted closes the idle ones."""
        self.max_connections = max_connections

    def active(self, slot: Slot) -> None:
        """`slot` did something (a request or query came, a reply went): idle from now."""
        if slot in self._slots:
            self._slots.move_to_end(slot)
            self._by_address[slot.address].move_to_end(slot)

    def release(self, slot: Slot) -> None:
        """`slot`'s connection is closed (a second call does nothing)."""
        if slot not in self._slots:
            return
        del self._slots[slot]
        mine = self._by_address[slot.address]
        del mine[slot]
        if not mine:
            del self._by_address[slot.address]

    def _make_room(self, oldest: Slot) -> None:
        self.release(oldest)
        oldest.close()
        self.closed_for_room += 1
        if self._on_room is not None:
            self._on_room()


class BufferBudget:
    """The bytes every connection of a process holds at once (its partial query, its replies not
    yet written), within `budget`: past it, the connection that has held bytes longest without
    progress is closed, until the rest fit. O(1) a call; a scan of the connections holding bytes
    only when the budget is passed."""

    def __init__(self, budget: int, on_close: Callable[[], None] | None = None) -> None:
        """`on_close` is told of each connection closed to stay within the budget."""
        self.budget = budget
        self.held = 0  # bytes held by every connection together
        self.closed = 0  # connections closed to stay within the budget
        self._on_close = on_close
        self._slots: set[Slot] = set()

    def resize(self, budget: int) -> None:
        """A new budget (a reload): past it, the next `hold` closes the stalled connections."""
        self.budget = budget

    def hold(self, slot: Slot, size: int, progressed: bool = False) -> None:
        """`slot` holds `size` bytes now; `progressed`: it has just completed a query or had a
        reply written (it is not stalled, whatever it holds)."""
        if progressed or not slot.held:
            slot.stalled_since = trio.current_time()
        self.held += size - slot.held
        slot.held = size
        if size:
            self._slots.add(slot)
        else:
            self._slots.discard(slot)
        while self.held > self.budget and self._slots:
            stalled = min(self._slots, key=lambda each: each.stalled_since)  # O(connections holding), rare
            self.release(stalled)
            stalled.close()
            self.closed += 1
            if self._on_close is not None:
                self._on_close()

    def figures(self) -> StoreSize:
        return StoreSize(self.budget, self.held, len(self._slots), self.closed)

    def release(self, slot: Slot) -> None:
        """`slot`'s connection is closed: what it held is free."""
        self.held -= slot.held
        slot.held = 0
        self._slots.discard(slot)
