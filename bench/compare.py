"""kdns against Unbound and CoreDNS, one command, one sitting: queries per second, server CPU per
query, latency at a fixed rate, and lost queries.

Every server answers the same generated cluster (`--services` ClusterIP Services with a named
port, and headless ones with endpoints) and gets the same query file: 80% A, 10% SRV, 10% NXDOMAIN
for names under the cluster domain, as a cluster's traffic is. Unbound serves the same answers from
`local-data` (its `local-zone` makes the NXDOMAINs); CoreDNS answers through its `kubernetes`
plugin from a real kube-apiserver holding the same objects (`../shared/kube-apiserver`, via
tests/envtest.sh), with a kubeadm Corefile. Each configuration runs `--rounds` times, alternating,
and the median is printed, as a ratio to Unbound with one thread from the same run: absolute
rates vary with the load on these shared machines.

Rows: Unbound with 1 and 2 threads; CoreDNS with GOMAXPROCS 1 and 2 (skipped, with the reason,
when its binary or the API server is missing); kdns over UDP, over TCP (`dnsperf -m tcp`,
pipelined on a few connections), with two workers (`--workers 2`), answering forwarded names from
a warm cache (1,000 names of an Unbound upstream asked once before), and with `/metrics` on.
dnsperf runs eight client sockets (`-c 8`) so that SO_REUSEPORT can spread them over Unbound's
threads and kdns's workers. Then p50 and p99 latency at a fixed 20,000 queries per second, and
lost queries over `--steady` seconds at 80% of kdns's measured rate.
Then kdns's memory (PSS summed over its processes) with 1, 2 and 4 workers at `--memory`
Services, at start and after every (name, type) its zone holds was asked in every worker, beside
CoreDNS's RSS for the same objects and questions; the zone's build time, time per event and RSS
at `--zone` sizes, 150,000 Pods in `--pods verified` mode and one event on a 3,000-endpoint
headless Service (bench/zone_build.py, each in fresh processes); and with `--sync N[,N...]`: for
each size, the real `kdns serve` and CoreDNS, one after the other, started against a real
kube-apiserver (one per size) holding N Services (about 10 endpoints each; written into its etcd,
see bench/etcd_load.py): time until the names created last answer, CPU seconds, RSS, then a
full relist forced by a compaction (the API server restarted past it): its CPU, and the peak RSS
through it against the steady RSS before; the ratios of kdns to CoreDNS; and, for two sizes or
more, the curve of each cost per 1,000 Services against size for both. `--sync-pods N` then
measures each size again with N running Pods beside the Services, both servers verifying pod
records against them (kdns `--pods verified`, CoreDNS `pods verified`). `--rounds 0` leaves out
the throughput runs (for the memory or sync figures alone).

Installs nothing: `apt-get install -y dnsperf unbound zstd` and `tests/envtest.sh` (the test
command does both); CoreDNS is unpacked from ../shared/coredns into .bench/ on first use.

    .venv/bin/python bench/compare.py [--seconds 5] [--rounds 3] [--services 1000] [--steady 60]
        [--memory 10000] [--zone 1000,10000,50000] [--pods 150000] [--headless 3000]
        [--sync 1000,10000,50000] [--sync-pods 150000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import etcd_load  # noqa: E402
import zone_build  # noqa: E402
from udp_throughput import (  # noqa: E402
    cpu_seconds,
    free_port,
    kdns_command,
    running,
    unbound_config,
    wait_until_answering,
)

from tests.process import unpack_coredns  # noqa: E402

Row = dict[str, float]


def cluster(services: int) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """The objects (every tenth Service headless, with three endpoints), Unbound's local-data
    lines for the same answers, and the query file's lines."""
    objects: list[dict[str, Any]] = [{"kind": "Namespace", "metadata": {"name": "bench"}}]
    records, queries = [], []
    for i in range(services):
        name = f"svc-{i}"
        fqdn = f"{name}.bench.svc.cluster.local"
        port = {"name": "http", "port": 80, "protocol": "TCP"}
        if i % 10 == 9:
            objects.append(
                {
                    "kind": "Service",
                    "metadata": {"name": name, "namespace": "bench"},
                    "spec": {"clusterIP": "None", "ports": [port], "selector": {"app": name}},
                }
            )
            addresses = [f"10.244.{i // 250}.{i % 250 + j}" for j in (1, 2, 3)]
            objects.append(
                {
                    "kind": "EndpointSlice",
                    "apiVersion": "discovery.k8s.io/v1",
                    "metadata": {
                        "name": f"{name}-a",
                        "namespace": "bench",
                        "labels": {"kubernetes.io/service-name": name},
                    },
                    "addressType": "IPv4",
                    "endpoints": [{"addresses": [address], "conditions": {"ready": True}} for address in addresses],
                    "ports": [port],
                }
            )
            records += [f"{fqdn}. 30 IN A {address}" for address in addresses]
        else:
            address = f"10.96.{1 + i // 250}.{i % 250 + 1}"  # 10.96.0.1 is the API server's own
            objects.append(
                {
                    "kind": "Service",
                    "metadata": {"name": name, "namespace": "bench"},
                    "spec": {"clusterIP": address, "clusterIPs": [address], "ports": [port]},
                }
            )
            records.append(f"{fqdn}. 30 IN A {address}")
            records.append(f"_http._tcp.{fqdn}. 30 IN SRV 0 100 80 {fqdn}.")
    for i in range(services):  # 80% A, 10% SRV (ClusterIP services' named port), 10% NXDOMAIN
        fqdn = f"svc-{i}.bench.svc.cluster.local"
        queries.append(f"{fqdn} A")
        if i % 8 == 0:
            named = i - 1 if i % 10 == 9 else i  # a ClusterIP Service: its named port's SRV
            queries.append(f"_http._tcp.svc-{named}.bench.svc.cluster.local SRV")
            queries.append(f"missing-{i}.bench.svc.cluster.local A")
    return objects, records, queries


