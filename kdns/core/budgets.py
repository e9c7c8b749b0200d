"""How many bytes each store that a client, a tenant or the cluster's churn can grow may hold.

Every such store has its budget here (the default of its flag), is measured in bytes, not only in
entries, and evicts when full rather than grow: Unbound's rule (every cache bounded in bytes).
The README's Security section lists them with their flags and metrics. A store's size is what it
counts itself: the bytes it holds plus a fixed overhead per entry, measured with tracemalloc in
its unit test, so that the count is never below what the process really holds for it.
"""

from __future__ import annotations

from typing import NamedTuple

KIB = 1024
MIB = 1024 * KIB

# Replies the pipeline keeps for repeated queries (`kdns.core.kept`), for UDP and TCP together;
# each transport may hold half. A UDP reply is a few hundred bytes, a TCP one up to 64 KiB.
REPLY_CACHE_BYTES = 16 * MIB
# Forwarded answers (`kdns.core.cache`): the cache of positive answers, and in `kdns serve` the
# negative ones with them; `kdns node-cache` holds negative ones apart, in their own budget.
FORWARD_CACHE_BYTES = 32 * MIB
DENIAL_CACHE_BYTES = 8 * MIB
# The Pods' addresses (`kdns.core.pods`, `--pods verified` and `--autopath`): 150,000 Pods, the
# most a cluster of 5,000 nodes runs, take about 19 MB.
POD_INDEX_BYTES = 64 * MIB
# What every TCP connection holds at once: its received bytes not yet a whole query, and the
# replies not yet written. One connection holds at most about 256 KiB of it.
TCP_BUFFER_BYTES = 32 * MIB
# Changes the supervisor has queued for one worker (`--workers`) and not yet sent: a worker that
# falls this far behind is replaced by a fresh one, sent the whole cluster.
WORKER_QUEUE_BYTES = 64 * MIB
# The largest configuration file read (`--config`): a ConfigMap holds at most 1 MiB.
CONFIG_FILE_BYTES = 1 * MIB
# The largest hosts file read (`hosts`): k3s's NodeHosts has a line per node, 5,000 nodes about
# 300 KB; a file past it is not read (the last one read stays).
HOSTS_FILE_BYTES = 16 * MIB

# A stored item larger than this part of its budget is not kept at all (it is still answered):
# one reply could otherwise take a whole budget.
LARGEST_ITEM_SHARE = 16


class StoreSize(NamedTuple):
    """What a bounded store reports (for `kdns_store_*` metrics): its budget and the bytes it
    holds now, its entries, and how many entries it has dropped to stay within the budget
    (evicted, or for the pod index, not taken in)."""

    budget: int
    size: int
    entries: int
    dropped: int

    def plus(self, other: StoreSize) -> StoreSize:
        """Two processes' stores of the same kind together (`--workers`)."""
        return StoreSize(*(mine + theirs for mine, theirs in zip(self, other, strict=True)))
