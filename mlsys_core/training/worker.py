"""One torchrun worker: ``python -m mlsys_core.training.worker --job <job.json>``.

Every rank loads the feature set from the lake and trains its shard; rank 0 logs to MLflow and
writes ``result.json`` next to the job file. A worker that raises leaves ``error-*.json`` so
the launcher can tell a bug (do not retry) from lost workers (retry, resume).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import sys
from pathlib import Path

import torch.distributed as dist

from mlsys_core.atomic import write_text_atomically
from mlsys_core.data.lake import Lake
from mlsys_core.training.distributed import init_distributed, shutdown_distributed
from mlsys_core.training.launch import LAUNCH_ID_ENV, RANK0_LAUNCH, TrainingJob
from mlsys_core.training.run import train_and_log
from mlsys_core.training.signals import TrainingTerminated


def _is_transient(exc: BaseException) -> bool:
    """Failures of peers or the network, not of this rank's code or data."""
    if isinstance(exc, dist.DistError | TimeoutError | ConnectionError):
        return True
    text = str(exc)
    return any(word in text for word in ("gloo", "NCCL", "Connection closed", "timed out"))


def main(argv: list[str] | None = None) -> int:
    faulthandler.enable()  # a crash in native code still leaves a Python stack in the log
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", type=Path, required=True)
    args = parser.parse_args(argv)
    job = TrainingJob.model_validate_json(args.job.read_text())
    folder = args.job.parent
    rank = int(os.environ.get("RANK", "0"))
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    write_text_atomically(folder / f"rank{rank}.pid", str(os.getpid()))
    if rank == 0:
        write_text_atomically(folder / RANK0_LAUNCH, os.environ.get(LAUNCH_ID_ENV, ""))
    try:
        if job.launch.strategy != "single":
            init_distributed(job.config.device, job.launch.collective_timeout_s)
        settings = job.make_settings()
        trained = train_and_log(
            job.feature_set,
            job.config,
            Lake(settings.lake_dir),
            settings.tracking,
            job.run_name,
            job.launch,
            checkpoint_dir=job.checkpoint_dir(),
            job_key=job.key,
        )
        if trained is not None:
            write_text_atomically(folder / "result.json", trained.model_dump_json())
        if dist.is_initialized():
            # The launchers of other nodes read result.json when their workers exit: no rank
            # leaves before rank 0 has written it.
            dist.barrier()
    except TrainingTerminated:
        return 143  # the MLflow run is already marked KILLED
    except Exception as exc:
        error = {
            "rank": rank,
            "attempt": attempt,
            "type": type(exc).__name__,
            "message": str(exc)[:2000],
            "transient": _is_transient(exc),
        }
        write_text_atomically(folder / f"error-rank{rank}-attempt{attempt}.json", json.dumps(error))
        raise
    finally:
        shutdown_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
