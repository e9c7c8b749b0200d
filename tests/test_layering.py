"""The import graph reads top-down (issue 9, point 7): the pure core imports nothing from the
shell and no I/O library; `config` is a leaf of the shell, importing only the core, `address` and
`errors`. Checked on the source, transitively, so a new import anywhere cannot slip past."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "kdns"
IO_LIBRARIES = {"trio", "kubernetes", "urllib3", "socket", "selectors", "asyncio", "threading", "time", "ssl"}
# Names of I/O modules that are pure functions, which the core may use: address parsing.
PURE = {("socket", "inet_pton"), ("socket", "AF_INET"), ("socket", "AF_INET6")}
CONFIG_MAY_IMPORT = {"kdns.address", "kdns.errors"}
NEVER_IN_CONFIG = {"trio", "kubernetes", "urllib3"}


def _in_core(name: str) -> bool:
    return name == "kdns.core" or name.startswith("kdns.core.")  # not kdns.corefile


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every kdns module and the modules it imports (absolute names)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [alias.name for alias in node.names]
                if all((node.module, alias) in PURE for alias in names):
                    continue
                found.add(node.module)
                found.update(f"{node.module}.{alias}" for alias in names)
        graph[name] = found
    return graph


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for imported in graph.get(todo.pop(), set()):
            if imported not in seen:
                seen.add(imported)
                todo.append(imported)
    return seen


def test_the_core_imports_no_shell_module_and_no_io_library() -> None:
    graph = _imports()
    core = [name for name in graph if _in_core(name)]
    assert len(core) > 10
    for name in core:
        for imported in _reachable(graph, name):
            top = imported.split(".")[0]
            assert top not in IO_LIBRARIES, f"{name} reaches {imported}"
            if top == "kdns":
                assert _in_core(imported), f"{name} reaches the shell module {imported}"


def test_config_is_a_leaf_of_the_shell() -> None:
    graph = _imports()
    for imported in _reachable(graph, "kdns.config"):
        top = imported.split(".")[0]
        assert top not in NEVER_IN_CONFIG, f"config reaches {imported}"
        if top == "kdns" and imported in graph:
            assert _in_core(imported) or imported in CONFIG_MAY_IMPORT, f"config reaches {imported}"


def test_nothing_imports_upwards_into_the_application() -> None:
    graph = _imports()
    for name, imported in graph.items():
        if name in ("kdns.cli", "kdns.__main__"):
            continue
        assert "kdns.cli" not in imported, f"{name} imports the command line"
        assert "kdns.app" not in imported, f"{name} imports the application"


def test_serving_a_snapshot_never_imports_the_kubernetes_client() -> None:
    """Importing the client costs about 45 MB and a second: only a live source pays for it
    (the imports of `kdns.sources.kube` sit inside the functions that follow a cluster)."""
    import subprocess
    import sys

    check = (
        "import sys, kdns.app, kdns.cli\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'kdns') and "
        "(m.startswith('kubernetes') or m == 'kdns.sources.kube'))\n"
        "print(loaded)\n"
    )
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout


LISTENERS = ("kdns.serve", "kdns.ops", "kdns.connections")
STAGES = (
    "kdns.core.cluster_zone",
    "kdns.core.autopath",
    "kdns.core.forwarding",
    "kdns.core.loadbalance",
    "kdns.core.loop",
    "kdns.core.blocks",
    "kdns.core.stage",
)


def _direct(graph: dict[str, set[str]], name: str) -> set[str]:
    """The kdns modules `name` imports itself (an imported name counts as its module)."""
    modules = {module for module in graph if module.startswith("kdns")}
    return {imported for imported in graph[name] if imported in modules}


def test_listeners_only_move_bytes() -> None:
    """Issue 18: the listeners import no forwarder, no query log and no answering policy:
    answers, their admission, counting, timing and logging are the pipeline's."""
    graph = _imports()
    allowed_core = {"kdns.core.message", "kdns.core.stage", "kdns.core.budgets"}
    for listener in LISTENERS:
        for imported in _direct(graph, listener):
            assert imported not in ("kdns.forward", "kdns.logs", "kdns.answering", "kdns.app"), (listener, imported)
            assert not imported.startswith("kdns.core.") or imported in allowed_core, (listener, imported)


def test_the_forwarder_is_a_transport_that_knows_no_stage() -> None:
    """Issue 18: the forwarder reaches no stage and no pipeline, and itself imports nothing that
    decides answers (the cache, the zone, the reply cache): the pipeline asks it; it asks upstream."""
    graph = _imports()
    for imported in _reachable(graph, "kdns.forward"):
        assert imported.rsplit(".", 1)[0] not in STAGES and imported not in STAGES, imported
        assert not imported.startswith("kdns.pipeline"), imported
    for imported in _direct(graph, "kdns.forward"):
        assert imported not in ("kdns.core.cache", "kdns.core.zone", "kdns.core.kept"), imported


def test_stages_import_the_core_and_nothing_above_it() -> None:
    """Issue 18: stages are pure: the core, and no transport, pipeline or listener."""
    graph = _imports()
    for stage in STAGES:
        for imported in _reachable(graph, stage):
            if imported.split(".")[0] == "kdns":
                assert _in_core(imported), (stage, imported)
