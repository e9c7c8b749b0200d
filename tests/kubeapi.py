"""A real kube-apiserver with etcd for the tests, as controller-runtime's envtest runs them.

`KUBEBUILDER_ASSETS` names a folder holding `kube-apiserver` and `etcd`
(`../shared/kube-apiserver/README.md` says how to make it; `.ci/run` does). Each server gets
free loopback ports, its own etcd data directory, a CA and a serving certificate made with
openssl, a static admin token and a service-account signing key, so that tests can mint real
ServiceAccount tokens (TokenRequest) and check RBAC for real. There is no controller-manager:
tests create EndpointSlices themselves, as the endpoint controller would.

What a test can do besides reading and writing objects: stop the API server and start it again
on the same ports and etcd, and compact etcd so that old resourceVersions answer 410 Gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.utils import create_from_dict

ADMIN_TOKEN = "kdns-test-admin-token"
MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"
SKIP_REASON = (
    "KUBEBUILDER_ASSETS is not set: these tests need a real kube-apiserver and etcd. Run tests/envtest.sh "
    "(it follows ../shared/kube-apiserver/README.md) and set KUBEBUILDER_ASSETS=$PWD/.envtest"
)


def assets() -> Path:
    """The envtest assets folder, or skip the calling test saying how to get one."""
    folder = os.environ.get("KUBEBUILDER_ASSETS")
    if not folder:
        if os.environ.get("CI"):  # CI prepares it: a skip there would hide that nothing ran
            pytest.fail(f"CI is set but {SKIP_REASON}")
        pytest.skip(SKIP_REASON)
    path = Path(folder)
    for binary in ("kube-apiserver", "etcd"):
        if not (path / binary).exists():
            if os.environ.get("CI"):
                pytest.fail(f"KUBEBUILDER_ASSETS={folder} has no {binary} (tests/envtest.sh makes it)")
            pytest.skip(f"KUBEBUILDER_ASSETS={folder} has no {binary}: {SKIP_REASON}")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


class RealApiServer:
    """etcd and kube-apiserver on loopback, under `workdir`, until `stop_all`."""

    def __init__(self, workdir: Path) -> None:
        self.bin = assets()
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.etcd_port, self.etcd_peer_port, self.port = free_port(), free_port(), free_port()
        self._make_credentials()
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self._start_etcd()
        self.start()

    # -- processes -------------------------------------------------------------------------

    def _make_credentials(self) -> None:
        d = self.dir
        self.ca = d / "ca.crt"
        _openssl("ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", str(d / "ca.key"))
        _openssl(
            "req", "-x509", "-new", "-key", str(d / "ca.key"), "-subj", "/CN=kdns-test-ca", "-days", "1",
            "-out", str(self.ca),
        )  # fmt: skip
        _openssl("ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", str(d / "serving.key"))
        _openssl(
            "req", "-new", "-key", str(d / "serving.key"), "-subj", "/CN=127.0.0.1", "-out", str(d / "serving.csr"),
        )  # fmt: skip
        (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        _openssl(
            "x509", "-req", "-in", str(d / "serving.csr"), "-CA", str(self.ca), "-CAkey", str(d / "ca.key"),
            "-CAcreateserial", "-days", "1", "-extfile", str(d / "san.ext"), "-out", str(d / "serving.crt"),
        )  # fmt: skip
        _openssl("ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", str(d / "sa.key"))
        (d / "tokens.csv").write_text(f"{ADMIN_TOKEN},admin,admin,system:masters\n")

    def _start_etcd(self) -> None:
        env = {key: value for key, value in os.environ.items() if not key.startswith("ETCD_")}
        with open(self.dir / "etcd.log", "ab") as log:
            self._etcd = subprocess.Popen(
                [
                    str(self.bin / "etcd"),
                    "--data-dir",
                    str(self.dir / "etcd"),
                    "--listen-client-urls",
                    f"http://127.0.0.1:{self.etcd_port}",
                    "--advertise-client-urls",
                    f"http://127.0.0.1:{self.etcd_port}",
                    "--listen-peer-urls",
                    f"http://127.0.0.1:{self.etcd_peer_port}",
                    "--enable-v2=false",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=env,
            )
        self._wait(lambda: _get(f"http://127.0.0.1:{self.etcd_port}/health") is not None, "etcd to start")

    def start(self) -> None:
        """Start kube-apiserver (again) on the same port and etcd; wait for /readyz."""
        d = self.dir
        with open(self.dir / "apiserver.log", "ab") as log:
            self._apiserver = subprocess.Popen(
                [
                    str(self.bin / "kube-apiserver"),
                    f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                    f"--secure-port={self.port}",
                    "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1",
                    "--authorization-mode=Node,RBAC",
                    f"--token-auth-file={d / 'tokens.csv'}",
                    f"--client-ca-file={self.ca}",
                    f"--tls-cert-file={d / 'serving.crt'}",
                    f"--tls-private-key-file={d / 'serving.key'}",
                    f"--service-account-key-file={d / 'sa.key'}",
                    f"--service-account-signing-key-file={d / 'sa.key'}",
                    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                    "--service-cluster-ip-range=10.96.0.0/16",
                    "--endpoint-reconciler-type=none",
                    "--enable-priority-and-fairness=false",
                    f"--cert-dir={d / 'certs'}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self._wait(self._ready, "kube-apiserver to be ready", timeout=60)

    def stop(self) -> None:
        """Stop kube-apiserver (connections refused from then on); etcd keeps the data."""
        _terminate(self._apiserver)
        self._apiserver = None

    def stop_all(self) -> None:
        self.stop()
        _terminate(self._etcd)
        self._etcd = None

    def _ready(self) -> bool:
        if self._apiserver is not None and self._apiserver.poll() is not None:
            log = (self.dir / "apiserver.log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"kube-apiserver exited {self._apiserver.returncode}:\n{log}")
        return _get(f"{self.url}/readyz", ADMIN_TOKEN, self.ca) == "ok"

    def _wait(self, condition: Any, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    # -- clients ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def api_client(self, token: str = ADMIN_TOKEN) -> client.ApiClient:
        configuration = client.Configuration()
        configuration.host = self.url
        configuration.ssl_ca_cert = str(self.ca)
        configuration.api_key = {"authorization": f"Bearer {token}"}
        return client.ApiClient(configuration)

    def kubeconfig(self, path: Path, token: str = ADMIN_TOKEN) -> Path:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {"name": "real", "cluster": {"server": self.url, "certificate-authority": str(self.ca)}}
                    ],
                    "users": [{"name": "user", "user": {"token": token}}],
                    "contexts": [{"name": "real", "context": {"cluster": "real", "user": "user"}}],
                    "current-context": "real",
                }
            )
        )
        return path

    def apply_manifest(self, path: Path) -> None:
        """Create every object of a manifest file (ServiceAccount, RBAC, ...) as the admin."""
        admin = self.api_client()
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                create_from_dict(admin, document, namespace=document["metadata"].get("namespace"))

    def service_account_token(self, namespace: str, name: str) -> str:
        """A real token for the ServiceAccount, made by the API server's TokenRequest."""
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
        )
        core = client.CoreV1Api(self.api_client())
        response = core.create_namespaced_service_account_token(name, namespace, request)
        return str(response.status.token)

    # -- objects ---------------------------------------------------------------------------

    def create(self, obj: dict[str, Any]) -> None:
        kind = obj["kind"]
        namespace = obj["metadata"].get("namespace")
        admin = self.api_client()
        if kind == "Namespace":
            client.CoreV1Api(admin).create_namespace(obj)
        elif kind == "Service":
            client.CoreV1Api(admin).create_namespaced_service(namespace, obj)
        elif kind == "EndpointSlice":
            client.DiscoveryV1Api(admin).create_namespaced_endpoint_slice(namespace, obj)
        elif kind == "Pod":
            client.CoreV1Api(admin).create_namespaced_pod(namespace, obj)
        else:
            raise ValueError(kind)

    def delete(self, kind: str, namespace: str, name: str) -> None:
        admin = self.api_client()
        if kind == "Service":
            client.CoreV1Api(admin).delete_namespaced_service(name, namespace)
        elif kind == "EndpointSlice":
            client.DiscoveryV1Api(admin).delete_namespaced_endpoint_slice(name, namespace)
        else:
            raise ValueError(kind)

    def compact(self) -> int:
        """Compact etcd at its current revision: every older resourceVersion is gone (410)."""
        endpoint = f"127.0.0.1:{self.etcd_port}"
        env = {key: value for key, value in os.environ.items() if not key.startswith("ETCD")} | {"ETCDCTL_API": "3"}
        etcdctl = shutil.which("etcdctl")
        assert etcdctl, "etcdctl is not installed (Debian's etcd-client)"
        status = subprocess.run(
            [etcdctl, "--endpoints", endpoint, "endpoint", "status", "-w", "json"],
            check=True, capture_output=True, text=True, env=env,
        )  # fmt: skip
        revision = int(json.loads(status.stdout)[0]["Status"]["header"]["revision"])
        subprocess.run(
            [etcdctl, "--endpoints", endpoint, "compact", str(revision)], check=True, capture_output=True, env=env
        )
        return revision


def _terminate(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _get(url: str, token: str | None = None, ca: Path | None = None) -> str | None:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    try:
        with urllib.request.urlopen(request, timeout=2, context=context) as response:
            return str(response.read().decode())
    except (urllib.error.URLError, OSError):
        return None


@contextlib.contextmanager
def real_apiserver(workdir: Path) -> Iterator[RealApiServer]:
    server = RealApiServer(workdir)
    try:
        yield server
    finally:
        server.stop_all()
