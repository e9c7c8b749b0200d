"""The forward cache: upstream answers held by question, their TTLs counting down (RFC 1035
6.1.2), negative answers by RFC 2308, expired ones kept for serve-stale (RFC 8767), popular ones
refreshed before they expire (prefetch, as CoreDNS's cache).

Pure: the clock is injected. The forwarder (`kdns.forward`) fills it and refreshes it.
"""

from __future__ import annotations

from collections.abc import Callable

from cachetools import LRUCache

from kdns.core.answer import Answer
from kdns.core.budgets import DENIAL_CACHE_BYTES, FORWARD_CACHE_BYTES, LARGEST_ITEM_SHARE, StoreSize
from kdns.core.message import CD
from kdns.core.upstream import ForwardedAnswer
from kdns.core.wire import Query

# (lowercased name, type, class, DNSSEC OK, checking disabled). CD is part of the key because a
# validating upstream answers it differently: SERVFAIL for a bogus name without it, the data
# with it (RFC 4035 3.2.2 and 4.7); CoreDNS's cache keys on it for that reason.
CacheKey = tuple[bytes, int, int, bool, bool]


class _BudgetedLRU(LRUCache[CacheKey, "Entry"]):
    """cachetools' LRU within `max_entries` entries and `max_bytes` bytes (each entry's
    `Entry.size`: cachetools keeps the sum as `currsize`), counting what it evicts."""

    evictions = 0

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        super().__init__(maxsize=max_bytes, getsizeof=_entry_size)
        self.max_entries = max_entries

    def __setitem__(self, key: CacheKey, value: Entry) -> None:
        super().__setitem__(key, value)  # evicts the least recently used beyond `max_bytes`
        while len(self) > self.max_entries:
            self.popitem()

    def popitem(self) -> tuple[CacheKey, Entry]:
        self.evictions += 1
        return super().popitem()


def _entry_size(entry: Entry) -> int:
    return entry.size


def _figures(lru: _BudgetedLRU) -> StoreSize:
    return StoreSize(int(lru.maxsize), int(lru.currsize), len(lru), lru.evictions)


STALE_TTL = 30  # RFC 8767 4: the TTL of an answer served stale
PREFETCH_HITS = 2  # an entry asked for this often is refreshed before it expires (CoreDNS: 1 by default)
PREFETCH_FRACTION = 0.1  # ... once no more than this part of its TTL is left (CoreDNS's 10%)


# Bytes an entry holds beyond twice its records (the answer as it came, and the copy served with
# its TTLs lowered) and its name: the Entry, the ForwardedAnswer and the served Answer, the key,
# the LRU's three dictionary slots (up to about 200 bytes just after they have doubled), the
# three arrays' headers; and per record its end, TTL offset and TTL (3 x 4 bytes).
# tests/core/test_cache.py measures it with tracemalloc and fails if an entry holds more.
ENTRY_OVERHEAD = 1536
RECORD_OVERHEAD = 16


def entry_size(key: CacheKey, answer: ForwardedAnswer) -> int:
    """What caching `answer` under `key` holds, in bytes: its budget's measure."""
    return 2 * len(answer.records) + len(key[0]) + ENTRY_OVERHEAD + RECORD_OVERHEAD * len(answer.ends)


class Entry:
    """One cached answer. Outside this module only a handle: the pipeline keeps it beside a reply
    it made from it, to count a hit (`ForwardCache.kept_hit`) without the LRU."""

    __slots__ = (
        "answer",
        "expires",
        "hits",
        "key",
        "prefetching",
        "served",
        "served_at",
        "size",
        "stored",
        "superseded",
    )

    def __init__(self, key: CacheKey, answer: ForwardedAnswer, stored: float) -> None:
        self.key = key
        self.answer = answer
        self.size = entry_size(key, answer)
        self.stored = stored
        self.expires = stored + answer.cache_ttl
        self.served_at = -1
        self.served: Answer | None = None
        self.hits = 0
        self.prefetching = False
        self.superseded = False  # a newer answer for its key was put: replies made from it are stale


