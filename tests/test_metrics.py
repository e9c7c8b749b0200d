"""Prometheus metrics (kdns/metrics.py): CoreDNS's families, label names and values, moving with
the queries a test sends; scraped over HTTP from kdns started in-process, and parsed with
prometheus_client's own parser."""

from __future__ import annotations

import socket

import dns.message
import dns.rcode
import trio
from prometheus_client.parser import text_string_to_metric_families

from kdns import app
from kdns.address import SocketAddress
from kdns.config import ForwardConfig, ForwardOptions, OpsListeners
from tests.fakeupstream import FakeUpstream
from tests.helpers import ask_in_process, serve_config

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def _scrape(address: SocketAddress) -> Samples:
    stream = await trio.open_tcp_stream(address.host, address.port)
    await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: kdns\r\nConnection: close\r\n\r\n")
    data = b""
    with trio.fail_after(5):
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"text/plain; version=0.0.4" in head
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and labels.items() <= dict(sample_labels).items()
    )


async def test_coredns_and_kdns_metrics_move_with_the_queries(nursery: trio.Nursery) -> None:
    upstream = FakeUpstream()
    forward = ForwardConfig(
        upstreams=(SocketAddress("127.0.0.1", upstream.port),),
        upstreams_from="--upstream",
        stubs=(),
        options=ForwardOptions(timeout=2),
        cache_size=100,
        serve_stale=0,
        prefetch=False,
    )
    ops = OpsListeners(metrics=SocketAddress("127.0.0.1", 0))
    running: app.Running = await nursery.start(app.run, serve_config(forward=forward, ops=ops))
    assert running.metrics is not None
    dns_address = running.addresses[0]
    server = f"dns://{dns_address}"
    for _ in range(3):
        assert (await ask_in_process(dns_address, "web.prod.svc.cluster.local")).answer
    assert (await ask_in_process(dns_address, "nope.prod.svc.cluster.local", "AAAA")).rcode() == dns.rcode.NXDOMAIN
    assert (await ask_in_process(dns_address, "www.example.com")).answer  # forwarded
    assert (await ask_in_process(dns_address, "www.example.com")).answer  # from the cache
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.sendto(b"\x12\x34\x01", (dns_address.host, dns_address.port))  # dropped
        with trio.fail_after(5):
            while running.state.queries.dropped < 1:  # counted once the listener has read it
                await trio.sleep(0.01)
    samples = await _scrape(running.metrics)
    base = {"server": server, "zone": ".", "proto": "udp", "family": "1"}
    assert _value(samples, "coredns_dns_requests_total", **base, type="A") == 5
    assert _value(samples, "coredns_dns_requests_total", **base, type="AAAA") == 1
    assert _value(samples, "coredns_dns_responses_total", server=server, zone=".", rcode="NOERROR") == 5
    assert _value(samples, "coredns_dns_responses_total", rcode="NXDOMAIN") == 1
    to = f"127.0.0.1:{upstream.port}"
    assert _value(samples, "coredns_forward_requests_total", to=to) == 1
    assert _value(samples, "coredns_forward_responses_total", to=to, rcode="NOERROR") == 1
    assert _value(samples, "coredns_forward_request_duration_seconds_count", to=to) == 1
    assert _value(samples, "coredns_forward_request_duration_seconds_bucket", to=to, le="+Inf") == 1
    assert _value(samples, "coredns_forward_healthcheck_broken_total") == 0
    # Every answered query timed, by type, the forwarded one included (CoreDNSLatencyHigh reads it).
    timed = {"server": server, "zone": ".", "view": ""}
    assert _value(samples, "coredns_dns_request_duration_seconds_count", **timed, type="A") == 5
    assert _value(samples, "coredns_dns_request_duration_seconds_bucket", **timed, type="A", le="+Inf") == 5
    assert _value(samples, "coredns_dns_request_duration_seconds_count", **timed, type="AAAA") == 1
    assert 0 < _value(samples, "coredns_dns_request_duration_seconds_sum", type="A") < 5
    assert _value(samples, "coredns_dns_request_duration_seconds_bucket", type="A", le="8.192") == 5
    assert _value(samples, "coredns_cache_hits_total", server=server, type="success") == 1
    assert _value(samples, "coredns_cache_misses_total", server=server) >= 1
    assert _value(samples, "coredns_cache_entries", server=server, type="success") == 1
    assert _value(samples, "coredns_build_info") == 1
    assert _value(samples, "coredns_panics_total") == 0
    assert _value(samples, "kdns_ready") == 1 and _value(samples, "kdns_zone_names") > 10
    assert _value(samples, "kdns_dropped_packets_total") == 1
    # Counters only grow: a second scrape after one more query.
    await ask_in_process(dns_address, "web.prod.svc.cluster.local")
    again = await _scrape(running.metrics)
    assert _value(again, "coredns_dns_requests_total", **base, type="A") == 6
    upstream.close()
    nursery.cancel_scope.cancel()
