"""`kdns serve --workers N` (issue 11, point 2): the real process, its worker processes on one
port with SO_REUSEPORT, one set of watches on the API server whatever N is, the instance's
health, readiness and metrics, and workers that die started again.

The supervisor/worker pipes' framing and the figures' sums are tested here too; the store's
journal (what the workers replay) in tests/core/test_store.py.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from kdns.core.counters import QueryCounters, RequestDurations
from kdns.core.model import Kind
from kdns.core.store import Delete, Serial
from kdns.state import CacheTotals, State, UpstreamCounters, WorkerFigures
from kdns.workers.feed import FrameReader, Synced, frame
from kdns.workers.supervisor import _Held
from tests.apiserver import FakeApiServer
from tests.builders import service
from tests.fakeupstream import FakeUpstream
from tests.helpers import FAST, QueryLoop, answer_ttl, children, http_get, http_port, metric, synced, wait, worker_pids
from tests.kubeapi import free_port
from tests.process import KdnsServer, run_kdns

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = ROOT / "examples" / "cluster.yaml"
MIB = 1024 * 1024
OPS = ("--health-listen", "127.0.0.1:0", "--ready-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0")


def _udp_ports(pid: int) -> set[int]:
    """The local ports of the UDP sockets process `pid` holds (from /proc: no tool needed)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[9] in inodes:
            ports.add(int(fields[1].split(":")[1], 16))
    return ports


def _ask_from_new_port(server: KdnsServer, name: str) -> tuple[str, list[str]]:
    """One query from a fresh socket (a new source port): the kernel picks a worker per port."""
    reply = dns.query.udp(dns.message.make_query(name, "A"), server.host, port=server.port, timeout=3)
    return dns.rcode.to_text(reply.rcode()), sorted(item.to_text() for rrset in reply.answer for item in rrset)


def _scrape(server: KdnsServer) -> str:
    return http_get(http_port(server, "/metrics"), "/metrics")[1]


def test_two_workers_each_hold_their_own_socket_on_the_one_port_and_share_the_queries() -> None:
    server = KdnsServer("--snapshot", str(SNAPSHOT), "--workers", "2", *OPS, listen=("127.0.0.1:0",))
    try:
        workers = worker_pids(server, 2)
        assert server.port not in _udp_ports(server.process.pid)  # the supervisor answers nothing
        for pid in workers:
            assert server.port in _udp_ports(pid)
        for _ in range(200):
            assert _ask_from_new_port(server, "web.prod.svc.cluster.local") == ("NOERROR", ["10.96.12.34"])
        # The instance's metrics sum the workers' (each reports within a second)...
        wait(lambda: metric(_scrape(server), "coredns_dns_requests_total") == 200, 5, "200 requests counted")
        scraped = _scrape(server)
        assert metric(scraped, "kdns_workers") == 2
        # ... and say how the kernel spread them: 200 source ports leave neither worker idle.
        by_worker = dict(re.findall(r'^kdns_worker_replies_total{worker="(\d)"} (\S+)$', scraped, re.MULTILINE))
        assert set(by_worker) == {"0", "1"} and all(float(count) > 0 for count in by_worker.values()), by_worker
        assert http_get(http_port(server, "/ready"), "/ready")[0] == 200
    finally:
        assert server.stop(signal.SIGINT) == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists(), "a worker outlived kdns"


def test_the_byte_budget_flags_bound_the_instance_whatever_the_number_of_workers() -> None:
    """Each of N workers keeps 1/N of each byte budget of its own stores (`config.worker_share`,
    as Unbound's threads share one cache): the instance's `kdns_store_budget_bytes`, the sum of
    its workers', is what the flags say, not N times it."""
    flags = ["--reply-cache-bytes", "4Mi", "--cache-bytes", "8Mi", "--tcp-buffer-bytes", "2Mi"]
    flags += ["--workers", "2", "--upstream", "127.0.0.1:9"]
    server = KdnsServer("--snapshot", str(SNAPSHOT), *flags, *OPS, listen=("127.0.0.1:0",))
    try:
        worker_pids(server, 2)
        budget = 'kdns_store_budget_bytes{{store="{}"}}'.format
        wait(lambda: metric(_scrape(server), "kdns_workers") == 2, 5, "both workers reporting")
        wait(lambda: metric(_scrape(server), budget("tcp_buffers")) == 2 * MIB, 5, "both workers' budgets summed")
        scraped = _scrape(server)
        assert metric(scraped, budget("reply_cache_udp")) + metric(scraped, budget("reply_cache_tcp")) == 4 * MIB
        assert metric(scraped, budget("forward_cache")) == 8 * MIB
    finally:
        assert server.stop(signal.SIGINT) == 0