def dnsperf(port: int, queries: Path, seconds: float, pids: list[int], *extra: str) -> Row:
    """One dnsperf run: rate, server CPU per completed query (µs), lost queries."""
    before = sum(cpu_seconds(pid) for pid in pids)
    result = subprocess.run(
        ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-l", str(seconds), *extra],
        capture_output=True,
        text=True,
        check=True,
    )
    used = sum(cpu_seconds(pid) for pid in pids) - before
    completed = int(_field(result.stdout, r"Queries completed:\s+(\d+)"))
    return {
        "qps": _field(result.stdout, r"Queries per second:\s+([\d.]+)"),
        "cpu_us": used / max(completed, 1) * 1e6,
        "lost": _field(result.stdout, r"Queries lost:\s+(\d+)"),
    }


def latency(port: int, queries: Path, seconds: float, rate: int) -> tuple[float, float, float]:
    """p50 and p99 latency (ms) and lost queries at a fixed `rate`, from dnsperf's per-query
    lines (`-v`)."""
    result = subprocess.run(
        ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-l", str(seconds), "-Q", str(rate), "-v"],
        capture_output=True,
        text=True,
        check=True,
    )
    times = sorted(float(line.split()[-1]) for line in result.stdout.splitlines() if line.startswith(">"))
    if not times:
        return float("nan"), float("nan"), _field(result.stdout, r"Queries lost:\s+(\d+)")
    return (
        times[len(times) // 2] * 1000,
        times[min(len(times) - 1, int(len(times) * 0.99))] * 1000,
        _field(result.stdout, r"Queries lost:\s+(\d+)"),
    )


def _field(text: str, pattern: str) -> float:
    match = re.search(pattern, text)
    return float(match.group(1)) if match else float("nan")


def children(pid: int) -> list[int]:
    """`pid` and its descendants (a `python -m kdns` may run workers)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        path = task / "children"
        if path.exists():
            for child in path.read_text().split():
                found += children(int(child))
    return found


def kubeadm_corefile(port: int, kubeconfig: Path, pods: str = "insecure", before: str = "", after: str = "") -> str:
    """kubeadm's Corefile for CoreDNS on 127.0.0.1:`port`, following the API server of
    `kubeconfig`, with `pods` as its pod mode and the plugins `before` and `after` its
    `kubernetes` and `cache`."""
    lines = [f".:{port} {{", "  bind 127.0.0.1", *([f"  {before}"] if before else [])]
    lines += ["  kubernetes cluster.local in-addr.arpa ip6.arpa {", f"    kubeconfig {kubeconfig} real"]
    lines += [f"    pods {pods}", "    fallthrough in-addr.arpa ip6.arpa", "    ttl 30", "  }", "  cache 30"]
    lines += [*([f"  {after}"] if after else []), "}"]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def coredns(work: Path, objects: list[dict[str, Any]], port: int, procs: int) -> Iterator[subprocess.Popen[bytes]]:
    """CoreDNS with the kubeadm Corefile on `port`, following a real kube-apiserver that holds
    `objects` (one API server per run: the first call starts it and keeps it in `_API`)."""
    binary = _coredns_binary()
    api = _api_server(work, objects)
    kubeconfig = api.kubeconfig(work / "coredns-kubeconfig")
    corefile = work / f"Corefile-{port}"
    corefile.write_text(kubeadm_corefile(port, kubeconfig, before="errors", after="loadbalance"))
    process = subprocess.Popen(
        [str(binary), "-conf", str(corefile)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "GOMAXPROCS": str(procs)},
    )
    try:
        yield process
    finally:
        process.terminate()
        process.wait(10)


_API: list[Any] = []


def _api_server(work: Path, objects: list[dict[str, Any]]) -> Any:
    if _API:
        return _API[0]
    os.environ.setdefault("KUBEBUILDER_ASSETS", str(ROOT / ".envtest"))  # where tests/envtest.sh puts it
    if not (Path(os.environ["KUBEBUILDER_ASSETS"]) / "kube-apiserver").exists():
        raise FileNotFoundError(f"no kube-apiserver in {os.environ['KUBEBUILDER_ASSETS']} (run tests/envtest.sh)")
    from tests.kubeapi import RealApiServer

    api = RealApiServer(work / "api")
    for obj in objects:
        api.create(obj)
    _API.append(api)
    return api


def _coredns_binary() -> Path:
    return unpack_coredns(ROOT / ".bench")


def sync_cluster(services: int, pods: int = 0) -> tuple[list[dict[str, Any]], list[str]]:
    """`services` Services in 100 namespaces with about 10 endpoints each (a fifth headless), as
    `bench/zone_build.py` makes them, with cluster IPs inside the test API server's range, and
    `pods` running Pods spread over the same namespaces; and the two names created last (the
    last ClusterIP Service, the last headless one)."""
    import random

    from zone_build import synthetic

    service_objects, slices = synthetic(services, random.Random(services))
    last: dict[bool, str] = {}
    for i, obj in enumerate(service_objects):
        if obj["spec"]["clusterIP"] != "None":
            obj["spec"]["clusterIP"] = f"10.96.{1 + i // 250}.{i % 250 + 1}"
        meta = obj["metadata"]
        last[obj["spec"]["clusterIP"] == "None"] = f"{meta['name']}.{meta['namespace']}.svc.cluster.local"
    for slice_ in slices:
        slice_["apiVersion"] = "discovery.k8s.io/v1"
    namespaces = [{"kind": "Namespace", "metadata": {"name": f"ns-{n}"}} for n in range(100)]
    ordered = [obj for pair in zip(service_objects, slices, strict=True) for obj in pair]
    running_pods = [
        {
            "kind": "Pod",
            "metadata": {"name": f"pod-{i}", "namespace": f"ns-{i % 100}"},
            "status": {"podIP": f"10.{160 + i // 65536}.{i // 256 % 256}.{i % 256}"},
        }
        for i in range(pods)
    ]
    return namespaces + ordered + running_pods, [last[False], last[True]]


def measure_sync(work: Path, services: int, pods: int = 0) -> list[tuple[str, Row]]:
    """The real `kdns serve` and CoreDNS, one after the other, started against a real
    kube-apiserver holding `services` Services: seconds from start to both names created last
    answering, the process's CPU seconds then, and its RSS; then a full relist after compaction
    (`_relist`): the steady RSS before it, the peak through it, and its CPU. With `pods`, as many
    running Pods too, and both servers verify pod records against them (kdns `--pods verified`,
    CoreDNS `pods verified`): both then list and watch every Pod."""

    os.environ.setdefault("KUBEBUILDER_ASSETS", str(ROOT / ".envtest"))
    from tests.kubeapi import RealApiServer

    objects, last_names = sync_cluster(services, pods)
    api = RealApiServer(work / "sync-api")
    _API.append(api)
    admin = api.api_client()
    from kubernetes import client

    core = client.CoreV1Api(admin)
    started = time.monotonic()
    namespaces = [obj for obj in objects if obj["kind"] == "Namespace"]
    for obj in namespaces:
        core.create_namespace(obj)
    # The rest straight into etcd: created through the API, Services slow to about 20 a second
    # past 35,000 (the ClusterIP allocator; see bench/etcd_load.py).
    written = etcd_load.load_through_etcd(api.etcd_port, [obj for obj in objects if obj["kind"] != "Namespace"])
    _wait_served(core.list_service_for_all_namespaces, services)
    if pods:
        _wait_served(core.list_pod_for_all_namespaces, pods)
    print(
        f"(sync: {len(namespaces)} Namespaces created, {written} objects written into etcd, served after "
        f"{time.monotonic() - started:.0f} s)"
    )
    kubeconfig = api.kubeconfig(work / "sync-kubeconfig")
    results = []
    for label in ("kdns", "CoreDNS"):
        port = free_port()
        if label == "kdns":
            command = kdns_command(Path(os.devnull), port, "--resolv-conf", os.devnull)
            if pods:
                command += ["--pods", "verified"]
            at = command.index("--snapshot")
            command[at : at + 2] = ["--kubeconfig", str(kubeconfig)]
        else:
            corefile = work / "Corefile-sync"
            corefile.write_text(kubeadm_corefile(port, kubeconfig, pods="verified" if pods else "insecure"))
            command = [str(_coredns_binary()), "-conf", str(corefile)]
        started = time.monotonic()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        try:
            for name in last_names:
                wait_until_answering(port, name, timeout=300)
            synced = time.monotonic() - started
            row = {"synced_s": synced, "cpu_s": cpu_seconds(process.pid), "rss_mb": _status_mb(process.pid, "VmRSS")}
            row.update(_relist(api, core, process.pid))
            results.append((label, row))
        finally:
            process.terminate()
            process.wait(10)
    return results


def _wait_served(list_call: Any, count: int) -> None:
    """Wait until the API server lists `count` objects through `list_call` (its watch cache has
    caught up with what was written into etcd)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        listed = list_call(limit=1, _preload_content=False)
        metadata = json.loads(listed.data)["metadata"]
        if int(metadata.get("remainingItemCount") or 0) + 1 >= count:
            return
        time.sleep(0.5)
    raise RuntimeError(f"the API server never listed {count} objects")


def _status_mb(pid: int, field: str) -> float:
    """A memory figure of /proc/PID/status (VmRSS, VmHWM: the peak RSS), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


RELIST_SETTLED = 1.5  # seconds without CPU once the relist's work began: it is applied
RELIST_WORK = 0.02  # seconds of CPU that say the relist's work began


def _relist(api: Any, core: Any, pid: int) -> Row:
    """Force a full relist, as a compaction does it in a large cluster: one write after what the
    server has seen (a ConfigMap, which nobody watches), the API server stopped, etcd compacted
    at that write's revision, the API server started again: every watch resumes from a
    resourceVersion now too old (410 Gone) and lists again. The steady RSS (2 s after the sync),
    the peak RSS from then (VmHWM, reset through /proc/PID/clear_refs), and the CPU the relist
    took (from the restart until the process has been idle for RELIST_SETTLED seconds after it
    began working: at least RELIST_WORK seconds of CPU, less than any list of thousands of
    objects costs)."""
    time.sleep(2)
    steady = _status_mb(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM from here on
    name = f"relist-{time.monotonic_ns()}"
    core.create_namespaced_config_map("default", {"metadata": {"name": name}, "data": {"at": name}})
    api.stop()
    api.compact()
    before = cpu_seconds(pid)
    api.start()
    deadline, last, quiet_since = time.monotonic() + 120, before, time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = cpu_seconds(pid)
        if now - last > 0.005:
            quiet_since = time.monotonic()
        last = now
        if last - before >= RELIST_WORK and time.monotonic() - quiet_since >= RELIST_SETTLED:
            break
    return {"steady_mb": steady, "relist_peak_mb": _status_mb(pid, "VmHWM"), "relist_cpu_s": last - before}


def memory_of(pids: list[int]) -> tuple[float, float]:
    """Proportional and resident set sizes (MB) summed over `pids`: PSS splits each shared page
    between the processes that map it, so its sum is what the processes cost together."""
    pss = rss = 0.0
    for pid in pids:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss += int(line.split()[1]) / 1024
            elif line.startswith("Rss:"):
                rss += int(line.split()[1]) / 1024
    return pss, rss


MEMORY_PASSES = 16  # passes over every name, each from new client sockets (see below)


def every_question(snapshot: Path) -> list[str]:
    """A dnsperf line for every (name, type) the zone of `snapshot` holds, from `kdns dump`
    (endpoint names and PTR records given on demand included)."""
    dumped = subprocess.run(
        [sys.executable, "-m", "kdns", "dump", "--snapshot", str(snapshot)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    questions: dict[str, None] = {}
    for line in dumped.splitlines():
        fields = line.split()
        if len(fields) >= 4 and not line.startswith(";") and fields[2] == "IN":
            questions[f"{fields[0]} {fields[3]}"] = None
    return list(questions)


def ask_every_name(port: int, questions: Path, pids: list[int]) -> None:
    """Ask every line of `questions` MEMORY_PASSES times, each pass from 8 new client sockets:
    SO_REUSEPORT hands each socket to one worker by its address and port, so a name reaches a
    given one of 4 workers in a pass with odds 1 in 4, and misses it in all 16 passes with odds
    of 1 in 100 (0.75 ** 16)."""
    for _ in range(MEMORY_PASSES):
        dnsperf(port, questions, 60, pids, "-n", "1", "-q", "200", "-c", "8")


def measure_workers_memory(services: int) -> tuple[list[tuple[int, float, float, float]], int, Row]:
    """kdns on a snapshot of `services` Services with 1, 2 and 4 workers: total PSS and RSS once
    every worker answers, and PSS again after every name the zone holds was asked (copy-on-write
    at its worst: every answer made, every index entry read, in every worker); then CoreDNS's
    RSS for the same objects, at start and after the same questions. Returns the rows, the
    number of questions, and CoreDNS's figures."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="kdns-memory-") as tmp:
        work = Path(tmp)
        objects, _, _ = cluster(services)
        snapshot = work / "cluster.yaml"
        snapshot.write_text(yaml.safe_dump({"kind": "List", "items": objects}))
        questions = every_question(snapshot)
        file = work / "every-name.txt"
        file.write_text("\n".join(questions) + "\n")
        for workers in (1, 2, 4):
            port = free_port()
            with running(kdns_command(snapshot, port, "--resolv-conf", os.devnull, "--workers", str(workers))) as (
                process,
            ):
                wait_until_answering(port, "svc-0.bench.svc.cluster.local")
                expected = 1 if workers == 1 else workers + 1
                while len(children(process.pid)) < expected:
                    time.sleep(0.05)
                time.sleep(1)  # every worker past its start
                pss, rss = memory_of(children(process.pid))
                ask_every_name(port, file, children(process.pid))
                after, _ = memory_of(children(process.pid))
                rows.append((workers, pss, rss, after))
        theirs: Row = {}
        try:
            port = free_port()
            with coredns(work, objects, port, 2) as process:
                wait_until_answering(port, "svc-0.bench.svc.cluster.local", timeout=120)
                time.sleep(1)
                theirs["start_mb"] = memory_of([process.pid])[1]
                ask_every_name(port, file, [process.pid])
                theirs["after_mb"] = memory_of([process.pid])[1]
        except (FileNotFoundError, RuntimeError, OSError) as error:
            print(f"(CoreDNS's memory: skipped: {error})")
        finally:
            for api in _API:
                api.stop_all()
            _API.clear()
    return rows, len(questions), theirs


def measure_autopath(lookups: int) -> list[tuple[str, float, float]]:
    """glibc's resolver in a network namespace with a pod's resolv.conf (search path of three,
    ndots:5), looking up `lookups` external names and as many short names of another namespace,
    through kdns with and without `--autopath`: queries reaching kdns per lookup, and
    milliseconds per lookup. Needs root (skipped, saying so, without)."""
    from tests.builders import namespace, pod, service
    from tests.fakeupstream import FakeUpstream
    from tests.netns import pod_namespace

    rows = []
    resolv = "nameserver 10.250.9.1\nsearch bench.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
    with tempfile.TemporaryDirectory(prefix="kdns-autopath-") as tmp, pod_namespace(9, resolv) as ns:
        objects = [namespace("bench"), namespace("other"), pod("bench", "client", ns.address)]
        objects += [service("other", f"svc-{i}", [f"10.96.9.{i + 1}"]) for i in range(lookups)]
        snapshot = Path(tmp) / "cluster.yaml"
        snapshot.write_text(yaml.safe_dump({"kind": "List", "items": objects}))
        upstream = FakeUpstream(address="192.0.2.9")
        try:
            for autopath in (False, True):
                port = free_port()
                command = kdns_command(
                    snapshot, 53, "--upstream", upstream.spec, "--metrics-listen", f"127.0.0.1:{port}"
                )
                command[command.index("--listen") + 1] = f"{ns.host_address}:53"
                with running(command + (["--autopath"] if autopath else [])):
                    wait_until_answering(53, "svc-0.other.svc.cluster.local", host=ns.host_address)
                    before = _requests(port)
                    for kind, names in (
                        ("external", [f"name-{i}.example.test" for i in range(lookups)]),
                        ("short, another namespace", [f"svc-{i}.other" for i in range(lookups)]),
                    ):
                        started = time.monotonic()
                        for name in names:
                            ns.run("getent", "ahostsv4", name)
                        elapsed = time.monotonic() - started
                        after = _requests(port)
                        label = f"{kind}, {'with' if autopath else 'without'} --autopath"
                        rows.append((label, (after - before) / lookups, elapsed / lookups * 1000))
                        before = after
        finally:
            upstream.close()
    return rows


def _requests(metrics_port: int) -> float:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(value) for value in re.findall(r"^coredns_dns_requests_total{[^}]*} (\S+)$", text, re.M))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the throughput runs (0: not)")
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--steady", type=float, default=60, help="seconds at 80%% of kdns's rate, for lost queries")
    parser.add_argument("--rate", type=int, default=20_000, help="queries per second for the latency figures")
    parser.add_argument("--autopath", type=int, default=20, help="lookups for the autopath saving (0: not)")
    parser.add_argument("--zone", default="1000,10000,50000", help="zone build sizes in Services ('': not)")
    parser.add_argument("--pods", type=int, default=150_000, help="Pods loaded in --pods verified mode (0: not)")
    parser.add_argument("--headless", type=int, default=3000, help="endpoints of the headless Service (0: not)")
    parser.add_argument(
        "--memory", type=int, default=10_000, help="PSS of kdns with 1, 2, 4 workers at this many Services (0: not)"
    )
    parser.add_argument(
        "--sync",
        default="",
        help="also time kdns and CoreDNS syncing each of these numbers of Services, and relisting ('': not)",
    )
    parser.add_argument(
        "--sync-pods",
        type=int,
        default=0,
        help="then --sync's sizes again with this many running Pods, pods verified (0: not)",
    )
    args = parser.parse_args()

    try:
        return _compare(args)
    finally:
        for api in _API:  # whatever happened, no API server is left running
            api.stop_all()


