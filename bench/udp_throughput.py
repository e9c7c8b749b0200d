"""UDP queries per second and CPU per query: kdns against Unbound (one thread), same names, same run.

Both servers answer the same 1,000 cluster names from memory (kdns from a snapshot, Unbound from
`local-data`); dnsperf sends the same query file to each for the same time. The figures are
printed as ratios to Unbound's, measured in the same run, because these machines are shared and
absolute rates vary from run to run. Nothing is asserted.

    apt-get install -y dnsperf unbound
    .venv/bin/python bench/udp_throughput.py [--seconds 10] [--services 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import yaml

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cluster(services: int) -> tuple[list[dict], list[tuple[str, str]]]:
    items, names = [], []
    for i in range(services):
        ip = f"10.96.{i // 250}.{i % 250 + 1}"
        items.append(
            {
                "kind": "Service",
                "metadata": {"name": f"svc-{i}", "namespace": "bench"},
                "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]},
            }
        )
        names.append((f"svc-{i}.bench.svc.cluster.local", ip))
    return items, names


def unbound_config(work: Path, port: int, records: list[str], threads: int = 1) -> Path:
    """An Unbound configuration answering `records` (zone-file lines under `cluster.local.` or
    `test.`) from memory, with `threads` threads, on 127.0.0.1:`port`."""
    conf = work / f"unbound-{port}.conf"
    conf.write_text(
        "server:\n"
        f"  interface: 127.0.0.1\n  port: {port}\n  num-threads: {threads}\n  so-reuseport: yes\n  do-daemonize: no\n"
        '  username: ""\n  chroot: ""\n  pidfile: ""\n  use-syslog: no\n  verbosity: 0\n'
        f'  directory: "{work}"\n  access-control: 127.0.0.0/8 allow\n  module-config: "iterator"\n'
        '  local-zone: "cluster.local." static\n  local-zone: "test." static\n'
        + "".join(f'  local-data: "{record}"\n' for record in records)
    )
    return conf


def write_cluster(work: Path, services: int) -> tuple[Path, list[tuple[str, str]], Path]:
    """A snapshot of `services` ClusterIP Services in `work`, their (name, address) pairs, and a
    dnsperf file asking each name's A record."""
    items, names = cluster(services)
    snapshot = work / "cluster.yaml"
    snapshot.write_text(yaml.safe_dump({"kind": "List", "items": items}))
    queries = work / "queries.txt"
    queries.write_text("".join(f"{name} A\n" for name, _ in names))
    return snapshot, names, queries


def kdns_command(snapshot: Path, port: int, *options: str) -> list[str]:
    """`kdns serve` on a snapshot, listening on 127.0.0.1:`port`."""
    return [
        sys.executable,
        "-m",
        "kdns",
        "serve",
        "--snapshot",
        str(snapshot),
        "--listen",
        f"127.0.0.1:{port}",
        "--health-listen",
        "off",
        "--ready-listen",
        "off",
        "--metrics-listen",
        "off",
        "--lameduck",
        "0",
        *options,
    ]


def unbound_command(conf: Path) -> list[str]:
    return ["unbound", "-d", "-c", str(conf)]