def test_a_killed_worker_is_logged_and_started_again_and_metrics_never_go_backwards() -> None:
    server = KdnsServer("--snapshot", str(SNAPSHOT), "--workers", "2", *OPS, listen=("127.0.0.1:0",))
    try:
        first, second = worker_pids(server, 2)
        for _ in range(50):
            assert _ask_from_new_port(server, "web.prod.svc.cluster.local")[0] == "NOERROR"
        wait(lambda: metric(_scrape(server), "coredns_dns_requests_total") == 50, 5, "50 requests counted")
        os.kill(second, signal.SIGKILL)
        wait(lambda: "ended by signal 9" in server.log_text(), 5, "the death logged")
        wait(lambda: "started again" in server.log_text(), 10, "the restart logged")
        wait(lambda: http_get(http_port(server, "/ready"), "/ready")[0] == 200, 10, "ready again")
        workers = children(server.process.pid)
        assert first in workers and second not in workers and len(workers) == 2
        replacement = next(pid for pid in workers if pid != first)
        wait(lambda: server.port in _udp_ports(replacement), 5, "the new worker's socket")
        for _ in range(100):  # every query answered, whichever worker the kernel picks
            assert _ask_from_new_port(server, "web.prod.svc.cluster.local") == ("NOERROR", ["10.96.12.34"])
        # What the dead worker counted stays counted: Prometheus sees no counter reset.
        wait(lambda: metric(_scrape(server), "coredns_dns_requests_total") == 150, 5, "150 requests counted")
        assert metric(_scrape(server), "kdns_worker_restarts_total") == 1
    finally:
        assert server.stop(signal.SIGINT) == 0


def test_workers_end_with_the_supervisor_even_when_it_is_killed() -> None:
    server = KdnsServer("--snapshot", str(SNAPSHOT), "--workers", "2", listen=("127.0.0.1:0",))
    workers = worker_pids(server, 2)
    server.stop(signal.SIGKILL)
    # Their feed closes with the supervisor: they exit rather than answer an unfollowed zone.
    wait(lambda: not any(_alive(pid) for pid in workers), 5, "the workers end")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended (its parent, killed, reaps nothing)


def test_sigterm_keeps_every_worker_answering_through_lameduck_then_ends_them() -> None:
    server = KdnsServer(
        "--snapshot", str(SNAPSHOT), "--workers", "2", "--lameduck", "1s", *OPS, listen=("127.0.0.1:0",)
    )
    workers = worker_pids(server, 2)
    ready = http_port(server, "/ready")  # the supervisor handles signals from here on
    server.process.send_signal(signal.SIGTERM)
    wait(lambda: "lameduck" in server.log_text(), 5, "lameduck")
    assert http_get(ready, "/ready")[0] == 503
    for _ in range(20):
        assert _ask_from_new_port(server, "web.prod.svc.cluster.local")[0] == "NOERROR"
    assert server.process.wait(10) == 0
    wait(lambda: not any(_alive(pid) for pid in workers), 5, "the workers end")


def test_the_api_server_sees_one_set_of_lists_and_watches_whatever_the_workers(
    api: FakeApiServer, tmp_path: Path
) -> None:
    server = KdnsServer(
        "--kubeconfig", str(api.kubeconfig(tmp_path)), *FAST, "--workers", "3", *OPS, listen=("127.0.0.1:0",)
    )
    try:
        worker_pids(server, 3)
        synced(server)
        # Namespaces, Services, EndpointSlices: one list and one watch each, for the instance.
        wait(lambda: api.watch_count() == 3, 5, "three watches")
        lists = [request for request in api.requests if "watch=true" not in request]
        assert len(lists) == 3, lists
        # A change reaches every worker: asked from 60 source ports, no worker answers late.
        api.apply(service("prod", "late", ["10.96.0.9"]))
        wait(lambda: _ask_from_new_port(server, "late.prod.svc.cluster.local")[0] == "NOERROR", 5, "the change")
        wait(
            lambda: all(
                _ask_from_new_port(server, "late.prod.svc.cluster.local") == ("NOERROR", ["10.96.0.9"])
                for _ in range(60)
            ),
            5,
            "every worker serving the change",
        )
        api.delete("Service", "prod", "late")
        wait(
            lambda: all(_ask_from_new_port(server, "late.prod.svc.cluster.local")[0] == "NXDOMAIN" for _ in range(60)),
            5,
            "every worker serving the deletion",
        )
        assert api.watch_count() == 3
        assert metric(_scrape(server), "kdns_watch_events_total") >= 2
    finally:
        assert server.stop(signal.SIGINT) == 0


