"""The application started in-process (issue 9, point 4): `app.run` in a nursery, reporting where
it listens once bound, its state readable by the test, stopped by cancelling it."""

from __future__ import annotations

import socket

import dns.message
import dns.rcode
import trio

from kdns import app
from tests.helpers import ask_in_process, serve_config


async def test_kdns_starts_in_process_serves_and_counts_what_it_answered(nursery: trio.Nursery) -> None:
    running: app.Running = await nursery.start(app.run, serve_config())
    address = running.addresses[0]
    assert address.port != 0 and running.state.ready()
    web = await ask_in_process(address, "web.prod.svc.cluster.local")
    assert web.answer[0][0].address == "10.96.12.34"
    assert (await ask_in_process(address, "nope.prod.svc.cluster.local")).rcode() == dns.rcode.NXDOMAIN
    assert (await ask_in_process(address, "www.example.com")).rcode() == dns.rcode.REFUSED  # no upstream
    queries = running.state.queries
    assert queries.replies[("udp", 1, 1, dns.rcode.NOERROR)] == 1  # UDP, IPv4, A, NOERROR
    assert queries.by_rcode(dns.rcode.NXDOMAIN) == 1 and queries.by_rcode(dns.rcode.REFUSED) == 1
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.sendto(b"\x12\x34\x01", (address.host, address.port))  # a fragment: dropped
        with trio.fail_after(5):
            while queries.dropped < 1:  # counted once the listener has read it
                await trio.sleep(0.01)
    assert queries.dropped == 1
    nursery.cancel_scope.cancel()


async def test_two_instances_run_side_by_side_in_one_program(nursery: trio.Nursery) -> None:
    first: app.Running = await nursery.start(app.run, serve_config())
    second: app.Running = await nursery.start(app.run, serve_config(ttl=7))
    assert first.addresses[0].port != second.addresses[0].port
    answer = await ask_in_process(second.addresses[0], "web.prod.svc.cluster.local")
    assert answer.answer[0].ttl == 7
    assert first.state.queries.total() == 0 and second.state.queries.total() == 1
    nursery.cancel_scope.cancel()