def _compare(args: argparse.Namespace) -> int:
    if args.rounds:
        _throughput(args)
    if args.memory:
        rows_memory, asked, theirs = measure_workers_memory(args.memory)
        print(
            f"\nmemory serving {args.memory} Services (PSS: shared pages split between processes), at start "
            f"and after each of the zone's {asked} (name, type) pairs was asked {MEMORY_PASSES} times:"
        )
        for workers, pss, rss, after in rows_memory:
            print(
                f"kdns --workers {workers}: PSS {pss:.0f} MB in all ({rss:.0f} MB RSS summed), "
                f"{after:.0f} MB after every name ({after / rows_memory[0][3]:.2f}x one worker's)"
            )
        if theirs:
            print(
                f"CoreDNS (one process, GOMAXPROCS 2): RSS {theirs['start_mb']:.0f} MB, "
                f"{theirs['after_mb']:.0f} MB after every name; kdns with one worker / CoreDNS: "
                f"{rows_memory[0][3] / theirs['after_mb']:.2f}x"
            )
    if args.autopath:
        try:
            rows_autopath = measure_autopath(args.autopath)
        except Exception as error:  # pytest.skip's exception too: no root, no `ip`
            print(f"\n(autopath: skipped: {error})")
        else:
            print(f"\nglibc in a pod's network namespace (search path of 3, ndots:5), {args.autopath} lookups each:")
            for label, queries, millis in rows_autopath:
                print(f"{label:45} {queries:5.2f} queries reaching kdns per lookup, {millis:6.2f} ms per lookup")
    if args.zone:
        print(f"\n{'Services':>9} {'endpoints':>10} {'build s':>8} {'event avg ms':>13} {'RSS MB':>7} {'zone MB':>8}")
        for size in (int(text) for text in args.zone.split(",")):
            r = zone_build.best_of(["--one", str(size), "--events", "2000"], 1)
            print(
                f"{r['services']:>9.0f} {r['endpoints']:>10.0f} {r['build_s']:>8.2f} {r['event_avg_ms']:>13.3f} "
                f"{r['rss_mb']:>7.0f} {r['rss_mb'] - r['baseline_mb']:>8.0f}"
            )
    if args.pods:
        r = zone_build.best_of(["--pods-one", str(args.pods)], 1)
        print(
            f"{r['pods']:.0f} Pods, --pods verified: loaded in {r['load_s']:.2f} s, the index {r['index_mb']:.1f} MB, "
            f"{r['event_avg_ms']:.3f} ms per Pod event"
        )
    if args.headless:
        r = zone_build.measure_headless_event(args.headless, 200)
        print(
            f"one event on a {r['endpoints']:.0f}-endpoint headless Service: {r['event_avg_ms']:.2f} ms average, "
            f"{r['event_worst_ms']:.2f} ms worst"
        )
    sizes = [int(size) for size in args.sync.split(",") if size]
    for pods in [0, args.sync_pods] if args.sync_pods else [0]:  # Services alone, then with Pods
        curve = [_sync_row(services, pods) for services in sizes]
        if len(curve) > 1:
            print_curve(curve, pods)
    return 0


