"""Forwarding, end to end: the real `kdns serve` process forwarding to a real Unbound on loopback,
and to the scriptable fake upstream for what Unbound will not do on demand."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.fakeupstream import FakeUpstream
from tests.process import EXAMPLE, KdnsServer, dig, run_kdns

TXT_400 = " ".join(f'"{c * 195}"' for c in "ab")
TXT_1500 = " ".join(f'"{c * 250}"' for c in "abcdef")


@pytest.fixture(scope="module")
def unbound(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """Debian's unbound on a loopback port, answering a few names of its own under `test.`. It
    binds UDP and TCP on its port: a port free for UDP may be held for TCP by a test beside it,
    so a start that fails is tried again on another port (three times), and the last failure
    says what unbound said."""
    if shutil.which("unbound") is None:
        pytest.fail("unbound is not installed: apt-get install unbound (the README setup does)")
    directory = tmp_path_factory.mktemp("unbound")
    records = [
        "test. 3600 IN SOA ns.test. host.test. 1 3600 900 86400 60",
        "www.test. 300 IN A 192.0.2.10",
        "www.test. 300 IN AAAA 2001:db8::10",
        "alias.test. 300 IN CNAME mid.test.",
        "mid.test. 300 IN CNAME target.test.",
        "target.test. 300 IN A 192.0.2.20",
        f"txt400.test. 300 IN TXT {TXT_400}",
        f"txt1500.test. 300 IN TXT {TXT_1500}",
    ]
    said = ""
    for _ in range(3):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        config = directory / "unbound.conf"
        config.write_text(
            "server:\n"
            f"  interface: 127.0.0.1\n  port: {port}\n  num-threads: 1\n  do-daemonize: no\n"
            '  username: ""\n  chroot: ""\n  pidfile: ""\n  use-syslog: no\n  verbosity: 0\n'
            f'  directory: "{directory}"\n  access-control: 127.0.0.0/8 allow\n  module-config: "iterator"\n'
            '  local-zone: "test." static\n' + "".join(f"  local-data: '{record}'\n" for record in records)
        )
        process = subprocess.Popen(["unbound", "-d", "-c", str(config)], stderr=subprocess.PIPE, text=True)
        if _answers(port, process):
            break
        process.kill()
        said = process.communicate(timeout=10)[1][-2000:]
    else:
        raise AssertionError(f"unbound did not start:\n{said}")
    yield port
    process.terminate()
    process.wait(10)


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    yield fake
    fake.close()


def _answers(port: int, process: subprocess.Popen[str]) -> bool:
    """Whether unbound answers on `port` within 10 s (False at once if it has ended)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and process.poll() is None:
        try:
            dns.query.udp(dns.message.make_query("www.test.", "A"), "127.0.0.1", port=port, timeout=0.5)
            return True
        except (dns.exception.Timeout, OSError):
            continue
    return False


def _serve(*args: str) -> KdnsServer:
    return KdnsServer("--snapshot", str(EXAMPLE), *args, listen=("127.0.0.1:0",))


def _ask(server: KdnsServer, name: str, rdtype: str = "A", tcp: bool = False, **kwargs: Any) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **kwargs)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, server.host, port=server.port, timeout=5)


def _addresses(reply: dns.message.Message) -> list[str]:
    return sorted(item.to_text() for rrset in reply.answer for item in rrset)


# -- against unbound -------------------------------------------------------------------------------


def test_dig_resolves_a_forwarded_name_and_a_cluster_name_from_one_server(unbound: int) -> None:
    server = _serve("--upstream", f"127.0.0.1:{unbound}")
    try:
        assert dig(server, "www.test", "+short").split() == ["192.0.2.10"]
        assert dig(server, "www.test", "AAAA", "+short").split() == ["2001:db8::10"]
        assert dig(server, "web.prod.svc.cluster.local", "+short").split() == ["10.96.12.34"]
        out = dig(server, "www.test", "+noall", "+comments")
        assert "flags: qr rd ra;" in out  # recursion available, not authoritative
    finally:
        assert server.stop() == 0


