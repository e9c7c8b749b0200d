"""Who keeps a connection open (kdns/connections.py): a full listener closes the connection idle
longest for a newcomer, an address at its cap makes room among its own, and the bytes every
connection holds stay within one budget, the connection holding the most closed past it."""

from __future__ import annotations

import trio
import trio.testing

from kdns.connections import BufferBudget, ConnectionTable, Slot


def _open(table: ConnectionTable, address: str) -> tuple[Slot, trio.CancelScope]:
    scope = trio.CancelScope()
    return table.admit(address, scope), scope


async def test_a_full_table_closes_the_connection_idle_longest_for_a_newcomer() -> None:
    made: list[int] = []
    table = ConnectionTable(3, on_room=lambda: made.append(1))
    (a, a_scope), (b, b_scope), (c, c_scope) = (_open(table, f"10.0.0.{i}") for i in range(3))
    table.active(a)  # a did something: b is now idle longest
    _, d_scope = _open(table, "10.0.0.9")
    assert b_scope.cancel_called and not (a_scope.cancel_called or c_scope.cancel_called or d_scope.cancel_called)
    assert len(table) == 3 and table.closed_for_room == 1 and made == [1]
    table.release(b)  # its task's own release afterwards does nothing
    table.release(c)
    assert len(table) == 2


async def test_an_address_at_its_cap_makes_room_among_its_own_connections() -> None:
    table = ConnectionTable(100, max_per_address=2)
    (first, first_scope), (second, _) = _open(table, "10.0.0.1"), _open(table, "10.0.0.1")
    other, other_scope = _open(table, "10.0.0.2")
    table.active(first)
    _open(table, "10.0.0.1")
    assert not first_scope.cancel_called and not other_scope.cancel_called
    assert len(table) == 3  # the other address keeps its connection; the second of 10.0.0.1 went
    del second, other


async def test_the_buffer_budget_closes_the_connection_stalled_longest(autojump_clock: trio.testing.MockClock) -> None:
    closed: list[int] = []
    budget = BufferBudget(1000, on_close=lambda: closed.append(1))
    stalled, busy, new = Slot("a", trio.CancelScope()), Slot("b", trio.CancelScope()), Slot("c", trio.CancelScope())
    budget.hold(stalled, 100)  # a partial query it never finishes
    await trio.sleep(1)
    budget.hold(busy, 700)
    await trio.sleep(1)
    budget.hold(busy, 600, progressed=True)  # holds what it holds now, not the sum; and is busy
    assert budget.held == 700 and not closed
    await trio.sleep(1)
    budget.hold(new, 350)
    assert stalled.scope.cancel_called and not busy.scope.cancel_called and not new.scope.cancel_called
    assert budget.held == 950 and closed == [1] and budget.figures() == (1000, 950, 2, 1)
    budget.hold(new, 500)  # still past it: the busy one has stalled longer than the newcomer
    assert busy.scope.cancel_called and budget.held == 500
    budget.release(busy)  # released already: nothing more
    budget.release(new)
    assert budget.held == 0
