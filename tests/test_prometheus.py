"""A real Prometheus (Debian's) scrapes the real `kdns serve` process, and the coredns-mixin
alerts (tests/prometheus/coredns-mixin-alerts.yaml) evaluated by that Prometheus give the right
answer: none while kdns is healthy, CoreDNSErrorsHigh when the upstream is dead and forwarded
queries get SERVFAIL, CoreDNSForwardHealthcheckBrokenCount when every upstream fails its health
check (issue 10, point 8)."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import pytest

from tests.fakeupstream import FakeUpstream
from tests.helpers import http_port
from tests.kubeapi import free_port
from tests.process import EXAMPLE, KdnsServer

RULES = Path(__file__).resolve().parent / "prometheus" / "coredns-mixin-alerts.yaml"


class Prometheus:
    def __init__(self, directory: Path, target: str) -> None:
        self.port = free_port()
        config = directory / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files: ['{RULES}']\n"
            f"scrape_configs:\n  - job_name: kdns\n    static_configs:\n      - targets: ['{target}']\n"
        )
        self.process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait(lambda: self._get("/-/ready") is not None, "Prometheus to be ready", 30)

    def _get(self, path: str) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as response:
                return str(response.read().decode())
        except OSError:
            return None

    def _wait(self, check: object, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if callable(check) and check():
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}")

    def firing(self) -> set[str]:
        body = self._get("/api/v1/alerts")
        assert body is not None
        return {
            alert["labels"]["alertname"] for alert in json.loads(body)["data"]["alerts"] if alert["state"] == "firing"
        }

    def query(self, expression: str) -> list[dict[str, object]]:
        from urllib.parse import quote

        body = self._get(f"/api/v1/query?query={quote(expression)}")
        assert body is not None
        result: list[dict[str, object]] = json.loads(body)["data"]["result"]
        return result

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(15)


@pytest.fixture
def prometheus_installed() -> None:
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is not installed: apt-get install prometheus (the README setup does)")


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    yield fake
    fake.close()


def _ask(server: KdnsServer, name: str) -> None:
    with contextlib.suppress(dns.exception.Timeout):
        dns.query.udp(dns.message.make_query(name, "A"), server.host, port=server.port, timeout=2)


def test_the_coredns_mixin_alerts_read_kdns_metrics(
    prometheus_installed: None, upstream: FakeUpstream, tmp_path: Path
) -> None:
    server = KdnsServer(
        "--snapshot",
        str(EXAMPLE),
        "--upstream",
        upstream.spec,
        "--upstream-timeout",
        "0.3",
        "--cache-size",
        "0",
        "--metrics-listen",
        "127.0.0.1:0",
        listen=("127.0.0.1:0",),
    )
    prometheus = None
    try:
        metrics = http_port(server, "/metrics")
        prometheus = Prometheus(tmp_path, f"127.0.0.1:{metrics}")
        # Healthy: cluster and forwarded names answer; Prometheus scrapes kdns, no alert fires.
        deadline = time.monotonic() + 30
        while not prometheus.query('up{job="kdns"} == 1') or not prometheus.query("coredns_dns_responses_total"):
            assert time.monotonic() < deadline, "Prometheus never scraped kdns"
            _ask(server, "web.prod.svc.cluster.local")
            time.sleep(0.2)
        # Traffic until Prometheus holds three scrapes of it (rate() needs two) and has evaluated
        # the rules since.
        scrapes = 'count_over_time(coredns_dns_requests_total{job="kdns",type="A",proto="udp"}[5m]) >= 5'
        deadline = time.monotonic() + 30
        while not prometheus.query(scrapes):
            assert time.monotonic() < deadline, "Prometheus never scraped the traffic"
            for i in range(10):
                _ask(server, "web.prod.svc.cluster.local")
                _ask(server, f"ok{i}.example.com")
            time.sleep(0.2)
        assert prometheus.firing() == set()
        assert prometheus.query('coredns_build_info{job="kdns"}')
        # CoreDNSLatencyHigh's expression has data to read, well under its 4 s threshold.
        latency = prometheus.query(
            'histogram_quantile(0.99, sum(rate(coredns_dns_request_duration_seconds_bucket{job="kdns"}[5m]))'
            " by(server, zone, le))"
        )
        assert latency and all(0 < float(str(sample["value"][1])) < 4 for sample in latency)  # type: ignore[index]
        # The upstream dies: forwarded names get SERVFAIL, the upstream is marked down, and every
        # further forward finds every upstream down.
        upstream.mode = "silent"
        expected = {"CoreDNSErrorsHigh", "CoreDNSForwardHealthcheckBrokenCount"}
        deadline = time.monotonic() + 40
        while not expected <= prometheus.firing():
            assert time.monotonic() < deadline, f"firing: {prometheus.firing()}"
            for i in range(5):
                _ask(server, f"dead{i}.example.com")
            time.sleep(0.2)
        firing = prometheus.firing()
        assert "CoreDNSDown" not in firing and "CoreDNSLatencyHigh" not in firing
    finally:
        if prometheus is not None:
            prometheus.stop()
        assert server.stop() == 0