def test_forwarded_cname_chain_and_nxdomain_come_back_as_the_upstream_sent_them(unbound: int) -> None:
    server = _serve("--upstream", f"127.0.0.1:{unbound}")
    try:
        assert _addresses(_ask(server, "alias.test")) == ["mid.test."]
        missing = _ask(server, "nope.test")
        assert missing.rcode() == dns.rcode.NXDOMAIN
        assert [rrset.name.to_text() for rrset in missing.authority] == ["test."]
    finally:
        assert server.stop() == 0


def test_large_txt_is_fetched_over_tcp_from_upstream_and_truncated_to_a_small_client(unbound: int) -> None:
    server = _serve("--upstream", f"127.0.0.1:{unbound}")
    try:
        small = _ask(server, "txt400.test", "TXT", use_edns=False)
        assert not small.flags & dns.flags.TC and len(small.answer[0][0].strings) == 2
        # 1500 bytes: more than the 1232 kdns asks for upstream, so kdns asks again over TCP.
        over_tcp = _ask(server, "txt1500.test", "TXT", tcp=True)
        assert b"".join(over_tcp.answer[0][0].strings) == b"".join(c.encode() * 250 for c in "abcdef")
        truncated = _ask(server, "txt1500.test", "TXT", use_edns=False)
        assert truncated.flags & dns.flags.TC and not truncated.answer
        assert len(dig(server, "txt1500.test", "TXT", "+short").split()) == 6  # dig retries over TCP
    finally:
        assert server.stop() == 0


# -- the cache, counted at the fake upstream ------------------------------------------------------
# (TTL countdown, eviction, the max-TTL clamp, serve-stale and prefetch run on virtual time, in
# tests/test_forward_virtual_time.py.)


def test_servfail_from_upstream_is_passed_on_and_cached_briefly(upstream: FakeUpstream) -> None:
    upstream.mode = "servfail"
    server = _serve("--upstream", upstream.spec)
    try:
        assert _ask(server, "broken.example").rcode() == dns.rcode.SERVFAIL
        assert _ask(server, "broken.example").rcode() == dns.rcode.SERVFAIL
        assert upstream.queries == 1
    finally:
        assert server.stop() == 0


# -- failures and forgeries ------------------------------------------------------------------------


def test_silent_upstream_fails_over_to_the_next_and_is_marked_down(upstream: FakeUpstream) -> None:
    dead = FakeUpstream()
    dead.mode = "silent"
    server = _serve("--upstream", dead.spec, "--upstream", upstream.spec, "--policy", "sequential",
                    "--upstream-timeout", "0.5")  # fmt: skip
    try:
        started = time.monotonic()
        assert _addresses(_ask(server, "one.example")) == ["192.0.2.1"]
        assert time.monotonic() - started >= 0.5
        _ask(server, "two.example")
        assert "marked down" in server.log_text()
        started = time.monotonic()
        _ask(server, "three.example")  # a down upstream is skipped: no timeout first
        assert time.monotonic() - started < 0.4
        dead.mode = "answer"
        _wait_for(lambda: "answers again" in server.log_text(), 5)
    finally:
        assert server.stop() == 0
        dead.close()


def test_no_upstream_answering_gives_servfail(upstream: FakeUpstream) -> None:
    upstream.mode = "silent"
    server = _serve("--upstream", upstream.spec, "--upstream-timeout", "0.3")
    try:
        assert _ask(server, "lost.example").rcode() == dns.rcode.SERVFAIL
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("mode", ["wrong-id", "wrong-question", "wrong-port"])
def test_forged_answers_are_ignored_and_the_real_one_is_taken(upstream: FakeUpstream, mode: str) -> None:
    upstream.mode = mode
    server = _serve("--upstream", upstream.spec)
    try:
        reply = _ask(server, "target.example")
        assert _addresses(reply) == ["192.0.2.1"]  # never the forged 203.0.113.66
    finally:
        assert server.stop() == 0


def test_truncated_udp_answer_is_asked_again_over_tcp(upstream: FakeUpstream) -> None:
    upstream.mode = "truncate"
    server = _serve("--upstream", upstream.spec)
    try:
        assert _addresses(_ask(server, "tc.example")) == ["192.0.2.1"]
        assert upstream.udp_queries == 1 and upstream.tcp_queries == 1
    finally:
        assert server.stop() == 0


