"""Every setting applied while serving (issue 19, point 4): a new configuration is built beside the
running one and swapped in at once; a query in flight finishes on the old one; new listen
addresses are bound before the swap; a configuration that cannot be served is refused and the
running one stays whole. In-process (`app.run`, `Running.apply`) with real sockets, and the real
process with a Corefile edited under a query loop, and re-listing a real kube-apiserver when the
`kubernetes` options change."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import dns.message
import pytest
import trio

from kdns import app
from kdns.address import SocketAddress
from kdns.config import ForwardConfig, ForwardOptions, OpsListeners, ServeConfig, TcpLimits
from kdns.errors import KdnsError
from tests.apiserver import FakeApiServer
from tests.builders import namespace, service
from tests.fakeupstream import FakeUpstream
from tests.helpers import (
    QueryLoop,
    answer_ttl,
    ask_in_process,
    ask_server,
    http_get,
    http_port,
    metric,
    serve_config,
    wait,
)
from tests.kubeapi import RealApiServer, assets, free_port, real_apiserver
from tests.process import EXAMPLE, KdnsServer

WEB = "web.prod.svc.cluster.local"  # in the example snapshot, 10.96.12.34


def _forwarding_to(upstream: FakeUpstream, **changes: object) -> ServeConfig:
    forward = ForwardConfig(
        upstreams=(SocketAddress("127.0.0.1", upstream.port),),
        upstreams_from="the test",
        stubs=(),
        options=ForwardOptions(timeout=30.0),  # a held answer is waited for, not retried
        cache_size=100,
        serve_stale=0,
        prefetch=False,
    )
    return serve_config(forward=forward, **changes)


async def _apply(running: app.Running, new: ServeConfig) -> list[str]:
    assert running.apply is not None
    return await running.apply(new)


async def test_new_upstreams_answer_after_the_swap_and_a_query_in_flight_finishes_on_the_old_ones(
    nursery: trio.Nursery, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    first, second = upstreams
    config = _forwarding_to(first)
    running: app.Running = await nursery.start(app.run, config)
    address = running.addresses[0]
    first.mode = "held"  # the old upstream holds its answer until released
    in_flight: list[dns.message.Message] = []

    async def ask_held() -> None:
        in_flight.append(await ask_in_process(address, "held.example"))

    nursery.start_soon(ask_held)
    with trio.fail_after(5):
        while "held.example." not in first.names:
            await trio.sleep(0.01)
    assert await _apply(running, _forwarding_to(second)) == []  # nothing left for a restart
    fresh = await ask_in_process(address, "fresh.example")
    assert fresh.answer[0][0].address == "192.0.2.2"  # the new upstreams, at once
    assert "fresh.example." not in first.names
    first.release()
    with trio.fail_after(5):
        while not in_flight:
            await trio.sleep(0.01)
    assert in_flight[0].answer[0][0].address == "192.0.2.1"  # finished on the old ones
    nursery.cancel_scope.cancel()


async def test_a_new_ttl_rebuilds_the_zone_while_the_old_one_answers(nursery: trio.Nursery) -> None:
    running: app.Running = await nursery.start(app.run, serve_config())
    address = running.addresses[0]
    assert (await ask_in_process(address, WEB)).answer[0].ttl == 30
    assert await _apply(running, serve_config(ttl=7)) == []
    assert (await ask_in_process(address, WEB)).answer[0].ttl == 7
    assert running.state.reloads == 0  # counted by the Reloader, which read the file
    nursery.cancel_scope.cancel()


async def test_a_new_listen_address_is_bound_before_the_swap_and_the_old_one_closed(nursery: trio.Nursery) -> None:
    running: app.Running = await nursery.start(app.run, serve_config())
    old = running.addresses[0]
    port = free_port()
    await _apply(running, serve_config(listen=(SocketAddress("127.0.0.1", port),)))
    assert (await ask_in_process(SocketAddress("127.0.0.1", port), WEB)).answer[0][0].address == "10.96.12.34"
    with pytest.raises(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", port))  # taken: kdns listens there
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((old.host, old.port))  # free again: the old listener is closed
    nursery.cancel_scope.cancel()


async def test_a_configuration_that_cannot_bind_is_refused_whole_and_the_running_one_stays(
    nursery: trio.Nursery,
) -> None:
    running: app.Running = await nursery.start(app.run, serve_config())
    address = running.addresses[0]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        both = (address, SocketAddress("127.0.0.1", port))
        with pytest.raises(KdnsError, match=str(port)):
            await _apply(running, serve_config(ttl=7, listen=(SocketAddress("127.0.0.1", 0), both[1])))
    # Nothing of it applies: the old TTL, the old listener; the configuration is the old one.
    assert (await ask_in_process(address, WEB)).answer[0].ttl == 30
    assert await _apply(running, serve_config(ttl=9)) == []
    assert (await ask_in_process(address, WEB)).answer[0].ttl == 9
    nursery.cancel_scope.cancel()


async def test_a_new_cluster_source_that_does_not_list_in_time_is_refused_and_the_running_one_stays(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A reload onto an API server that answers every list with 500: its watches are given
    `live.SYNC_WITHIN` (virtual time here) to list, then the reload is refused and the snapshot's
    zone keeps answering, its readiness untouched (the new watches are not the state's)."""
    running: app.Running = await nursery.start(app.run, serve_config())
    address = running.addresses[0]
    failing = FakeApiServer()
    try:
        failing.fail()
        new = serve_config(snapshot=None, kubeconfig=str(failing.kubeconfig(tmp_path)), ttl=7)
        with pytest.raises(KdnsError, match="did not all list within 30 s"):
            await _apply(running, new)
        assert failing.requests  # it was asked
    finally:
        failing.stop()
    reply = await ask_in_process(address, WEB)
    assert reply.answer[0].ttl == 30 and reply.answer[0][0].address == "10.96.12.34"
    assert running.state.synced() and running.state.watches == {}
    nursery.cancel_scope.cancel()


