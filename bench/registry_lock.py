"""What does the registry lock cost a flow's stage moves?

Baseline: the lock flows used to take, a Prefect global concurrency limit of one per model
(created on first use, taken with ``strict=True``), held across Prefect workers through the
Prefect API. Ours: ``RegistryLock``, the ticket lock in the MLflow store that flows, the CLI
and plain Python all take. Both are measured the same way, in the same run: tasks of one
flow on the embedded Prefect API that take the lock and release it (what ``move_stage`` pays
on top of its own store calls), first one at a time, then from ``--threads`` tasks at once.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import scratch_folder, use_isolated_state  # noqa: E402


def prefect_limit(model_name: str) -> Callable[[], AbstractContextManager]:
    """The old flow lock (tasks/registry.py before the MLflow lock), as the baseline."""
    from prefect.client.orchestration import get_client  # noqa: PLC0415
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate  # noqa: PLC0415
    from prefect.concurrency.sync import concurrency  # noqa: PLC0415
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound  # noqa: PLC0415

    name = f"mlsys-registry-{model_name}"

    @contextmanager
    def lock() -> Iterator[None]:
        with get_client(sync_client=True) as client:
            try:
                client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                try:
                    client.create_global_concurrency_limit(
                        GlobalConcurrencyLimitCreate(name=name, limit=1)
                    )
                except ObjectAlreadyExists:
                    pass
        with concurrency(name, occupy=1, strict=True, timeout_seconds=300):
            yield

    return lock


def mlflow_lock(uri: str, model_name: str) -> Callable[[], AbstractContextManager]:
    from mlsys_core.registry.locking import RegistryLock  # noqa: PLC0415
    from mlsys_core.tracking import tracking_client  # noqa: PLC0415

    lock = RegistryLock(tracking_client(uri), model_name)
    return lambda: lock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="lock round trips, one at a time")
    parser.add_argument("--threads", type=int, default=4, help="tasks at once, contended")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    with scratch_folder("mlsys-bench-registry-lock-", keep=args.keep) as folder:
        use_isolated_state(folder / "state")
        run(args, f"sqlite:///{folder / 'state' / 'mlflow.db'}")


def run(args: argparse.Namespace, uri: str) -> None:
    from prefect import flow, task  # noqa: PLC0415
    from prefect.cache_policies import NO_CACHE  # noqa: PLC0415
    from prefect.task_runners import ThreadPoolTaskRunner  # noqa: PLC0415

    from flows.embedded import embedded_run  # noqa: PLC0415

    def measure(make: Callable[[], AbstractContextManager]) -> tuple[list[float], float]:
        @task(cache_policy=NO_CACHE)
        def hold() -> float:
            start = time.perf_counter()
            with make():
                pass
            return time.perf_counter() - start

        @flow(name="bench-registry-lock", task_runner=ThreadPoolTaskRunner(args.threads))
        def rounds() -> tuple[list[float], float]:
            hold()  # first use: creates the limit or the lock model
            alone = [hold() for _ in range(args.rounds)]
            start = time.perf_counter()
            for future in [hold.submit() for _ in range(args.rounds)]:
                future.result()
            return alone, time.perf_counter() - start

        return rounds()

    with embedded_run():
        results = {
            "prefect limit": measure(prefect_limit("bench")),
            "mlflow lock": measure(mlflow_lock(uri, "bench")),
        }
    print(f"\nlock round trip inside a task, {args.rounds} rounds ({os.cpu_count()} cores)")
    for label, (alone, _) in results.items():
        print(
            f"  {label:14s} median {1000 * statistics.median(alone):8.1f} ms   "
            f"max {1000 * max(alone):8.1f} ms"
        )
    for label, (_, contended) in results.items():
        print(f"  {label:14s} {args.rounds} rounds from {args.threads} threads: {contended:6.2f} s")
    base = statistics.median(results["prefect limit"][0])
    ours = statistics.median(results["mlflow lock"][0])
    print(f"  ratio          {ours / base:8.3f}   (mlflow lock / prefect limit, median)")


if __name__ == "__main__":
    main()
