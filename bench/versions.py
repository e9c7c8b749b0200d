"""The query path of this checkout against another's (an earlier commit): in-zone UDP rate and CPU
per query, same snapshot, same query file, same run.

Both kdns processes answer the same cluster names from one snapshot, with `/metrics` on (the
default flags: every query is timed); dnsperf sends the same mixed query file (80% A, 10% SRV,
10% NXDOMAIN) to each, alternating which goes first each round, both servers pinned to one CPU
and dnsperf to the other, so that drift on a shared machine falls on both alike; the whole run
twice, each version started first once (the order alone moves the ratio by 3 to 5%). Printed as ratios
of the medians (this / other), and their geometric mean over both orders. Nothing is asserted.

    git worktree add /tmp/kdns-before HEAD~5
    .venv/bin/python bench/versions.py --other /tmp/kdns-before [--seconds 5] [--rounds 6]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from metrics_cost import mixed_queries
from udp_throughput import free_port, kdns_command, running, side_by_side, wait_until_answering, write_cluster


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other", required=True, help="a checkout of another version of kdns")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--services", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kdns-bench-") as tmp:
        work = Path(tmp)
        snapshot, names, _ = write_cluster(work, args.services)
        queries = mixed_queries(work, names)
        ports = {"this": free_port(), "other": free_port()}
        commands = {}
        for label, port in ports.items():
            command = kdns_command(snapshot, port, "--resolv-conf", os.devnull)
            command[command.index("--metrics-listen") + 1] = f"127.0.0.1:{free_port()}"
            if label == "other":
                command = ["env", f"PYTHONPATH={Path(args.other).resolve()}", *command]
            commands[label] = command
        os.environ["PYTHONHASHSEED"] = "0"  # the same dict layouts in both
        print(f"{args.services} names, {args.rounds} rounds of {args.seconds} s per server, dnsperf -q 200")
        # Which of the two processes is started first moves the ratio by 3 to 5% on these machines,
        # whichever version it is (the same two trees swapped gave 0.950 and 0.957; in another
        # sitting 1.036 and 0.969): each order once, and the geometric mean of the two ratios,
        # which that bias cancels out of.
        ratios = []
        for order in (("this", "other"), ("other", "this")):
            with running(*(commands[label] for label in order)) as processes:
                pids = {label: process.pid for label, process in zip(order, processes, strict=True)}
                for port in ports.values():
                    wait_until_answering(port, names[0][0])
                print(f"started first: {order[0]}")
                ratios.append(side_by_side(("this", "other"), ports, pids, queries, args.seconds, args.rounds))
        rate = math.sqrt(ratios[0][0] * ratios[1][0])
        cpu = math.sqrt(ratios[0][1] * ratios[1][1])
        print(f"this / other, both orders: {rate:.3f} x rate  {cpu:.3f} x CPU per query (geometric means)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
