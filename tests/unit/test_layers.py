"""The layer rule (docs/architecture.md, "Layers"): a module imports only from its own
layer or the layers below it, at module level, inside functions and under
TYPE_CHECKING alike; and every txmon import says ``txmon.<package>``.

The layers, bottom first. A module belongs to the layer of the longest prefix that
names it; ``*.cli`` modules, the demo, the DAGs and the web application's entry point
are the top, importing down; ``bench`` sits above the product, which never imports it
(``txmon bench`` runs it as a subprocess).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("infra", "ingestion", "models", "alerting", "spark_jobs", "webapp", "bench")

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "foundation",
        (
            "txmon.infra.__init__",
            "txmon.infra.errors",
            "txmon.infra.settings",
            "txmon.infra.yaml_loading",
            "txmon.infra.masking",
            "txmon.infra.credentials",
            "txmon.infra.process",
            "txmon.infra.cassandra_schema",
            "txmon.infra.jars",
            "txmon.infra.kafka_client",
            "txmon.infra.hourly_counts",
            "txmon.infra.fraud_label_days",
            "txmon.infra.statements",
        ),
    ),
    ("contract", ("txmon.ingestion",)),
    ("domain", ("txmon.models",)),
    ("alerting", ("txmon.alerting",)),
    ("services", ("txmon.infra.services", "txmon.infra.airflow", "txmon.infra.spark_cluster", "txmon.infra.stack")),
    ("stream", ("txmon.spark_jobs", "txmon.infra.readback")),
    (
        "orchestration",
        (
            "txmon.infra.airflow_components",
            "txmon.infra.orchestration",
            "txmon.infra.smoke_run",
            "txmon.spark_jobs.supervisor",
            "txmon.webapp",
        ),
    ),
    (
        "entry points",
        (
            "txmon.infra.cli",
            "txmon.infra.airflow_cli",
            "txmon.infra.demo",
            "txmon.models.cli",
            "txmon.alerting.cli",
            "txmon.webapp.cli",
            "txmon.webapp.console.cli",
            "txmon.webapp.app",
            "dags",
        ),
    ),
    ("bench", ("txmon.bench",)),
)


def layer_of(module: str) -> int:
    """Index in LAYERS of the longest prefix naming ``module`` (a package's ``__init__``
    counts as ``<package>.__init__`` so a package's layer is not its children's)."""
    best, index = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, index = len(prefix), i
    if index is None:
        raise AssertionError(
            f"{module} is in no layer: add it to LAYERS in {Path(__file__).name} and to docs/architecture.md"
        )
    return index


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "dags":
        return ".".join(parts)
    return "txmon." + ".".join(parts)


def _sources(folders) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def _exists(module: str) -> bool:
    path = ROOT / Path(*module.split(".")[1:])
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, wherever it is: ``from txmon.x import y``
    names ``txmon.x.y`` when ``y`` is a submodule, and ``txmon.x.__init__`` otherwise."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found.append((node.lineno, "." * node.level + (node.module or "")))
                continue
            module = node.module or ""
            if module.startswith("txmon."):
                subs = [f"{module}.{a.name}" for a in node.names if _exists(f"{module}.{a.name}")]
                found += [(node.lineno, s) for s in subs]
                if len(subs) < len(node.names):
                    found.append((node.lineno, f"{module}.__init__" if _exists(f"{module}.__init__") else module))
            else:
                found.append((node.lineno, module))
    return found


def _txmon_modules(path: Path):
    for line, module in imports(path):
        if module.startswith("txmon."):
            package = module if module.endswith(".__init__") else f"{module}.__init__"
            yield line, package if _exists(package) else module


def test_every_module_has_a_layer():
    for path in _sources((*PACKAGES, "dags")):
        layer_of(_module_name(path))


def test_no_import_points_up():
    upward = []
    for path in _sources((*PACKAGES, "dags")):
        here = _module_name(path)
        mine = layer_of(here)
        for line, module in _txmon_modules(path):
            theirs = layer_of(module)
            if theirs > mine:
                upward.append(
                    f"{path.relative_to(ROOT)}:{line} {here} ({LAYERS[mine][0]}) imports {module} ({LAYERS[theirs][0]})"
                )
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_imports_use_the_txmon_namespace():
    bare = []
    for path in _sources((*PACKAGES, "dags", "tests")):
        for line, module in imports(path):
            top = module.split(".")[0]
            if module.startswith(".") or top in PACKAGES:
                bare.append(f"{path.relative_to(ROOT)}:{line} imports {module}: write txmon.{module.lstrip('.')}")
    assert not bare, "\n".join(bare)


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("txmon.infra.settings", "foundation"),
        ("txmon.infra.__init__", "foundation"),
        ("txmon.models.features", "domain"),
        ("txmon.spark_jobs.detection", "stream"),
        ("txmon.spark_jobs.supervisor", "orchestration"),
        ("txmon.models.cli", "entry points"),
        ("dags.ingestion_dag", "entry points"),
        ("txmon.bench.pipeline_bench", "bench"),
    ],
)
def test_layer_of_takes_the_longest_prefix(module, layer):
    assert LAYERS[layer_of(module)][0] == layer


def test_the_rule_sees_function_level_imports(tmp_path):
    """An import hidden inside a function is still an edge."""
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from txmon.bench import pipeline_bench\n    import models.cli\n")
    assert imports(source) == [(2, "txmon.bench.pipeline_bench"), (3, "models.cli")]
