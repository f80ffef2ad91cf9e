"""Processing a table as a chain of steps over Arrow record batches.

A table is never held whole: batches of ``batch_size`` rows flow through the steps one at a
time and into sinks that append to Parquet, so peak memory follows the batch size, not the
table. A step may route rows to a side output (the quarantine) besides the main line.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

import pandas as pd
import pyarrow as pa

from mlsys_core.data.contract import clean_table
from mlsys_core.spec import TableContract

MAIN = "main"
QUARANTINE = "quarantine"
Sink = Callable[[pd.DataFrame], None]


class Step(Protocol):
    """One processor: takes a batch, returns named outputs; ``MAIN`` goes on down the chain."""

    def __call__(self, frame: pd.DataFrame) -> Mapping[str, pd.DataFrame]: ...


def run_chain(
    batches: Iterable[pa.RecordBatch], steps: Sequence[Step], sinks: Mapping[str, Sink]
) -> Counter[str]:
    """Push every batch through ``steps``; returns rows in and rows per sink."""
    counts: Counter[str] = Counter()
    for batch in batches:
        frame = batch.to_pandas()
        counts["rows_in"] += len(frame)
        for step in steps:
            outputs = step(frame)
            for name, side in outputs.items():
                if name != MAIN:
                    _emit(sinks, name, side, counts)
            frame = outputs[MAIN]
        _emit(sinks, MAIN, frame, counts)
    return counts


def _emit(sinks: Mapping[str, Sink], name: str, frame: pd.DataFrame, counts: Counter) -> None:
    if name not in sinks:
        raise KeyError(f"no sink for output {name!r}")
    sinks[name](frame)
    counts[name] += len(frame)


class ContractStep:
    """The data contract as a step: typed clean rows go on, failing rows go to quarantine.

    Both outputs get a fixed schema whatever the batch holds -- contract columns as typed,
    other columns widened to float64 or string, quarantined rows as their raw text -- so
    the batches of one table always append to one Parquet schema.
    """

    def __init__(self, contract: TableContract, table: str) -> None:
        self.contract = contract
        self.table = table
        self.seen_keys: set[int] = set()
        self.reasons: Counter[str] = Counter()

    def __call__(self, frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
        result = clean_table(frame, self.contract, self.table, self.seen_keys)
        self.reasons.update(result.reasons)
        return {MAIN: self._typed(result.clean), QUARANTINE: text_frame(result.quarantined)}

    def _typed(self, clean: pd.DataFrame) -> pd.DataFrame:
        out = clean.copy()
        for name in out.columns:
            rule = self.contract.columns.get(name)
            if rule is not None and rule.dtype == "string":
                out[name] = out[name].astype("string")
            elif rule is None:
                numeric = pd.api.types.is_numeric_dtype(out[name])
                is_bool = pd.api.types.is_bool_dtype(out[name])
                if numeric and not is_bool:
                    out[name] = out[name].astype("float64")
                elif not pd.api.types.is_datetime64_any_dtype(out[name]):
                    out[name] = _text(out[name])
        return out


def _text(values: pd.Series) -> pd.Series:
    return values.astype("string").where(values.notna(), None).astype("string")


def text_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Every column as nullable text: rejected rows keep what arrived, in one schema."""
    return pd.DataFrame({c: _text(frame[c]) for c in frame.columns}, index=frame.index)
