"""The data contract: typed coercion, then pandera checks; each failing row is quarantined
with every reason it failed, and ``rows_in == clean + quarantined`` always holds.

pandera fits: its lazy validation reports every failure with the row index, which is
exactly what a row-level quarantine needs. Typing is done here first, because a value
that cannot be parsed is a row-level failure, not a reason to reject the whole table.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pandera.pandas as pa

from mlsys_core.spec import ColumnRule, TableContract

REASON = "_quarantine_reason"


class ContractError(ValueError):
    """The table as a whole breaks the contract (for example a column is missing)."""


@dataclass
class CleanResult:
    clean: pd.DataFrame
    quarantined: pd.DataFrame
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def rows_in(self) -> int:
        return len(self.clean) + len(self.quarantined)


def _coerce(values: pd.Series, rule: ColumnRule) -> pd.Series:
    if rule.dtype in ("int", "float"):
        return pd.to_numeric(values, errors="coerce").astype("float64")
    if rule.dtype == "datetime":
        return pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
    return values.astype("string").astype(object).where(values.notna(), None)


def _checks(rule: ColumnRule) -> list[pa.Check]:
    checks = []
    if rule.dtype == "int":
        checks.append(
            pa.Check(lambda s: s.isna() | (s % 1 == 0), element_wise=False, name="integer")
        )
    if rule.ge is not None:
        checks.append(pa.Check.ge(rule.ge))
    if rule.le is not None:
        checks.append(pa.Check.le(rule.le))
    if rule.allowed is not None:
        checks.append(pa.Check.isin(rule.allowed))
    return checks


def to_pandera(contract: TableContract) -> pa.DataFrameSchema:
    """The pandera schema for the column checks that follow typing.

    Key uniqueness is checked afterwards, among rows that pass: a bad first copy of a key
    must not push a good later copy into quarantine as its duplicate.
    """
    return pa.DataFrameSchema(
        {
            name: pa.Column(checks=_checks(rule), nullable=rule.nullable, required=True)
            for name, rule in contract.columns.items()
        }
    )


def _check_failures(
    frame: pd.DataFrame, contract: TableContract, table: str, unparsable: dict[str, set[int]]
) -> list[tuple[int, str]]:
    """(row, reason) for every pandera check a typed row fails."""
    try:
        to_pandera(contract).validate(frame, lazy=True)
    except pa.errors.SchemaErrors as err:
        cases = err.failure_cases
        if cases["index"].isna().any():  # a table-level failure has no row to blame
            raise ContractError(f"{table}: {err}") from err
    else:
        return []
    failures = []
    for idx, column, failed in cases[["index", "column", "check"]].itertuples(index=False):
        row, check = int(idx), str(failed)
        if check == "not_nullable":
            if row not in unparsable.get(column, ()):  # already said why it is null
                failures.append((row, f"{column}: null"))
        elif check.startswith("isin("):
            failures.append((row, f"{column}: not an allowed value"))
        else:
            failures.append((row, f"{column}: {check}"))
    return failures


def clean_table(
    raw: pd.DataFrame,
    contract: TableContract,
    table: str = "table",
    seen_keys: set[int] | None = None,
) -> CleanResult:
    """Split raw rows into clean rows and quarantined rows, each with a reason.

    ``seen_keys`` carries the hashed unique keys of earlier batches of the same table, so a
    table cleaned batch by batch quarantines a repeat exactly as a whole one would; clean
    rows add their keys to it.
    """
    if missing := sorted(set(contract.columns) - set(raw.columns)):
        raise ContractError(f"{table}: columns required by the contract are missing: {missing}")
    frame = raw.reset_index(drop=True).copy()
    reasons: dict[int, dict[str, None]] = {}  # row -> ordered set of reasons

    def flag(row: int, reason: str) -> None:
        reasons.setdefault(row, {})[reason] = None

    unparsable: dict[str, set[int]] = {}
    for name, rule in contract.columns.items():
        typed = _coerce(frame[name], rule)
        rows = np.flatnonzero((frame[name].notna() & typed.isna()).to_numpy())
        unparsable[name] = {int(i) for i in rows}
        for i in rows:
            flag(int(i), f"{name}: not a {rule.dtype}")
        frame[name] = typed
    for row, reason in _check_failures(frame, contract, table, unparsable):
        flag(row, reason)
    if contract.unique:
        passing = frame.drop(index=list(reasons))
        hashes = pd.util.hash_pandas_object(passing[contract.unique], index=False)
        repeated = hashes.duplicated(keep="first")
        if seen_keys is not None:
            repeated |= hashes.isin(seen_keys)
            seen_keys.update(hashes[~repeated].tolist())
        for row in passing.index[repeated.to_numpy()]:
            flag(int(row), f"duplicate key ({', '.join(contract.unique)})")
    bad = sorted(reasons)
    quarantined = raw.reset_index(drop=True).iloc[bad].reset_index(drop=True)
    quarantined[REASON] = ["; ".join(reasons[i]) for i in bad]
    clean = frame.drop(index=bad).reset_index(drop=True)
    counts = Counter(r for i in bad for r in reasons[i])
    result = CleanResult(clean=clean, quarantined=quarantined, reasons=counts)
    if result.rows_in != len(raw):
        raise AssertionError(f"{table}: rows lost in cleaning ({result.rows_in} != {len(raw)})")
    return result
