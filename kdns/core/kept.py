"""The pipeline's reply cache: replies kept by the bytes of the query after its ID, so that a
repeated query costs one dictionary lookup and one concatenation. Bounded in bytes.

A kept reply's size is what it really holds: the key and the reply's bytes, and KEPT_OVERHEAD for
the objects around them (the tuple, the dictionary's slot; measured in tests/core/test_kept.py).
When a new reply would take the store past its budget, the oldest replies go first, an eighth of
the budget at a time: a dictionary keeps insertion order, so the oldest are at its front, and
evicting in batches keeps the cost per reply kept O(1) amortized. A client asking ever new
questions can only make the store turn over; it never grows past the budget.
"""

from __future__ import annotations

from typing import NamedTuple

from kdns.core.answer import Answer
from kdns.core.budgets import LARGEST_ITEM_SHARE, StoreSize
from kdns.core.cache import CacheKey, Entry

# Bytes a kept reply holds beyond its key's and its reply's: the bytes objects' headers (2 x 33),
# the KeptReply tuple (10 fields: 120), and the dictionary's slot, up to 72 bytes just after the
# dictionary has doubled; tests/core/test_kept.py measures it with tracemalloc and fails if a
# reply holds more.
KEPT_OVERHEAD = 320
# Bytes of a kept reply's orders beyond their own: the tuple that holds them (its header, 56), and
# for each order after the first (which is `body`) its bytes object's header and its slot in the
# tuple (33 + 8); measured in tests/core/test_kept.py too.
ORDERS_OVERHEAD = 64
ORDER_OVERHEAD = 48
EVICT_FRACTION = 8  # a full store frees this part of its budget at once


class KeptReply(NamedTuple):
    """A kept reply (a tuple: one is made per distinct query, and unpacked on every hit)."""

    body: bytes  # the reply after its ID
    qtype: int  # as counted (`counters.counted_type`)
    ipv4_key: tuple[str, int, int, int]  # the counters' keys for an IPv4 and an IPv6 client
    ipv6_key: tuple[str, int, int, int]
    cache_key: CacheKey | None  # for a forward cache answer: its key, and the answer it was made from
    served: Answer | None
    # ... the cache's entry and until when (the cache's clock) it serves that same answer: its
    # TTLs move once a second. Until then a hit needs one clock read, not the cache's LRU (a
    # third of a cache hit's cost); the cache is asked again after, which keeps its recency.
    entry: Entry | None = None
    served_until: float = 0.0
    # The reply in every order it is served in, `body` first, each after its ID: served in turn
    # (`loadbalance`); () for a reply of one order.
    orders: tuple[bytes, ...] = ()


def kept_size(key: bytes, reply: KeptReply) -> int:
    size = len(key) + len(reply.body) + KEPT_OVERHEAD
    if reply.orders:
        size += ORDERS_OVERHEAD
        for order in reply.orders[1:]:  # the first is `body`
            size += len(order) + ORDER_OVERHEAD
    return size


class KeptReplies:
    """Kept replies of one transport, at most `budget` bytes (`kept_size` each).

    `entries` is read directly on the hot path (one `get` a query); everything that adds to it
    goes through `keep`, which keeps `size` and the budget."""

    __slots__ = ("budget", "entries", "evictions", "size")

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.entries: dict[bytes, KeptReply] = {}
        self.size = 0  # bytes held, as `kept_size` counts them
        self.evictions = 0  # replies dropped to stay within the budget

    def keep(self, key: bytes, reply: KeptReply) -> None:
        """Keep `reply` for `key` (replacing what was kept for it), evicting the oldest replies
        if the budget needs it; a reply over 1/LARGEST_ITEM_SHARE of the budget is not kept."""
        size = kept_size(key, reply)
        if size * LARGEST_ITEM_SHARE > self.budget:
            return
        entries = self.entries
        old = entries.pop(key, None)
        if old is not None:
            self.size -= kept_size(key, old)
        if self.size + size > self.budget:
            self._evict(self.budget - self.budget // EVICT_FRACTION - size)
        entries[key] = reply
        self.size += size

    def drop(self, key: bytes) -> None:
        """Forget the reply kept for `key`, if any."""
        old = self.entries.pop(key, None)
        if old is not None:
            self.size -= kept_size(key, old)

    def replace(self, key: bytes, reply: KeptReply) -> None:
        """The same reply for `key` with new cache bookkeeping (`entry`, `served_until`): its
        size is unchanged."""
        self.entries[key] = reply

    def clear(self) -> None:
        self.entries.clear()
        self.size = 0

    def _evict(self, target: int) -> None:
        """Drop the oldest replies until `size` is at most `target`."""
        entries = self.entries
        freed = 0
        gone = []
        for key, reply in entries.items():
            if self.size - freed <= target:
                break
            freed += kept_size(key, reply)
            gone.append(key)
        for key in gone:
            del entries[key]
        self.size -= freed
        self.evictions += len(gone)

    def __len__(self) -> int:
        return len(self.entries)

    def figures(self) -> StoreSize:
        return StoreSize(self.budget, self.size, len(self.entries), self.evictions)
