"""Where a first sync's time goes (issue 20, point 2): the live source's path in one process, with
no API server in the way, phase by phase: the JSON pages parsed, each object prepared (converted
to the model), applied to the store with publishing held (`ClusterStore.hold`, as the follower
does until every watcher has listed), and the release that publishes every Service at once (the
records and the prepared answers). Synthetic clusters as `bench/zone_build.py` makes them (1 to 20
endpoints a Service, a fifth headless). Seconds, and each phase's share of the whole; nothing is
asserted. `--profile` adds cProfile's heaviest functions for the first size.

    .venv/bin/python bench/sync_phases.py [--sizes 1000,10000,50000] [--profile]
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--profile", action="store_true")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
