"""`--loadbalance` on against off: in-zone UDP rate and CPU per query, same snapshot, same query
file, same run.

Two kdns processes of this checkout answer the same names from one snapshot, one with
`--loadbalance`; the names are half ClusterIP Services (one address: nothing to reorder) and half
headless Services of `--endpoints` ready endpoints each (their orders served in turn from the
reply cache). dnsperf sends the same query file to each, alternating which goes first each round,
both servers pinned to one CPU and dnsperf to the other. Printed as ratios of the medians
(on / off). Nothing is asserted.

    .venv/bin/python bench/loadbalance.py [--seconds 5] [--rounds 6] [--endpoints 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from udp_throughput import free_port, kdns_command, running, side_by_side, wait_until_answering


def write_cluster(work: Path, services: int, endpoints: int) -> tuple[Path, Path, str]:
    """A snapshot of `services` Services, every other one headless with `endpoints` ready
    endpoints; a dnsperf file asking each name's A record; a name to wait for."""
    items: list[dict[str, object]] = []
    names = []
    for i in range(services):
        name = f"svc-{i}"
        names.append(f"{name}.bench.svc.cluster.local")
        if i % 2:
            items.append(
                {
                    "kind": "Service",
                    "metadata": {"name": name, "namespace": "bench"},
                    "spec": {"clusterIP": f"10.96.{i // 250}.{i % 250 + 1}"},
                }
            )
            continue
        items.append(
            {"kind": "Service", "metadata": {"name": name, "namespace": "bench"}, "spec": {"clusterIP": "None"}}
        )
        items.append(
            {
                "kind": "EndpointSlice",
                "apiVersion": "discovery.k8s.io/v1",
                "metadata": {"name": f"{name}-1", "namespace": "bench", "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4",
                "endpoints": [
                    {"addresses": [f"10.{100 + i // 250}.{i % 250}.{e + 1}"], "conditions": {"ready": True}}
                    for e in range(endpoints)
                ],
            }
        )
    snapshot = work / "cluster.yaml"
    snapshot.write_text(yaml.safe_dump({"kind": "List", "items": items}))
    queries = work / "queries.txt"
    queries.write_text("".join(f"{name} A\n" for name in names))
    return snapshot, queries, names[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kdns-bench-") as tmp:
        work = Path(tmp)
        snapshot, queries, probe = write_cluster(work, args.services, args.endpoints)
        ports = {"on": free_port(), "off": free_port()}
        commands = {
            label: kdns_command(
                snapshot, port, "--resolv-conf", os.devnull, *(["--loadbalance"] if label == "on" else [])
            )
            for label, port in ports.items()
        }
        os.environ["PYTHONHASHSEED"] = "0"  # the same dict layouts in both
        with running(commands["on"], commands["off"]) as processes:
            pids = {"on": processes[0].pid, "off": processes[1].pid}
            for port in ports.values():
                wait_until_answering(port, probe)
            print(
                f"{args.services} names (half headless, {args.endpoints} endpoints each), "
                f"{args.rounds} rounds of {args.seconds} s per server"
            )
            side_by_side(("on", "off"), ports, pids, queries, args.seconds, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
