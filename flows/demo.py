"""``make demo``: ``ml_pipeline`` on a dataset, with Prefect's temporary server started
while the pipeline's heavy modules load, not after.

Without a configured API (``PREFECT_API_URL``), the first flow call starts a temporary
local server and waits for it; ``python -m flows.pipeline`` first imports torch, MLflow and
pandas (every flow, task and core module), and only then pays that start. Here the server
starts on a thread right away, its process boots beside the imports, and the flow finds it
running. When ``mlsys prefect-server up`` keeps a server for this Prefect home, the demo
uses it and starts none. The start-up limit is raised from Prefect's 20 s (unless set),
since a loaded machine misses it while the imports compete for the cores.
"""

from __future__ import annotations

import os
import threading

from mlsys_core.stack import prefect_server


def main(argv: list[str] | None = None) -> int:
    timeout = prefect_server.STARTUP_TIMEOUT
    os.environ.setdefault(timeout, prefect_server.SERVER_SETTINGS[timeout])
    api = prefect_server.use_local_server()
    if api is not None:
        print(f"Prefect: the running server at {api} (mlsys prefect-server up)", flush=True)
    from prefect.settings import PREFECT_API_URL  # noqa: PLC0415 - after the default above

    errors: list[BaseException] = []
    starting = None
    if not PREFECT_API_URL.value():
        from flows.embedded import use_temporary_server  # noqa: PLC0415

        def start() -> None:
            try:
                use_temporary_server().start()  # the instance the first flow call reuses
            except BaseException as err:  # noqa: BLE001 - raised on the main thread below
                errors.append(err)

        starting = threading.Thread(target=start, name="prefect-server-start", daemon=True)
        starting.start()
    from flows import pipeline  # noqa: PLC0415 - the heavy imports, beside the server start

    if starting is not None:
        starting.join()  # a server still starting must not be started again by the flow
        if errors:
            raise errors[0]
    return pipeline.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
