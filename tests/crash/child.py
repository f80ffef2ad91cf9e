"""The children the crash harness kills: each runs one stage, frozen at an armed point.

They are forked from a fork server that imported the stages once (so a case costs the
stage's run, not an interpreter's start), and are real processes: the parent sends SIGKILL
while the child waits mid-write. ``python -m tests.crash.child STAGE WORK`` runs one the
same way with the point armed through the environment (``MLSYS_CRASH_AT`` ...).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from mlsys_core import crashpoints
from mlsys_core.data.contract import clean_table
from mlsys_core.spec import ColumnRule, TableContract
from tests.crash import stages, stores  # noqa: F401 - registers the stages
from tests.crash.harness import STAGES

# pandera loads its backends on first use (seconds): once, in the fork server.
clean_table(pd.DataFrame({"a": [1]}), TableContract(columns={"a": ColumnRule(dtype="int")}))


def run_armed(name: str, work: str, point: str, nth: int, ready: str) -> None:
    with crashpoints.armed(point, nth, action="pause", ready=Path(ready)):
        STAGES[name].run(Path(work))
    sys.exit(3)  # reaching the end means the armed point was never reached


if __name__ == "__main__":
    STAGES[sys.argv[1]].run(Path(sys.argv[2]))
    sys.exit(3)