def test_tcp_client_is_forwarded_over_tcp(upstream: FakeUpstream) -> None:
    server = _serve("--upstream", upstream.spec)
    try:
        assert _addresses(_ask(server, "viatcp.example", tcp=True)) == ["192.0.2.1"]
        assert upstream.tcp_queries == 1 and upstream.udp_queries == 0
    finally:
        assert server.stop() == 0


def test_queries_beyond_max_concurrent_are_refused_at_once(upstream: FakeUpstream) -> None:
    upstream.mode = "held"
    server = _serve("--upstream", upstream.spec, "--max-concurrent", "2", "--upstream-timeout", "3")
    try:
        with ThreadPoolExecutor(3) as pool:
            slow = [pool.submit(_ask, server, f"slow{i}.example") for i in range(2)]
            _wait_for(lambda: upstream.udp_queries >= 2, 5)  # both in flight, upstream sitting on them
            refused = _ask(server, "third.example")  # answered while the two are still held
            assert refused.rcode() == dns.rcode.REFUSED and not any(future.done() for future in slow)
            upstream.release()
            assert all(future.result().rcode() == dns.rcode.NOERROR for future in slow)
    finally:
        assert server.stop() == 0


# -- routing ---------------------------------------------------------------------------------------


def test_stub_domain_goes_to_its_own_upstream(upstream: FakeUpstream) -> None:
    corporate = FakeUpstream(address="198.51.100.7")
    server = _serve("--upstream", upstream.spec, "--stub-domain", f"corp.example={corporate.spec}")
    try:
        assert _addresses(_ask(server, "db.corp.example")) == ["198.51.100.7"]
        assert _addresses(_ask(server, "corp.example")) == ["198.51.100.7"]
        assert _addresses(_ask(server, "notcorp.example")) == ["192.0.2.1"]
        assert corporate.queries == 2 and upstream.queries == 1
    finally:
        assert server.stop() == 0
        corporate.close()


def test_reverse_names_kdns_does_not_hold_fall_through_to_the_upstream(upstream: FakeUpstream) -> None:
    server = _serve("--upstream", upstream.spec)
    try:
        _ask(server, "9.9.9.9.in-addr.arpa", "PTR")
        assert upstream.names == ["9.9.9.9.in-addr.arpa."]
        assert _addresses(_ask(server, "34.12.96.10.in-addr.arpa", "PTR")) == ["web.prod.svc.cluster.local."]
        assert _ask(server, "nope.prod.svc.cluster.local").rcode() == dns.rcode.NXDOMAIN
        assert upstream.queries == 1  # cluster names never leave kdns
    finally:
        assert server.stop() == 0


def test_without_any_upstream_other_names_are_refused_with_one_warning(tmp_path: Path) -> None:
    empty = tmp_path / "resolv.conf"
    empty.write_text("search example.com\n")
    server = _serve("--resolv-conf", str(empty))
    try:
        for _ in range(3):
            assert _ask(server, "example.com").rcode() == dns.rcode.REFUSED
        assert server.log_text().count("no upstream resolver") == 1
    finally:
        assert server.stop() == 0


def test_upstreams_are_read_from_resolv_conf(tmp_path: Path, upstream: FakeUpstream) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text(f"# a comment\nsearch svc.cluster.local\nnameserver 127.0.0.1:{upstream.port}\noptions ndots:5\n")
    server = _serve("--resolv-conf", str(conf))
    try:
        assert _addresses(_ask(server, "fromconf.example")) == ["192.0.2.1"]
    finally:
        assert server.stop() == 0


def test_upstream_that_is_kdns_itself_is_refused_at_start() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for listen in (f"127.0.0.1:{port}", f"0.0.0.0:{port}"):
        result = run_kdns("serve", "--snapshot", str(EXAMPLE), "--listen", listen, "--upstream", f"127.0.0.1:{port}")
        assert result.returncode == 2, listen
        assert "is kdns's own listen address" in result.stderr


def test_bad_forwarding_flags_exit_2(tmp_path: Path) -> None:
    for args, text in (
        (["--upstream", "not-an-ip"], "--upstream"),
        (["--stub-domain", "corp.example"], "--stub-domain"),
        (["--resolv-conf", str(tmp_path / "missing")], "--resolv-conf"),
        (["--cache-min-ttl", "10", "--cache-max-ttl", "5"], "--cache-min-ttl"),
    ):
        result = run_kdns("serve", "--snapshot", str(EXAMPLE), "--listen", "127.0.0.1:0", *args)
        assert result.returncode == 2 and text in result.stderr, args


