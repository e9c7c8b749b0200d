"""The pod index for `--pods verified` (kdns/core/pods.py)."""

from __future__ import annotations

import ipaddress

from kdns.core.model import Pod
from kdns.core.pods import PodIndex


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
