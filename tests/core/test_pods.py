"""The pod index for `--pods verified` (kdns/core/pods.py)."""

from __future__ import annotations

import ipaddress
import tracemalloc

from kdns.core.model import Pod
from kdns.core.pods import PodIndex, pod_size


def _pod(namespace: str, name: str, *addresses: str) -> Pod:
    return Pod(namespace, name, tuple(ipaddress.ip_address(address) for address in addresses))


def _has(index: PodIndex, namespace: str, address: str) -> bool:
    return index.has(namespace, ipaddress.ip_address(address))


def test_an_address_is_verified_only_in_its_pods_namespace() -> None:
    index = PodIndex()
    assert index.upsert(_pod("a", "p", "10.244.0.5", "fd00::5"))
    assert _has(index, "a", "10.244.0.5") and _has(index, "a", "fd00::5")
    assert not _has(index, "b", "10.244.0.5") and not _has(index, "a", "10.244.0.6")
    assert not _has(index, "a", "::10.244.0.5")  # an IPv6 address is never taken for an IPv4 one
    assert index.get(("a", "p")) == _pod("a", "p", "10.244.0.5", "fd00::5")
    assert len(index) == 1 and list(index.keys()) == [("a", "p")]


def test_a_changed_pod_releases_its_old_addresses() -> None:
    index = PodIndex()
    index.upsert(_pod("a", "p", "10.244.0.5"))
    assert not index.upsert(_pod("a", "p", "10.244.0.9"))  # a replacement, not a new Pod
    assert not _has(index, "a", "10.244.0.5") and _has(index, "a", "10.244.0.9")
    index.upsert(_pod("a", "p"))  # lost its address (e.g. not scheduled again yet)
    assert not _has(index, "a", "10.244.0.9") and index.get(("a", "p")) == _pod("a", "p")
    assert index.delete(("a", "p")) and not index.delete(("a", "p"))
    assert len(index) == 0 and list(index.keys()) == []


def test_pods_sharing_an_address_each_keep_it_until_the_last_is_gone() -> None:
    """Host-network Pods have their node's address: several, in one namespace or many."""
    index = PodIndex()
    for namespace, name in (("a", "x"), ("a", "y"), ("b", "z")):
        index.upsert(_pod(namespace, name, "192.168.1.10"))
    index.delete(("a", "x"))
    assert _has(index, "a", "192.168.1.10") and _has(index, "b", "192.168.1.10")
    index.delete(("b", "z"))
    assert _has(index, "a", "192.168.1.10") and not _has(index, "b", "192.168.1.10")
    index.delete(("a", "y"))
    assert not _has(index, "a", "192.168.1.10")
    assert index._owners == {}  # nothing left behind


def test_keys_by_namespace() -> None:
    index = PodIndex()
    for namespace, name in (("a", "x"), ("a", "y"), ("b", "z")):
        index.upsert(_pod(namespace, name, "10.0.0.1"))
    assert sorted(index.keys("a")) == [("a", "x"), ("a", "y")]
    assert list(index.keys("c")) == [] and len(index) == 3


def test_a_pods_counted_size_is_at_least_what_the_index_holds_for_it() -> None:
    def single(i: int) -> Pod:
        return _pod(f"team-{i % 100}", f"web-7d9f8b6c5-{i:05x}", f"10.{i >> 8 & 255}.{i & 255}.1")

    def dual(i: int) -> Pod:
        return _pod(f"team-{i % 100}", f"api-{i}", f"10.250.{i >> 8}.{i & 255}", f"fd00::{i:x}")

    count = 20_000
    for make in (single, dual):
        index = PodIndex()  # from empty: its dictionaries' growth is shared by every Pod
        size = index.size
        tracemalloc.start()  # the Pods are made inside: the index keeps their names once they are gone
        before = tracemalloc.take_snapshot()
        for i in range(count):
            index.upsert(make(i))
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        held, counted = sum(stat.size_diff for stat in after.compare_to(before, "filename")), index.size - size
        assert held <= counted, f"held {held / count:.0f} bytes a Pod, counted {counted / count:.0f}"
        for key in list(index.keys()):
            index.delete(key)
        assert index.size == 0 and len(index) == 0


def test_a_full_index_takes_no_new_pod_until_deletions_make_room() -> None:
    """Issue 17: every store a tenant can grow has a budget in bytes. A full pod index refuses new
    Pods (counted) and keeps answering for those it holds; an indexed Pod is always updated."""
    index = PodIndex(budget=10 * pod_size(_pod("a", "p-00", "10.0.0.1")))
    for i in range(15):
        index.upsert(_pod("a", f"p-{i:02d}", f"10.0.0.{i + 1}"))
        assert index.size <= index.budget
    assert len(index) == 10 and index.refused == 5
    assert _has(index, "a", "10.0.0.10") and not _has(index, "a", "10.0.0.11")
    assert not index.upsert(_pod("a", "p-10", "10.0.0.11"))  # still full
    index.upsert(_pod("a", "p-00", "10.0.1.1"))  # an update of one it holds
    assert _has(index, "a", "10.0.1.1") and not _has(index, "a", "10.0.0.1")
    index.delete(("a", "p-01"))
    assert index.upsert(_pod("a", "p-10", "10.0.0.11")) and _has(index, "a", "10.0.0.11")
    assert index.figures() == (index.budget, index.size, 10, 6)
