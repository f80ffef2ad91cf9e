"""Every write site in the core, found by reading the source: the crash harness's inventory.

A *write site* is a call that changes durable state: a rename or replace, a file opened
for writing, a Parquet writer, ``write_text``, a pickle-free save (``torch.save``,
``np.savez``), a SQL statement that changes rows, a registry alias or tag, a Redis command
that writes or a Redis pipeline sent (``.execute()``). A site is
*covered* when the function around it has a ``crash_point("name")`` (or the call is the
content of ``write_atomically``, which has its own points). Every other site must be in
``PENDING`` (a store whose owner adds its crash points and its harness stage next) or in
``EXEMPT`` with the reason it needs none; a new uncovered site fails the inventory test.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "mlsys_core"

# Stores whose owners add crash points and a harness stage next (see tests/crash/harness.py).
# Empty: every store has its points and its stages, so every new write site needs one too.
PENDING: dict[str, str] = {}
# Sites that need no crash case, and why.
EXEMPT: dict[tuple[str, str], str] = {
    ("data/sources.py", "_sql_bytes"): "writes Parquet to memory, to hash a query's rows",
    ("data/lake.py", "discard_folder"): "removal by rename: interrupted, it leaves a "
    "temporary folder no reader sees, which `lake gc` removes",
    ("crashpoints.py", "_pause"): "the harness's own signal file",
    ("stream/replay.py", "write_segments"): "a producer writing the event log (not the "
    "lake): temporary name, then rename; the engine skips temporary names",
    ("serving/cluster.py", "Cluster._write_conf"): "nginx's configuration, replaced "
    "atomically; no reader of the lake or the registry",
    ("serving/cluster.py", "Cluster.start"): "log files of the cluster's processes",
    ("serving/cluster.py", "Cluster._spawn"): "log files of the cluster's processes",
    ("datasets/nycflights13/sample.py", "sample_spec"): "a small sample of the dataset as "
    "input files for tests and benches: a source ingest reads, not a store",
    ("registry/locking.py", "RegistryLock._beat"): "the lock's heartbeat, not registry data: "
    "a beat that never lands is the crash the lease is for (a waiter removes the ticket)",
    ("training/launch.py", "launch_torchrun"): "the torchrun log, for a person to read",
    ("stack/postgres.py", "initialize"): "initdb's password file (removed at once) and its "
    "log; a cluster without PG_VERSION is initialized again",
    ("stack/postgres.py", "ensure_databases"): "CREATE DATABASE is atomic in PostgreSQL; "
    "the next `stack up` creates what is missing",
    ("stack/process.py", "start"): "a service's log file",
    ("stack/stack.py", "Stack._start"): "a service's log file",
    ("stack/prefect_server.py", "start_local_server"): "the empty lock file `up` holds "
    "with flock; the lock is the kernel's, the file has no content to tear",
}

_MODULE_CALLS = {
    ("os", "replace"), ("os", "rename"), ("os", "link"), ("os", "symlink"),
    ("shutil", "move"), ("shutil", "copy"), ("shutil", "copy2"), ("shutil", "copyfile"),
    ("shutil", "copytree"), ("torch", "save"), ("np", "save"), ("np", "savez"),
    ("pq", "write_table"), ("pq", "ParquetWriter"), ("mlflow", "register_model"),
}  # fmt: skip
_METHODS = {
    "write_text", "write_bytes", "write_table", "to_parquet", "savefig",
    "set_registered_model_alias", "delete_registered_model_alias", "set_model_version_tag",
    "delete_model_version_tag", "set_registered_model_tag", "create_model_version",
    "create_registered_model", "transition_model_version_stage", "update_model_version",
    "delete_model_version", "executescript",
}  # fmt: skip
# Redis commands that change data (names no other library in the core uses for a method).
_REDIS_WRITES = {
    "hset", "hsetnx", "hdel", "hincrby", "sadd", "srem", "zadd", "zrem", "lpush", "rpush",
    "xadd", "setex", "psetex", "flushdb",
}  # fmt: skip
_SQL_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER", "COMMIT")
_ATOMIC = {"write_atomically", "write_text_atomically"}


@dataclass(frozen=True)
class Site:
    module: str  # relative to mlsys_core/
    function: str  # qualified name of the enclosing function
    line: int
    call: str
    covered: bool


def crash_points(root: Path = CORE) -> dict[str, list[str]]:
    """Every ``crash_point("name")`` in the core: name -> where."""
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and _name(node.func) == "crash_point":
                arg = node.args[0] if node.args else None
                if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                    where = f"{path}:{node.lineno}"
                    raise AssertionError(f"{where}: a crash point needs a literal name")
                found.setdefault(arg.value, []).append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def write_sites(root: Path = CORE) -> list[Site]:
    sites: list[Site] = []
    for path in sorted(root.rglob("*.py")):
        module = str(path.relative_to(root))
        tree = ast.parse(path.read_text())
        _Visitor(module, sites).visit(tree)
    return sites


def classify(site: Site) -> str:
    """``covered``, ``pending: <store>``, ``exempt: <reason>`` or ``uncovered``."""
    if site.covered:
        return "covered"
    if reason := EXEMPT.get((site.module, site.function)):
        return f"exempt: {reason}"
    for prefix, store in PENDING.items():
        if site.module.startswith(prefix):
            return f"pending: {store}"
    return "uncovered"


class _Visitor(ast.NodeVisitor):
    """Scans each outermost function (a method counts as one); what a nested function
    does belongs to the function around it."""

    def __init__(self, module: str, sites: list[Site]) -> None:
        self.module, self.sites = module, sites
        self.classes: list[str] = []

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.classes.append(node.name)
        self.generic_visit(node)
        self.classes.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._scan(node, ".".join([*self.classes, node.name]))  # no generic_visit: done

    visit_AsyncFunctionDef = visit_FunctionDef  # noqa: N815

    def _scan(self, func: ast.FunctionDef | ast.AsyncFunctionDef, name: str) -> None:
        calls = [n for n in ast.walk(func) if isinstance(n, ast.Call)]
        has_point = any(_name(c.func) == "crash_point" for c in calls)
        # What a writer function hands to write_atomically is written by it (its points).
        handed = {
            id(inner)
            for c in calls
            if _name(c.func) in _ATOMIC
            for arg in [*c.args[1:], *(k.value for k in c.keywords)]
            for inner in ast.walk(arg)
        }
        for call in calls:
            if id(call) not in handed and (label := _write_call(call)):
                self.sites.append(Site(self.module, name, call.lineno, label, has_point))


def _write_call(call: ast.Call) -> str | None:  # noqa: PLR0911 - one answer per kind
    func = call.func
    if isinstance(func, ast.Attribute):
        owner = func.value.id if isinstance(func.value, ast.Name) else ""
        if (owner, func.attr) in _MODULE_CALLS:
            return f"{owner}.{func.attr}"
        if func.attr in _METHODS:
            return f".{func.attr}"
        if func.attr in ("execute", "executemany") and call.args and _writes_sql(call.args[0]):
            return f".{func.attr}(SQL write)"
        if func.attr in _REDIS_WRITES:
            return f".{func.attr}(Redis)"
        if func.attr == "execute" and not call.args and not call.keywords:
            return ".execute() (a Redis pipeline)"
        if func.attr == "commit" and not call.args:
            return ".commit()"
        if func.attr in ("to_json", "to_csv") and (call.args or _kw(call, "path_or_buf")):
            return f".{func.attr}"
    if _name(func) == "open" and _opens_for_writing(call):
        return "open(write)"
    if _name(func) == "ParquetWriter":
        return "ParquetWriter"
    return None


def _writes_sql(node: ast.expr) -> bool:
    text = ""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        text = node.value
    elif isinstance(node, ast.JoinedStr) and node.values:
        first = node.values[0]
        text = first.value if isinstance(first, ast.Constant) else ""
    return text.strip().upper().startswith(_SQL_WRITES)


def _opens_for_writing(call: ast.Call) -> bool:
    mode = call.args[1] if len(call.args) > 1 else _kw(call, "mode")
    return isinstance(mode, ast.Constant) and any(ch in str(mode.value) for ch in "wax+")


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _name(node: ast.expr) -> str:
    """``f`` for ``f(...)`` and ``x.f(...)``; ``pq`` for the owner ``pq`` of ``pq.f``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""