def test_a_worker_started_again_gets_the_changes_made_while_it_was_down(api: FakeApiServer, tmp_path: Path) -> None:
    server = KdnsServer(
        "--kubeconfig", str(api.kubeconfig(tmp_path)), *FAST, "--workers", "2", *OPS, listen=("127.0.0.1:0",)
    )
    try:
        second = worker_pids(server, 2)[1]
        synced(server)
        os.kill(second, signal.SIGSTOP)  # it hears nothing ...
        api.apply(service("prod", "while-down", ["10.96.0.10"]))
        wait(lambda: metric(_scrape(server), "kdns_watch_events_total") >= 1, 5, "the supervisor has the change")
        os.kill(second, signal.SIGKILL)  # ... and dies
        wait(lambda: "started again" in server.log_text(), 10, "the restart")
        wait(lambda: http_get(http_port(server, "/ready"), "/ready")[0] == 200, 10, "ready again")
        api.apply(service("prod", "after", ["10.96.0.11"]))
        for _ in range(60):
            assert _ask_from_new_port(server, "while-down.prod.svc.cluster.local") == ("NOERROR", ["10.96.0.10"])
        wait(
            lambda: all(
                _ask_from_new_port(server, "after.prod.svc.cluster.local") == ("NOERROR", ["10.96.0.11"])
                for _ in range(60)
            ),
            5,
            "a change after the restart on every worker",
        )
        assert api.watch_count() == 3  # a restart is not a relist
    finally:
        assert server.stop(signal.SIGINT) == 0


@pytest.mark.parametrize("value", ["0", "-1", "many", "257"])
def test_a_bad_worker_count_exits_2_naming_the_flag(value: str) -> None:
    result = run_kdns("serve", "--snapshot", str(SNAPSHOT), "--listen", "127.0.0.1:0", "--workers", value)
    assert result.returncode == 2
    assert "--workers" in result.stderr


def test_workers_auto_is_one_per_cpu_kdns_may_run_on() -> None:
    server = KdnsServer("--snapshot", str(SNAPSHOT), "--workers", "auto", listen=("127.0.0.1:0",))
    try:
        expected = len(os.sched_getaffinity(0))
        if expected == 1:
            time.sleep(0.2)
            assert children(server.process.pid) == []  # one CPU: kdns's one process answers
        else:
            assert len(worker_pids(server, expected)) == expected
    finally:
        server.stop(signal.SIGINT)


def test_a_port_taken_by_another_program_is_an_error_before_any_worker_starts() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = run_kdns("serve", "--snapshot", str(SNAPSHOT), "--listen", f"127.0.0.1:{port}", "--workers", "2")
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "worker" not in result.stderr


# -- the pipes and the sums -------------------------------------------------------------------


def test_frames_come_out_whole_however_the_pipe_splits_them() -> None:
    batches = [Synced(True), Serial(7), Delete(Kind.SERVICE, ("prod", "web")), Synced(False)]
    data = b"".join(frame(batch) for batch in batches)
    for size in (1, 3, 7, len(data)):
        reader, out = FrameReader(), []
        for start in range(0, len(data), size):
            out += reader.feed(data[start : start + size])
        assert out == batches


def _figures(replies: int, tcp_connections: int = 0, cache_entries: int = 0) -> WorkerFigures:
    queries = QueryCounters()
    for _ in range(replies):
        queries.count(False, 1, 0)
    durations = RequestDurations()
    durations.observe(1, 0.001)
    upstream = UpstreamCounters(requests=replies)
    upstream.answered(0, 0.01)
    cache = CacheTotals(hits=replies, positive=cache_entries)
    return WorkerFigures(queries, durations, {"10.0.0.1:53": upstream}, cache, tcp_connections=tcp_connections)