def _sync_row(services: int, pods: int) -> tuple[int, Row, Row]:
    """`measure_sync` at one size, on an API server of its own, printed; (size, kdns, CoreDNS)."""
    with tempfile.TemporaryDirectory(prefix="kdns-sync-") as tmp:
        with_pods = f" and {pods} Pods (pods verified)" if pods else ""
        print(f"\nsyncing {services} Services{with_pods} from a real kube-apiserver, one server after the other:")
        rows = measure_sync(Path(tmp), services, pods)
        for api in _API:  # one API server per size: the next starts from nothing
            api.stop_all()
        _API.clear()
    for label, row in rows:
        print(
            f"{label:8} both last-created names answer after {row['synced_s']:.1f} s, "
            f"{row['cpu_s']:.1f} s of CPU, {row['rss_mb']:.0f} MB RSS; a full relist after compaction: "
            f"{row['relist_cpu_s']:.1f} s of CPU, peak {row['relist_peak_mb']:.0f} MB against "
            f"{row['steady_mb']:.0f} MB steady ({row['relist_peak_mb'] / row['steady_mb']:.2f}x)"
        )
    (_, ours), (_, theirs) = rows
    print(
        f"kdns / CoreDNS: sync CPU {ours['cpu_s'] / theirs['cpu_s']:.2f}x, steady RSS "
        f"{ours['steady_mb'] / theirs['steady_mb']:.2f}x, relist CPU "
        f"{ours['relist_cpu_s'] / theirs['relist_cpu_s']:.2f}x"
    )
    return services, ours, theirs


