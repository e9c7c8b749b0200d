"""The deployment files agree with the program: no cluster or Docker engine is available here, so
what can be checked is checked against kdns itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kdns import cli
from kdns.sources.kube import RESOURCES

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests"


def _documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    documents: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        documents.extend(doc for doc in yaml.safe_load_all((MANIFESTS / name).read_text()) if doc)
    return documents


def _one(kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in _documents() if doc["kind"] == kind]
    return found


def test_every_manifest_file_is_listed_by_the_kustomization() -> None:
    listed = set(yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["resources"])
    present = {path.name for path in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_deployment_args_are_accepted_by_kdns_serve() -> None:
    container = _one("Deployment")["spec"]["template"]["spec"]["containers"][0]
    args = cli._parser().parse_args(container["args"])
    config = cli._serve_config(args)
    assert config.snapshot is None  # follows the cluster
    assert config.ops.health is not None and config.ops.health.port == 8080  # CoreDNS's health
    assert config.ops.ready is not None and config.ops.ready.port == 8181  # CoreDNS's ready
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert config.ops.metrics is not None and config.ops.metrics.port == 9153  # CoreDNS's prometheus
    assert ports == {"dns": 53, "dns-tcp": 53, "health": 8080, "ready": 8181, "metrics": 9153}
    assert {address.port for address in config.listen} == {53}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "ready"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "health"}


def test_rbac_grants_list_and_watch_on_every_resource_kdns_follows_and_nothing_more() -> None:
    role = _one("ClusterRole")
    granted = {
        (group, resource): set(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    needed = {("" if r.api_version == "v1" else r.api_version.split("/")[0], r.plural) for r in RESOURCES.values()}
    assert set(granted) == needed
    assert all(verbs == {"list", "watch"} for verbs in granted.values())
    binding = _one("ClusterRoleBinding")
    account = _one("ServiceAccount")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == account["metadata"]["name"]
    assert _one("Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]


def test_service_selects_the_deployment_pods_on_the_dns_ports() -> None:
    service = _one("Service")
    labels = _one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert {(port["port"], port["protocol"]) for port in service["spec"]["ports"]} == {
        (53, "UDP"),
        (53, "TCP"),
        (9153, "TCP"),
    }


def test_dockerfile_installs_the_package_and_runs_the_console_script() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY kdns ./kdns" in dockerfile and "/app/venv/bin/pip install --no-cache-dir ." in dockerfile
    assert 'ENTRYPOINT ["/app/venv/bin/kdns"]' in dockerfile and "ARG BASE=" in dockerfile
    assert "USER 65532:65532" in dockerfile  # the Deployment's runAsUser
    ports = {port["containerPort"] for port in _one("Deployment")["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert all(f"{port}/tcp" in dockerfile for port in ports)
    image = _one("Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith("kdns:") and image.split(":")[1] in dockerfile


def test_the_configmap_is_mounted_where_the_deployment_reads_it_and_is_valid(tmp_path: Path) -> None:
    pod = _one("Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    config_path = container["args"][container["args"].index("--config") + 1]
    (volume,) = [v for v in pod["volumes"] if v["configMap"]["name"] == _one("ConfigMap")["metadata"]["name"]]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    directory, _, key = config_path.rpartition("/")
    assert mount["mountPath"] == directory and mount["readOnly"]
    local = tmp_path / key
    local.write_text(_one("ConfigMap")["data"][key])
    argv = [local.as_posix() if arg == config_path else arg for arg in container["args"]]
    parser = cli._parser()
    args = parser.parse_args(argv)
    settings = cli._checked_serve_config(cli._serve_settings(parser, argv, args, {}))
    assert settings.ttl == 30 and settings.cluster_domain == "cluster.local" and settings.log_format == "json"
    assert settings.forward.cache_size == 9984


# -- manifests/node-local: kdns node-cache as a kustomize component (issue 12, point 2) ----------

NODE_LOCAL = MANIFESTS / "node-local"


def _node_local() -> dict[str, dict[str, Any]]:
    component = yaml.safe_load((NODE_LOCAL / "kustomization.yaml").read_text())
    assert component["kind"] == "Component"
    present = {path.name for path in NODE_LOCAL.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(component["resources"]) == present
    documents = [doc for name in component["resources"] for doc in yaml.safe_load_all((NODE_LOCAL / name).read_text())]
    return {doc["kind"]: doc for doc in documents if doc}


def test_the_node_cache_daemonset_runs_kdns_node_cache_with_its_configmap(tmp_path: Path) -> None:
    docs = _node_local()
    pod = docs["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["hostNetwork"] and pod["dnsPolicy"] == "Default" and not pod["automountServiceAccountToken"]
    container = pod["containers"][0]
    args = container["args"]
    config_path = args[args.index("--config") + 1]
    directory, _, key = config_path.rpartition("/")
    (volume,) = pod["volumes"]
    assert volume["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    (mount,) = container["volumeMounts"]
    assert mount["name"] == volume["name"] and mount["mountPath"] == directory and mount["readOnly"]
    local = tmp_path / key
    local.write_text(docs["ConfigMap"]["data"][key])
    # kubelet expands $(KDNS_UPSTREAM_SERVICE_HOST) from the kdns-upstream Service's link.
    assert "$(KDNS_UPSTREAM_SERVICE_HOST)" in args
    argv = [
        local.as_posix() if a == config_path else a.replace("$(KDNS_UPSTREAM_SERVICE_HOST)", "10.96.0.11") for a in args
    ]
    parser = cli._parser()
    parsed = cli._serve_settings(parser, argv, parser.parse_args(argv), {}, "node-cache")
    settings = cli._node_cache_config(parsed)
    assert settings.node_cache and [str(a) for a in settings.listen] == ["169.254.20.10:53"]
    assert [str(a) for a in settings.forward.tcp_upstreams] == ["10.96.0.11:53"]
    assert dict(settings.forward.stubs)["cluster.local"] == settings.forward.tcp_upstreams
    assert (settings.forward.cache_size, settings.forward.options.max_ttl) == (9984, 30)
    assert (settings.forward.denial_cache_size, settings.forward.options.max_negative_ttl) == (9984, 5)
    assert settings.forward.serve_stale == 3600 and settings.log_format == "json"
    # The probes ask the endpoints where the settings serve them.
    assert settings.ops.health is not None and settings.ops.ready is not None
    for probe, address, path in (
        (container["livenessProbe"], settings.ops.health, "/health"),
        (container["readinessProbe"], settings.ops.ready, "/ready"),
    ):
        get = probe["httpGet"]
        assert (get["host"], get["port"], get["path"]) == (address.host, address.port, path)


def test_the_node_caches_reach_the_cluster_dns_through_a_service_of_its_own() -> None:
    upstream = _node_local()["Service"]
    assert upstream["metadata"]["name"] == "kdns-upstream"  # kubelet's KDNS_UPSTREAM_SERVICE_HOST
    labels = _one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(key) == value for key, value in upstream["spec"]["selector"].items())
    assert {(p["port"], p["protocol"]) for p in upstream["spec"]["ports"]} == {(53, "UDP"), (53, "TCP")}


def test_the_autoscaler_scales_the_deployment_on_cpu_and_keeps_the_budgets_floor() -> None:
    """Issue 19, point 7: replicas follow the cluster's load (CPU, against the Deployment's
    request); never fewer than two, so the PodDisruptionBudget always leaves one answering."""
    autoscaler, deployment, budget = _one("HorizontalPodAutoscaler"), _one("Deployment"), _one("PodDisruptionBudget")
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    target = autoscaler["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert autoscaler["spec"]["minReplicas"] >= budget["spec"]["maxUnavailable"] + 1
    (metric,) = autoscaler["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["requests"]["cpu"]  # what utilization is measured against
    assert "replicas" not in deployment["spec"]  # the autoscaler owns it
