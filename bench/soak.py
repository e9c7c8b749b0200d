"""Soak: steady dnsperf load on kdns while Services churn through the API (issue 8, point 6).

kdns follows the test API server (`tests/apiserver.py`) holding `--services` Services; dnsperf
asks their names at a fixed rate (`--qps`; by default half of what kdns answered flat out in a
first, short measurement), while a thread creates, changes and deletes other Services at
`--churn` changes per second. After a warm-up, the soak runs for `--seconds` in rounds of
`--round` seconds; it prints, per round and in total, the queries sent, answered and lost, and
kdns's RSS and open file descriptors, then the growth of each from the first round to the last.

    apt-get install -y dnsperf
    .venv/bin/python bench/soak.py --seconds 1800          # the 30-minute run in the README
    .venv/bin/python bench/soak.py --seconds 20 --qps 2000 # the bounded run tests/test_soak.py makes

Nothing is asserted here; `--json` prints the totals as one JSON line for a caller that does.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from udp_throughput import free_port, wait_until_answering  # noqa: E402

from tests.apiserver import FakeApiServer  # noqa: E402  (the repository root is on the path now)
from tests.builders import namespace, service  # noqa: E402


@dataclass
class Round:
    seconds: float
    sent: int
    completed: int
    lost: int
    rss_kib: int
    fds: int


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def dnsperf(port: int, queries: Path, seconds: float, qps: int | None) -> tuple[int, int, int]:
    """(sent, completed, lost) of one dnsperf run."""
    command = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-l", str(seconds), "-t", "2"]
    if qps:
        command += ["-Q", str(qps)]
    else:
        command += ["-q", "200"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    sent = int(re.search(r"Queries sent:\s+(\d+)", out).group(1))
    completed = int(re.search(r"Queries completed:\s+(\d+)", out).group(1))
    lost = int(re.search(r"Queries lost:\s+(\d+)", out).group(1))
    return sent, completed, lost


class Churn(threading.Thread):
    """Creates, modifies and deletes Services named churn-N at `rate` changes per second."""

    def __init__(self, api: FakeApiServer, rate: float) -> None:
        super().__init__(daemon=True)
        self.api, self.rate, self.changes = api, rate, 0
        self.stopping = threading.Event()

    def run(self) -> None:
        live: list[str] = []
        while not self.stopping.wait(1 / self.rate):
            i = self.changes
            if len(live) > 200 or (live and i % 3 == 2):
                self.api.delete("Service", "churn", live.pop(0))
            else:
                name = f"churn-{i}"
                self.api.apply(service("churn", name, [f"10.99.{i // 250 % 250}.{i % 250 + 1}"]))
                live.append(name)
            self.changes += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="length of the soak after warm-up")
    parser.add_argument("--round", type=float, default=10, help="seconds per measured round")
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--qps", type=int, default=0, help="fixed query rate (default: half the measured capacity)")
    parser.add_argument("--churn", type=float, default=20, help="Service changes per second through the API")
    parser.add_argument("--json", action="store_true", help="print the totals as one JSON line at the end")
    args = parser.parse_args()

    api = FakeApiServer()
    api.apply(namespace("soak"))
    api.apply(namespace("churn"))
    names = []
    for i in range(args.services):
        api.apply(service("soak", f"svc-{i}", [f"10.96.{i // 250}.{i % 250 + 1}"]))
        names.append(f"svc-{i}.soak.svc.cluster.local")
    with tempfile.TemporaryDirectory(prefix="kdns-soak-") as tmp:
        work = Path(tmp)
        queries = work / "queries.txt"
        queries.write_text("".join(f"{name} A\n" for name in names))
        kubeconfig = api.kubeconfig(work)
        port = free_port()
        command = [
            sys.executable, "-m", "kdns", "serve", "--kubeconfig", str(kubeconfig), "--listen", f"127.0.0.1:{port}",
            "--resolv-conf", os.devnull, "--log-level", "warning",
            "--health-listen", "off", "--ready-listen", "off", "--metrics-listen", "off", "--lameduck", "0",
        ]  # fmt: skip
        log = open(work / "kdns.log", "w")  # noqa: SIM115  # closed below, after kdns
        kdns = subprocess.Popen(command, cwd=ROOT, stderr=log)
        churn = Churn(api, args.churn)
        try:
            wait_until_answering(port, names[-1])
            qps = args.qps
            if not qps:
                sent, completed, _ = dnsperf(port, queries, 3, None)
                qps = max(100, completed // 3 // 2)
                print(f"capacity about {completed / 3:.0f} q/s: soaking at {qps} q/s")
            churn.start()
            dnsperf(port, queries, min(5, args.round), qps)  # warm-up: caches, on-demand names, arenas
            rounds: list[Round] = []
            remaining = args.seconds
            while remaining > 0:
                length = min(args.round, remaining)
                sent, completed, lost = dnsperf(port, queries, length, qps)
                rounds.append(Round(length, sent, completed, lost, rss_kib(kdns.pid), fds(kdns.pid)))
                r = rounds[-1]
                rss = r.rss_kib / 1024
                print(f"round {len(rounds):3}: {r.sent:8} sent {r.lost:5} lost  RSS {rss:7.1f} MiB  fds {r.fds}")
                remaining -= length
        except BaseException:
            # Why, from kdns's side (a crash, an error it logged): its warnings and errors.
            log.flush()
            logged = (work / "kdns.log").read_text()[-3000:]
            print(f"kdns (exit status {kdns.poll()}) logged:\n{logged}", file=sys.stderr)
            raise
        finally:
            churn.stopping.set()
            kdns.terminate()
            kdns.wait(10)
            log.close()
            api.stop()
    first, last = rounds[0], rounds[-1]
    totals = {
        "seconds": sum(r.seconds for r in rounds),
        "qps": qps,
        "churn_changes": churn.changes,
        "sent": sum(r.sent for r in rounds),
        "lost": sum(r.lost for r in rounds),
        "rss_first_kib": first.rss_kib,
        "rss_last_kib": last.rss_kib,
        "rss_growth": (last.rss_kib - first.rss_kib) / first.rss_kib,
        "fds_first": first.fds,
        "fds_last": last.fds,
        "rounds": [asdict(r) for r in rounds],
    }
    print(
        f"{totals['seconds']:.0f} s at {qps} q/s with {churn.changes} Service changes: {totals['sent']} sent, "
        f"{totals['lost']} lost; RSS {first.rss_kib / 1024:.1f} -> {last.rss_kib / 1024:.1f} MiB "
        f"({totals['rss_growth'] * 100:+.1f}%); fds {first.fds} -> {last.fds}"
    )
    if args.json:
        print(json.dumps(totals))
    return 0


if __name__ == "__main__":
    sys.exit(main())
