"""Snapshot files: the shapes kubectl and the API print, and clear errors for everything else."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from kdns.core.model import EndpointSlice, Namespace, Pod, Service
from kdns.sources import snapshot
from tests.builders import endpoint, endpoint_slice, namespace, pod, service
from tests.process import EXAMPLE


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _kinds(loaded: snapshot.Snapshot) -> list[str]:
    return [type(obj).__name__ for obj in loaded.objects]


def test_kubectl_list_is_loaded(tmp_path: Path) -> None:
    items = [namespace("prod"), service("prod", "web"), endpoint_slice("prod", "w", "web", [endpoint("10.0.0.1")])]
    path = _write(tmp_path, "c.yaml", yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}))
    assert _kinds(snapshot.load(path)) == ["Namespace", "Service", "EndpointSlice"]


def test_multi_document_yaml_stream_is_loaded(tmp_path: Path) -> None:
    text = yaml.safe_dump_all([service("prod", "web"), None, pod("prod", "p", "10.0.0.1")])
    assert _kinds(snapshot.load(_write(tmp_path, "c.yaml", text))) == ["Service", "Pod"]


def test_json_list_is_loaded(tmp_path: Path) -> None:
    text = json.dumps({"kind": "List", "items": [service("prod", "web")]}, indent=2)
    loaded = snapshot.load(_write(tmp_path, "c.json", text))
    assert isinstance(loaded.objects[0], Service)


def test_api_list_items_without_kind_take_it_from_the_list(tmp_path: Path) -> None:
    items = [service("prod", "a"), service("prod", "b")]
    for item in items:
        del item["kind"]
    text = json.dumps({"kind": "ServiceList", "apiVersion": "v1", "items": items})
    assert _kinds(snapshot.load(_write(tmp_path, "s.json", text))) == ["Service", "Service"]


def test_unknown_kinds_are_counted_and_warned_once_per_kind(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    items = [{"kind": "ConfigMap", "metadata": {"name": f"c{i}"}} for i in range(3)] + [{"kind": "Secret"}]
    path = _write(tmp_path, "c.yaml", yaml.safe_dump({"kind": "List", "items": items}))
    loaded = snapshot.load(path)
    assert loaded.ignored_kinds == {"ConfigMap": 3, "Secret": 1}
    with caplog.at_level(logging.WARNING):
        snapshot.report(loaded)
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 2 and any("3 object(s) of kind ConfigMap" in w for w in warnings)


def test_malformed_object_is_reported_and_skipped_while_the_rest_load(tmp_path: Path) -> None:
    items = [service("prod", "web"), service("prod", "bad", ["not-an-ip"]), service("prod", "db")]
    path = _write(tmp_path, "c.yaml", yaml.safe_dump({"kind": "List", "items": items}))
    loaded = snapshot.load(path)
    assert [obj.name for obj in loaded.objects] == ["web", "db"]
    assert len(loaded.errors) == 1
    assert "Service prod/bad: field spec.clusterIPs[0]" in str(loaded.errors[0])


def test_invalid_yaml_names_the_file_and_position(tmp_path: Path) -> None:
    path = _write(tmp_path, "broken.yaml", "kind: List\nitems:\n  - kind: Service\n   bad: [\n")
    with pytest.raises(snapshot.SnapshotError) as caught:
        snapshot.load(path)
    message = str(caught.value)
    assert str(path) in message and "line 4" in message


def test_invalid_json_names_the_file_and_position(tmp_path: Path) -> None:
    path = _write(tmp_path, "broken.json", '{"kind": "List",\n "items": [}')
    with pytest.raises(snapshot.SnapshotError) as caught:
        snapshot.load(path)
    assert str(path) in str(caught.value) and "line 2" in str(caught.value)


def test_missing_file_and_binary_file_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(snapshot.SnapshotError, match=r"nope\.yaml"):
        snapshot.load(tmp_path / "nope.yaml")
    binary = tmp_path / "garbage.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(snapshot.SnapshotError, match=r"garbage\.bin"):
        snapshot.load(binary)


def test_document_that_is_not_an_object_or_has_no_kind_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(snapshot.SnapshotError, match="document 1"):
        snapshot.load(_write(tmp_path, "a.yaml", "- just\n- a list\n"))
    with pytest.raises(snapshot.SnapshotError, match="no kind"):
        snapshot.load(_write(tmp_path, "b.yaml", "metadata: {name: x}\n"))


def test_example_cluster_loads_without_errors() -> None:
    loaded = snapshot.load(EXAMPLE)
    assert loaded.errors == []
    kinds = {type(obj) for obj in loaded.objects}
    assert kinds == {Namespace, Service, EndpointSlice, Pod}


def test_snapshots_are_parsed_by_libyaml_where_pyyaml_has_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 8 D11: the pure-Python loader took 3 min 17 s and 3.8 GB for a 50 MB snapshot."""
    assert yaml.__with_libyaml__, "PyYAML without libyaml: the wheel from PyPI has it"
    used = []
    real = yaml.load_all

    def spy(stream: str, Loader: Any) -> Any:
        used.append(Loader)
        return real(stream, Loader=Loader)

    monkeypatch.setattr(yaml, "load_all", spy)
    snapshot.load(_write(tmp_path, "c.yaml", yaml.safe_dump({"kind": "List", "items": [service("a", "b")]})))
    assert used == [yaml.CSafeLoader]
