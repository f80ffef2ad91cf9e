"""Tests for mlsys_core/messages.py: a refused config or spec, in one line."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mlsys_core.messages import invalid, unknown_field
from mlsys_core.spec import ColumnRule, TableContract
from mlsys_core.training.config import TrainConfig


def _refusal(build) -> str:  # noqa: ANN001 -- any callable that raises
    with pytest.raises(ValidationError) as err:
        build()
    return invalid(err.value)


def test_every_problem_is_named_where_it_is_and_none_is_dropped():
    said = _refusal(lambda: TrainConfig.model_validate({"epochs": 0, "hiden": [3]}))
    assert said == (
        "epochs: Input should be greater than or equal to 1; hiden: no field 'hiden': did you "
        "mean 'hidden'?"
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


@pytest.mark.parametrize(
    ("sent", "said"),
    [
        ("duration", "no field 'duration': did you mean 'Duration'?"),  # its case
        ("total stops", "no field 'total stops': did you mean 'Total_Stops'?"),
        ("order_date", "no field 'order_date': did you mean 'Order Date'?"),
        ("Airlines", "no field 'Airlines': did you mean 'Airline'?"),  # a typo
        ("Datetime", "no field 'Datetime': did you mean 'Datetime_of_Journey'?"),  # cut short
        ("Price", "no field 'Price'"),  # nothing like it
    ],
)
def test_a_field_a_record_lacks_names_the_one_it_likely_meant(sent: str, said: str):
    known = ["Duration", "Total_Stops", "Order Date", "Airline", "Datetime_of_Journey"]
    assert unknown_field(sent, known) == said


def test_a_config_key_cut_short_names_the_key():
    said = _refusal(lambda: TrainConfig.model_validate({"batch": 64}))
    assert said == "batch: no field 'batch': did you mean 'batch_size'?"
