"""A "pod" for tests: a network namespace joined to this one by a veth pair, with a resolv.conf of
its own (`ip netns exec` mounts /etc/netns/NAME/resolv.conf over /etc/resolv.conf), so that
glibc's resolver in it behaves as a pod's does. Needs root and `ip` (iproute2); tests skip,
saying so, without them."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Namespace:
    name: str
    address: str  # the address inside the namespace (the "pod IP")
    host_address: str  # this side of the veth: where a server for the namespace listens

    def run(self, *command: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *command], capture_output=True, text=True, timeout=timeout, check=False
        )


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def skip_without_netns() -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2's `ip`")
    probe = f"kdns-probe-{os.getpid()}"
    result = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot make a network namespace here: {result.stderr.strip()}")
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)


@contextmanager
def node_namespace(tag: str, *local_addresses: str) -> Iterator[str]:
    """A bare namespace (a "node"), its loopback up and holding `local_addresses` (as NodeLocal
    DNSCache's dummy interface holds 169.254.20.10)."""
    skip_without_netns()
    name = f"kdns-node-{os.getpid() % 10000}{tag}"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        for address in local_addresses:
            _ip("-n", name, "addr", "add", f"{address}/32", "dev", "lo")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


@contextmanager
def pod_namespace(subnet: int, resolv_conf: str, peer: str | None = None) -> Iterator[Namespace]:
    """A namespace at 10.250.`subnet`.2 reaching 10.250.`subnet`.1 (in this namespace, or in the
    namespace `peer`), routed through it, with `resolv_conf`."""
    skip_without_netns()
    tag = f"{os.getpid() % 10000}x{subnet}"
    name, host_side, pod_side = f"kdns-pod-{tag}", f"kh{tag}", f"kp{tag}"
    address, host_address = f"10.250.{subnet}.2", f"10.250.{subnet}.1"
    etc = Path("/etc/netns") / name
    peer_flag = ("-n", peer) if peer is not None else ()
    _ip("netns", "add", name)
    try:
        _ip("link", "add", host_side, "type", "veth", "peer", "name", pod_side)
        _ip("link", "set", pod_side, "netns", name)
        if peer is not None:
            _ip("link", "set", host_side, "netns", peer)
        _ip(*peer_flag, "addr", "add", f"{host_address}/24", "dev", host_side)
        _ip(*peer_flag, "link", "set", host_side, "up")
        _ip("-n", name, "addr", "add", f"{address}/24", "dev", pod_side)
        _ip("-n", name, "link", "set", pod_side, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "route", "add", "default", "via", host_address)
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text(resolv_conf)
        (etc / "hosts").write_text("127.0.0.1 localhost\n")  # nothing answered from files
        yield Namespace(name, address, host_address)
    finally:
        subprocess.run(["ip", *peer_flag, "link", "del", host_side], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        shutil.rmtree(etc, ignore_errors=True)
