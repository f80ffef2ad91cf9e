"""How a spec computes each raw input its model takes, and where two specs differ in it.

A model is trained and evaluated on feature rows built with one spec. Rows built with another
spec can be given to it only when every input it takes is computed alike in both; a column
missing there is imputed by the model without a word, and a view whose window changed under
the same name hands it other values. Scoring (batch, gate, drift, serving) checks this instead
of spec equality, so a retrain that only moved the sources to newer data, added a feature the
model does not take, or changed the label or the split still finds the model's rows.

What counts for each input:
- a base column: the base source and how the column's values are read (type, time format,
  unit, zone); the contract's checks there decide which events exist, not their values;
- a joined column (lookup, as-of join, feature view): the join or the view (only its
  aggregation or column that makes this feature), and the whole contract of the table it
  reads, whose checks decide which rows are joined or counted.
Sources (where the data is read from) never count: newer data is the point of a retrain.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlsys_core.spec.definitions import WindowView

if TYPE_CHECKING:
    from mlsys_core.spec import DatasetSpec

_VALUE_RULE = {"dtype", "format", "unit", "timezone", "strip", "decimal", "negative"}


def _contract(spec: DatasetSpec, source: str) -> dict[str, Any] | None:
    contract = spec.contracts.get(source)
    return contract.model_dump(mode="json") if contract else None


def _base_rule(spec: DatasetSpec, column: str) -> dict[str, Any] | None:
    contract = spec.contracts.get(spec.base)
    rule = contract.columns.get(column) if contract else None
    return rule.model_dump(mode="json", include=_VALUE_RULE) if rule else None


def input_recipes(spec: DatasetSpec) -> dict[str, dict[str, Any]]:
    """Each raw input of ``spec``'s model, with what decides its values (see the module)."""
    joined: dict[str, dict[str, Any]] = {}
    for kind, joins in (("lookup", spec.lookups), ("as_of", spec.as_of_joins)):
        for join in joins:
            for right, out in join.columns.items():
                definition = join.model_dump(mode="json", exclude={"columns"})
                joined[out] = {
                    kind: definition | {"column": right},
                    "contract": _contract(spec, join.source),
                }
    for view in spec.feature_views:
        contract = _contract(spec, view.source)
        if isinstance(view, WindowView):
            # ttl only ages served values; the rows the model was evaluated on never used it.
            definition = view.model_dump(mode="json", exclude={"aggregations", "ttl"})
            for agg in view.aggregations:
                made = {"aggregation": agg.model_dump(mode="json")}
                joined[agg.name] = {"view": definition | made, "contract": contract}
        else:
            definition = view.model_dump(mode="json", exclude={"columns"})
            for column, out in view.columns.items():
                joined[out] = {"view": definition | {"column": column}, "contract": contract}
    return {
        column: joined.get(column)
        or {"base": {"source": spec.base, "rule": _base_rule(spec, column)}}
        for column in spec.input_columns
    }


def input_differences(model: DatasetSpec, rows: DatasetSpec) -> list[str]:
    """Inputs of ``model``'s model that rows built with ``rows`` lack or compute otherwise,
    each with what differs (``rides_7d: view.aggregation.window (trained P7D, here P30D)``);
    empty when they can be scored."""
    have, want = input_recipes(rows), input_recipes(model)
    out = []
    for column, recipe in want.items():
        other = have.get(column)
        if other is None:
            out.append(f"{column}: not built")
        elif other != recipe:
            out.append(f"{column}: {', '.join(_changed(recipe, other))}")
    return out


def _changed(trained: dict[str, Any], here: dict[str, Any], prefix: str = "") -> list[str]:
    """Where two recipes differ, down to the field, with both values when they are short."""
    out = []
    for key in sorted(set(trained) | set(here)):
        left, right = trained.get(key), here.get(key)
        if left == right:
            continue
        if isinstance(left, dict) and isinstance(right, dict):
            out += _changed(left, right, f"{prefix}{key}.")
        elif _short(left) and _short(right):
            out.append(f"{prefix}{key} (trained {left}, here {right})")
        else:
            out.append(f"{prefix}{key}")
    return out


def _short(value: object) -> bool:
    return value is None or (isinstance(value, str | int | float) and len(str(value)) <= 40)
