"""The Dockerfile built and run for real (issue 10, point 7): no registry is reachable here, so a
Debian base image is made with debootstrap (Debian's python3), the image is built from it with
podman, and run read-only, as its own user, on loopback, where dig asks it a cluster name. About
2.5 minutes (debootstrap, and a vfs build that copies every layer); skipped where podman, runc or
debootstrap is missing, except under CI, which installs them.

How podman runs on these machines (`../shared/containers/README.md`): vfs storage (kept under a
temporary directory and removed after), runc, cgroupfs, and explicit ulimits.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.builders import namespace, service
from tests.kubeapi import assets, free_port, real_apiserver
from tests.netns import pod_namespace
from tests.process import KUBEADM_COREFILE
from tests.relay import Relay

ROOT = Path(__file__).resolve().parent.parent
BASE_IMAGE = "localhost/debian-python:bookworm"
IMAGE = "localhost/kdns:test"
KUBEADM = ROOT / "examples" / "coredns" / "kubeadm" / "coredns.yaml"


@pytest.fixture(scope="module")
def podman() -> Iterator[list[str]]:
    missing = [tool for tool in ("podman", "runc", "debootstrap", "dig") if shutil.which(tool) is None]
    if missing:
        reason = f"{', '.join(missing)} not installed: apt-get install -y podman runc debootstrap bind9-dnsutils"
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI installs them: .ci/run)")
        pytest.skip(reason)
    # A short path: podman's sockets live under the run root, and a Unix socket path has 108 bytes.
    work = Path(tempfile.mkdtemp(prefix="kdns-podman-", dir="/tmp"))
    command = [
        "podman",
        "--root", str(work / "storage"),
        "--runroot", str(work / "run"),
        "--storage-driver", "vfs",
        "--runtime", "runc",
        "--cgroup-manager", "cgroupfs",
    ]  # fmt: skip
    rootfs = work / "rootfs"
    subprocess.run(
        ["debootstrap", "--variant=minbase", "--include=python3,python3-venv", "bookworm", str(rootfs)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(
        [*command, "import", "-", BASE_IMAGE], stdin=tar.stdout, check=True, capture_output=True, timeout=300
    )
    assert tar.wait(60) == 0
    shutil.rmtree(rootfs)
    yield command
    subprocess.run([*command, "system", "reset", "-f"], capture_output=True, timeout=300, check=False)
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def image(podman: list[str]) -> str:
    """The image, built once from the Debian base."""
    mounts = []
    for path in ("/etc/pip.conf", "/etc/xdg/pip", "/etc/ssl/certs"):  # pip's index and CA, as on this machine
        if Path(path).exists():
            mounts += ["-v", f"{path}:{path}:ro"]
    build = subprocess.run(
        [
            *podman, "build", "--network", "host", "--pull=never", "--ulimit", "nofile=20000:20000", *mounts,
            "--build-arg", f"BASE={BASE_IMAGE}", "-t", IMAGE, str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return IMAGE


def test_the_image_builds_from_a_debian_base_and_serves_read_only_as_its_own_user(
    podman: list[str], image: str
) -> None:
    # The final stage holds the virtual environment and no build tools.
    listing = subprocess.run(
        [
            *podman,
            "run",
            "--rm",
            "--ulimit",
            "nofile=20000:20000",
            "--ulimit",
            "nproc=4096:4096",
            "--entrypoint",
            "/bin/sh",
            IMAGE,
            "-c",
            "ls /app/venv/bin; command -v gcc cc || true",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "kdns" in listing.stdout.split() and "gcc" not in listing.stdout
    port, health = free_port(), free_port()
    name = f"kdns-test-{port}"
    run = subprocess.run(
        [
            *podman, "run", "-d", "--rm", "--name", name, "--network", "host", "--read-only",
            "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096",
            "-v", f"{ROOT / 'examples'}:/examples:ro",
            IMAGE, "serve", "--snapshot", "/examples/cluster.yaml", "--listen", f"127.0.0.1:{port}",
            "--health-listen", f"127.0.0.1:{health}", "--ready-listen", "off", "--metrics-listen", "off",
            "--resolv-conf", "/dev/null",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    try:
        dig = ["dig", "@127.0.0.1", "-p", str(port), "+time=1", "+tries=1", "+short", "web.prod.svc.cluster.local"]
        ask = functools.partial(subprocess.run, dig, capture_output=True, text=True, timeout=10, check=False)
        _wait_for_answer(podman, name, ask, "10.96.12.34")
        user = subprocess.run([*podman, "exec", name, "id", "-u"], capture_output=True, text=True, timeout=60)
        assert user.stdout.strip() == "65532"
        written = subprocess.run([*podman, "exec", name, "touch", "/x"], capture_output=True, text=True, timeout=60)
        assert written.returncode != 0  # the root filesystem is read-only
    finally:
        subprocess.run([*podman, "stop", "-t", "5", name], capture_output=True, timeout=120, check=False)


def test_kubeadms_coredns_deployment_with_only_the_image_changed_runs_kdns(
    podman: list[str], image: str, tmp_path: Path
) -> None:
    """Issue 19, point 7: kubeadm's `coredns` objects as kubeadm writes them, the image swapped
    (examples/coredns/kubeadm/coredns.yaml). Its container runs as the kubelet would run it: in a
    network namespace of its own (a "pod"), with the Deployment's args (`-conf
    /etc/coredns/Corefile`), its securityContext (all capabilities dropped but NET_BIND_SERVICE,
    no privilege escalation, a read-only root), the ConfigMap's Corefile mounted at /etc/coredns,
    and a token of the `coredns` ServiceAccount with kubeadm's RBAC for the in-cluster
    configuration, against the suite's real kube-apiserver. kdns lists the cluster and answers on
    port 53 of both families; /health, /ready and /metrics answer where the probes look."""
    assets()
    objects = [doc for doc in yaml.safe_load_all(KUBEADM.read_text()) if doc]
    deployment = next(doc for doc in objects if doc["kind"] == "Deployment")
    configmap = next(doc for doc in objects if doc["kind"] == "ConfigMap")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "kdns:0.1.0" and container["args"] == ["-conf", "/etc/coredns/Corefile"]
    assert configmap["data"]["Corefile"] == KUBEADM_COREFILE.read_text()  # kubeadm's, as in examples/
    config_volume = tmp_path / "config-volume"
    config_volume.mkdir()
    (config_volume / "Corefile").write_text(configmap["data"]["Corefile"])
    context = container["securityContext"]
    flags = ["--cap-drop", "ALL", *(f for cap in context["capabilities"]["add"] for f in ("--cap-add", cap))]
    if context["allowPrivilegeEscalation"] is False:
        flags += ["--security-opt", "no-new-privileges"]
    if context["readOnlyRootFilesystem"]:
        flags += ["--read-only"]
    with real_apiserver(tmp_path / "apiserver") as api, pod_namespace(77, "nameserver 10.250.77.1\n") as pod:
        api.apply_manifest(KUBEADM)
        api.create(namespace("prod"))
        api.create(service("prod", "web", ["10.96.0.5"]))
        secrets = tmp_path / "serviceaccount"
        secrets.mkdir()
        (secrets / "token").write_text(api.service_account_token("kube-system", "coredns"))
        (secrets / "ca.crt").write_bytes(api.ca.read_bytes())
        (secrets / "namespace").write_text("kube-system")
        to_api = Relay((pod.host_address, 0), ("127.0.0.1", api.port))  # this side of the veth
        in_pod = subprocess.Popen(  # the pod's 127.0.0.1:PORT, which the certificate names
            ["ip", "netns", "exec", pod.name, sys.executable, "-m", "tests.relay",
             f"127.0.0.1:{api.port}", f"{pod.host_address}:{to_api.port}"],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        name = f"kdns-kubeadm-{os.getpid()}"
        try:
            assert in_pod.stdout is not None and in_pod.stdout.readline().strip() == "relaying"
            run = subprocess.run(
                [
                    *podman, "run", "-d", "--rm", "--name", name, "--network", f"ns:/run/netns/{pod.name}",
                    "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096", *flags,
                    "--dns", pod.host_address,  # dnsPolicy: Default, the node's resolver
                    "-v", f"{config_volume}:/etc/coredns:ro",
                    "-v", f"{secrets}:/var/run/secrets/kubernetes.io/serviceaccount:ro",
                    "-e", "KUBERNETES_SERVICE_HOST=127.0.0.1", "-e", f"KUBERNETES_SERVICE_PORT={api.port}",
                    image, *container["args"],
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )  # fmt: skip
            assert run.returncode == 0, run.stderr
            try:
                for server in ("127.0.0.1", "::1"):  # `.:53`: both families
                    question = ("dig", f"@{server}", "+time=1", "+tries=1", "+short", "web.prod.svc.cluster.local")
                    _wait_for_answer(podman, name, functools.partial(pod.run, *question), "10.96.0.5")
                for port, path in ((8080, "/health"), (8181, "/ready"), (9153, "/metrics")):
                    fetch = f"import urllib.request as u; print(u.urlopen('http://127.0.0.1:{port}{path}').status)"
                    assert pod.run(sys.executable, "-c", fetch).stdout.strip() == "200", path
                user = subprocess.run([*podman, "exec", name, "id", "-u"], capture_output=True, text=True, timeout=60)
                assert user.stdout.strip() == "65532"  # the image's user: kubeadm sets none
            finally:
                subprocess.run([*podman, "stop", "-t", "7", name], capture_output=True, timeout=120, check=False)
        finally:
            in_pod.terminate()
            in_pod.wait(10)
            to_api.close()


def _wait_for_answer(
    podman: list[str], name: str, dig: Callable[[], subprocess.CompletedProcess[str]], address: str
) -> None:
    """Run `dig` (a `+short` question) until it answers `address` (30 s: until the container
    listens), else fail with the container's log."""
    answer = ""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        answer = dig().stdout.strip()
        if answer == address:
            return
        time.sleep(0.3)
    logs = subprocess.run([*podman, "logs", name], capture_output=True, text=True, timeout=60)
    raise AssertionError(f"{answer!r}\n{logs.stdout}{logs.stderr}")
