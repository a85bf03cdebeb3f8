"""Import boundaries between the packages (docs/ARCHITECTURE.md): data flows config -> data -> model -> engine."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

# package -> project packages it must not import
FORBIDDEN = {
    "configs": {"dali_pipelines", "models", "engine", "benchmarks", "tools"},
    "models": {"dali_pipelines", "engine", "benchmarks", "tools", "nvidia"},
    "dali_pipelines": {"models", "engine", "benchmarks", "tools"},
    "engine": {"nvidia", "models", "dali_pipelines", "benchmarks", "tools"},
    # the one home of small shared helpers: importable by every package, so it imports none of them
    "evautil": {"configs", "dali_pipelines", "models", "engine", "benchmarks", "tools", "nvidia", "torch"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_import_boundaries(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"package {package} has no modules"
    offenders = {
        str(f.relative_to(ROOT)): sorted(_imports(f) & FORBIDDEN[package])
        for f in files
        if _imports(f) & FORBIDDEN[package]
    }
    assert not offenders, f"{package} imports what it must not: {offenders}"


def test_train_py_stays_a_short_wiring_script():
    lines = [ln for ln in (ROOT / "train.py").read_text().splitlines() if ln.strip()]
    assert len(lines) < 150, f"train.py has {len(lines)} non-blank lines; move logic into engine/"
