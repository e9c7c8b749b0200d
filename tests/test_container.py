"""The Dockerfile built and run for real (issue 10, point 7): no registry is reachable here, so a
Debian base image is made with debootstrap (Debian's python3), the image is built from it with
podman, and run read-only, as its own user, on loopback, where dig asks it a cluster name. About
2.5 minutes (debootstrap, and a vfs build that copies every layer); skipped where podman, runc or
debootstrap is missing, except under CI, which installs them.

How podman runs on these machines (`../shared/containers/README.md`): vfs storage (kept under a
temporary directory and removed after), runc, cgroupfs, and explicit ulimits.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kubeapi import free_port

ROOT = Path(__file__).resolve().parent.parent
BASE_IMAGE = "localhost/debian-python:bookworm"
IMAGE = "localhost/kdns:test"


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


def test_the_image_builds_from_a_debian_base_and_serves_read_only_as_its_own_user(podman: list[str]) -> None:
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
        answer = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and answer != "10.96.12.34":  # until it listens
            answer = subprocess.run(
                ["dig", "@127.0.0.1", "-p", str(port), "+time=1", "+tries=1", "+short", "web.prod.svc.cluster.local"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout.strip()
            if answer != "10.96.12.34":
                time.sleep(0.2)
        if answer != "10.96.12.34":
            logs = subprocess.run([*podman, "logs", name], capture_output=True, text=True, timeout=60)
            raise AssertionError(f"{answer!r}\n{logs.stdout}{logs.stderr}")
        user = subprocess.run([*podman, "exec", name, "id", "-u"], capture_output=True, text=True, timeout=60)
        assert user.stdout.strip() == "65532"
        written = subprocess.run([*podman, "exec", name, "touch", "/x"], capture_output=True, text=True, timeout=60)
        assert written.returncode != 0  # the root filesystem is read-only
    finally:
        subprocess.run([*podman, "stop", "-t", "5", name], capture_output=True, timeout=120, check=False)
