"""The task runner a flow's partition-parallel stages use, chosen by configuration.

``MLSYS_TASK_RUNNER`` picks it (threads by default); flows are decorated with the runner
the settings name at import, and ``flow.with_options(task_runner=build(...))`` overrides it
for one call. Every runner gives identical outputs: the lake's ids are content hashes.
Each runs ``Settings.workers`` partitions at once (``MLSYS_MAX_WORKERS``; default: the
cores, up to 4), as the plain ``build_feature_set`` does.
"""

from __future__ import annotations

from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from mlsys_core.config import Settings


def build(settings: Settings | None = None) -> TaskRunner:
    settings = settings or Settings()
    if settings.task_runner == "processes":
        return ProcessPoolTaskRunner(max_workers=settings.workers)
    if settings.task_runner == "dask":
        from prefect_dask import DaskTaskRunner  # noqa: PLC0415 - optional, heavy import

        if settings.dask_address:
            return DaskTaskRunner(address=settings.dask_address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": settings.workers,
                "threads_per_worker": 1,
                "dashboard_address": None,  # no web UI port in a batch job
                "host": "127.0.0.1",
            }
        )
    return ThreadPoolTaskRunner(max_workers=settings.workers)
