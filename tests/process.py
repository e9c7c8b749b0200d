"""Run the real `kdns` console script as a child process, as a user or a test harness would."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "cluster.yaml"
# kubeadm's Corefile, as `kubeadm init` writes it into the coredns ConfigMap (Kubernetes 1.31).
KUBEADM_COREFILE = EXAMPLE.parent / "coredns" / "Corefile"
K3S_COREFILE = EXAMPLE.parent / "coredns" / "k3s" / "Corefile"  # as k3s writes it
AKS_COREFILE = EXAMPLE.parent / "coredns" / "aks" / "Corefile"  # as AKS writes it, custom imports and all
_LISTENING = re.compile(r"listening on \[?([0-9a-f:.]+?)\]?:(\d+) \(udp, tcp\)")


def kdns_command() -> list[str]:
    """The installed `kdns` script beside this interpreter (what `pip install` put there)."""
    script = Path(sys.executable).with_name("kdns")
    if not script.exists():
        found = shutil.which("kdns")
        assert found, "the kdns console script is not installed (pip install -e '.[test]')"
        script = Path(found)
    return [str(script)]


def local_only(args: tuple[str, ...]) -> tuple[str, ...]:
    """`serve` arguments with no upstream unless a test gives one: test traffic stays on this
    machine, whatever its /etc/resolv.conf names. The HTTP listeners (on :8080 and :8181 by
    default, as CoreDNS's) are off unless a test gives their address: tests run kdns side by side."""
    if not any(arg in args for arg in ("--upstream", "--resolv-conf")):
        args = (*args, "--resolv-conf", os.devnull)
    for flag in ("--health-listen", "--ready-listen", "--metrics-listen"):
        if flag not in args:
            args = (*args, flag, "off")
    if "--lameduck" not in args:
        args = (*args, "--lameduck", "0")  # tests stop kdns often: no 5 s of lameduck each time
    return args


def run_kdns(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    if args[:1] == ("serve",):
        args = local_only(args)
    return subprocess.run([*kdns_command(), *args], capture_output=True, text=True, timeout=timeout, check=False)


class KdnsServer:
    """`kdns serve` on ephemeral loopback ports; `addresses` holds where it listens."""

    def __init__(
        self,
        *args: str,
        listen: tuple[str, ...] = ("127.0.0.1:0", "[::1]:0"),
        prefix: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        command: str = "serve",
        cwd: Path | None = None,
        corefile: Path | None = None,
    ) -> None:
        """`prefix` runs kdns through another command (one that ends by exec-ing its arguments);
        `command` is `serve` or `node-cache`. With a `corefile`, kdns is `serve --corefile` and
        `args`, which the Corefile's listeners (`listen`: how many it binds) and upstreams
        come from."""
        if corefile is not None:
            command_line = [*prefix, *kdns_command(), "serve", "--corefile", str(corefile), *args]
        else:
            command_line = [*prefix, *kdns_command(), command, *local_only(args)]
            for address in listen:
                command_line += ["--listen", address]
        self.process = subprocess.Popen(
            command_line, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=cwd
        )
        self.log: list[str] = []
        self.addresses: list[tuple[str, int]] = []
        self._ready = threading.Event()
        self._expected = len(listen)
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        if not self._ready.wait(30) or len(self.addresses) < self._expected:
            self.stop()
            raise AssertionError("kdns did not start:\n" + "".join(self.log))

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)
            match = _LISTENING.search(line)
            if match:
                self.addresses.append((match.group(1), int(match.group(2))))
                if len(self.addresses) == self._expected:
                    self._ready.set()
        self._ready.set()

    @property
    def host(self) -> str:
        return self.addresses[0][0]

    @property
    def port(self) -> int:
        return self.addresses[0][1]

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(5)
        return self.process.returncode

    def log_text(self) -> str:
        time.sleep(0.05)
        return "".join(self.log)


def dig(server: KdnsServer, *args: str, address: tuple[str, int] | None = None) -> str:
    host, port = address or server.addresses[0]
    result = subprocess.run(
        ["dig", f"@{host}", "-p", str(port), "+time=2", "+tries=1", *args],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    return result.stdout


# CoreDNS, the server kdns replaces (../shared/coredns/README.md): the reference for behaviour.
COREDNS_PACKED = EXAMPLE.parent.parent.parent / "shared" / "coredns" / "coredns.zst"


def unpack_coredns(directory: Path) -> Path:
    """CoreDNS, unpacked into `directory` on first use (`COREDNS` names another binary);
    `FileNotFoundError` saying what is missing. The tests and bench/compare.py both use it."""
    named = os.environ.get("COREDNS")
    if named:
        return Path(named)
    binary = directory / "coredns"
    if binary.exists():
        return binary
    if not COREDNS_PACKED.exists():
        raise FileNotFoundError(
            f"no CoreDNS: {COREDNS_PACKED} is missing (../shared beside the checkout, or set COREDNS)"
        )
    if shutil.which("zstd") is None:
        raise FileNotFoundError("no zstd to unpack CoreDNS: apt-get install -y zstd")
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["zstd", "-dqf", str(COREDNS_PACKED), "-o", str(binary)], check=True)
    binary.chmod(0o755)
    return binary


def coredns_binary(directory: Path) -> Path:
    """`unpack_coredns`, skipping the calling test, saying why, where there is no CoreDNS; failing
    it instead in CI, which has it."""
    try:
        return unpack_coredns(directory)
    except FileNotFoundError as missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {missing}")
        pytest.skip(str(missing))
