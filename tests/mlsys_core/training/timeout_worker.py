"""Run by the tests under torchrun: rank 1 stays alive but never joins the collective that
rank 0 starts; rank 0 writes how long its all_reduce took to fail. Not a test module."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from mlsys_core.training.distributed import init_distributed


def main(out: Path, timeout_s: float) -> None:
    ctx, _ = init_distributed("cpu", timeout_s=timeout_s)
    if ctx.rank == 1:
        time.sleep(timeout_s + 4)  # hung, not dead: no socket closes to give it away
        return
    started = time.monotonic()
    try:
        dist.all_reduce(torch.ones(1))
        outcome = "returned"
    except Exception as exc:  # noqa: BLE001 - the test reads what was raised
        outcome = f"{type(exc).__name__}: {exc}"
    out.write_text(json.dumps({"seconds": time.monotonic() - started, "outcome": outcome}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), float(sys.argv[2]))
