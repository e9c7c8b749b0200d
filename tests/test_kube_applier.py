"""Watch events and relists applied to the store, without any I/O: reconciliation by difference,
scoping, and bad input that never loses what was served."""

from __future__ import annotations

import itertools
import random
from typing import Any

from kdns.config import WatchOptions
from kdns.core.counters import ProgrammingDurations
from kdns.core.model import ClusterObject
from kdns.core.store import ClusterStore, PodMode
from kdns.sources.kube import Applier, backoff
from tests.builders import ask, endpoint, endpoint_slice, headless, namespace, pod, rcode, records, service


def _applier(**options: Any) -> tuple[ClusterStore, Applier]:
    store = ClusterStore("cluster.local", 30)
    return store, Applier(store, WatchOptions(**options), clock=lambda: 1_000_000)


def _address(store: ClusterStore, name: str) -> list[str]:
    return [line.split()[-1] for line in records(ask(store, name))]


def test_relist_adds_updates_and_deletes_by_difference() -> None:
    store, applier = _applier()
    applier.reconcile("Service", None, [service("a", "keep", ["10.96.0.1"]), service("a", "gone", ["10.96.0.2"])])
    keep_answer = store.zone.answer(b"\x04keep\x01a\x03svc\x07cluster\x05local\x00", 1)  # asked: made and kept
    applier.reconcile("Service", None, [service("a", "keep", ["10.96.0.1"]), service("a", "new", ["10.96.0.3"])])
    assert rcode(ask(store, "gone.a.svc.cluster.local")) == "NXDOMAIN"
    assert _address(store, "new.a.svc.cluster.local") == ["10.96.0.3"]
    # An object the relist did not change is not rebuilt at all.
    assert store.zone.prepared[(b"\x04keep\x01a\x03svc\x07cluster\x05local\x00", 1)] is keep_answer


def test_relist_scoped_to_a_namespace_leaves_other_namespaces_alone() -> None:
    store, applier = _applier(namespaces=("a", "b"))
    applier.reconcile("Service", "a", [service("a", "x", ["10.96.0.1"])])
    applier.reconcile("Service", "b", [service("b", "y", ["10.96.0.2"])])
    applier.reconcile("Service", "a", [])
    assert rcode(ask(store, "x.a.svc.cluster.local")) == "NXDOMAIN"
    assert _address(store, "y.b.svc.cluster.local") == ["10.96.0.2"]


def test_objects_outside_the_namespaces_are_ignored() -> None:
    store, applier = _applier(namespaces=("a",))
    applier.reconcile("Namespace", None, [namespace("a"), namespace("c")])
    assert not applier.event("Service", "ADDED", service("c", "x", ["10.96.0.1"]))
    assert rcode(ask(store, "c.svc.cluster.local")) == "NXDOMAIN"
    assert rcode(ask(store, "a.svc.cluster.local")) == "NOERROR"


def test_malformed_update_keeps_the_last_good_version() -> None:
    store, applier = _applier()
    applier.event("Service", "ADDED", service("a", "web", ["10.96.0.1"]))
    assert not applier.event("Service", "MODIFIED", service("a", "web", ["bogus"]))
    assert _address(store, "web.a.svc.cluster.local") == ["10.96.0.1"]
    applier.reconcile("Service", None, [service("a", "web", ["bogus"])])  # a relist with it too
    assert _address(store, "web.a.svc.cluster.local") == ["10.96.0.1"]


def test_event_without_a_readable_name_is_ignored() -> None:
    _store, applier = _applier()
    assert not applier.event("Service", "ADDED", {"kind": "Service", "metadata": {}})
    assert not applier.event("Service", "DELETED", "not an object")


def test_slice_that_loses_its_service_label_leaves_the_service() -> None:
    store, applier = _applier()
    applier.event("Service", "ADDED", headless("a", "db"))
    applier.event("EndpointSlice", "ADDED", endpoint_slice("a", "s", "db", [endpoint("10.244.0.1")]))
    assert _address(store, "db.a.svc.cluster.local") == ["10.244.0.1"]
    unlabelled = endpoint_slice("a", "s", "db", [endpoint("10.244.0.1")])
    del unlabelled["metadata"]["labels"]
    applier.event("EndpointSlice", "MODIFIED", unlabelled)
    assert rcode(ask(store, "db.a.svc.cluster.local")) == "NXDOMAIN"


