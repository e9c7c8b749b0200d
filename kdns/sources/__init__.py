"""Where cluster objects come from: a snapshot file (`snapshot`), or the live API (`kube`); and
what kdns serves from them (`Sources`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kdns.config import ServeConfig
from kdns.core.budgets import POD_INDEX_BYTES
from kdns.core.convert import key_of
from kdns.core.model import ClusterObject, EndpointSlice, IPAddress
from kdns.core.records import Omission
from kdns.core.store import AS_THE_SPEC, Change, ClusterStore, PodMode, PublishOptions
from kdns.sources import snapshot
from kdns.state import State

if TYPE_CHECKING:
    from kdns.sources.kube import ClusterFollower

log = logging.getLogger(__name__)


def new_store(
    domain: str,
    ttl: int,
    pod_mode: PodMode,
    *,
    pod_budget: int = POD_INDEX_BYTES,
    fallback_ns_addresses: tuple[IPAddress, ...] = (),
    journal: Callable[[Change], None] | None = None,
    reports: bool = True,
    publish: PublishOptions = AS_THE_SPEC,
) -> ClusterStore:
    """The one way kdns makes a store, wherever it needs one: `reports` logs each part of an
    object DNS cannot carry, once (a worker that replays another store's journal reports
    nothing: that store does)."""
    return ClusterStore(
        domain,
        ttl,
        pod_mode,
        fallback_ns_addresses=fallback_ns_addresses,
        report=report_omission if reports else _silent,
        journal=journal,
        pod_budget=pod_budget,
        publish=publish,
    )


def store_for(
    config: ServeConfig,
    fallback_ns_addresses: tuple[IPAddress, ...] = (),
    journal: Callable[[Change], None] | None = None,
    reports: bool = True,
) -> ClusterStore:
    """`new_store` for the zone `config` serves."""
    return new_store(
        config.cluster_domain,
        config.ttl,
        config.pod_mode,
        pod_budget=config.pod_index_bytes,
        fallback_ns_addresses=fallback_ns_addresses,
        journal=journal,
        reports=reports,
        publish=config.publish,
    )


def build_store(path: Path, store: ClusterStore, endpoints: bool = True) -> snapshot.Snapshot:
    """Fill `store` from a snapshot file, its serial set to now; what the file held. Without
    `endpoints` (CoreDNS's `noendpoints`), its EndpointSlices are left out, as a live source
    does not watch them."""
    loaded = snapshot.load(path)
    objects = loaded.objects if endpoints else [obj for obj in loaded.objects if not isinstance(obj, EndpointSlice)]
    store.load(objects, on_error=_object_failed)
    store.bump_serial(int(time.time()))
    return loaded


@dataclass(frozen=True, slots=True)
class Sources:
    """What kdns serves: its state, the store, and what keeps the store following the cluster
    (None for a snapshot). Made before anything runs (`--workers` forks after the first build)."""

    state: State
    store: ClusterStore | None  # None for a node cache: it holds no zone
    follower: ClusterFollower | None


def open_sources(
    config: ServeConfig,
    fallback_ns_addresses: tuple[IPAddress, ...],
    journal: Callable[[Change], None] | None = None,
    workers_serving: Callable[[], bool] | None = None,
    state: State | None = None,
) -> Sources:
    """The state and store of `config`: loaded from its snapshot, or empty and followed; in
    `state` if given (a reload's `State.staging`), else a new one."""
    if state is None:
        # Queries are timed only when someone can read the figures: the metrics endpoint is on.
        state = State(time_requests=config.ops.metrics is not None, workers_serving=workers_serving)
    if config.node_cache:
        return Sources(state, None, None)
    if config.snapshot is not None:
        store = store_for(config, fallback_ns_addresses, journal)
        loaded = build_store(config.snapshot, store, config.watch.watch_endpoints)
        snapshot.report(loaded)
        counts = ", ".join(f"{count} {what}" for what, count in store.counts().items())
        log.info("loaded %s: %s", loaded.path, counts)
        report_stores(state, store)
        return Sources(state, store, None)
    # Only a live source needs the kubernetes client: importing it costs about 45 MB and a second
    # at start, which a snapshot (or a node cache) does without.
    from kdns.sources.kube import ClusterFollower, load_api_client

    api_client = load_api_client(config.kubeconfig, config.context, config.api_endpoint)
    store = store_for(config, fallback_ns_addresses, journal)
    report_stores(state, store)
    return Sources(state, store, ClusterFollower(store, api_client, config.watch, state))


def report_stores(state: State, store: ClusterStore) -> None:
    """Report the store's bounded parts (the pod index) with the state's other stores."""
    pods = store.pods
    state.add_stores("pod_index", lambda: {"pod_index": pods.figures()})


def report_omission(omission: Omission) -> None:
    """Log, once, a part of an object that DNS cannot carry (the rest of it is served)."""
    log.warning("left out of DNS: %s", omission)


def _silent(omission: Omission) -> None:
    return None


def _object_failed(obj: ClusterObject, error: Exception) -> None:
    """An object the store could not apply: logged; it never stops the others."""
    log.error("could not apply %s %s: %s: %s", type(obj).__name__, key_of(obj), type(error).__name__, error)
