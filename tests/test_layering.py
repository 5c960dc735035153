"""Imports flow one way (docs/architecture.md): scripts -> lightning_modules -> evaluation ->
(editing, directions, metrics) -> (generators, regressors, clip_models) -> datamodules -> common; no package
imports a script, no script imports another, and no two packages import each other. Read from the
source, not from sys.modules."""
from __future__ import annotations

import ast
from itertools import combinations
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = {"train", "evaluate", "edit", "explore", "leaderboard", "benchmark"}
PACKAGES = ["common", "datamodules", "generators", "regressors", "clip_models", "metrics", "directions", "editing",
            "evaluation", "lightning_modules", "explorer"]
# What each package may import from the project (besides itself).
ALLOWED = {
    "common": set(),
    "datamodules": {"common"},
    "generators": {"common", "datamodules"},  # the world: pretraining data, sample assessment
    "regressors": {"common", "datamodules"},  # the world's factors as regression targets
    "clip_models": {"common", "datamodules"},  # the world's captions from its factors
    "metrics": {"common", "datamodules", "regressors", "clip_models"},
    "directions": {"common", "generators"},  # the artifact checks the generator's identity
    "editing": {"common", "generators", "metrics"},  # inversion's image distance
    "evaluation": {"common", "datamodules", "generators", "regressors", "clip_models", "metrics",
                   "directions"},
    "lightning_modules": {"common", "datamodules", "generators", "regressors", "clip_models", "metrics", "directions",
                          "editing", "evaluation"},
    "explorer": {"common", "generators", "clip_models", "directions", "editing", "evaluation"},  # explore.py
}


def project_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {n.split(".")[0] for n in names} & (set(PACKAGES) | SCRIPTS)
    return found


def package_imports(package: str) -> set[str]:
    return set().union(*(project_imports(p) for p in (ROOT / package).rglob("*.py"))) - {package}


def test_packages_import_only_lower_layers():
    for package in PACKAGES:
        assert package_imports(package) <= ALLOWED[package], package


def test_no_package_or_script_imports_a_script():
    for package in PACKAGES:
        assert not package_imports(package) & SCRIPTS, package
    for script in SCRIPTS:
        assert not project_imports(ROOT / f"{script}.py") & (SCRIPTS - {script}), script


def test_no_import_cycle_between_packages():
    imports = {p: package_imports(p) for p in PACKAGES}
    for a, b in combinations(PACKAGES, 2):
        assert not (b in imports[a] and a in imports[b]), (a, b)


def test_every_package_is_listed_and_installed():
    """A new package is placed in the import rule and installed; the scripts are not installed
    as top-level modules (``import evaluate`` would shadow the package of that name)."""
    import pytest

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    top = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert top == set(PACKAGES), top ^ set(PACKAGES)
    every = {".".join(p.parent.relative_to(ROOT).parts) for name in PACKAGES
             for p in (ROOT / name).rglob("__init__.py")}
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "py-modules" not in setup
    assert set(setup["packages"]) == every, set(setup["packages"]) ^ every
