"""Cache hits against in-zone answers: dnsperf against one kdns, same run, same number of names.

kdns serves 1,000 cluster names from a snapshot and forwards 1,000 other names to Unbound (one
thread, `local-data`), whose answers it caches. After one pass fills the cache, dnsperf sends the
in-zone names, then the cached names, for the same time each. The issue's target: a cache hit
costs no more than 1.5 times an in-zone answer. Figures are printed, never asserted.

    apt-get install -y dnsperf unbound
    .venv/bin/python bench/cache_hits.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import dns.message
import dns.query

sys.path.insert(0, str(Path(__file__).resolve().parent))
from udp_throughput import (
    dnsperf,
    free_port,
    kdns_command,
    running,
    unbound_command,
    unbound_config,
    wait_until_answering,
    write_cluster,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--names", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kdns-bench-") as tmp:
        work = Path(tmp)
        snapshot, cluster_names, in_zone_file = write_cluster(work, args.names)
        external = [f"host-{i}.bench.test" for i in range(args.names)]
        cached_file = work / "cached.txt"
        cached_file.write_text("".join(f"{name} A\n" for name in external))

        unbound_port, kdns_port = free_port(), free_port()
        records = [f"{name}. 3600 IN A 192.0.2.{i % 250 + 1}" for i, name in enumerate(external)]
        conf = unbound_config(work, unbound_port, records)
        upstream = ("--upstream", f"127.0.0.1:{unbound_port}")
        with running(unbound_command(conf), kdns_command(snapshot, kdns_port, *upstream)) as (_, kdns):
            wait_until_answering(unbound_port, external[0])
            wait_until_answering(kdns_port, cluster_names[0][0])
            for name in external:  # fill the cache
                dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=kdns_port, timeout=2)
            print(f"{args.names} names each, {args.seconds} s per run, dnsperf -q 200, 127.0.0.1, one kdns process")
            zone_qps, zone_cpu = dnsperf(kdns_port, in_zone_file, args.seconds, kdns.pid)
            cache_qps, cache_cpu = dnsperf(kdns_port, cached_file, args.seconds, kdns.pid)
            print(f"in-zone answers : {zone_qps:10.0f} q/s  {zone_cpu:6.1f} us CPU/query  (baseline)")
            print(f"cache hits      : {cache_qps:10.0f} q/s  {cache_cpu:6.1f} us CPU/query")
            print(f"cache / in-zone : {cache_qps / zone_qps:10.2f} x rate  {cache_cpu / zone_cpu:6.2f} x CPU per query")
            print("target (issue 4): a cache hit costs no more than 1.5 x an in-zone answer")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
