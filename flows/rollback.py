"""Put the previous production version back, and retire the current one."""

from __future__ import annotations

from flows.embedded import flow
from mlsys_core.config import Settings
from mlsys_core.datasets import resolve_model_name
from mlsys_core.registry.lifecycle import AuditEvent
from tasks.metrics import metered
from tasks.registry import rollback_model


@flow(name="rollback", log_prints=True)
@metered()
def rollback(reason: str, model_name: str | None = None, actor: str = "prefect") -> AuditEvent:
    """Move ``production``/``champion`` back to the version that served before; recorded
    in the audit history with ``reason``."""
    settings = Settings()
    name = resolve_model_name(model_name or settings.model_name, settings.dataset)
    event = rollback_model(name, actor, reason, settings)
    print(f"{name}: production rolled back from v{event.from_version} to v{event.to_version}")
    return event