def test_the_instance_sums_its_workers_counters_and_keeps_those_of_ended_workers() -> None:
    supervisor = State()
    retired = WorkerFigures.retired()
    view = supervisor.with_workers({0: _figures(5, 1, 10), 1: _figures(7, 2, 20)}, retired)
    assert view.queries.total() == 12 and view.replies_by_worker == {0: 5, 1: 7}
    assert view.upstreams["10.0.0.1:53"].requests == 12
    assert sum(view.upstreams["10.0.0.1:53"].latency.counts) == 2
    assert view.durations is not None and sum(view.durations.by_type[1].counts) == 2
    assert view.tcp_connections == 3
    assert view.cache is not None and view.cache.hits == 12 and view.cache.entries_by_kind() == (30, 0)
    # Worker 1 ends: its counters stay in the sums, its gauges (connections, entries) go.
    assert retired.cache is not None
    _figures(7, 2, 20).add_to(retired, retired.cache, live=False)
    view = supervisor.with_workers({0: _figures(5, 1, 10)}, retired)
    assert view.queries.total() == 12 and view.replies_by_worker == {0: 5}
    assert view.tcp_connections == 1
    assert view.cache is not None and view.cache.hits == 12 and view.cache.entries_by_kind() == (10, 0)
    assert view.upstreams["10.0.0.1:53"].requests == 12


def test_a_worker_view_keeps_the_supervisors_watches_and_readiness() -> None:
    supervisor = State(workers_serving=lambda: False)
    supervisor.follow(["Service"])
    supervisor.watch("Service").listed = True
    supervisor.watch("Service").events = 4
    view = supervisor.with_workers({}, WorkerFigures())
    assert view.watches["Service"].events == 4
    assert supervisor.synced() and not supervisor.ready() and not view.ready()  # a worker is not serving


def test_workers_start_while_the_api_fails_and_serve_the_cluster_once_it_answers(
    api: FakeApiServer, tmp_path: Path
) -> None:
    """The first list fails (the API answers 500): the workers are forked all the same, not ready,
    and get the whole cluster through the feed once the API answers."""
    api.fail()
    server = KdnsServer(
        "--kubeconfig", str(api.kubeconfig(tmp_path)), *FAST, "--workers", "2", *OPS, listen=("127.0.0.1:0",)
    )
    try:
        worker_pids(server, 2)
        ready = http_port(server, "/ready")
        assert http_get(ready, "/ready")[0] == 503
        assert _ask_from_new_port(server, "web.prod.svc.cluster.local")[0] == "SERVFAIL"  # not known yet
        api.fail(False)
        synced(server)
        wait(lambda: http_get(ready, "/ready")[0] == 200, 10, "ready")
        for _ in range(60):
            assert _ask_from_new_port(server, "web.prod.svc.cluster.local") == ("NOERROR", ["10.96.0.5"])
    finally:
        assert server.stop(signal.SIGINT) == 0


def test_a_restarted_worker_runs_the_supervisors_kdns_whatever_directory_it_was_started_in(tmp_path: Path) -> None:
    """`python -m kdns.workers` put the working directory first on sys.path: started where a
    `kdns` directory lies (a checkout of another version), the restarted worker ran that one."""
    impostor = tmp_path / "kdns"
    impostor.mkdir()
    (impostor / "__init__.py").write_text("raise SystemExit('the kdns of the working directory')\n")
    server = KdnsServer("--snapshot", str(SNAPSHOT), "--workers", "2", *OPS, listen=("127.0.0.1:0",), cwd=tmp_path)
    try:
        second = worker_pids(server, 2)[1]
        os.kill(second, signal.SIGKILL)
        wait(lambda: "started again" in server.log_text(), 10, "the restart")
        wait(lambda: http_get(http_port(server, "/ready"), "/ready")[0] == 200, 10, "ready again")
        assert "the kdns of the working directory" not in server.log_text()
    finally:
        assert server.stop(signal.SIGINT) == 0


