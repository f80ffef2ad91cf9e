"""Key tuples as dense integer codes, and gathering right-table rows by position: the
pieces every join of the feature store is made of (lookups and as-of joins).

A right table's key tuples are coded once; a batch of left rows is then matched by hash
lookups into the codes (``Index.get_indexer``) and its columns gathered with one ``take``
per column, instead of a merge that re-hashes both sides and re-orders the result.
A key with a null part matches nothing (a pandas merge would match null to null): the online
store never holds such a key, so training rows and served rows agree.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from mlsys_core.spec.definitions import DefinitionError


class KeyIndex:
    """Dense codes ``0..k-1`` for key tuples: :meth:`fit` codes the rows of a frame (-1 for a
    row with a null key part), and :meth:`encode` other rows, the same code for the same
    tuple, -1 for a tuple the fitted frame does not hold or one with a null part.

    The one key coder of the feature store: lookups, as-of joins, the offline store's views
    and the stream's views all code keys here, so they agree on what matches. The index
    holds the distinct keys only, not a code per fitted row: a store keeps one per view."""

    def __init__(self, uniques: list[pd.Index], combined: pd.Index | None) -> None:
        self.uniques = uniques  # per key, its non-null values in code order
        self.combined = combined  # several keys: the tuples' product codes, in code order
        self.sizes = [max(len(u), 1) for u in uniques]
        self.size = len(uniques[0]) if combined is None else len(combined)

    @classmethod
    def fit(cls, frame: pd.DataFrame, keys: list[str]) -> tuple[KeyIndex, np.ndarray]:
        """The index of ``frame[keys]``, and the code of each of its rows."""
        uniques, codes = [], []
        for key in keys:
            code, unique = pd.factorize(frame[key], use_na_sentinel=True)
            uniques.append(warm(pd.Index(unique)))
            codes.append(code.astype(np.int64))
        sizes = [max(len(u), 1) for u in uniques]
        if float(np.prod(sizes, dtype=np.float64)) >= 2**62:
            raise DefinitionError(f"keys {keys}: too many combinations to encode")
        sparse = _combine(codes, sizes, len(frame))
        if len(keys) == 1:  # a key's codes are already dense
            return cls(uniques, None), sparse
        known = sparse >= 0
        dense, combined = pd.factorize(sparse[known])
        out = np.full(len(sparse), -1, dtype=np.int64)
        out[known] = dense
        return cls(uniques, warm(pd.Index(combined))), out

    def encode(self, frame: pd.DataFrame, keys: list[str]) -> np.ndarray:
        """Codes of ``frame[keys]`` (named in the order of the indexed keys); -1 for a row
        with a null key part (no null is indexed) or a tuple the indexed frame lacks."""
        codes = [
            u.get_indexer(frame[k]).astype(np.int64)
            for u, k in zip(self.uniques, keys, strict=True)
        ]
        sparse = _combine(codes, self.sizes, len(frame))
        if self.combined is None:
            return sparse
        dense = self.combined.get_indexer(sparse).astype(np.int64)
        return np.where(sparse >= 0, dense, -1)


def warm(index: pd.Index) -> pd.Index:
    """Build ``index``'s hash table now: pandas builds it lazily on the first lookup, which
    is not safe when that first lookup comes from several threads at once."""
    index.get_indexer(index[:1])
    return index


def _combine(codes: list[np.ndarray], sizes: list[int], rows: int) -> np.ndarray:
    out = np.zeros(rows, dtype=np.int64)
    missing = np.zeros(rows, dtype=bool)
    for code, size in zip(codes, sizes, strict=True):
        out = out * size + code
        missing |= code < 0
    return np.where(missing, -1, out)


def take_column(values: pd.Series, positions: np.ndarray) -> pd.Series | np.ndarray:
    """``values`` at ``positions``, missing where a position is -1 (an integer or boolean
    column then widens to hold the missing values, as a merge would)."""
    return pd.api.extensions.take(column_values(values), positions, allow_fill=True)


def column_values(values: pd.Series) -> np.ndarray | pd.api.extensions.ExtensionArray:
    """A column's data, not copied: its NumPy array, or its extension array (``.array``
    would wrap a NumPy array in a view whose conversion back scans for missing values)."""
    return values.to_numpy() if isinstance(values.dtype, np.dtype) else values.array


def take_rows(
    left: pd.DataFrame, values: Mapping[str, pd.Series], positions: np.ndarray, copy: bool = True
) -> pd.DataFrame:
    """``left`` with each of ``values`` (output name -> right column) gathered at
    ``positions`` (one per left row, -1: no row) as new columns, on ``left``'s index;
    ``copy`` as in :func:`with_columns`."""
    columns = {name: take_column(col, positions) for name, col in values.items()}
    return with_columns(left, columns, copy=copy)


def with_columns(
    left: pd.DataFrame, columns: Mapping[str, object], copy: bool = True
) -> pd.DataFrame:
    """``left`` with ``columns`` (arrays of its length, owned by the result) added at the
    end, replacing any of the same name, in one new frame: no block-by-block concatenation
    or insertion, which cost a join per batch more than the join itself. ``left``'s arrays
    are copied (a plain copy each), so changing the result never changes ``left``.

    ``copy=False`` is for a ``left`` that its caller drops once joined (the intermediate
    frames of a chain of joins): the result takes ``left``'s arrays as they are. Copying
    them at every join of a batch cost about a tenth of feature assembly, most of it
    holding the GIL (an object column's copy touches every object)."""
    if left.columns.has_duplicates:  # no name-to-array mapping: insert one by one
        out = left.copy()
        for name in columns:
            if name in out.columns:
                del out[name]
        for name, values in columns.items():
            out[name] = values
        return out
    kept = {c: column_values(left[c]) for c in left.columns if c not in columns}
    if copy:
        kept = {c: values.copy() for c, values in kept.items()}
    return pd.DataFrame(kept | dict(columns), index=left.index, copy=False)
