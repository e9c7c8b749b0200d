"""The cost of metrics on the query path: kdns with `/metrics` served (every query timed and
counted, scraped once a second) against kdns with it off, same names, same run.

Both servers answer the same cluster names from one snapshot; dnsperf sends the same query file
(80% A, 10% SRV, 10% NXDOMAIN, as a cluster's traffic) to each, alternating off/on for a number of
rounds so that drift on a shared machine falls on both alike. Printed as ratios of the medians
(on / off); the target is within 5%. Nothing is asserted.

    apt-get install -y dnsperf
    .venv/bin/python bench/metrics_cost.py [--seconds 5] [--rounds 5] [--services 1000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from udp_throughput import dnsperf, free_port, kdns_command, running, wait_until_answering, write_cluster


def mixed_queries(work: Path, names: list[tuple[str, str]]) -> Path:
    """Per ten queries: eight A, one SRV for a named port, one NXDOMAIN in the cluster domain."""
    lines = []
    for i, (name, _) in enumerate(names):
        lines.append(f"{name} A\n")
        if i % 8 == 0:
            lines.append(f"_http._tcp.{name} SRV\n")
            lines.append(f"missing-{i}.bench.svc.cluster.local A\n")
    queries = work / "mixed.txt"
    queries.write_text("".join(lines))
    return queries


def scrape_every_second(port: int, stop: threading.Event, sizes: list[int]) -> None:
    """Scrape /metrics once a second until `stop` (a far busier scraper than Prometheus's default
    of every 30 s), noting the size of each page read."""
    while not stop.wait(1.0):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            sizes.append(len(response.read()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument(
        "--control", action="store_true", help="both servers with metrics off: the noise floor of this machine"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="kdns-bench-") as tmp:
        work = Path(tmp)
        snapshot, names, _ = write_cluster(work, args.services)
        queries = mixed_queries(work, names)
        off_port, on_port, metrics_port = free_port(), free_port(), free_port()
        off = kdns_command(snapshot, off_port, "--resolv-conf", os.devnull)
        on = kdns_command(snapshot, on_port, "--resolv-conf", os.devnull)
        if not args.control:
            on[on.index("--metrics-listen") + 1] = f"127.0.0.1:{metrics_port}"  # the one difference
        # The same string hashes in both: with random seeds, two processes of the same program
        # differ by a few percent on their own (dict layouts).
        os.environ["PYTHONHASHSEED"] = "0"
        with running(off, on) as (kdns_off, kdns_on):
            wait_until_answering(off_port, names[0][0])
            wait_until_answering(on_port, names[0][0])
            cpus_here = sorted(os.sched_getaffinity(0))
            if len(cpus_here) >= 2:
                # Both servers on one CPU, dnsperf (a child of this process) on another: where the
                # scheduler puts each is otherwise a difference of its own (5% on these machines).
                os.sched_setaffinity(kdns_off.pid, {cpus_here[-1]})
                os.sched_setaffinity(kdns_on.pid, {cpus_here[-1]})
                os.sched_setaffinity(0, set(cpus_here[:-1]))
            print(f"{args.services} names, {args.rounds} rounds of {args.seconds} s per server, dnsperf -q 200")
            rates: dict[str, list[float]] = {"off": [], "on": []}
            cpus: dict[str, list[float]] = {"off": [], "on": []}
            pages: list[int] = []
            for round_ in range(args.rounds):
                # Which goes first alternates, so that drift and warm-up fall on both alike.
                for setting in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
                    port, pid = (off_port, kdns_off.pid) if setting == "off" else (on_port, kdns_on.pid)
                    stop = threading.Event()
                    scraper = threading.Thread(target=scrape_every_second, args=(metrics_port, stop, pages))
                    if setting == "on" and not args.control:
                        scraper.start()
                    qps, cpu = dnsperf(port, queries, args.seconds, pid)
                    stop.set()
                    if scraper.is_alive():
                        scraper.join()
                    rates[setting].append(qps)
                    cpus[setting].append(cpu)
            for setting in ("off", "on"):
                print(
                    f"metrics {setting:3}: {statistics.median(rates[setting]):10.0f} q/s  "
                    f"{statistics.median(cpus[setting]):6.2f} us CPU/query (medians; CPU includes scrapes)"
                )
            rate = statistics.median(rates["on"]) / statistics.median(rates["off"])
            cpu = statistics.median(cpus["on"]) / statistics.median(cpus["off"])
            print(f"on / off   : {rate:10.3f} x rate  {cpu:6.3f} x CPU per query  ({len(pages)} scrapes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
