"""`kdns check`, `kdns dump` and `python -m kdns`, run as the installed commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.apiserver import FakeApiServer
from tests.builders import endpoint, endpoint_slice, service
from tests.process import EXAMPLE, run_kdns


def test_check_summarises_the_example_and_exits_0() -> None:
    result = run_kdns("check", "--snapshot", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert "5 namespaces, 9 services, 8 endpoint slices (14 endpoints), 11 pods" in result.stdout
    assert "ignored 1 object(s) of kind ConfigMap" in result.stdout


def test_check_exits_2_and_names_each_malformed_object(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    items = [service("prod", "web"), service("prod", "bad", ports=[{"name": "x", "port": 0}])]
    path.write_text(yaml.safe_dump({"kind": "List", "items": items}))
    result = run_kdns("check", "--snapshot", str(path))
    assert result.returncode == 2
    assert f"{path}: error: Service prod/bad: field spec.ports[0].port" in result.stdout
    assert "1 object(s) would be skipped" in result.stdout


def test_check_of_an_unparsable_file_exits_2_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("kind: List\nitems:\n- {\n")
    result = run_kdns("check", "--snapshot", str(path))
    assert result.returncode == 2
    assert str(path) in result.stderr and "line" in result.stderr


def test_dump_prints_the_zone_sorted_as_zone_file_text() -> None:
    result = run_kdns("dump", "--snapshot", str(EXAMPLE), "--ttl", "12")
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines() if not line.startswith(";")]
    assert ["web.prod.svc.cluster.local.", "12", "IN", "AAAA", "fd00:10:96::1234"] in lines
    assert ["payments.prod.svc.cluster.local.", "12", "IN", "CNAME", "payments.example.com."] in lines
    assert any(line[0] == "cluster.local." and line[3] == "SOA" for line in lines)
    owners = [tuple(reversed(line[0].rstrip(".").split("."))) for line in lines]
    assert owners == sorted(owners)


def test_dump_honours_the_cluster_domain() -> None:
    result = run_kdns("dump", "--snapshot", str(EXAMPLE), "--cluster-domain", "corp.example.")
    assert "web.prod.svc.corp.example." in result.stdout and "cluster.local" not in result.stdout


def test_python_dash_m_kdns_is_the_same_program() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kdns", "check", "--snapshot", str(EXAMPLE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and "9 services" in result.stdout


def test_serve_with_a_missing_or_broken_kubeconfig_exits_2_naming_what_was_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
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


def test_in_cluster_configuration_without_a_service_account_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    result = run_kdns("serve", "--listen", "127.0.0.1:0")
    assert result.returncode == 2 and "in-cluster configuration" in result.stderr


def test_check_reports_a_service_published_only_in_part_and_exits_2(tmp_path: Path) -> None:
    """Issue 8 D1: a 63-character port name is valid in Kubernetes but cannot be an SRV label;
    `kdns check` names it and exits 2 (it used to end in a traceback with exit 1)."""
    path = tmp_path / "c.yaml"
    items = [service("a", "bad", ports=[{"name": "p" * 63, "port": 81}])] + [service("a", f"s{i}") for i in range(3)]
    path.write_text(yaml.safe_dump({"kind": "List", "items": items}))
    result = run_kdns("check", "--snapshot", str(path))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{path}: error: Service a/bad: field spec.ports[0].name: the SRV label" in result.stdout
    assert "4 services" in result.stdout and "1 part(s) of objects would be left out of DNS" in result.stdout


def test_check_with_a_long_cluster_domain_reports_names_that_would_not_fit(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    ns, svc = "n" * 63, "s" * 63
    items = [
        {"kind": "Service", "metadata": {"name": svc, "namespace": ns}, "spec": {"clusterIP": "None"}},
        endpoint_slice(ns, "e", svc, [endpoint("10.244.0.1", hostname="h" * 63)]),
    ]
    path.write_text(yaml.safe_dump({"kind": "List", "items": items}))
    domain = ".".join(["d" * 22, "e" * 22, "f" * 23])  # 69 characters
    result = run_kdns("check", "--snapshot", str(path), "--cluster-domain", domain)
    assert result.returncode == 2, result.stderr
    assert f"EndpointSlice {ns}/e: field endpoints[0].hostname" in result.stdout
    dump = run_kdns("dump", "--snapshot", str(path), "--cluster-domain", domain)
    assert dump.returncode == 0 and "h" * 63 not in dump.stdout


def test_a_cluster_domain_with_no_room_for_the_names_kdns_must_publish_is_refused() -> None:
    domain = ".".join(["d" * 60] * 4)[:243]
    result = run_kdns("check", "--snapshot", str(EXAMPLE), "--cluster-domain", domain)
    assert result.returncode == 2 and "dns-version" in result.stderr and "Traceback" not in result.stderr


def test_check_of_objects_whose_kind_is_not_a_name_exits_2_naming_each(tmp_path: Path) -> None:
    """Issue 8 D10: these used to end in a traceback (exit 1)."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "kind: List\nitems:\n- {kind: [Service], metadata: {name: a}}\n- {kind: {a: 1}}\n- {kind: 5}\n"
        "- {kind: ConfigMap, metadata: {name: c}}\n- {kind: Service, metadata: {name: ok, namespace: x}}\n"
    )
    result = run_kdns("check", "--snapshot", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    for position, shown in ((0, "list"), (1, "dict"), (2, "int 5")):
        assert f"error: object List.items[{position}]: field kind: expected the name of a kind, got {shown}" in (
            result.stdout
        )
    assert "1 services" in result.stdout


def test_check_of_a_document_nested_too_deeply_exits_2(tmp_path: Path) -> None:
    for name, text in (
        ("deep.yaml", "kind: List\nitems:\n- " + "[" * 100_000 + "]" * 100_000 + "\n"),
        ("deep.json", '{"kind": "List", "items": ' + "[" * 100_000 + "]" * 100_000 + "}"),
    ):
        path = tmp_path / name
        path.write_text(text)
        result = run_kdns("check", "--snapshot", str(path))
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert str(path) in result.stderr


def test_duplicate_objects_are_warned_about_and_the_later_one_is_served(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    items = [service("a", "web", ["10.96.0.1"]), service("a", "web", ["10.96.0.2"])]
    path.write_text(yaml.safe_dump({"kind": "List", "items": items}))
    result = run_kdns("check", "--snapshot", str(path))
    assert result.returncode == 0
    assert "warning: Service a/web at List.items[1] repeats the one at List.items[0]" in result.stdout
    assert "10.96.0.2" in run_kdns("dump", "--snapshot", str(path)).stdout


def test_explain_says_what_is_answered_and_why_in_words_and_in_json() -> None:
    """Issue 12, point 3: `kdns explain` on a snapshot (each reason: tests/core/test_explain.py)."""
    result = run_kdns("explain", "web.default.svc.cluster.local", "--snapshot", str(EXAMPLE), "--upstream", "10.0.0.2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "web.default.svc.cluster.local. A: NXDOMAIN"
    assert "why: there is no Service default/web" in result.stdout
    assert "nearest: web.prod.svc.cluster.local" in result.stdout
    result = run_kdns(
        "explain", "_http._tcp.web.prod.svc.cluster.local", "SRV", "--snapshot", str(EXAMPLE), "--output", "json"
    )
    data = json.loads(result.stdout)
    assert data["rcode"] == "NOERROR" and data["objects"] == ["Service prod/web"]
    assert data["answer"] == ["_http._tcp.web.prod.svc.cluster.local. 30 IN SRV 0 100 80 web.prod.svc.cluster.local."]


def test_explain_of_an_unknown_type_exits_2() -> None:
    result = run_kdns("explain", "web.prod.svc.cluster.local", "BOGUS", "--snapshot", str(EXAMPLE))
    assert result.returncode == 2 and "'BOGUS' is not a record type" in result.stderr


def test_explain_lists_a_live_cluster_once(api: FakeApiServer, tmp_path: Path) -> None:
    kubeconfig = api.kubeconfig(tmp_path)
    result = run_kdns("explain", "web.prod.svc.cluster.local", "--kubeconfig", str(kubeconfig), "--output", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["answer"] == ["web.prod.svc.cluster.local. 30 IN A 10.96.0.5"]
    assert api.watch_count() == 0  # listed, never watched
