"""Nodes of the ``evaluate`` pipeline: synthetic set -> ``metrics.json``.

Models are trained on the synthetic set and scored on the real test split;
the same models trained on the full training split give the reference that
retention divides by (its own node and catalog entry, so it can be cached).
Fidelity compares the synthetic cells with the real training cells; privacy
compares their nearest-neighbour distances to training vs test cells. The
work is done by :mod:`scdd.evaluation.scoring`; these wrappers hand it the
parameter groups (``params:evaluate`` or its sub-groups) and single fields.

The splits (``train_adata``, ``test_adata``) arrive lazy from the catalog:
the references train on a stratified sample read once
(``evaluate.reference_max_cells``), test predictions and fidelity moments read
the splits one row block at a time; nothing holds a whole split's genes.
"""

from __future__ import annotations

import logging
from typing import Any

import anndata as ad

from scdd.distill.real_cells import RealCellStats
from scdd.evaluation import scoring
from scdd.models.foundation import FoundationModel
from scdd.params import DataParams, DistillParams, EvaluateParams, FoundationParams
from scdd.run_context import current_run

logger = logging.getLogger(__name__)


def select_heldout_split(
    test: ad.AnnData,
    test_embeddings: ad.AnnData,
    validation: ad.AnnData,
    validation_embeddings: ad.AnnData,
    params: EvaluateParams,
) -> tuple[ad.AnnData, ad.AnnData]:
    """The cells every model is scored on: ``evaluate.split``.

    ``validation`` while choosing settings, ``test`` (the default) for the
    numbers reported; both arrive lazy, so the other is never read.
    """
    if params.split == "validation":
        logger.info("Scoring on the validation split (%d cells)", validation.n_obs)
        return validation, validation_embeddings
    logger.info("Scoring on the test split (%d cells)", test.n_obs)
    return test, test_embeddings


def embed_synthetic_set(
    synthetic: ad.AnnData,
    train_embeddings: ad.AnnData,
    foundation: FoundationModel,
    data: DataParams,
    foundation_params: FoundationParams,
) -> ad.AnnData:
    """F(synthetic genes), or the stored features of a feature-only set.

    Args:
        synthetic: the synthetic set: genes in ``X`` (any gene order; aligned
            to F's here) or ``n_vars == 0`` with ``obsm["X_foundation"]``.
        train_embeddings: cached F(train) (gives the class names and width).
        foundation: frozen E and D (with their ``min_gene_overlap``).
        data: ``params:data``.
        foundation_params: ``params:foundation`` (``embed.chunk_size``).

    Returns:
        AnnData with ``X`` = features ``[n_synthetic, d]`` and the synthetic
        cells' ``obs`` (see :func:`scdd.evaluation.scoring.embed_synthetic`).
    """
    run = current_run()
    return scoring.embed_synthetic(
        synthetic,
        train_embeddings,
        foundation,
        label_key=data.label_key,
        chunk_size=foundation_params.embed.chunk_size,
        device=run.torch_device,
        progress=run.show_progress,
    )


def evaluate_full_reference(
    train: ad.AnnData,
    test: ad.AnnData,
    train_embeddings: ad.AnnData,
    test_embeddings: ad.AnnData,
    params: EvaluateParams,
    data: DataParams,
) -> dict[str, Any]:
    """The evaluation models trained on the whole training split (the
    "Original dataset" row; the denominator of retention).

    It does not depend on the synthetic set, so it is its own catalog entry
    (``full_reference_metrics``) and ``--only-missing-outputs`` reuses it.
    The linear head uses ``evaluate.f_head.reference_batch_size`` and
    ``reference_epochs``, capped at ``reference_max_steps`` steps
    (:meth:`EvaluateParams.for_reference`).

    Returns:
        ``{"label_key", "categories", "n_train", "n_test", "models": {name:
        result}}``.
    """
    return scoring.full_reference(
        train,
        test,
        train_embeddings,
        test_embeddings,
        evaluate=params.for_reference(),
        label_key=data.label_key,
        **current_run().kwargs(),
    )


def evaluate_synthetic_models(  # noqa: PLR0913
    synthetic: ad.AnnData,
    synthetic_embeddings: ad.AnnData,
    test: ad.AnnData,
    test_embeddings: ad.AnnData,
    full_reference: dict[str, Any],
    params: EvaluateParams,
    data: DataParams,
) -> dict[str, Any]:
    """The evaluation models trained on the synthetic set, with retention.

    Args:
        synthetic: the synthetic set (genes, or feature-only).
        synthetic_embeddings: output of :func:`embed_synthetic_set`.
        test: real test cells (log-normalised, data gene space; lazy or in
            memory).
        test_embeddings: cached F(test).
        full_reference: output of :func:`evaluate_full_reference`.
        params: ``params:evaluate``.
        data: ``params:data``.

    Returns:
        ``{"models": {name: result or None}, "skipped": {name: reason}}``;
        each result has ``retention`` and the reference's scores (``full``).
    """
    return scoring.synthetic_model_metrics(
        synthetic,
        synthetic_embeddings,
        test,
        test_embeddings,
        full_reference,
        evaluate=params,
        label_key=data.label_key,
        **current_run().kwargs(),
    )


def measure_fidelity(  # noqa: PLR0913
    synthetic: ad.AnnData,
    synthetic_embeddings: ad.AnnData,
    train: ad.AnnData,
    train_embeddings: ad.AnnData,
    real_cell_stats: dict[str, Any],
    params: EvaluateParams,
    data: DataParams,
) -> dict[str, Any]:
    """Gene-level fidelity (moments, sparsity, markers) and MMD in F-space
    (``evaluate.fidelity``; see :func:`scdd.evaluation.scoring.fidelity`);
    the real class moments come from the cached ``real_cell_stats``."""
    return scoring.fidelity(
        synthetic,
        synthetic_embeddings,
        train,
        train_embeddings,
        label_key=data.label_key,
        params=params.fidelity,
        seed=current_run().seed,
        real_stats=RealCellStats.from_checkpoint(real_cell_stats),
    )


def measure_privacy(  # noqa: PLR0913
    synthetic: ad.AnnData,
    synthetic_embeddings: ad.AnnData,
    train: ad.AnnData,
    train_embeddings: ad.AnnData,
    heldout: ad.AnnData,
    heldout_embeddings: ad.AnnData,
    distill: DistillParams,
    data: DataParams,
) -> dict[str, Any]:
    """Nearest-record ratios, the membership attacks and copies, in F-space
    and gene space, judged by ``distill.privacy``'s guard."""
    return scoring.privacy(
        synthetic,
        synthetic_embeddings,
        train=train,
        train_embeddings=train_embeddings,
        heldout=heldout,
        heldout_embeddings=heldout_embeddings,
        params=distill.privacy,
        label_key=data.label_key,
        seed=current_run().seed,
    )


def assemble_metrics(
    synthetic: ad.AnnData,
    model_metrics: dict[str, Any],
    fidelity: dict[str, Any],
    privacy: dict[str, Any],
    data: DataParams,
) -> dict[str, Any]:
    """The ``metrics.json`` document, with one summary log line per model.

    Returns:
        ``{"method", "spc", "label_key", "n_synthetic", "feature_only",
        "models", "skipped", "fidelity", "privacy"}``.
    """
    return scoring.metrics_document(
        synthetic, model_metrics, fidelity, privacy, label_key=data.label_key
    )
