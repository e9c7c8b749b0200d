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


class PodIndex:
    """Pods by namespace and name, and which namespaces hold each address."""

    def __init__(self) -> None:
        self._pods: dict[str, dict[str, _Addresses]] = {}  # namespace -> name -> addresses
        # address -> the namespace of the one Pod that has it, or (rarely: host-network Pods
        # share their node's address) how many Pods in each namespace have it.
        self._owners: dict[int, str | dict[str, int]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

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

    def keys(self, namespace: str | None = None) -> Iterator[tuple[str, str]]:
        namespaces = self._pods if namespace is None else {namespace: self._pods.get(namespace, {})}
        for name_space, names in namespaces.items():
            for name in names:
                yield (name_space, name)

    def upsert(self, pod: Pod) -> bool:
        """Add or replace `pod`; whether it is new (not a replacement)."""
        namespace = sys.intern(pod.namespace)  # shared by every Pod and address of the namespace
        names = self._pods.setdefault(namespace, {})
        old = names.get(pod.name)
        if old is not None:
            self._release(namespace, _numbers(old))
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
