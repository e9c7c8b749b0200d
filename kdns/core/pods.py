"""The Pods kdns knows, held for one question only: does a Pod in this namespace have this
address? (`--pods verified`, spec 2.6.1 and CoreDNS's `pods verified`.)

A cluster of 5,000 nodes runs about 150,000 Pods, so the index holds no Pod objects: per
namespace, each Pod's name and its addresses as integers, and beside it each address's
namespace. Every change is O(1) in the number of Pods (O(addresses of the Pod)); 150,000 Pods
take about 24 MB (`bench/zone_build.py --pods`), where whole Pod records took three times that.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Iterator

from kdns.core.budgets import POD_INDEX_BYTES, StoreSize
from kdns.core.model import IPAddress, Pod

_IPV6 = 1 << 128  # IPv6 addresses are kept above every IPv4 one: `::a.b.c.d` is not `a.b.c.d`

# One Pod's addresses: one integer for the usual single address, a tuple for none or several.
_Addresses = int | tuple[int, ...]


def _number(address: IPAddress) -> int:
    return int(address) if address.version == 4 else int(address) | _IPV6


def _address(number: int) -> IPAddress:
    return ipaddress.IPv6Address(number ^ _IPV6) if number >= _IPV6 else ipaddress.IPv4Address(number)


def _numbers(addresses: _Addresses) -> tuple[int, ...]:
    return (addresses,) if isinstance(addresses, int) else addresses


# Bytes one Pod holds in the index beyond its name's characters: the name string's header and
# its slot in its namespace's dictionary; per address the integer (44 bytes for IPv6) and its
# slot in `_owners`; and the tuple of a Pod with several addresses (tests/core/test_pods.py
# measures it with tracemalloc and fails if a Pod holds more).
POD_OVERHEAD = 112
ADDRESS_OVERHEAD = 128
ADDRESSES_TUPLE = 72


def pod_size(pod: Pod) -> int:
    """What indexing `pod` holds, in bytes: the index's budget's measure."""
    return _size(pod.name, len(pod.ips))


def _size(name: str, addresses: int) -> int:
    return POD_OVERHEAD + len(name) + ADDRESS_OVERHEAD * addresses + (ADDRESSES_TUPLE if addresses > 1 else 0)


class PodIndex:
    """Pods by namespace and name, and which namespaces hold each address, within `budget`
    bytes (`pod_size` each). When full, a new Pod is not taken in (counted in `refused`) until
    deletions make room: the Pods indexed keep their answers, and a tenant creating Pods cannot
    grow kdns past its budget. A Pod already indexed is always updated."""

    def __init__(self, budget: int = POD_INDEX_BYTES) -> None:
        self._pods: dict[str, dict[str, _Addresses]] = {}  # namespace -> name -> addresses
        # address -> the namespace of the one Pod that has it, or (rarely: host-network Pods
        # share their node's address) how many Pods in each namespace have it.
        self._owners: dict[int, str | dict[str, int]] = {}
        self._count = 0
        self.budget = budget
        self.size = 0  # bytes held, as `pod_size` counts them
        self.refused = 0  # new Pods not taken in: the index was full

    def __len__(self) -> int:
        return self._count

    def figures(self) -> StoreSize:
        return StoreSize(self.budget, self.size, self._count, self.refused)

    def has(self, namespace: str, address: IPAddress) -> bool:
        """Whether a Pod in `namespace` has `address`: one lookup."""
        owner = self._owners.get(_number(address))
        if owner is None:
            return False
        return owner == namespace if isinstance(owner, str) else namespace in owner

    def namespace_of(self, host: str) -> str | None:
        """The namespace of the Pods at the address `host` (a client's, as the socket gives it),
        or None when no Pod has it, or Pods of several namespaces do (host-network Pods share
        their node's address): `--autopath` then leaves the query alone. One lookup."""
        try:
            owner = self._owners.get(_number(ipaddress.ip_address(host.partition("%")[0])))
        except ValueError:
            return None
        if owner is None or isinstance(owner, str):
            return owner
        return next(iter(owner)) if len(owner) == 1 else None

    def get(self, key: tuple[str, str]) -> Pod | None:
        addresses = self._pods.get(key[0], {}).get(key[1])
        if addresses is None:
            return None
        return Pod(key[0], key[1], tuple(_address(number) for number in _numbers(addresses)))

    def snapshot(self) -> Iterator[Pod]:
        """Every Pod held now, from a copy of the index made at the call (a dictionary copy per
        namespace, in C: milliseconds at 100,000 Pods); the Pods are made as the iterator is
        walked, which may be on another thread while this index changes."""
        copies = [(namespace, names.copy()) for namespace, names in self._pods.items()]
        return (
            Pod(namespace, name, tuple(_address(number) for number in _numbers(addresses)))
            for namespace, names in copies
            for name, addresses in names.items()
        )

    def keys(self, namespace: str | None = None) -> Iterator[tuple[str, str]]:
        namespaces = self._pods if namespace is None else {namespace: self._pods.get(namespace, {})}
        for name_space, names in namespaces.items():
            for name in names:
                yield (name_space, name)

    def upsert(self, pod: Pod) -> bool:
        """Add or replace `pod`; whether it is new (not a replacement, nor refused: see
        `refused`)."""
        namespace = sys.intern(pod.namespace)  # shared by every Pod and address of the namespace
        old = self._pods.get(namespace, {}).get(pod.name)
        size = pod_size(pod)
        if old is None and self.size + size > self.budget:
            self.refused += 1
            return False
        names = self._pods.setdefault(namespace, {})
        if old is not None:
            self._release(namespace, _numbers(old))
            self.size -= _size(pod.name, len(_numbers(old)))
        self.size += size
        numbers = tuple(_number(address) for address in pod.ips)
        names[pod.name] = numbers[0] if len(numbers) == 1 else numbers
        for number in numbers:
            self._claim(namespace, number)
        if old is None:
            self._count += 1
        return old is None

    def delete(self, key: tuple[str, str]) -> bool:
        """Remove the Pod at (namespace, name); whether there was one."""
        names = self._pods.get(key[0])
        old = names.pop(key[1], None) if names is not None else None
        if names is None or old is None:
            return False
        if not names:
            del self._pods[key[0]]
        self._release(key[0], _numbers(old))
        self.size -= _size(key[1], len(_numbers(old)))
        self._count -= 1
        return True

    def _claim(self, namespace: str, number: int) -> None:
        owner = self._owners.get(number)
        if owner is None:
            self._owners[number] = namespace
            return
        counts = {owner: 1} if isinstance(owner, str) else owner
        counts[namespace] = counts.get(namespace, 0) + 1
        self._owners[number] = counts

    def _release(self, namespace: str, numbers: tuple[int, ...]) -> None:
        for number in numbers:
            owner = self._owners.get(number)
            if owner is None:
                continue
            if isinstance(owner, str):
                if owner == namespace:
                    del self._owners[number]
                continue
            left = owner.get(namespace, 0) - 1
            if left > 0:
                owner[namespace] = left
            else:
                owner.pop(namespace, None)
            if not owner:
                del self._owners[number]
            elif len(owner) == 1 and next(iter(owner.values())) == 1:
                self._owners[number] = next(iter(owner))  # back to the usual single owner
