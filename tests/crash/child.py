"""Run one crash-harness stage in this process: ``python -m tests.crash.child STAGE WORK``.

The parent arms a crash point through the environment; this process freezes there and the
parent kills it with SIGKILL, mid-write.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.crash import stages  # noqa: F401 - registers the stages
from tests.crash.harness import STAGES

if __name__ == "__main__":
    name, work = sys.argv[1], Path(sys.argv[2])
    STAGES[name].run(work)
    sys.exit(3)  # reaching the end means the armed point was never reached