def test_each_applied_change_moves_the_serial() -> None:
    store, applier = _applier()
    before = store.zone.serial
    applier.event("Service", "ADDED", service("a", "web"))
    applier.event("Service", "DELETED", service("a", "web"))
    assert store.zone.serial == max(before + 2, 1_000_001)


def test_backoff_doubles_to_its_cap_with_jitter_in_the_upper_half() -> None:
    delays = list(itertools.islice(backoff(0.5, 4.0, random.Random(1)), 8))
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays)) == len(delays)  # jittered, not in step


def test_one_service_that_cannot_be_published_in_full_never_stops_the_rest_of_its_page() -> None:
    """Issue 8 D1: a 63-character port name used to raise in the middle of a list page, so that
    the rest of the page was never applied and then deleted as unlisted."""
    store, applier = _applier()
    ports = [{"name": "p" * 63, "port": 81}]
    page = [service("a", "bad", ["10.96.0.9"], ports=ports)] + [
        service("a", f"s{i}", [f"10.96.0.{i}"]) for i in range(1, 4)
    ]
    applier.reconcile("Service", None, page)
    for i in range(1, 4):
        assert _address(store, f"s{i}.a.svc.cluster.local") == [f"10.96.0.{i}"]
    assert _address(store, "bad.a.svc.cluster.local") == ["10.96.0.9"]
    applier.reconcile("Service", None, page)  # a relist after compaction keeps serving them all
    for i in range(1, 4):
        assert _address(store, f"s{i}.a.svc.cluster.local") == [f"10.96.0.{i}"]
    assert applier.event("Service", "MODIFIED", service("a", "bad", ["10.96.0.8"], ports=ports))
    assert _address(store, "bad.a.svc.cluster.local") == ["10.96.0.8"]


class _FailingStore(ClusterStore):
    """A store that fails on one object, standing for any fault the applier did not foresee."""

    def upsert(self, obj: ClusterObject) -> None:
        if getattr(obj, "name", "") == "boom":
            raise RuntimeError("an unforeseen fault")
        super().upsert(obj)


def test_an_unforeseen_fault_on_one_object_is_contained_to_it() -> None:
    store = _FailingStore("cluster.local", 30)
    applier = Applier(store, WatchOptions(), clock=lambda: 1_000_000)
    applier.reconcile("Service", None, [service("a", "s1", ["10.96.0.1"]), service("a", "s2", ["10.96.0.2"])])
    page = [service("a", "s1", ["10.96.0.1"]), service("a", "boom", ["10.96.0.3"]), service("a", "s2", ["10.96.0.2"])]
    applier.reconcile("Service", None, page)
    assert _address(store, "s1.a.svc.cluster.local") == ["10.96.0.1"]
    assert _address(store, "s2.a.svc.cluster.local") == ["10.96.0.2"]
    assert not applier.event("Service", "ADDED", service("a", "boom", ["10.96.0.3"]))
    assert applier.errors == 2


