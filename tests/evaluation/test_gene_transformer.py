"""The TOSICA-like gene-group transformer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scdd.evaluation.config import GeneTransformerParams
from scdd.evaluation.gene_transformer import (
    GeneGroupTransformer,
    evaluate_gene_transformer,
)
from scdd.preprocessing import log_normalise
from tests.conftest import make_counts_adata


def _split(seed: int):
    adata = log_normalise(
        make_counts_adata((20, 15, 10), n_genes=40, seed=seed),
        target_sum=1e4,
        keep_counts=False,
    )
    return adata.X, adata.obs["cell_type"].cat.codes.to_numpy().astype(np.int64)


def test_every_gene_lands_in_exactly_one_token() -> None:
    model = GeneGroupTransformer(
        10, 3, GeneTransformerParams(genes_per_token=4, d_model=8, heads=2)
    )
    assert model.n_tokens == 3  # ceil(10 / 4); the last group has 2 pad slots
    groups = model.groups.numpy()
    assert sorted(groups[groups < 10]) == list(range(10))
    assert (groups == 10).sum() == 2
    # a gene outside every group would not move the output; each gene does
    x = torch.zeros(1, 10)
    base = model.eval()(x)
    for gene in range(10):
        bumped = x.clone()
        bumped[0, gene] = 5.0
        assert not torch.allclose(model(bumped), base)


@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("training", [False, True])
def test_class_token_shortcut_equals_the_whole_encoder(
    depth: int, training: bool
) -> None:
    """In eval mode, and in training mode without dropout (the attention
    path that training takes, deterministically)."""
    torch.manual_seed(0)
    model = GeneGroupTransformer(
        50,
        3,
        GeneTransformerParams(
            genes_per_token=4,
            d_model=8,
            heads=2,
            depth=depth,
            dropout=0.0 if training else 0.1,
        ),
    )
    model.train(training)
    for layer in model.encoder.layers:  # MultiheadAttention starts them at 0
        torch.nn.init.normal_(layer.self_attn.in_proj_bias)
    x = torch.rand(5, 50)
    padded = torch.nn.functional.pad(x, (0, 1))[:, model.groups]
    tokens = torch.einsum(
        "btg,tgd->btd", padded.view(5, model.n_tokens, 4), model.token_weight
    )
    tokens = torch.cat([model.cls.expand(5, -1, -1), tokens + model.token_bias], 1)
    whole = model.head(model.encoder(tokens)[:, 0])
    torch.testing.assert_close(model(x), whole, atol=1e-5, rtol=1e-5)


def test_transformer_learns_marker_genes_reproducibly() -> None:
    (x, y), (x_test, y_test) = _split(0), _split(1)
    kwargs = {
        "num_classes": 3,
        "params": GeneTransformerParams(
            genes_per_token=8,
            d_model=16,
            heads=2,
            n_inits=1,
            steps=90,
            lr=3e-3,
            batch_size=16,
        ),
    }
    first = evaluate_gene_transformer(x, y, x_test, y_test, **kwargs)
    again = evaluate_gene_transformer(x.toarray(), y, x_test, y_test, **kwargs)
    assert first["accuracy_mean"] > 0.9
    assert first["per_init"] == again["per_init"]  # seeded, sparse == dense


def test_transformer_refuses_bad_settings() -> None:
    (x, y), (x_test, y_test) = _split(0), _split(1)
    with pytest.raises(ValueError, match="divisible by heads"):
        GeneTransformerParams(d_model=10, heads=4)
    with pytest.raises(ValueError, match="align_genes"):
        evaluate_gene_transformer(
            x, y, x_test[:, :5], y_test, num_classes=3, params=GeneTransformerParams()
        )
