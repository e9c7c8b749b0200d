"""The query path of this checkout against another's (an earlier commit): in-zone UDP rate and CPU
per query, same snapshot, same query file, same run.

Both kdns processes answer the same cluster names from one snapshot, with `/metrics` on (the
default flags: every query is timed); dnsperf sends the same mixed query file (80% A, 10% SRV,
10% NXDOMAIN) to each, alternating which goes first each round, both servers pinned to one CPU
and dnsperf to the other, so that drift on a shared machine falls on both alike. Printed as
ratios of the medians (this / other). Nothing is asserted.

    git worktree add /tmp/kdns-before HEAD~5
    .venv/bin/python bench/versions.py --other /tmp/kdns-before [--seconds 5] [--rounds 6]
"""

from __future__ import annotations

import argparse
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
        with running(commands["this"], commands["other"]) as processes:
            pids = {"this": processes[0].pid, "other": processes[1].pid}
            for port in ports.values():
                wait_until_answering(port, names[0][0])
            print(f"{args.services} names, {args.rounds} rounds of {args.seconds} s per server, dnsperf -q 200")
            side_by_side(("this", "other"), ports, pids, queries, args.seconds, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
