"""Tests for mlsys_core/messages.py: a refused config or spec, in one line."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mlsys_core.messages import invalid
from mlsys_core.spec import ColumnRule, TableContract
from mlsys_core.training.config import TrainConfig


def _refusal(build) -> str:  # noqa: ANN001 -- any callable that raises
    with pytest.raises(ValidationError) as err:
        build()
    return invalid(err.value)


def test_every_problem_is_named_where_it_is_and_none_is_dropped():
    said = _refusal(lambda: TrainConfig.model_validate({"epochs": 0, "hiden": [3]}))
    assert said == (
        "epochs: Input should be greater than or equal to 1; hiden: Extra inputs are not permitted"
    )
    # Two columns with problems, named like models (CamelCase) but no union's members: both.
    said = _refusal(
        lambda: TableContract.model_validate(
            {"columns": {"BookedAt": {"dtype": "time"}, "Amount": {"dtype": "int", "unit": "s"}}}
        )
    )
    assert said.startswith("columns.BookedAt.dtype: Input should be 'int'")
    assert "columns.Amount: ['unit'] apply to datetime columns only, not int" in said


def test_a_model_check_reads_as_written():
    said = _refusal(lambda: ColumnRule(dtype="datetime", format="%Y", unit="s"))
    assert said == "a datetime has a format or a unit, not both"
