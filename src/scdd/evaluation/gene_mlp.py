"""A gene-level MLP without F: a cross-architecture evaluation model.

The network reads log-normalised genes directly (``G -> hidden -> C``, ReLU),
so it shows whether a synthetic set carries label information outside the
foundation model's latent space, the paper's "unseen architecture" test
(Table IV).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from torch import nn

from scdd.evaluation.config import GeneMLPParams
from scdd.evaluation.gene_classifier import Matrix, evaluate_gene_classifier


def build_gene_mlp(n_genes: int, num_classes: int, hidden: int) -> nn.Module:
    """``Linear(G, hidden) -> ReLU -> Linear(hidden, C)``."""
    return nn.Sequential(
        nn.Linear(n_genes, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
    )


def evaluate_gene_mlp(  # noqa: PLR0913
    train_x: Matrix,
    train_labels: np.ndarray,
    test_x: Matrix,
    test_labels: np.ndarray,
    *,
    num_classes: int,
    params: GeneMLPParams,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> dict:
    """Train and score the gene MLP (``params.hidden`` units) several times.

    ``params``' training settings, the other arguments and the result are
    those of :func:`scdd.evaluation.gene_classifier.evaluate_gene_classifier`.
    """
    return evaluate_gene_classifier(
        partial(build_gene_mlp, train_x.shape[1], num_classes, params.hidden),
        train_x,
        train_labels,
        test_x,
        test_labels,
        num_classes=num_classes,
        params=params,
        seed=seed,
        device=device,
        progress=progress,
        name="gene MLP",
    )