def _wait_for(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _answers_locally(port: int) -> bool:
    """Whether a DNS server on 127.0.0.1:`port` is up: Unbound answers `version.server CH TXT`
    itself, whatever it forwards."""
    query = dns.message.make_query("version.server", "TXT", "CH")
    try:
        dns.query.udp(query, "127.0.0.1", port=port, timeout=0.2)
    except (dns.exception.Timeout, OSError):
        return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_forwarding_loop_through_an_upstream_is_detected_and_kdns_exits_2(tmp_path: Path) -> None:
    kdns_port, unbound_port = _free_port(), _free_port()
    config = tmp_path / "unbound.conf"
    config.write_text(  # an upstream that forwards everything back to kdns: a loop
        "server:\n"
        f"  interface: 127.0.0.1\n  port: {unbound_port}\n  num-threads: 1\n  do-daemonize: no\n"
        '  username: ""\n  chroot: ""\n  pidfile: ""\n  use-syslog: no\n  verbosity: 0\n'
        f'  directory: "{tmp_path}"\n  access-control: 127.0.0.0/8 allow\n  module-config: "iterator"\n'
        "  do-not-query-localhost: no\n"
        f'forward-zone:\n  name: "."\n  forward-addr: 127.0.0.1@{kdns_port}\n'
    )
    unbound = subprocess.Popen(["unbound", "-d", "-c", str(config)], stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: _answers_locally(unbound_port), 10)
        result = run_kdns(
            "serve", "--snapshot", str(EXAMPLE), "--listen", f"127.0.0.1:{kdns_port}",
            "--upstream", f"127.0.0.1:{unbound_port}", timeout=30,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert f"forwarding loop: the probe sent to upstream 127.0.0.1:{unbound_port} came back" in result.stderr
    finally:
        unbound.terminate()
        unbound.wait(10)


def test_healthy_upstreams_pass_the_loop_probe(upstream: FakeUpstream) -> None:
    server = _serve("--upstream", upstream.spec)
    try:
        _wait_for(lambda: len(upstream.probes) == 1, 5)
        # The probe was answered NXDOMAIN and never came back; kdns forwards on as before.
        assert _addresses(_ask(server, "after-probe.example")) == ["192.0.2.1"]
        assert server.alive() and "forwarding loop" not in server.log_text()
    finally:
        assert server.stop() == 0


def test_external_name_service_is_chased_to_its_upstream_target(unbound: int, tmp_path: Path) -> None:
    snapshot = tmp_path / "ext.yaml"
    snapshot.write_text(
        "kind: Service\napiVersion: v1\nmetadata: {name: ext, namespace: prod}\n"
        "spec: {type: ExternalName, externalName: www.test}\n"
    )
    server = KdnsServer("--snapshot", str(snapshot), "--upstream", f"127.0.0.1:{unbound}", listen=("127.0.0.1:0",))
    try:
        out = dig(server, "ext.prod.svc.cluster.local", "+noall", "+answer").split("\n")
        fields = [line.split() for line in out if line]
        assert [(f[0], f[3], f[4]) for f in fields] == [
            ("ext.prod.svc.cluster.local.", "CNAME", "www.test."),
            ("www.test.", "A", "192.0.2.10"),
        ]
    finally:
        assert server.stop() == 0


def test_an_upstream_outage_never_slows_cluster_names(upstream: FakeUpstream) -> None:
    upstream.mode = "silent"
    server = _serve("--upstream", upstream.spec, "--upstream-timeout", "2")
    try:
        with ThreadPoolExecutor(20) as pool:
            stuck = [pool.submit(_ask, server, f"lost{i}.example") for i in range(20)]  # all waiting upstream
            time.sleep(0.2)
            for _ in range(50):
                started = time.monotonic()
                reply = _ask(server, "web.prod.svc.cluster.local")
                assert _addresses(reply) == ["10.96.12.34"] and time.monotonic() - started < 0.5
            assert all(future.result().rcode() == dns.rcode.SERVFAIL for future in stuck)
    finally:
        assert server.stop() == 0
