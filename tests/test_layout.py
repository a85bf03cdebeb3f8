"""Import boundaries between the packages (docs/ARCHITECTURE.md): data flows config -> data -> model -> engine."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

# package -> the project's top-level packages and modules it may import (the table of docs/ARCHITECTURE.md);
# wiring.py, train.py, benchmarks and tools may import everything
ALLOWED = {
    # the one home of small shared helpers: importable by every package, so it imports none of them
    "evautil": set(),
    "configs": {"evautil"},
    "dali_pipelines": {"configs", "evautil"},
    "models": {"configs", "evautil"},
    "engine": {"configs", "evautil"},  # it receives ready loaders and models
}
IMPORT_EVERYTHING = {"wiring", "train", "benchmarks", "tools", "tests"}
# package -> libraries it must not import: DALI stays in dali_pipelines, and evautil (imported by every worker
# process) stays free of torch
FORBIDDEN_LIBRARIES = {
    "evautil": {"torch", "nvidia"},
    "models": {"nvidia"},
    "engine": {"nvidia"},
}


def _project_names(root: Path) -> set[str]:
    """The project's top-level packages and modules, as an import names them."""
    return ({p.name for p in root.iterdir() if (p / "__init__.py").is_file()}
            | {p.stem for p in root.glob("*.py")})


def _module_parts(path: Path, root: Path) -> list[str]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imports(path: Path, root: Path = ROOT) -> set[str]:
    """The top-level names ``path`` imports: absolute imports, relative ones resolved against its package (a
    ``from .. import x`` leaves it), and ``importlib.import_module`` / ``__import__`` of a constant name."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    parts = _module_parts(path, root)
    package = parts if path.name == "__init__.py" else parts[:-1]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            if base:
                names.add(base[0])
            elif node.module:
                names.add(node.module.split(".")[0])
            else:  # from .. import x, at the top: x is a top-level name
                names.update(alias.name.split(".")[0] for alias in node.names)
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str) and not node.args[0].value.startswith(".")
              and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")):
            names.add(node.args[0].value.split(".")[0])
    return names


def _offenders(package: str, root: Path = ROOT) -> dict[str, list[str]]:
    refused = (_project_names(root) - ALLOWED[package] - {package}) | FORBIDDEN_LIBRARIES.get(package, set())
    found = {str(f.relative_to(root)): sorted(_imports(f, root) & refused)
             for f in sorted((root / package).rglob("*.py"))}
    return {f: names for f, names in found.items() if names}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_respects_import_boundaries(package):
    assert list((ROOT / package).rglob("*.py")), f"package {package} has no modules"
    offenders = _offenders(package)
    assert not offenders, f"{package} imports what it must not: {offenders}"


@pytest.mark.parametrize("statement", ["from ..models import eva", "from .. import dali_pipelines",
                                       "import wiring", "importlib.import_module('models.eva')",
                                       "from torch import nn"])
def test_boundary_check_sees_every_form_of_import(tmp_path, statement):
    """The check above must not pass for want of seeing an import: a relative import out of the package, a
    top-level module, an importlib call."""
    for name in ("engine", "evautil", "models", "dali_pipelines"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / "wiring.py").write_text("")
    for package in ("engine", "evautil"):
        (tmp_path / package / "sub.py").write_text(f"import importlib\n{statement}\n")
    assert _offenders("evautil", tmp_path)
    assert _offenders("engine", tmp_path) or statement == "from torch import nn"


def test_every_top_level_package_has_a_place_in_the_layout():
    """A new top-level package or module gets its row in docs/ARCHITECTURE.md's table and its rule here."""
    names = _project_names(ROOT)
    assert not names - set(ALLOWED) - IMPORT_EVERYTHING, "add it to ALLOWED or IMPORT_EVERYTHING"
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    described = {Path(name).stem for row in re.findall(r"^\| (.*?) \|", doc, re.MULTILINE)
                 for name in re.findall(r"`([\w./]+)`", row)}
    assert not names - {"tests"} - described, "docs/ARCHITECTURE.md's package table lacks it"


def test_train_py_stays_a_short_wiring_script():
    lines = [ln for ln in (ROOT / "train.py").read_text().splitlines() if ln.strip()]
    assert len(lines) < 150, f"train.py has {len(lines)} non-blank lines; move logic into engine/"


PACKAGES_WITH_MODULES = ("evautil", "configs", "dali_pipelines", "models", "engine", "benchmarks", "tools",
                         "tools/kinetics")


def _module_tables(doc: str) -> dict[str, list[tuple[str, str]]]:
    """docs/ARCHITECTURE.md's "Modules" section: package -> its table's (module, job) rows, in order."""
    section = doc[doc.index("\n## Modules\n"):]
    section = section[:section.index("\n## ", 1)]
    tables = {}
    for package, body in re.findall(r"^### (\S+)\n(.*?)(?=^### |\Z)", section, re.M | re.S):
        tables[package] = re.findall(r"^\| `(\w+)` \| (.+?) \|$", body, re.M)
    return tables


