"""Helpers shared by the tests: asking kdns, waiting for a condition (never a fixed sleep), a
query loop on a thread, the HTTP endpoints and their metrics, and a configuration for kdns
started in-process. Tests import these; no test imports another test module."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import trio

from kdns.address import SocketAddress
from kdns.config import ForwardConfig, ForwardOptions, OpsListeners, ServeConfig, TcpLimits, WatchOptions
from kdns.core.store import PodMode
from tests.process import EXAMPLE, KdnsServer

FAST = ("--api-timeout", "2", "--watch-timeout", "5", "--api-backoff-max", "1")
METRICS = ("--metrics-listen", "127.0.0.1:0")


def ask_server(
    server: KdnsServer, name: str, rdtype: str = "A", tcp: bool = False, timeout: float = 3.0
) -> tuple[str, list[str]]:
    """(rcode, sorted answer records) of one query to the real process."""
    query = dns.message.make_query(name, rdtype)
    send = dns.query.tcp if tcp else dns.query.udp
    reply = send(query, server.host, port=server.port, timeout=timeout)
    return dns.rcode.to_text(reply.rcode()), sorted(item.to_text() for rrset in reply.answer for item in rrset)


def answer_ttl(server: KdnsServer, name: str, rdtype: str = "A") -> int:
    """The TTL of the first answer record to one UDP query."""
    reply = dns.query.udp(dns.message.make_query(name, rdtype), server.host, port=server.port, timeout=3)
    return int(reply.answer[0].ttl)


def wait(check: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout} s: {what}")


def synced(server: KdnsServer) -> None:
    """Wait until every watcher has listed: until then a missing name is SERVFAIL, not NXDOMAIN."""
    wait(lambda: ask_server(server, "kdns-sync-check.nowhere.svc.cluster.local")[0] == "NXDOMAIN", 10, "first sync")


class QueryLoop:
    """Asks names in a loop on a thread, recording every answer that differs from the expected."""

    def __init__(self, server: KdnsServer, expected: dict[str, list[str]], timeout: float = 3.0) -> None:
        """`timeout`: how long each query may take before it counts as lost."""
        self.server = server
        self.expected = expected
        self.timeout = timeout
        self.asked = 0
        self.wrong: list[tuple[str, str, list[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, addresses in self.expected.items():
                try:
                    rcode, answer = ask_server(self.server, name, timeout=self.timeout)
                except dns.exception.Timeout:
                    rcode, answer = "TIMEOUT", []
                self.asked += 1
                if (rcode, answer) != ("NOERROR", addresses):
                    self.wrong.append((name, rcode, answer))
            time.sleep(0.02)

    def wait_for(self, more: int, timeout: float = 10) -> None:
        """Wait until the loop has asked `more` further names (instead of sleeping a while)."""
        target = self.asked + more
        wait(lambda: self.asked >= target, timeout, f"{more} more queries from the loop")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def watch_errors(server: KdnsServer) -> int:
    """Failed API requests so far, over every watcher (`kdns_watch_errors_total`); kdns must have
    been started with `--metrics-listen`."""
    body = http_get(http_port(server, "/metrics"), "/metrics")[1]
    return int(
        sum(float(line.split()[-1]) for line in body.splitlines() if line.startswith("kdns_watch_errors_total{"))
    )


def failures_grow(server: KdnsServer, more: int, timeout: float, what: str) -> None:
    """Wait until `more` further API requests have failed: the outage has been met and retried."""
    target = watch_errors(server) + more
    wait(lambda: watch_errors(server) >= target, timeout, what)


def http_get(port: int, path: str, host: str = "127.0.0.1") -> tuple[int, str]:
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: kdns\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := conn.recv(4096):
            data += chunk
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


def http_port(server: KdnsServer, path: str) -> int:
    """The port the `path` endpoint is served on, from kdns's log (each has a listener of its own)."""
    name = path.strip("/")
    wait(lambda: f"{name} on http://" in server.log_text(), 5, f"{path} listener")
    match = re.search(rf"{name} on http://(?:127\.0\.0\.1|\[::\]):(\d+){path}", server.log_text())
    assert match, server.log_text()
    return int(match.group(1))


def serve_config(**changes: object) -> ServeConfig:
    forward = ForwardConfig(
        upstreams=(),
        upstreams_from="the test",
        stubs=(),
        options=ForwardOptions(),
        cache_size=100,
        serve_stale=0,
        prefetch=False,
    )
    fields: dict[str, object] = {
        "snapshot": EXAMPLE,
        "kubeconfig": None,
        "context": None,
        "watch": WatchOptions(),
        "listen": (SocketAddress("127.0.0.1", 0),),
        "cluster_domain": "cluster.local",
        "pod_mode": PodMode.INSECURE,
        "ttl": 30,
        "max_udp": 1232,
        "tcp": TcpLimits(),
        "ops": OpsListeners(),
        "forward": forward,
    }
    fields.update(changes)
    return ServeConfig(**fields)  # type: ignore[arg-type]


async def ask_in_process(address: SocketAddress, name: str, rdtype: str = "A") -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.sendto(query.to_wire(), (address.host, address.port))
        with trio.fail_after(5):
            return dns.message.from_wire(await sock.recv(65535))


def metric(text: str, name: str) -> float:
    """The sum of every series of `name` in a Prometheus text exposition."""
    return sum(float(value) for value in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE))


def rss_bytes(pid: int) -> int:
    """The resident set size of process `pid` now (from /proc)."""
    for line in open(f"/proc/{pid}/status"):  # noqa: SIM115
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def children(pid: int) -> list[int]:
    """The child processes of `pid` (its worker processes, for kdns)."""
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def worker_pids(server: KdnsServer, count: int) -> list[int]:
    """The pids of `server`'s `count` worker processes, once it has them all."""
    wait(lambda: len(children(server.process.pid)) == count, 10, f"{count} workers")
    return children(server.process.pid)
