"""Where a first sync's time goes (issue 20, point 2): the live source's path in one process, with
no API server in the way, phase by phase: the JSON pages parsed, each object prepared (converted
to the model), applied to the store with publishing held (`ClusterStore.hold`, as the follower
does until every watcher has listed), and the release that publishes every Service at once (the
records and the prepared answers). Synthetic clusters as `bench/zone_build.py` makes them (1 to 20
endpoints a Service, a fifth headless). Seconds, and each phase's share of the whole; nothing is
asserted. `--profile` adds cProfile's heaviest functions for the first size; `--memory` what the
synced store holds for the first size, by part (tracemalloc: each block counted under the
innermost kdns module that allocated it).

    .venv/bin/python bench/sync_phases.py [--sizes 1000,10000,50000] [--profile] [--memory]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import pstats
import random
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from zone_build import synthetic  # noqa: E402

from kdns.config import WatchOptions  # noqa: E402
from kdns.core.store import ClusterStore  # noqa: E402
from kdns.sources.kube import Applier  # noqa: E402

PHASES = ("parse", "prepare", "apply", "publish")


def pages(services: int) -> dict[str, list[bytes]]:
    """The lists as the API server pages them (`--api-page-size`), Services first as the follower
    lists them (each watcher on its own: the order does not change the work)."""
    size = WatchOptions().page_size
    service_objects, slices = synthetic(services, random.Random(services))
    return {
        kind: [json.dumps(items[i : i + size]).encode() for i in range(0, len(items), size)]
        for kind, items in (("Service", service_objects), ("EndpointSlice", slices))
    }


def sync(lists: dict[str, list[bytes]]) -> tuple[ClusterStore, dict[str, float]]:
    store = ClusterStore("cluster.local", 30)
    store.hold()
    applier = Applier(store, WatchOptions())
    spent = dict.fromkeys(PHASES, 0.0)
    for kind, kind_pages in lists.items():
        listed: set[tuple[str, str]] = set()
        for page in kind_pages:
            started = time.perf_counter()
            raws = json.loads(page)
            parsed = time.perf_counter()
            prepared = [applier.prepare(kind, raw) for raw in raws]
            converted = time.perf_counter()
            applier.apply_listed(kind, prepared, listed)
            applied = time.perf_counter()
            spent["parse"] += parsed - started
            spent["prepare"] += converted - parsed
            spent["apply"] += applied - converted
        started = time.perf_counter()
        applier.remove_unlisted(kind, None, listed)
        spent["apply"] += time.perf_counter() - started
    started = time.perf_counter()
    store.release()
    spent["publish"] = time.perf_counter() - started
    return store, spent


# What each kdns module allocates belongs to: the objects converted from the API's (the model), the
# records and names published from them, the zone's index of them, the store around both.
PARTS = {
    "convert.py": "objects (model)",
    "model.py": "objects (model)",
    "records.py": "records and names",
    "rdata.py": "records and names",
    "names.py": "records and names",
    "zone.py": "zone index",
    "store.py": "store",
}
KDNS = str(ROOT / "kdns")


def memory(services: int) -> None:
    """What the store synced from `services` Services holds, by part (see PARTS)."""
    lists = pages(services)
    gc.collect()
    tracemalloc.start(16)
    store, _ = sync(lists)
    del lists
    gc.collect()
    snapshot = tracemalloc.take_snapshot()
    tracemalloc.stop()
    parts: Counter[str] = Counter()
    for stat in snapshot.statistics("traceback"):
        # Innermost first: the kdns frame that asked for the block (a named tuple's `__new__`
        # or an `ipaddress` object counts under the kdns code that made it).
        owner = next((frame.filename for frame in reversed(stat.traceback) if frame.filename.startswith(KDNS)), "")
        parts[PARTS.get(Path(owner).name, "other") if owner else "outside kdns"] += stat.size
    # (No RSS here: tracemalloc's own record of every block would be most of it.)
    print(f"\nheld after syncing {services} Services ({store.zone.name_count()} names):")
    for part, size in parts.most_common():
        print(f"  {part:<20} {size / 1e6:7.1f} MB")
    print(f"  {'all traced':<20} {sum(parts.values()) / 1e6:7.1f} MB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--memory", action="store_true")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    print(f"{'services':>9} {'names':>8} {'total s':>8} " + " ".join(f"{phase:>15}" for phase in PHASES))
    for services in sizes:
        lists = pages(services)
        gc.collect()
        started = time.perf_counter()
        store, spent = sync(lists)
        total = time.perf_counter() - started
        shares = " ".join(f"{spent[phase]:7.2f} ({spent[phase] / total:4.0%})" for phase in PHASES)
        print(f"{services:>9} {store.zone.name_count():>8} {total:>8.2f} {shares}")
        del store
    if args.profile:
        profile = cProfile.Profile()
        lists = pages(sizes[0])
        profile.runcall(sync, lists)
        pstats.Stats(profile).sort_stats("tottime").print_stats(15)
    if args.memory:
        memory(sizes[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