async def test_operations_endpoints_move_and_tcp_limits_apply(nursery: trio.Nursery) -> None:
    ops = OpsListeners(metrics=SocketAddress("127.0.0.1", 0))
    running: app.Running = await nursery.start(app.run, serve_config(ops=ops))
    assert running.metrics is not None
    port = free_port()
    moved = OpsListeners(metrics=SocketAddress("127.0.0.1", port), health=SocketAddress("127.0.0.1", 0))
    limits = TcpLimits(max_connections=3)
    assert await _apply(running, serve_config(ops=moved, tcp=limits)) == []
    assert await _apply(running, serve_config(ops=moved, tcp=limits, workers=2)) == ["workers"]  # a restart's
    status, body = await trio.to_thread.run_sync(http_get, port, "/metrics")
    assert status == 200 and metric(body, "coredns_dns_requests_total") >= 0
    with pytest.raises(OSError):
        await trio.to_thread.run_sync(http_get, running.metrics.port, "/metrics")
    # Four TCP connections to a cap of three: the one idle longest is closed for the fourth.
    streams = [await trio.open_tcp_stream("127.0.0.1", running.addresses[0].port) for _ in range(4)]
    with trio.fail_after(5):
        while running.state.tcp_refused < 1:
            await trio.sleep(0.01)
    for stream in streams:
        await stream.aclose()
    nursery.cancel_scope.cancel()


# -- the real process: a Corefile edited under a query loop ----------------------------------------


def _corefile(path: Path, upstream: FakeUpstream, *, ttl: int, extra: str = "") -> None:
    path.write_text(
        ".:0 {\n"
        "    bind 127.0.0.1\n"
        f"    kubernetes cluster.local in-addr.arpa ip6.arpa {{\n        ttl {ttl}\n    }}\n"
        "    prometheus 127.0.0.1:0\n"
        f"    forward . {upstream.spec}\n"
        "    reload 2s\n"
        "}\n" + extra
    )


def test_a_corefile_edit_applies_every_setting_with_no_failed_query(
    tmp_path: Path, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    first, second = upstreams
    corporate = FakeUpstream("198.51.100.7")
    corefile = tmp_path / "Corefile"
    _corefile(corefile, first, ttl=30)
    server = KdnsServer("--snapshot", str(EXAMPLE), corefile=corefile, listen=("",))
    loop = QueryLoop(server, {WEB: ["10.96.12.34"], "www.example.com": ["192.0.2.1"]})
    try:
        loop.wait_for(10)
        loop.stop()
        assert loop.wrong == []
        # One edit: another upstream, another TTL, a stub domain in a server block of its own.
        stub = f"corp.example:0 {{\n    bind 127.0.0.1\n    forward . {corporate.spec}\n}}\n"
        _corefile(corefile, second, ttl=11, extra=stub)
        loop = QueryLoop(server, {WEB: ["10.96.12.34"]})
        wait(lambda: "reload applied: " in server.log_text(), 15, "the Corefile edit applied")
        assert answer_ttl(server, WEB) == 11
        assert ask_server(server, "new.example.com") == ("NOERROR", ["192.0.2.2"])
        assert ask_server(server, "www.corp.example") == ("NOERROR", ["198.51.100.7"])
        loop.wait_for(20)
        assert loop.wrong == [] and server.alive()
    finally:
        loop.stop()
        server.stop()
        corporate.close()


def test_a_nodehosts_edit_is_answered_with_no_failed_query(tmp_path: Path) -> None:
    """k3s's `hosts /etc/coredns/NodeHosts { reload 15s fallthrough }`: a node added to the file
    is answered after its next look, while the cluster's names and the nodes already there keep
    answering."""
    node_hosts = tmp_path / "NodeHosts"
    node_hosts.write_text("10.0.0.1 server-0\n")
    corefile = tmp_path / "Corefile"
    corefile.write_text(
        ".:0 {\n    bind 127.0.0.1\n    kubernetes cluster.local in-addr.arpa ip6.arpa\n"
        f"    hosts {node_hosts} {{\n        ttl 60\n        reload 1s\n        fallthrough\n    }}\n}}\n"
    )
    server = KdnsServer("--snapshot", str(EXAMPLE), corefile=corefile, listen=("",))
    loop = QueryLoop(server, {WEB: ["10.96.12.34"], "server-0": ["10.0.0.1"]})
    try:
        assert ask_server(server, "agent-1")[0] == "REFUSED"  # not in the file: on to no upstream
        node_hosts.write_text("10.0.0.1 server-0\n10.0.0.2 agent-1\n")
        wait(lambda: ask_server(server, "agent-1") == ("NOERROR", ["10.0.0.2"]), 15, "the new node answered")
        assert answer_ttl(server, "agent-1") == 60
        assert ask_server(server, "2.0.0.10.in-addr.arpa", "PTR") == ("NOERROR", ["agent-1."])
        loop.wait_for(20)
        assert loop.wrong == [] and server.alive()
    finally:
        loop.stop()
        server.stop()


# -- re-listing a real API server when the `kubernetes` options change ----------------------------


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealApiServer]:
    assets()
    with real_apiserver(tmp_path_factory.mktemp("apiserver")) as server:
        for obj in (
            namespace("blue"),
            namespace("green"),
            service("blue", "app", ["10.96.1.1"]),
            service("green", "app", ["10.96.2.2"]),
        ):
            server.create(obj)
        yield server


