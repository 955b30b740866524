"""A gene-level MLP without F: a cross-architecture evaluation model.

The network reads log-normalised genes directly (``G -> hidden -> C``, ReLU),
so it shows whether a synthetic set carries label information outside the
foundation model's latent space, the paper's "unseen architecture" test
(Table IV).
"""

from __future__ import annotations

from functools import partial

import numpy as np
from torch import nn

from scdd.evaluation.gene_classifier import Matrix, evaluate_gene_classifier


def build_gene_mlp(n_genes: int, num_classes: int, hidden: int = 256) -> nn.Module:
    """``Linear(G, hidden) -> ReLU -> Linear(hidden, C)``."""
    return nn.Sequential(
        nn.Linear(n_genes, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
    )


def evaluate_gene_mlp(
    train_x: Matrix,
    train_labels: np.ndarray,
    test_x: Matrix,
    test_labels: np.ndarray,
    *,
    num_classes: int,
    hidden: int = 256,
    **train_kwargs,
) -> dict:
    """Train and score the gene MLP (``hidden`` units) several times.

    ``train_kwargs`` (``n_inits``, ``steps``, ``lr``, ``weight_decay``,
    ``batch_size``, ``seed``, ``device``...) and the result are those of
    :func:`scdd.evaluation.gene_classifier.evaluate_gene_classifier`.
    """
    if hidden < 1:
        raise ValueError("gene_mlp.hidden must be >= 1")
    return evaluate_gene_classifier(
        partial(build_gene_mlp, train_x.shape[1], num_classes, hidden),
        train_x,
        train_labels,
        test_x,
        test_labels,
        num_classes=num_classes,
        name="gene MLP",
        **train_kwargs,
    )