def _top_level_names(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return names


def test_the_module_tables_list_every_module_once():
    """A split module's parts, or a new module, get a row of their own in docs/ARCHITECTURE.md; a row whose module
    left or was renamed goes with it."""
    tables = _module_tables((ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8"))
    assert sorted(tables) == sorted(PACKAGES_WITH_MODULES)
    for package, rows in tables.items():
        listed = [module for module, _ in rows]
        assert len(listed) == len(set(listed)), f"{package}'s table names a module twice"
        modules = {p.stem for p in (ROOT / package).glob("*.py") if p.name != "__init__.py"}
        assert set(listed) == modules, (f"{package}: no row for {sorted(modules - set(listed))}, "
                                        f"a row for no module {sorted(set(listed) - modules)}")


def test_the_names_a_module_row_gives_are_the_modules():
    """The functions and classes a row names as its module's (``filelist``: ``read_video_list``) are there (or
    name a module of its package: a command of ``tools``)."""
    tables = _module_tables((ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8"))
    for package, rows in tables.items():
        siblings = {module for module, _ in rows}
        for module, job in rows:
            defined = _top_level_names(ROOT / package / f"{module}.py") | siblings
            named = set(re.findall(r"`([A-Za-z]\w*)`", job))
            assert named <= defined, f"{package}/{module}.py lacks {sorted(named - defined)}"


def test_the_modules_and_names_the_prose_cites_exist():
    """``dali_pipelines/filelist.py``, ``probe_verdict.probe_video``, ``evautil.workers``: a file the page names
    is there, and a name it cites as a module's (by the module's path or its name alone) is defined in it."""
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    files = [p for p in ROOT.rglob("*.py") if p.relative_to(ROOT).parts[0] in _project_names(ROOT) - {"tests"}]
    by_name: dict[str, list[Path]] = {}
    for path in files:
        by_name.setdefault(path.stem if path.name != "__init__.py" else path.parent.name, []).append(path)
    missing = []
    for cited in sorted(set(re.findall(r"`([\w./]+?)(?:\(\))?`", doc))):
        if re.fullmatch(r"[\w/]+/\w+\.(py|sh)", cited):
            missing += [cited] if not (ROOT / cited).is_file() else []
            continue
        parts = cited.split(".")
        if (len(parts) < 2 or not all(re.fullmatch(r"[A-Za-z_]\w*", p) for p in parts)
                or parts[-1] in ("py", "json", "jsonl", "csv", "txt", "pth", "npz", "yaml", "png")):  # a file
            continue
        for i in range(len(parts) - 1, 0, -1):  # the longest dotted module path: evautil.process_pools.jobs_started
            path = ROOT.joinpath(*parts[:i])
            candidates = [f for f in (path.with_suffix(".py"), path / "__init__.py") if f.is_file()]
            if candidates:
                break
        else:
            candidates, i = by_name.get(parts[0], []), 1
        if candidates and not any(parts[i] in _top_level_names(f) or (f.parent / f"{parts[i]}.py").is_file()
                                  for f in candidates):
            missing.append(cited)
    assert not missing, f"docs/ARCHITECTURE.md cites what is not there: {missing}"


# A module split in two keeps every name importable from where it was: code outside the project imports them.
_SPLIT_FROM = {
    "dali_pipelines.filelist": ["dali_pipelines.data_errors", "dali_pipelines.list_lines", "dali_pipelines.video_list",
                                "dali_pipelines.path_table", "dali_pipelines.list_roots"],
    "dali_pipelines.dataset_index": ["dali_pipelines.index_summary"],
    "dali_pipelines.index_store": ["dali_pipelines.index_lock"],
    "tools.kinetics.scan": ["tools.kinetics.video_files"],
    "tools.inference": ["tools.view_loader"],
    "engine.evaluate": ["engine.label_names", "engine.prediction_files"],
}
# Names a module gave before its split that are not in its new modules' __all__ of the list above.
_GIVEN_BEFORE = {"tools.kinetics.scan": ["youtube_id", "is_listable", "unlistable_reason", "is_video_file"]}


@pytest.mark.parametrize("old", sorted(_SPLIT_FROM))
def test_a_split_module_still_gives_the_names_that_moved_out_of_it(old):
    import importlib
    module = importlib.import_module(old)
    lost = [f"{new}.{name}" for new in _SPLIT_FROM[old] for name in importlib.import_module(new).__all__
            if getattr(module, name, None) is not getattr(importlib.import_module(new), name)]
    lost += [name for name in _GIVEN_BEFORE.get(old, []) if not hasattr(module, name)]
    assert not lost, f"{old} no longer gives {lost}"