def _namespaced_corefile(path: Path, kubeconfig: Path, namespaces: str) -> None:
    path.write_text(
        ".:0 {\n"
        "    bind 127.0.0.1\n"
        "    kubernetes cluster.local {\n"
        f"        kubeconfig {kubeconfig} real\n"
        f"        namespaces {namespaces}\n"
        "    }\n"
        "    reload 2s\n"
        "}\n"
    )


@pytest.mark.parametrize("workers", ["1", "2"])
def test_changed_kubernetes_options_re_list_while_the_old_watches_answer(
    api: RealApiServer, tmp_path: Path, workers: str
) -> None:
    """A new `namespaces` list: the cluster is listed again beside the running watches and
    swapped in with no failed query; the new watches then follow the cluster. With `--workers`
    the supervisor lists it and sends it whole to every worker, each loading it beside the store
    it serves (every worker is asked: each query comes from a new port)."""
    corefile = tmp_path / "Corefile"
    _namespaced_corefile(corefile, api.kubeconfig(tmp_path / "kubeconfig"), "blue")
    server = KdnsServer("--workers", workers, corefile=corefile, listen=("",))

    def everywhere(name: str, expected: tuple[str, list[str]]) -> bool:
        return all(ask_server(server, name) == expected for _ in range(20))

    try:
        wait(lambda: everywhere("app.blue.svc.cluster.local", ("NOERROR", ["10.96.1.1"])), 30, "kdns synced")
        assert ask_server(server, "app.green.svc.cluster.local")[0] == "NXDOMAIN"  # not watched
        loop = QueryLoop(server, {"app.blue.svc.cluster.local": ["10.96.1.1"]})
        try:
            _namespaced_corefile(corefile, api.kubeconfig(tmp_path / "kubeconfig"), "blue green")
            wait(lambda: "reload applied: watch" in server.log_text(), 30, "the new watches listed and swapped")
            wait(lambda: everywhere("app.green.svc.cluster.local", ("NOERROR", ["10.96.2.2"])), 10, "every worker")
            later = f"later{workers}"
            api.create(service("green", later, [f"10.96.2.{10 + int(workers)}"]))
            expected = ("NOERROR", [f"10.96.2.{10 + int(workers)}"])
            wait(lambda: everywhere(f"{later}.green.svc.cluster.local", expected), 15, "the new watches followed")
            loop.wait_for(20)
        finally:
            loop.stop()
        assert loop.wrong == [] and server.alive()
        assert "applied at the next restart" not in server.log_text()
    finally:
        server.stop()


def test_the_reloader_counts_a_refused_configuration_and_keeps_the_running_one(tmp_path: Path) -> None:
    """A Corefile whose new listen port another process holds: refused with one error line,
    `coredns_reload_failed_total`, and the old port keeps answering."""
    corefile = tmp_path / "Corefile"
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("127.0.0.1", 0))
    taken = holder.getsockname()[1]
    text = (
        ".:{port} {{\n    bind 127.0.0.1\n    kubernetes cluster.local\n{more}"
        "    prometheus 127.0.0.1:0\n    reload 2s\n}}\n"
    )
    corefile.write_text(text.format(port=0, more=""))
    server = KdnsServer("--snapshot", str(EXAMPLE), corefile=corefile, listen=("",))
    try:
        port = http_port(server, "/metrics")
        corefile.write_text(text.format(port=taken, more="    log\n"))
        wait(lambda: "reload refused" in server.log_text(), 15, "the reload refused")
        assert str(taken) in server.log_text().split("reload refused", 1)[1].splitlines()[0]
        assert metric(http_get(port, "/metrics")[1], "coredns_reload_failed_total") == 1
        assert ask_server(server, WEB) == ("NOERROR", ["10.96.12.34"])
    finally:
        server.stop()
        holder.close()