def print_curve(curve: list[tuple[int, Row, Row]], pods: int = 0) -> None:
    """Cost against size for both servers: each figure per 1,000 Services, so that a line that
    stays flat is a cost that grows linearly, and the ratio of kdns to CoreDNS at each size."""
    with_pods = f", with {pods} Pods verified" if pods else ""
    print(f"\ncost against size{with_pods}, per 1,000 Services (kdns | CoreDNS | kdns / CoreDNS):")
    print(f"{'Services':>9} {'sync CPU s':>26} {'steady RSS MB':>28} {'relist peak MB':>28}")
    for services, ours, theirs in curve:
        per = services / 1000
        cells = []
        for field in ("cpu_s", "steady_mb", "relist_peak_mb"):
            cells.append(f"{ours[field] / per:7.3f} | {theirs[field] / per:7.3f} | {ours[field] / theirs[field]:5.2f}x")
        print(f"{services:>9} {cells[0]:>26} {cells[1]:>28} {cells[2]:>28}")


def _throughput(args: argparse.Namespace) -> None:
    """Every server's rate, CPU per query and losses on the same query file; latency at a rate."""
    with tempfile.TemporaryDirectory(prefix="kdns-compare-") as tmp:
        work = Path(tmp)
        objects, records, query_lines = cluster(args.services)
        snapshot = work / "cluster.yaml"
        snapshot.write_text(yaml.safe_dump({"kind": "List", "items": objects}))
        queries = work / "queries.txt"
        queries.write_text("\n".join(query_lines) + "\n")
        forwarded = work / "forwarded.txt"
        forwarded.write_text("".join(f"name-{i}.example.test A\n" for i in range(1000)))
        print(
            f"{args.services} Services, {len(query_lines)} queries in the file (80% A, 10% SRV, 10% NXDOMAIN), "
            f"{args.rounds} rounds of {args.seconds:g} s, dnsperf -q 200 on 127.0.0.1, medians\n"
        )

        ports = {name: free_port() for name in ("u1", "u2", "upstream", "kdns", "kdns-w2", "kdns-m", "metrics")}
        upstream_records = [f"name-{i}.example.test. 300 IN A 192.0.2.{i % 250 + 1}" for i in range(1000)]
        commands = {
            "u1": ["unbound", "-d", "-c", str(unbound_config(work, ports["u1"], records))],
            "u2": ["unbound", "-d", "-c", str(unbound_config(work, ports["u2"], records, threads=2))],
            "upstream": ["unbound", "-d", "-c", str(unbound_config(work, ports["upstream"], upstream_records))],
            "kdns": kdns_command(snapshot, ports["kdns"], "--upstream", f"127.0.0.1:{ports['upstream']}"),
            "kdns-w2": kdns_command(
                snapshot, ports["kdns-w2"], "--upstream", f"127.0.0.1:{ports['upstream']}", "--workers", "2"
            ),
            "kdns-m": kdns_command(snapshot, ports["kdns-m"], "--upstream", f"127.0.0.1:{ports['upstream']}"),
        }
        metrics = commands["kdns-m"]
        metrics[metrics.index("--metrics-listen") + 1] = f"127.0.0.1:{ports['metrics']}"
        os.environ["PYTHONHASHSEED"] = "0"  # the two kdns processes alike (see bench/metrics_cost.py)
        rows: dict[str, list[Row]] = {}
        labels = {
            "u1": "Unbound, 1 thread",
            "u2": "Unbound, 2 threads",
            "kdns": "kdns, UDP",
            "kdns-w2": "kdns, UDP, 2 workers",
            "kdns-tcp": "kdns, TCP (pipelined)",
            "kdns-cache": "kdns, forwarded names from its cache",
            "kdns-m": "kdns, UDP, /metrics on",
        }
        with running(*commands.values()) as processes:
            pid = dict(zip(commands, (process.pid for process in processes), strict=True))
            name = "svc-0.bench.svc.cluster.local"
            for key in ("u1", "u2", "kdns", "kdns-w2", "kdns-m"):
                wait_until_answering(ports[key], name)
            wait_until_answering(ports["upstream"], "name-0.example.test")
            # Warm kdns's cache: every forwarded name asked once.
            subprocess.run(
                ["dnsperf", "-s", "127.0.0.1", "-p", str(ports["kdns"]), "-d", str(forwarded), "-n", "1"],
                capture_output=True,
                check=True,
            )
            plan = [
                ("u1", ports["u1"], queries, [pid["u1"]], ()),
                ("u2", ports["u2"], queries, [pid["u2"]], ()),
                ("kdns", ports["kdns"], queries, children(pid["kdns"]), ()),
                ("kdns-w2", ports["kdns-w2"], queries, children(pid["kdns-w2"]), ()),
                ("kdns-tcp", ports["kdns"], queries, children(pid["kdns"]), ("-m", "tcp", "-c", "4")),
                ("kdns-cache", ports["kdns"], forwarded, children(pid["kdns"]), ()),
                ("kdns-m", ports["kdns-m"], queries, children(pid["kdns-m"]), ()),
            ]
            for round_ in range(args.rounds):
                for key, port, file, pids, extra in plan if round_ % 2 == 0 else reversed(plan):
                    # -c 8: eight client sockets, so that SO_REUSEPORT (Unbound's threads, kdns's
                    # workers) can spread them; one socket would always reach the same one.
                    run = dnsperf(port, file, args.seconds, pids, "-q", "200", "-c", "8", *extra)
                    rows.setdefault(key, []).append(run)
            steady_rate = int(statistics.median(row["qps"] for row in rows["kdns"]) * 0.8)
            p50_k, p99_k, lost_k = latency(ports["kdns"], queries, min(args.seconds, 5), args.rate)
            p50_u, p99_u, lost_u = latency(ports["u1"], queries, min(args.seconds, 5), args.rate)
            steady = dnsperf(ports["kdns"], queries, args.steady, children(pid["kdns"]), "-Q", str(steady_rate))

        for procs in (1, 2):
            key = f"coredns-{procs}"
            labels[key] = f"CoreDNS, GOMAXPROCS {procs}"
            port = free_port()
            try:
                with coredns(work, objects, port, procs) as process:
                    wait_until_answering(port, name)
                    for _ in range(args.rounds):
                        run = dnsperf(port, queries, args.seconds, [process.pid], "-q", "200", "-c", "8")
                        rows.setdefault(key, []).append(run)
            except (FileNotFoundError, RuntimeError, OSError) as error:
                print(f"({labels[key]}: skipped: {error})")
        for api in _API:
            api.stop_all()
        _API.clear()

    base = statistics.median(row["qps"] for row in rows["u1"])
    print(f"{'server':40} {'q/s':>9} {'x Unbound 1':>12} {'µs CPU/query':>13} {'lost':>6}")
    for key, runs in rows.items():
        qps = statistics.median(row["qps"] for row in runs)
        cpu = statistics.median(row["cpu_us"] for row in runs)
        lost = sum(row["lost"] for row in runs)
        print(f"{labels[key]:40} {qps:>9.0f} {qps / base:>12.2f} {cpu:>13.1f} {lost:>6.0f}")
    print(
        f"\nlatency at {args.rate} q/s: kdns p50 {p50_k:.3f} ms, p99 {p99_k:.3f} ms ({lost_k:.0f} lost); "
        f"Unbound p50 {p50_u:.3f} ms, p99 {p99_u:.3f} ms ({lost_u:.0f} lost)"
    )
    print(f"kdns at {steady_rate} q/s (80% of its rate) for {args.steady:g} s: {steady['lost']:.0f} lost")


if __name__ == "__main__":
    sys.exit(main())
