"""A child process of the concurrency test: run the ``register`` flow once per
``model:run`` pair, in order, against the Prefect API in ``PREFECT_API_URL`` and the state
folder in ``MLSYS_STATE_DIR``, with the gate's significance level from ``GATE_ALPHA``."""

from __future__ import annotations

import os
import sys

from flows.register import register
from mlsys_core.commands.registry import trained_run
from mlsys_core.config import Settings
from mlsys_core.data.lake import Lake
from mlsys_core.tracking import configure_mlflow


def main(pairs: list[str]) -> None:
    settings = Settings()
    client, lake = configure_mlflow(settings.tracking), Lake(settings.lake_dir)
    for pair in pairs:
        model, run_id = pair.split(":")
        result = register(
            trained=trained_run(client, lake, run_id),
            model_name=model,
            n_bootstrap=200,
            significance=float(os.environ.get("GATE_ALPHA", "0.05")),
            actor=f"flow-worker-{model}",
        )
        print(f"flow {model} v{result.version.version} {result.stage}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
