"""`kdns check`, `kdns dump` and `python -m kdns`, run as the installed commands."""

from __future__ import annotations

import subprocess
import sys

import yaml

from tests.builders import service
from tests.process import EXAMPLE, run_kdns


def test_check_summarises_the_example_and_exits_0():
    result = run_kdns("check", "--snapshot", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert "5 namespaces, 9 services, 8 endpoint slices (14 endpoints), 11 pods" in result.stdout
    assert "ignored 1 object(s) of kind ConfigMap" in result.stdout


def test_check_exits_2_and_names_each_malformed_object(tmp_path):
    path = tmp_path / "c.yaml"
    items = [service("prod", "web"), service("prod", "bad", ports=[{"name": "x", "port": 0}])]
    path.write_text(yaml.safe_dump({"kind": "List", "items": items}))
    result = run_kdns("check", "--snapshot", str(path))
    assert result.returncode == 2
    assert f"{path}: error: Service prod/bad: field spec.ports[0].port" in result.stdout
    assert "1 object(s) would be skipped" in result.stdout


def test_check_of_an_unparsable_file_exits_2_naming_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("kind: List\nitems:\n- {\n")
    result = run_kdns("check", "--snapshot", str(path))
    assert result.returncode == 2
    assert str(path) in result.stderr and "line" in result.stderr


def test_dump_prints_the_zone_sorted_as_zone_file_text():
    result = run_kdns("dump", "--snapshot", str(EXAMPLE), "--ttl", "12")
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines() if not line.startswith(";")]
    assert ["web.prod.svc.cluster.local.", "12", "IN", "AAAA", "fd00:10:96::1234"] in lines
    assert ["payments.prod.svc.cluster.local.", "12", "IN", "CNAME", "payments.example.com."] in lines
    assert any(line[0] == "cluster.local." and line[3] == "SOA" for line in lines)
    owners = [tuple(reversed(line[0].rstrip(".").split("."))) for line in lines]
    assert owners == sorted(owners)


def test_dump_honours_the_cluster_domain():
    result = run_kdns("dump", "--snapshot", str(EXAMPLE), "--cluster-domain", "corp.example.")
    assert "web.prod.svc.corp.example." in result.stdout and "cluster.local" not in result.stdout


def test_python_dash_m_kdns_is_the_same_program():
    result = subprocess.run(
        [sys.executable, "-m", "kdns", "check", "--snapshot", str(EXAMPLE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and "9 services" in result.stdout


def test_serve_with_a_missing_or_broken_kubeconfig_exits_2_naming_what_was_read(tmp_path, monkeypatch):
    for variable in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(variable, raising=False)
    missing = run_kdns("serve", "--kubeconfig", str(tmp_path / "nope"), "--listen", "127.0.0.1:0")
    assert missing.returncode == 2 and f"--kubeconfig {tmp_path / 'nope'}: no such file" in missing.stderr

    broken = tmp_path / "broken"
    broken.write_text("apiVersion: v1\nkind: Config\nclusters: 7\n")
    monkeypatch.setenv("KUBECONFIG", str(broken))
    result = run_kdns("serve", "--listen", "127.0.0.1:0")
    assert result.returncode == 2 and f"KUBECONFIG {broken}: cannot use it" in result.stderr

    monkeypatch.delenv("KUBECONFIG")
    monkeypatch.setenv("HOME", str(tmp_path))
    default = run_kdns("serve", "--listen", "127.0.0.1:0")
    assert default.returncode == 2 and f"default kubeconfig {tmp_path}/.kube/config: no such file" in default.stderr


def test_in_cluster_configuration_without_a_service_account_exits_2(monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    result = run_kdns("serve", "--listen", "127.0.0.1:0")
    assert result.returncode == 2 and "in-cluster configuration" in result.stderr
