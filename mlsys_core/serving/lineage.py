"""Serving with the spec a registered version was trained with.

``registry.lineage.version_spec`` reads it from the version's lineage, so serving, batch
scoring and materialization need no spec from the user: the version says which. A spec the
user gives anyway must be that one.
"""

from __future__ import annotations

from mlflow import MlflowClient

from mlsys_core.data.cleaning import latest_clean
from mlsys_core.data.lake import Lake
from mlsys_core.features.online import MaterializeResult, OnlineStoreBase
from mlsys_core.features.store import (
    materialize_online,
    online_source_tables,
)
from mlsys_core.registry.lifecycle import alias_version
from mlsys_core.registry.lineage import version_spec
from mlsys_core.spec import DatasetSpec


class SpecMismatchError(ValueError):
    """A spec given for a model version that was trained with another one."""


def alias_spec(
    client: MlflowClient, lake: Lake, name: str, alias: str
) -> tuple[str | None, DatasetSpec | None]:
    """The version ``alias`` points at and its spec (None, None: no such version yet)."""
    version = alias_version(client, name, alias)
    if version is None:
        return None, None
    return version, version_spec(client, lake, name, version)


def spec_differences(given: DatasetSpec, trained: DatasetSpec) -> list[str]:
    """The fields where two specs differ (``features.numeric``, ``sources``, ...)."""
    a, b = given.model_dump(mode="json"), trained.model_dump(mode="json")
    out = []
    for field in sorted(set(a) | set(b)):
        if a.get(field) == b.get(field):
            continue
        left, right = a.get(field), b.get(field)
        if isinstance(left, dict) and isinstance(right, dict):
            sub = [k for k in sorted(set(left) | set(right)) if left.get(k) != right.get(k)]
            out += [f"{field}.{k}" for k in sub] or [field]
        else:
            out.append(field)
    return out


def check_spec(given: DatasetSpec, trained: DatasetSpec, what: str) -> None:
    """Raise :class:`SpecMismatchError`, saying where, unless ``given`` is ``trained``."""
    if given.fingerprint() == trained.fingerprint():
        return
    fields = ", ".join(spec_differences(given, trained)) or "content"
    raise SpecMismatchError(
        f"spec {given.name!r} (fingerprint {given.fingerprint()}) is not the spec {what} was "
        f"trained with ({trained.name!r}, fingerprint {trained.fingerprint()}): they differ in "
        f"{fields}; leave the spec out to use the trained one"
    )


def serving_spec(
    client: MlflowClient,
    lake: Lake,
    name: str,
    alias: str,
    given: DatasetSpec | None,
    default: DatasetSpec | None = None,
) -> tuple[DatasetSpec, str]:
    """The spec to serve ``name`` with, and where it came from.

    The version ``alias`` points at names it in its lineage; a ``given`` spec must be that
    one. Without such a version yet (or one logged outside the pipeline), the given spec,
    else the ``default`` (the configured dataset), is used.
    """
    version, trained = alias_spec(client, lake, name, alias)
    if trained is not None:
        if given is not None:
            check_spec(given, trained, f"{name} v{version}")
        return trained, f"the lineage of {name} v{version} (@{alias})"
    if given is not None:
        return given, "the spec given"
    if default is not None:
        return default, "the configured dataset (MLSYS_DATASET)"
    why = "no version holds @" + alias if version is None else f"v{version} has no lineage"
    raise LookupError(
        f"cannot tell which spec serves {name!r}: {why}, and no spec was given (--spec, "
        "MLSYS_DATASET)"
    )


def materialize_for_version(
    client: MlflowClient, lake: Lake, store: OnlineStoreBase, name: str, version: str
) -> MaterializeResult | None:
    """Fill ``store`` with every feature view, lookup and as-of table ``name`` v``version``
    finds online, from the newest clean snapshots, as of now (for data that has stopped,
    just after its newest row). None: the version has no lineage to read its needs from."""
    spec = version_spec(client, lake, name, version)
    if spec is None:
        return None
    clean = {t: latest_clean(lake, t) for t in online_source_tables(spec)}
    return materialize_online(clean, spec, lake, store)
