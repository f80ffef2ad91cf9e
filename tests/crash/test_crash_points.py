"""The crash-point harness on every stage that writes to the lake (see ``harness.py``).

Quick: each stage fails by an exception at the first occurrence of each of its crash
points. Slow: also at the last occurrence; as a child process killed with SIGKILL at the
first; and the batch-score stage (it trains and registers a model first).
``MLSYS_CRASH_EVERY=1`` fails every occurrence of every point, in both ways. The inventory
tests fail when a write site has no crash point, or a crash point no stage reaches.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.crash import stages, stores  # noqa: F401 - registers the stages
from tests.crash.harness import STAGES, Baseline, cases_for, prepare, record, run_case
from tests.crash.inventory import EXEMPT, PENDING, classify, crash_points, write_sites
from tests.crash.stores import REDIS_URL_FILE
from tests.services import redis_server

QUICK = [
    "ingest", "ingest-plain", "ingest-landing", "validate", "features", "predictions-log",
    "predictions-snapshot", "stream", "part-retype", "lake-identity", "online-materialize",
    "online-materialize-redis", "checkpoints", "model-files", "launch-files", "drift-reference",
]  # fmt: skip
# Each needs an MLflow store with a logged model (about 30 s to prepare on a loaded machine).
SLOW = ["batch-scores", "registry-walk"]
SLOW_ONLY_POINTS = ("registry.",)  # reached only by a slow stage
EVERY = os.environ.get("MLSYS_CRASH_EVERY") == "1"
assert set(QUICK + SLOW) == set(STAGES), "a registered stage is in neither list"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The cases' folders, beside the URL of the real redis-server the Redis stage writes
    to (``make test`` installs it through the system package manager when missing)."""
    folder = tmp_path_factory.mktemp("crash")
    with redis_server(folder / "redis-server") as url:
        (folder / REDIS_URL_FILE).write_text(url)
        yield folder


@pytest.fixture(scope="module")
def baselines(root: Path):
    """Each stage prepared and run uninterrupted once, on first use."""
    cache: dict[str, Baseline] = {}

    def get(name: str) -> Baseline:
        if name not in cache:
            cache[name] = prepare(STAGES[name], root)
        return cache[name]

    return get


def _run(baseline: Baseline, mode: str, root: Path, occurrences: str) -> None:
    """``first``: each point the first time the stage reaches it; ``last``: the last time,
    where that is another. ``MLSYS_CRASH_EVERY=1``: every time (slower)."""
    if EVERY:
        pairs = cases_for(baseline, every=True)
    else:
        pairs = [(p, n) for p, n in cases_for(baseline, every=False)
                 if (n == 1) == (occurrences == "first")]  # fmt: skip
    cases = [run_case(baseline, point, nth, mode, root) for point, nth in pairs]  # type: ignore[arg-type]
    record(cases, baseline)
    assert all(not c.leftovers_final for c in cases)


@pytest.mark.parametrize("name", QUICK)
def test_an_exception_at_each_write_point_leaves_the_lake_consistent(name, baselines, root):
    _run(baselines(name), "raise", root, "first")


@pytest.mark.slow
@pytest.mark.parametrize("name", QUICK + SLOW)
def test_an_exception_at_later_occurrences_too(name, baselines, root):
    if name in SLOW:
        _run(baselines(name), "raise", root, "first")
    if not EVERY:
        _run(baselines(name), "raise", root, "last")


@pytest.mark.slow
@pytest.mark.parametrize("name", QUICK + SLOW)
def test_a_process_killed_mid_write_at_each_point_leaves_the_lake_consistent(name, baselines, root):
    _run(baselines(name), "kill", root, "first")


def test_every_write_site_has_a_crash_point_or_a_reason() -> None:
    sites = write_sites()
    uncovered = [
        f"{s.module}:{s.line} {s.function}: {s.call}" for s in sites if classify(s) == "uncovered"
    ]
    assert not uncovered, f"write sites without a crash point (add one and a case): {uncovered}"
    covered = [s for s in sites if s.covered]
    assert len(covered) >= 10
    # The lists of exceptions name only what exists, so they cannot hide a removed site,
    # and a store whose sites all have crash points leaves PENDING.
    assert {(s.module, s.function) for s in sites} >= set(EXEMPT)
    for prefix in PENDING:
        waiting = [s for s in sites if s.module.startswith(prefix) and not s.covered]
        assert waiting, f"every site of {prefix} has a crash point: take it out of PENDING"


def test_the_inventory_finds_a_new_write_site(tmp_path: Path) -> None:
    (tmp_path / "newstore.py").write_text(
        "import os\n\n"
        "def commit(tmp, final):\n    os.replace(tmp, final)\n\n"
        "def save(path, frame):\n    with open(path, 'wb') as f:\n        f.write(b'x')\n\n"
        "def marked(conn):\n    crash_point('newstore.commit')\n"
        "    conn.execute('INSERT INTO t VALUES (1)')\n"
    )
    sites = {s.function: classify(s) for s in write_sites(tmp_path)}
    assert sites == {"commit": "uncovered", "save": "uncovered", "marked": "covered"}
    assert crash_points(tmp_path) == {"newstore.commit": ["newstore.py:11"]}


def test_every_crash_point_is_reached_by_a_stage(baselines) -> None:
    reached: set[str] = set()
    for name in QUICK:
        reached |= set(baselines(name).hits)
    declared = {p for p in crash_points() if not p.startswith(SLOW_ONLY_POINTS)}
    assert declared <= reached, f"crash points no harness stage reaches: {declared - reached}"


@pytest.mark.slow
def test_every_crash_point_is_reached_by_a_stage_the_slow_ones_too(baselines) -> None:
    reached: set[str] = set()
    for name in QUICK + SLOW:
        reached |= set(baselines(name).hits)
    declared = set(crash_points())
    assert declared <= reached, f"crash points no harness stage reaches: {declared - reached}"
    assert any(p.startswith(SLOW_ONLY_POINTS) for p in declared)
