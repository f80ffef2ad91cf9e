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

from mlsys_core.data.contract import clean_table, typed_rules
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

    Both outputs get a fixed schema whatever the batch holds -- every column as its type
    (declared, or ``types``: recorded from the data), quarantined rows as their raw text --
    so every part of one table has the same column types and the table reads as one.
    """

    def __init__(
        self,
        contract: TableContract,
        table: str,
        types: Mapping[str, str] | None = None,
        columns: list[str] | None = None,
    ) -> None:
        self.contract = contract
        self.table = table
        self.rules = typed_rules(contract, types)
        # Every column of the input's parts: a file that lacks one (a column added in a
        # later file of a landing folder) gets it as nulls, so each output keeps one schema.
        self.columns = columns
        self.seen_keys: set[int] = set()
        self.reasons: Counter[str] = Counter()

    def __call__(self, frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
        if self.columns is not None and list(frame.columns) != self.columns:
            frame = frame.reindex(columns=self.columns)
        result = clean_table(
            frame, self.contract, self.table, self.seen_keys, types=self._undeclared()
        )
        self.reasons.update(result.reasons)
        return {MAIN: self._typed(result.clean), QUARANTINE: text_frame(result.quarantined)}

    def _undeclared(self) -> dict[str, str]:
        return {n: r.dtype for n, r in self.rules.items() if n not in self.contract.columns}

    def _typed(self, clean: pd.DataFrame) -> pd.DataFrame:
        out = clean.copy()
        for name in out.columns:
            rule = self.rules.get(name)
            if rule is not None and rule.dtype == "string":
                out[name] = out[name].astype("string")
            elif rule is None:
                # No type recorded: the column has held no value so far. Null stays null (a
                # later part's typed column unifies with it); a stray value is kept as text.
                if out[name].notna().any():
                    out[name] = _text(out[name])
                else:
                    out[name] = pd.Series([None] * len(out), index=out.index, dtype=object)
        return out


def _text(values: pd.Series) -> pd.Series:
    return values.astype("string").where(values.notna(), None).astype("string")


def text_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Every column as nullable text: rejected rows keep what arrived, in one schema."""
    return pd.DataFrame({c: _text(frame[c]) for c in frame.columns}, index=frame.index)
