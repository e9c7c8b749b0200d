"""The miss path against the hit path (issue 20, point 1): the real `kdns serve` on a snapshot of
`--services` ClusterIP Services, asked every Service's A record once (each name's first question:
its answer is made then, and the reply kept) and then once more (every reply from the reply
cache), by dnsperf over UDP; kdns's CPU per query in each pass, from /proc. Fresh processes each
round; the medians of `--rounds`, and the miss pass's CPU as a ratio to the hit pass's of the
same round. Nothing is asserted (the target, at most 2x, is the README's).

    .venv/bin/python bench/miss_path.py [--services 10000] [--rounds 5] [--outstanding 500] [--rate 0]

As fast as kdns answers, the two passes do not meet the same kernel: answering misses more slowly,
kdns leaves dnsperf idle, and each reply's `sendto` then wakes it, a cost the kernel charges to
the sender (py-spy, 1 kHz, 10,000 names: the `sendto` line took 4 times the samples in the first
pass that it took in the second, for as many replies). `--rate N` asks both passes at the same
pace, below what either reaches, so that both pay the same for their system calls.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from udp_throughput import (
    cpu_seconds,
    free_port,
    kdns_command,
    running,
    wait_until_answering,
    write_cluster,
)


def one_pass(port: int, queries: Path, pid: int, outstanding: int, rate: int = 0) -> float:
    """Ask every line of `queries` once (at `rate` queries a second, or as fast as kdns answers);
    kdns's CPU microseconds per query answered."""
    before = cpu_seconds(pid)
    limit = ["-Q", str(rate)] if rate else []
    result = subprocess.run(
        ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-n", "1", "-q", str(outstanding), *limit],
        capture_output=True,
        text=True,
        check=True,
    )
    used = cpu_seconds(pid) - before
    completed = int(re.search(r"Queries completed:\s+(\d+)", result.stdout).group(1))  # type: ignore[union-attr]
    return used / max(completed, 1) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10000)  # their replies all fit the reply cache
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--outstanding", type=int, default=500, help="dnsperf's queries in flight")
    parser.add_argument("--rate", type=int, default=0, help="queries a second in both passes (0: at once)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        snapshot, names, queries = write_cluster(work, args.services)
        misses, hits, ratios = [], [], []
        for _ in range(args.rounds):
            port = free_port()
            with running(kdns_command(snapshot, port)) as (kdns,):
                wait_until_answering(port, names[0][0])  # one name of them all asked before
                miss = one_pass(port, queries, kdns.pid, args.outstanding, args.rate)
                hit = one_pass(port, queries, kdns.pid, args.outstanding, args.rate)
            misses.append(miss)
            hits.append(hit)
            ratios.append(miss / hit)
            print(f"  round: first question {miss:.1f} us/query, asked again {hit:.1f} us/query", flush=True)
        print(
            f"{args.services} names, each asked once, then again"
            f"{f' at {args.rate} q/s' if args.rate else ''}: kdns CPU per query "
            f"{statistics.median(misses):.1f} us on first use, {statistics.median(hits):.1f} us from the "
            f"reply cache: {statistics.median(ratios):.2f}x (median of {args.rounds} rounds)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