def test_a_reload_reaches_every_worker_with_no_failed_query_and_a_restarted_one_starts_with_it(
    tmp_path: Path,
) -> None:
    """Issue 19, point 4 with `--workers`: a Corefile edit reaches every worker (each builds the new
    configuration beside its running one and swaps it in, in its place in the feed) with no
    failed query, a worker started again starts with it, and the supervisor moves its /metrics.
    The new TTL is the cluster source's: the supervisor loads the snapshot again with it and
    sends the new store whole to every worker."""
    first, second = FakeUpstream("192.0.2.1"), FakeUpstream("192.0.2.2")
    before, after = free_port(), free_port()
    corefile = tmp_path / "Corefile"
    text = (
        ".:{port} {{\n    bind 127.0.0.1\n    kubernetes cluster.local {{\n        ttl {ttl}\n    }}\n"
        "    ready 127.0.0.1:0\n    prometheus 127.0.0.1:{metrics}\n    forward . {upstream}\n    reload 2s\n}}\n"
    )
    corefile.write_text(text.format(port=0, ttl=30, metrics=before, upstream=first.spec))
    server = KdnsServer("--snapshot", str(SNAPSHOT), "--workers", "2", corefile=corefile, listen=("",))
    loop = QueryLoop(server, {"web.prod.svc.cluster.local": ["10.96.12.34"]})
    try:
        worker_pids(server, 2)
        wait(lambda: f"metrics on http://127.0.0.1:{before}/" in server.log_text(), 10, "/metrics served")
        assert {_ask_from_new_port(server, "www.example.com")[1][0] for _ in range(20)} == {"192.0.2.1"}
        corefile.write_text(text.format(port=0, ttl=60, metrics=after, upstream=second.spec))
        wait(lambda: "reload applied: " in server.log_text(), 15, "the reload")
        assert "applied at the next restart" not in server.log_text()
        assert "the new cluster source is sent to the workers" in server.log_text()
        wait(
            lambda: {_ask_from_new_port(server, "www.example.com")[1][0] for _ in range(20)} == {"192.0.2.2"},
            10,
            "every worker on the new upstream",
        )
        web = "web.prod.svc.cluster.local"
        wait(lambda: {answer_ttl(server, web) for _ in range(20)} == {60}, 10, "every worker's new TTL")
        assert metric(http_get(after, "/metrics")[1], "kdns_workers") == 2
        with pytest.raises(OSError):
            http_get(before, "/metrics")
        loop.wait_for(20)
        loop.stop()
        assert loop.wrong == []  # no query failed through the reload (a killed worker loses what it queued)
        os.kill(worker_pids(server, 2)[1], signal.SIGKILL)
        wait(lambda: "started again" in server.log_text(), 10, "the restart")
        wait(lambda: http_get(http_port(server, "/ready"), "/ready")[0] == 200, 15, "ready again")
        assert {_ask_from_new_port(server, "www.example.com")[1][0] for _ in range(20)} == {"192.0.2.2"}
        # A new port: every worker binds it (SO_REUSEPORT, settled once by the supervisor) and
        # lets the old one go.
        moved = free_port()
        corefile.write_text(text.format(port=moved, ttl=60, metrics=after, upstream=second.spec))
        wait(lambda: server.log_text().count("reload applied: ") >= 2, 15, "the second reload")
        query = dns.message.make_query("web.prod.svc.cluster.local", "A")
        for _ in range(20):  # new source ports: both workers
            assert dns.query.udp(query, "127.0.0.1", port=moved, timeout=3).answer[0][0].address == "10.96.12.34"
        for pid in worker_pids(server, 2):
            wait(lambda pid=pid: server.port not in _udp_ports(pid), 10, "the old port let go")  # type: ignore[misc]
            assert moved in _udp_ports(pid)
    finally:
        loop.stop()
        server.stop()
        first.close()
        second.close()


def test_a_new_sources_changes_held_while_it_is_encoded_are_let_go_past_the_queue_budget() -> None:
    """While a reload's new store is encoded for the workers, its changes are held, within
    --worker-queue-bytes: past it they are let go (and every worker is replaced, started afresh
    with the whole store, as a worker whose queue passes the budget is)."""
    held = _Held(100)
    held.hold(b"x" * 60)
    assert held.frames == [b"x" * 60] and not held.over
    held.hold(b"y" * 60)
    assert held.over and held.frames == []
    held.hold(b"z")
    assert held.frames == []
