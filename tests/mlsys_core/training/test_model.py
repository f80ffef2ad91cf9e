"""TabularMLP: category embeddings plus numbers in one float matrix, one logit per row."""

from __future__ import annotations

import pytest
import torch

from mlsys_core.training.config import ModelConfig
from mlsys_core.training.model import TabularMLP


def batch(cardinalities: list[int], n_numeric: int, rows: int) -> torch.Tensor:
    codes = [torch.randint(0, k, (rows, 1)).float() for k in cardinalities]
    return torch.cat([*codes, torch.randn(rows, n_numeric)], dim=1)


# 1.6 * k ** 0.56 worked by hand: k=1 -> 1.6, k=2 -> 2.36, k=10 -> 5.81, k=50 -> 14.31,
# k=100 -> 21.09, k=400 -> 45.84; rounded, then capped at max_embedding_dim.
@pytest.mark.parametrize(
    ("cardinalities", "cap", "expected"),
    [
        ([1, 2, 10, 50], 16, [2, 2, 6, 14]),
        ([100, 400], 16, [16, 16]),
        ([100, 400], 32, [21, 32]),
        ([2, 10], 3, [2, 3]),
    ],
)
def test_embedding_dims_follow_the_capped_rule_of_thumb(
    cardinalities: list[int], cap: int, expected: list[int]
) -> None:
    config = ModelConfig(cardinalities=cardinalities, n_numeric=0, max_embedding_dim=cap)
    assert config.embedding_dims() == expected


def test_network_shapes_follow_the_config() -> None:
    config = ModelConfig(cardinalities=[3, 50], n_numeric=4, hidden=[8, 5])
    model = TabularMLP(config)
    dims = config.embedding_dims()
    assert [tuple(e.weight.shape) for e in model.embeddings] == [(3, dims[0]), (50, dims[1])]
    linears = [m for m in model.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (sum(dims) + 4, 8),
        (8, 5),
        (5, 1),
    ]


@pytest.mark.parametrize("rows", [1, 7])
def test_output_is_one_logit_per_row(rows: int) -> None:
    config = ModelConfig(cardinalities=[3, 5], n_numeric=2)
    model = TabularMLP(config).eval()
    out = model(batch([3, 5], 2, rows))
    assert out.shape == (rows,)
    assert torch.isfinite(out).all()


def test_output_shape_in_training_mode() -> None:
    model = TabularMLP(ModelConfig(cardinalities=[3], n_numeric=2)).train()
    out = model(batch([3], 2, 16))
    assert out.shape == (16,)
    out.sum().backward()  # and gradients reach the embeddings
    assert model.embeddings[0].weight.grad is not None


def test_category_code_zero_is_valid_and_cardinality_is_exclusive() -> None:
    """Code 0 stands for missing or unseen, so it must embed; k is out of range."""
    model = TabularMLP(ModelConfig(cardinalities=[4, 2], n_numeric=1)).eval()
    zeros = torch.tensor([[0.0, 0.0, 0.5]])
    top = torch.tensor([[3.0, 1.0, 0.5]])
    assert torch.isfinite(model(zeros)).all()
    assert torch.isfinite(model(top)).all()
    with pytest.raises(IndexError):
        model(torch.tensor([[4.0, 0.0, 0.5]]))


def test_codes_select_embeddings_and_numbers_pass_through() -> None:
    model = TabularMLP(ModelConfig(cardinalities=[4], n_numeric=2, dropout=0.0)).eval()
    x = torch.tensor([[1.0, 0.3, -0.2]])
    other_code = x.clone()
    other_code[0, 0] = 2.0
    other_number = x.clone()
    other_number[0, 2] = 1.5
    with torch.no_grad():
        base = model(x)
        assert not torch.allclose(base, model(other_code))
        assert not torch.allclose(base, model(other_number))


@pytest.mark.parametrize(("cardinalities", "n_numeric"), [([], 3), ([5, 6], 0)])
def test_only_numbers_or_only_categories(cardinalities: list[int], n_numeric: int) -> None:
    model = TabularMLP(ModelConfig(cardinalities=cardinalities, n_numeric=n_numeric)).eval()
    assert model(batch(cardinalities, n_numeric, 4)).shape == (4,)