@contextlib.contextmanager
def running(*commands: list[str]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """The commands as processes (run from the repository root), stopped with SIGTERM after."""
    processes = [subprocess.Popen(command, stderr=subprocess.DEVNULL, cwd=ROOT) for command in commands]
    try:
        yield processes
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
            process.wait(10)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def wait_until_answering(port: int, name: str, host: str = "127.0.0.1", timeout: float = 30) -> None:
    """Wait until a DNS server on `host`:`port` answers `name` with an address."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reply = dns.query.udp(dns.message.make_query(name, "A"), host, port=port, timeout=0.5)
        except (dns.exception.Timeout, OSError):
            time.sleep(0.2)
            continue
        if reply.answer:
            return
        time.sleep(0.2)
    raise RuntimeError(f"no answer for {name} on port {port}")


def dnsperf(port: int, queries: Path, seconds: int, pid: int) -> tuple[float, float]:
    """(queries per second, CPU microseconds per query of the server process)."""
    before = cpu_seconds(pid)
    result = subprocess.run(
        ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-l", str(seconds), "-q", "200"],
        capture_output=True,
        text=True,
        check=True,
    )
    used = cpu_seconds(pid) - before
    qps = float(re.search(r"Queries per second:\s+([\d.]+)", result.stdout).group(1))
    completed = int(re.search(r"Queries completed:\s+(\d+)", result.stdout).group(1))
    lost = int(re.search(r"Queries lost:\s+(\d+)", result.stdout).group(1))
    if lost:
        print(f"  (port {port}: {lost} queries lost)")
    return qps, used / max(completed, 1) * 1e6


def side_by_side(
    labels: tuple[str, str], ports: dict[str, int], pids: dict[str, int], queries: Path, seconds: int, rounds: int
) -> tuple[float, float]:
    """Two servers, each pinned to the same CPU and dnsperf to the others, asked the same
    `queries` for `seconds` in turn, which goes first alternating each round (so that drift and
    warm-up fall on both alike); prints each one's medians and the ratios first / second, and
    returns those (rate, CPU per query)."""
    cpus_here = sorted(os.sched_getaffinity(0))
    if len(cpus_here) >= 2:
        for pid in pids.values():
            os.sched_setaffinity(pid, {cpus_here[-1]})
        os.sched_setaffinity(0, set(cpus_here[:-1]))
    rates: dict[str, list[float]] = {label: [] for label in labels}
    cpus: dict[str, list[float]] = {label: [] for label in labels}
    for round_ in range(rounds):
        for label in labels if round_ % 2 == 0 else labels[::-1]:
            qps, cpu = dnsperf(ports[label], queries, seconds, pids[label])
            rates[label].append(qps)
            cpus[label].append(cpu)
    for label in labels:
        print(
            f"{label:5}: {statistics.median(rates[label]):10.0f} q/s  "
            f"{statistics.median(cpus[label]):6.2f} us CPU/query (medians)"
        )
    first, second = labels
    rate = statistics.median(rates[first]) / statistics.median(rates[second])
    cpu = statistics.median(cpus[first]) / statistics.median(cpus[second])
    print(f"{first} / {second}: {rate:.3f} x rate  {cpu:.3f} x CPU per query")
    return rate, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--services", type=int, default=1000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="kdns-bench-") as tmp:
        work = Path(tmp)
        snapshot, names, queries = write_cluster(work, args.services)

        unbound_port, kdns_port = free_port(), free_port()
        conf = unbound_config(work, unbound_port, [f"{name}. 30 IN A {ip}" for name, ip in names])
        with running(kdns_command(snapshot, kdns_port, "--resolv-conf", os.devnull), unbound_command(conf)) as (
            kdns,
            unbound,
        ):
            wait_until_answering(kdns_port, names[0][0])
            wait_until_answering(unbound_port, names[0][0])
            print(f"{args.services} names, {args.seconds} s per server, dnsperf -q 200, 127.0.0.1")
            base_qps, base_cpu = dnsperf(unbound_port, queries, args.seconds, unbound.pid)
            kdns_qps, kdns_cpu = dnsperf(kdns_port, queries, args.seconds, kdns.pid)
            print(f"unbound (1 thread): {base_qps:10.0f} q/s  {base_cpu:6.1f} us CPU/query  (baseline)")
            print(f"kdns              : {kdns_qps:10.0f} q/s  {kdns_cpu:6.1f} us CPU/query")
            print(f"kdns / unbound    : {kdns_qps / base_qps:10.2f} x rate  {kdns_cpu / base_cpu:6.2f} x CPU per query")
    return 0


if __name__ == "__main__":
    sys.exit(main())
