"""Real servers as child processes bound to 127.0.0.1, through the one implementation the
stack, the drift scenario and the benchmarks use (``mlsys_core.stack.process``)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlsys_core.stack import process
from mlsys_core.stack.prefect_server import cli as prefect_cli

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


def wait_http(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    process.wait_http(url, proc, timeout, log)


@contextmanager
def background(
    cmd: list[str], env: dict[str, str], log: Path, cwd: Path = REPO
) -> Iterator[subprocess.Popen]:
    """A child process in its own session, stopped (and its children) on exit."""
    with process.background(cmd, env, log, cwd=cwd) as proc:
        yield proc


def prefect(args: list[str], env: dict[str, str]) -> str:
    """``prefect <args>`` from the repository folder (prefect.yaml); fails with its output."""
    return prefect_cli(args, env, cwd=REPO, timeout=300)
