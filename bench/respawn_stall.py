"""How long the supervisor of `kdns serve --workers 2` stops answering while it restarts a worker
at scale: the longest /health answer while polled back to back, before and during the respawn
of a killed worker (the supervisor sends the new worker every object of the cluster).

A synthetic snapshot (bench/zone_build.py's Services and slices, and Pods in --pods verified
mode) is served by `kdns serve --workers 2`; a thread asks /health over a new connection each
time and keeps the longest answer; worker 1 is killed, and polling goes on until the instance is
ready again. With `--other PATH`, the same runs once more with the kdns of another checkout
(PYTHONPATH), so that two versions are compared in one sitting. Figures are printed, never
asserted.

    .venv/bin/python bench/respawn_stall.py [--services 10000] [--pods 100000] [--other /path/to/checkout]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.zone_build import synthetic  # noqa: E402
from tests.helpers import children, http_get, http_port, wait  # noqa: E402
from tests.process import KdnsServer  # noqa: E402


def snapshot(path: Path, services: int, pods: int) -> None:
    service_objects, slices = synthetic(services, random.Random(7))
    pod_objects: list[dict[str, Any]] = []
    for i in range(pods):
        address = f"10.{160 + i // 65536}.{i // 256 % 256}.{i % 256}"
        pod_objects.append(
            {
                "kind": "Pod",
                "metadata": {"name": f"app-{i}-abcde", "namespace": f"ns-{i % 100}"},
                "status": {"podIP": address, "podIPs": [{"ip": address}]},
            }
        )
    items = [*service_objects, *slices, *pod_objects]
    path.write_text(json.dumps({"kind": "List", "items": items}))  # JSON: read in a second, not a minute


class Poller:
    """GET /health back to back on a thread, keeping the longest answer of each phase."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.longest: dict[str, float] = {}
        self.phase = "before"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                http_get(self.port, "/health")
            except OSError:
                continue
            took = time.perf_counter() - started
            self.longest[self.phase] = max(self.longest.get(self.phase, 0.0), took)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def measure(path: Path, pythonpath: str | None) -> tuple[float, float, float]:
    """(longest /health before, longest during the respawn, seconds until ready again)."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    server = KdnsServer(
        "--snapshot",
        str(path),
        "--pods",
        "verified",
        "--workers",
        "2",
        "--health-listen",
        "127.0.0.1:0",
        "--ready-listen",
        "127.0.0.1:0",
        listen=("127.0.0.1:0",),
        env=env,
    )
    try:
        wait(lambda: len(children(server.process.pid)) == 2, 120, "two workers")
        ready = http_port(server, "/ready")
        wait(lambda: http_get(ready, "/ready")[0] == 200, 120, "ready")
        poller = Poller(http_port(server, "/health"))
        time.sleep(3)
        poller.phase = "respawn"
        killed = time.monotonic()
        os.kill(children(server.process.pid)[1], signal.SIGKILL)
        wait(lambda: "started again" in server.log_text(), 30, "the respawn")
        wait(lambda: http_get(ready, "/ready")[0] == 200, 300, "ready again")
        until_ready = time.monotonic() - killed
        poller.stop()
        return poller.longest.get("before", 0.0), poller.longest.get("respawn", 0.0), until_ready
    finally:
        server.stop(signal.SIGINT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--pods", type=int, default=100_000)
    parser.add_argument("--other", help="a checkout of another version of kdns, measured in the same run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "cluster.json"
        snapshot(path, args.services, args.pods)
        print(f"{args.services:,} Services, {args.pods:,} Pods (--pods verified), --workers 2; worker 1 killed:")
        for label, pythonpath in (("this checkout", None), (args.other, args.other)):
            if label is None:
                continue
            before, during, ready = measure(path, pythonpath)
            print(
                f"  {label}: longest /health answer {before * 1000:.0f} ms before, {during * 1000:.0f} ms "
                f"during the respawn; ready again after {ready:.1f} s"
            )
    return 0


if __name__ == "__main__":
    socket.setdefaulttimeout(30)
    sys.exit(main())