def test_programming_latency_is_counted_per_kind_from_the_changes_own_time() -> None:
    """kdns_dns_programming_duration_seconds: a slice from its last-change-trigger-time, a new
    Service from its creation time, to the moment the change is applied (and served)."""
    store = ClusterStore("cluster.local", 30)
    programming = ProgrammingDurations()
    now = 1_800_000_000.0
    applier = Applier(store, WatchOptions(), clock=lambda: now, programming=programming)
    created = service("a", "web", ["10.96.0.1"])
    created["metadata"]["creationTimestamp"] = "2027-01-15T07:20:00Z"  # 1,800,000,000 - 2,400 s
    assert applier.event("Service", "ADDED", created)
    assert programming.by_kind["cluster_ip"].total == 2400.0
    # A later change to the same Service says nothing new about when it happened: not counted.
    created["spec"]["ports"][0]["port"] = 81
    assert applier.event("Service", "MODIFIED", created)
    assert sum(programming.by_kind["cluster_ip"].counts) == 1
    # A headless Service's slice, with the trigger time the EndpointSlice controller sets.
    db = headless("a", "db")
    db["spec"]["selector"] = {"app": "db"}
    applier.reconcile("Service", None, [db])  # listed: not counted
    slice_ = endpoint_slice("a", "db-x", "db", [endpoint("10.244.0.1")])
    slice_["metadata"]["annotations"] = {"endpoints.kubernetes.io/last-change-trigger-time": "2027-01-15T07:59:58.5Z"}
    assert applier.event("EndpointSlice", "ADDED", slice_)
    assert programming.by_kind["headless_with_selector"].total == 1.5
    assert _address(store, "db.a.svc.cluster.local") == ["10.244.0.1"]
    # Not counted: a slice without the annotation, one with an unreadable one, and deletions.
    unannotated = endpoint_slice("a", "db-y", "db", [endpoint("10.244.0.2")])
    assert applier.event("EndpointSlice", "ADDED", unannotated)
    unreadable = endpoint_slice("a", "db-z", "db", [endpoint("10.244.0.3")])
    unreadable["metadata"]["annotations"] = {"endpoints.kubernetes.io/last-change-trigger-time": "yesterday"}
    assert applier.event("EndpointSlice", "ADDED", unreadable)
    assert applier.event("EndpointSlice", "DELETED", slice_)
    assert sum(programming.by_kind["headless_with_selector"].counts) == 1
    assert set(programming.by_kind) == {"cluster_ip", "headless_with_selector"}


def test_a_pod_that_finishes_or_terminates_stops_verifying_and_mapping_its_address() -> None:
    """Issue 17, K10: with `--pods verified`, a Pod that has Succeeded (or is being deleted) kept
    its name, and when its address was reused, names and autopath spoke for the wrong namespace.
    CoreDNS leaves terminating and finished Pods out."""
    store = ClusterStore("cluster.local", 30, PodMode.VERIFIED)
    applier = Applier(store, WatchOptions(), clock=lambda: 1_000_000)
    applier.reconcile("Namespace", None, [namespace("a"), namespace("b")])
    running = {**pod("a", "job", "10.244.0.7"), "status": {"phase": "Running", "podIP": "10.244.0.7"}}
    applier.event("Pod", "ADDED", running)
    assert rcode(ask(store, "10-244-0-7.a.pod.cluster.local")) == "NOERROR"
    assert store.pods.namespace_of("10.244.0.7") == "a"
    applier.event("Pod", "MODIFIED", {**running, "status": {"phase": "Succeeded", "podIP": "10.244.0.7"}})
    assert rcode(ask(store, "10-244-0-7.a.pod.cluster.local")) == "NXDOMAIN"
    assert store.pods.namespace_of("10.244.0.7") is None
    # The address goes to a Pod of another namespace: only that one verifies, and autopath maps to it.
    applier.event("Pod", "ADDED", {**pod("b", "web", "10.244.0.7"), "status": {"podIP": "10.244.0.7"}})
    assert rcode(ask(store, "10-244-0-7.a.pod.cluster.local")) == "NXDOMAIN"
    assert rcode(ask(store, "10-244-0-7.b.pod.cluster.local")) == "NOERROR"
    assert store.pods.namespace_of("10.244.0.7") == "b"
    deleting = {**pod("b", "web", "10.244.0.7"), "status": {"podIP": "10.244.0.7"}}
    deleting["metadata"] = {**deleting["metadata"], "deletionTimestamp": "2026-12-07T10:00:00Z"}
    applier.event("Pod", "MODIFIED", deleting)
    assert rcode(ask(store, "10-244-0-7.b.pod.cluster.local")) == "NXDOMAIN"
    assert store.pods.namespace_of("10.244.0.7") is None
