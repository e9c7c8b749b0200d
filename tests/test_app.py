"""The application started in-process (issue 9, point 4): `app.run` in a nursery, reporting where
it listens once bound, its state readable by the test, stopped by cancelling it."""

from __future__ import annotations

import socket

import dns.message
import dns.rcode
import trio

from kdns import app
from kdns.address import SocketAddress
from kdns.config import ForwardConfig, ForwardOptions, OpsListeners, ServeConfig, TcpLimits, WatchOptions
from kdns.core.store import PodMode
from tests.process import EXAMPLE


def _config(**changes: object) -> ServeConfig:
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


async def _ask(address: SocketAddress, name: str, rdtype: str = "A") -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.sendto(query.to_wire(), (address.host, address.port))
        with trio.fail_after(5):
            return dns.message.from_wire(await sock.recv(65535))


async def test_kdns_starts_in_process_serves_and_counts_what_it_answered(nursery: trio.Nursery) -> None:
    running: app.Running = await nursery.start(app.run, _config())
    address = running.addresses[0]
    assert address.port != 0 and running.state.ready()
    web = await _ask(address, "web.prod.svc.cluster.local")
    assert web.answer[0][0].address == "10.96.12.34"
    assert (await _ask(address, "nope.prod.svc.cluster.local")).rcode() == dns.rcode.NXDOMAIN
    assert (await _ask(address, "www.example.com")).rcode() == dns.rcode.REFUSED  # no upstream
    queries = running.state.queries
    assert queries.replies[("udp", 1, 1, dns.rcode.NOERROR)] == 1  # UDP, IPv4, A, NOERROR
    assert queries.by_rcode(dns.rcode.NXDOMAIN) == 1 and queries.by_rcode(dns.rcode.REFUSED) == 1
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.sendto(b"\x12\x34\x01", (address.host, address.port))  # a fragment: dropped
        await trio.sleep(0.1)
    assert queries.dropped == 1
    nursery.cancel_scope.cancel()


async def test_two_instances_run_side_by_side_in_one_program(nursery: trio.Nursery) -> None:
    first: app.Running = await nursery.start(app.run, _config())
    second: app.Running = await nursery.start(app.run, _config(ttl=7))
    assert first.addresses[0].port != second.addresses[0].port
    answer = await _ask(second.addresses[0], "web.prod.svc.cluster.local")
    assert answer.answer[0].ttl == 7
    assert first.state.queries.total() == 0 and second.state.queries.total() == 1
    nursery.cancel_scope.cancel()
