"""DeepInsight gene layout, gene images and the CNN on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scdd.evaluation.config import DeepInsightCNNParams
from scdd.evaluation.deepinsight_cnn import (
    GeneImage,
    _rotate_to_bounding_rectangle,
    evaluate_deepinsight_cnn,
    fit_pixel_layout,
)
from tests.conftest import make_log_splits


def test_rotation_aligns_a_tilted_rectangle() -> None:
    rng = np.random.default_rng(0)
    box = rng.uniform([0, 0], [4, 1], size=(300, 2))
    box = np.vstack([box, [[0, 0], [4, 0], [0, 1], [4, 1]]])
    angle = np.deg2rad(30)
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    )
    aligned = _rotate_to_bounding_rectangle(box @ rotation.T)
    extent = np.sort(aligned.max(axis=0) - aligned.min(axis=0))
    np.testing.assert_allclose(extent, [1.0, 4.0], atol=1e-6)


@pytest.mark.parametrize("layout", ["tsne", "pca"])
def test_genes_with_the_same_profile_are_neighbours(layout: str) -> None:
    # two blocks of 30 genes, each block high in a different half of the
    # cells; 80 cells, so t-SNE reads the genes' top 50 principal components
    rng = np.random.default_rng(0)
    cells = rng.normal(scale=0.1, size=(80, 60))
    cells[:40, :30] += 3.0
    cells[40:, 30:] += 3.0
    params = DeepInsightCNNParams(pixels=16, layout=layout)
    coords = fit_pixel_layout(np.abs(cells), params, seed=1)
    np.testing.assert_array_equal(
        coords, fit_pixel_layout(np.abs(cells), params, seed=1)
    )
    assert coords.shape == (60, 2) and coords.min() >= 0 and coords.max() < 16
    a, b = coords[:30].mean(axis=0), coords[30:].mean(axis=0)
    spread = max(coords[:30].std(axis=0).max(), coords[30:].std(axis=0).max())
    assert np.linalg.norm(a - b) > 3 * spread
    with pytest.raises(ValueError, match="layout\n.*'tsne' or 'pca'"):
        DeepInsightCNNParams(layout="umap")


def test_gene_image_averages_genes_that_share_a_pixel() -> None:
    coords = np.array([[0, 0], [0, 0], [1, 1]])
    image = GeneImage(coords, pixels=2, scale=4.0)
    out = image(torch.tensor([[2.0, 4.0, 8.0]]))
    assert out.shape == (1, 1, 2, 2)
    # pixel (0, 0): mean(2, 4) / 4; pixel (1, 1): 8 / 4 clipped to 1; others 0
    np.testing.assert_allclose(out[0, 0].numpy(), [[0.75, 0.0], [0.0, 1.0]])


def test_cnn_learns_marker_genes() -> None:
    train, test = make_log_splits(40)
    codes = [
        a.obs["cell_type"].cat.codes.to_numpy().astype(np.int64) for a in (train, test)
    ]
    result = evaluate_deepinsight_cnn(
        train.X,
        codes[0],
        test.X,
        codes[1],
        num_classes=3,
        params=DeepInsightCNNParams(
            pixels=8, width=4, n_inits=2, steps=90, lr=3e-3, batch_size=16
        ),
    )
    assert result["accuracy_mean"] > 0.9 and len(result["per_init"]) == 2
    with pytest.raises(ValueError, match="NaN"):
        bad = train.X.toarray()
        bad[0, 0] = np.nan
        evaluate_deepinsight_cnn(
            bad,
            codes[0],
            test.X,
            codes[1],
            num_classes=3,
            params=DeepInsightCNNParams(),
        )
