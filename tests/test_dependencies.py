"""What the project imports is what it declares, and what is installed is what the lock says."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

from tests.conftest import ROOT

PROJECT_PACKAGES = {"configs", "dali_pipelines", "models", "engine", "benchmarks", "tools", "tests", "evautil",
                    "train", "wiring"}
# Used when present, never required, and not installable from a package index: NVIDIA apex (fused LayerNorm
# and FusedAdam). Everything else must be declared.
OPTIONAL_UNDECLARED = {"apex"}
SOURCE_DIRS = ("configs", "dali_pipelines", "models", "engine", "benchmarks", "tools", "tests", "evautil")


def _project_files(root: Path, dirs: tuple[str, ...]) -> list[Path]:
    return sorted(root.glob("*.py")) + [p for d in dirs for p in sorted((root / d).rglob("*.py"))]


def imported_top_level_modules(root: Path = ROOT, dirs: tuple[str, ...] = SOURCE_DIRS) -> dict[str, set[str]]:
    """Third-party top-level module -> the project files importing it (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for path in _project_files(root, dirs):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top == "nvidia" and "." in name:
                    top = ".".join(name.split(".")[:2])  # nvidia.dali: one namespace package, many vendors' wheels
                if top.split(".")[0] in PROJECT_PACKAGES or top in sys.stdlib_module_names or top == "__future__":
                    continue
                found.setdefault(top, set()).add(str(path.relative_to(root)))
    return found


def _requirement_name(spec: str) -> str:
    return re.split(r"[\s;\[<>=!~]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def declared_distributions(core_only: bool = False) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    if not core_only:
        specs += [s for group in project["optional-dependencies"].values() for s in group]
    return {_requirement_name(s) for s in specs}


@functools.lru_cache(maxsize=None)
def _module_owners() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


@functools.lru_cache(maxsize=None)
def distributions_providing(module: str) -> frozenset[str]:
    top = module.split(".")[0]
    dists = set(_module_owners().get(top, []))
    if "." in module:  # a namespace package (nvidia.*): keep the distribution that ships this subpackage
        sub = module.replace(".", "/") + "/"
        dists = {d for d in dists
                 if any(str(f).startswith(sub) for f in (importlib.metadata.distribution(d).files or []))}
    return frozenset(d.lower().replace("_", "-") for d in dists)


def undeclared_imports(root: Path = ROOT, dirs: tuple[str, ...] = SOURCE_DIRS) -> dict[str, list[str]]:
    declared = declared_distributions()
    # A module that nothing installed provides (decord where it does not install) is taken to come from the
    # distribution of its own name.
    return {module: sorted(files) for module, files in imported_top_level_modules(root, dirs).items()
            if module not in OPTIONAL_UNDECLARED
            and not (distributions_providing(module) or {module.lower().replace("_", "-")}) & declared}


def test_every_third_party_import_is_declared():
    assert not undeclared_imports(), "imported but not declared in pyproject.toml"


def test_the_check_catches_an_undeclared_import(tmp_path):
    # pluggy is installed (pytest needs it) but the project does not declare it.
    (tmp_path / "engine").mkdir()
    (tmp_path / "engine" / "x.py").write_text("import pluggy\nfrom yacs.config import CfgNode\nimport nvidia.dali\n")
    (tmp_path / "train.py").write_text("import numpy\nimport os\nfrom engine import x\n")
    assert set(imported_top_level_modules(tmp_path, ("engine",))) == {"pluggy", "yacs", "numpy", "nvidia.dali"}
    assert undeclared_imports(tmp_path, ("engine",)) == {"pluggy": ["engine/x.py"]}


def test_a_declared_package_that_is_not_installed_is_not_called_undeclared(tmp_path, monkeypatch):
    # As where decord does not install: nothing installed provides it, but pyproject.toml declares it.
    (tmp_path / "engine").mkdir()
    (tmp_path / "engine" / "x.py").write_text("import decord\nimport notinstalled_xyz\n")
    monkeypatch.setattr(sys.modules[__name__], "distributions_providing", lambda module: frozenset())
    assert undeclared_imports(tmp_path, ("engine",)) == {"notinstalled_xyz": ["engine/x.py"]}


def test_declared_core_dependencies_are_imported():
    # A declared package that nothing imports is dead weight in every install.
    imported = {d for m in imported_top_level_modules() for d in distributions_providing(m)}
    # torch.utils.tensorboard is torch's module, but what it imports is the tensorboard package.
    if any("torch.utils.tensorboard" in p.read_text() for p in _project_files(ROOT, SOURCE_DIRS)):
        imported.add("tensorboard")
    unused = declared_distributions(core_only=True) - imported
    assert not unused, f"declared in pyproject.toml but never imported: {sorted(unused)}"


def test_installed_versions_are_the_locks():
    pins = {}
    for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)(?:\s*;\s*(.*?))?\s*\\?$", line)
        if m:
            name, version, marker = m.group(1).lower().replace("_", "-"), m.group(2), m.group(3)
            if marker:
                from packaging.markers import Marker

                if not Marker(marker).evaluate():
                    continue
            pins[name] = version
    assert pins["torch"].startswith("2.14.1") and "nvidia-dali-cuda130" in pins
    wrong = {}
    for name, version in pins.items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            wrong[name] = (version, "not installed")
            continue
        if installed.split("+")[0] != version.split("+")[0]:
            wrong[name] = (version, installed)
    assert not wrong, f"installed versions differ from requirements/lock.txt: {wrong}"