class ForwardCache:
    """Forwarded answers by (lowercased name, type, class, DO bit), LRU beyond `size` entries or
    `max_bytes` bytes (`entry_size`), each kept for its `cache_ttl` and served with TTLs lowered
    by the time it has been held.

    With `stale_for` (RFC 8767), an expired answer is kept that much longer, for `get_stale` to
    serve when no upstream answers. With `prefetch`, `get` reports a popular entry close to expiry
    through `prefetch_due`, for the forwarder to refresh while it is still being served.
    """

    def __init__(
        self,
        size: int,
        clock: Callable[[], float],
        stale_for: float = 0,
        prefetch: bool = False,
        denial_size: int | None = None,
        max_bytes: int = FORWARD_CACHE_BYTES,
        denial_max_bytes: int = DENIAL_CACHE_BYTES,
        keep_ttl: bool = False,
    ) -> None:
        """`denial_size`: negative answers (NXDOMAIN, NODATA) held apart, in an LRU of their own
        (CoreDNS's cache `success` and `denial` capacities) within `denial_max_bytes`; None: one
        LRU for both, within `max_bytes`. An answer over 1/LARGEST_ITEM_SHARE of its LRU's
        bytes is relayed but never cached. `keep_ttl`: served with the TTLs it was stored with
        until it expires (CoreDNS's `keepttl`, plugin/cache/handler.go: `now = i.stored`)."""
        self.clock = clock
        self.keep_ttl = keep_ttl
        # Plain counters, read by the state seam (`kdns.state`) for metrics.
        self.hits = 0
        self.denial_hits = 0  # of `hits`, those of negative answers
        self.misses = 0
        self.inserts = 0
        self.too_large = 0  # answers relayed but not cached: over 1/LARGEST_ITEM_SHARE of a budget
        self.stale_for = stale_for
        self.prefetch = prefetch
        self._due: list[CacheKey] = []  # popular entries close to expiry, for the forwarder
        # A plain LRU: each entry knows when it expires, which `get` checks anyway, and an
        # expired one (kept for serve-stale) simply ages out. cachetools' TLRUCache would keep
        # a timer heap too, at five times the cost of a lookup.
        self._entries = _BudgetedLRU(max(size, 1), max(max_bytes, 1))
        self._denials = (
            _BudgetedLRU(max(denial_size, 1), max(denial_max_bytes, 1)) if denial_size is not None else self._entries
        )
        self.enabled = size > 0

    @staticmethod
    def key(query: Query) -> CacheKey:
        dnssec_ok = bool(query.edns and query.edns.dnssec_ok)
        return (query.key, query.qtype, query.qclass, dnssec_ok, bool(query.flags & CD))

    def get(self, key: CacheKey) -> Answer | None:
        try:
            entry: Entry | None = self._entries[key]  # not `.get`: it looks the key up twice
        except KeyError:
            entry = self._denials.get(key) if self._denials is not self._entries else None
        now = self.clock()
        if entry is None or now >= entry.expires:  # absent, or only there to be served stale
            self.misses += 1
            if entry is not None and now >= entry.expires + self.stale_for:
                self._lru_of(entry.answer).pop(key, None)
            return None
        self._hit(entry, now)
        elapsed = 0 if self.keep_ttl else int(now - entry.stored)
        if elapsed != entry.served_at:  # TTLs change once a second: patch them once a second
            entry.served = entry.answer.answer(elapsed)
            entry.served_at = elapsed
        assert entry.served is not None
        return entry.served

    def _hit(self, entry: Entry, now: float) -> None:
        self.hits += 1
        if not entry.answer.answer_count:
            self.denial_hits += 1  # NXDOMAIN, NODATA: CoreDNS's cache counts them apart
        entry.hits += 1
        if (
            self.prefetch
            and not entry.prefetching
            and entry.hits >= PREFETCH_HITS
            and entry.expires - now <= entry.answer.cache_ttl * PREFETCH_FRACTION
        ):
            entry.prefetching = True
            self._due.append(entry.key)

    def served(self, key: CacheKey) -> tuple[Entry, float] | None:
        """The entry `get` just served for `key`, and until when (this cache's clock) `get` would
        serve that very answer again: the next second of its TTLs, or its expiry (with
        `keep_ttl`, its TTLs never move: its expiry)."""
        entry = self._entries.get(key) or self._denials.get(key)
        if entry is None or entry.served is None:
            return None
        if self.keep_ttl:
            return entry, entry.expires
        return entry, min(entry.expires, entry.stored + entry.served_at + 1)

    def kept_hit(self, entry: Entry, now: float) -> bool:
        """A hit on `entry`'s answer served again without `get` (the pipeline's kept reply, before
        the time `served` gave): counted, and its prefetch planned, as `get` does; the LRU is not
        touched (`get` is asked again once a second). False, counting nothing, when a newer
        answer has replaced it (a prefetch): the reply must be made again."""
        if entry.superseded:
            return False
        self._hit(entry, now)
        return True

    def get_stale(self, key: CacheKey) -> Answer | None:
        """An expired answer still within `stale_for`, its TTLs set to 30 s (RFC 8767 4)."""
        entry = (self._entries.get(key) or self._denials.get(key)) if self.stale_for else None
        now = self.clock()
        if entry is None or now < entry.expires or now >= entry.expires + self.stale_for:
            return None
        return entry.answer.answer(fixed_ttl=STALE_TTL)

    def put(self, key: CacheKey, answer: ForwardedAnswer) -> None:
        if self.enabled and answer.cache_ttl > 0:
            for lru in (self._entries, self._denials):  # one entry a name, in its kind's LRU
                old = lru.pop(key, None)
                if old is not None:
                    old.superseded = True
            entry = Entry(key, answer, self.clock())
            lru = self._lru_of(answer)
            if entry.size * LARGEST_ITEM_SHARE > lru.maxsize:
                self.too_large += 1  # one answer must not take a whole budget: relayed only
                return
            lru[key] = entry
            self.inserts += 1

    def _lru_of(self, answer: ForwardedAnswer) -> _BudgetedLRU:
        return self._entries if answer.answer_count else self._denials

    @property
    def prefetch_due(self) -> list[CacheKey]:
        """The entries found popular and close to expiry, not yet taken for a refresh."""
        return list(self._due)

    def take_prefetch_due(self) -> list[CacheKey]:
        """Those entries, now handed to the forwarder to refresh (each is reported once)."""
        due, self._due = self._due, []
        return due

    def entries_by_kind(self) -> tuple[int, int]:
        """(positive, negative) entries held: O(entries), for metrics at scrape time."""
        if self._denials is not self._entries:
            return len(self._entries), len(self._denials)
        negative = sum(1 for entry in self._entries.values() if not entry.answer.answer_count)
        return len(self._entries) - negative, negative

    def bytes_by_kind(self) -> tuple[int, int]:
        """(positive, negative) bytes held (`entry_size`); O(entries) when they share one LRU,
        for metrics at scrape time."""
        if self._denials is not self._entries:
            return int(self._entries.currsize), int(self._denials.currsize)
        negative = sum(entry.size for entry in self._entries.values() if not entry.answer.answer_count)
        return int(self._entries.currsize) - negative, negative

    def stores(self) -> dict[str, StoreSize]:
        """Its LRUs as bounded stores: `forward_cache`, and `denial_cache` when negative answers
        are held apart."""
        stores = {"forward_cache": _figures(self._entries)}
        if self._denials is not self._entries:
            stores["denial_cache"] = _figures(self._denials)
        return stores

    @property
    def evictions(self) -> int:
        """Entries dropped to stay within the size (expired ones age out the same way)."""
        apart = self._denials.evictions if self._denials is not self._entries else 0
        return self._entries.evictions + apart

    def __len__(self) -> int:
        """Entries held, fresh or kept for serve-stale."""
        return len(self._entries) + (len(self._denials) if self._denials is not self._entries else 0)
