"""Nodes of the ``latent_distillation`` pipeline."""

from __future__ import annotations

import logging
import time
from typing import Any

import anndata as ad
import pandas as pd

from scdd.distill.guard import apply_guard
from scdd.distill.inputs import distill_synthetic, prepare_inputs
from scdd.distill.methods import NEEDS_GENERATOR
from scdd.distill.names import LOSS_TERMS
from scdd.distill.real_cells import RealCellStats, summarise_real_cells
from scdd.distill.synthetic import input_var
from scdd.evaluation import scoring
from scdd.models.foundation import FoundationModel
from scdd.params import DataParams, DistillParams, FoundationParams, GeneratorParams
from scdd.provenance import record_provenance, weights_digest
from scdd.run_context import current_run

logger = logging.getLogger(__name__)


def summarise_training_cells(
    train: ad.AnnData, foundation: FoundationModel, data: DataParams
) -> dict[str, Any]:
    """One chunked pass over the training split: the per-class sparsity and the
    library size synthetic cells are written at, and the class moments
    fidelity compares with, cached for every distillation run, the benchmark
    and the evaluation to read."""
    start = time.perf_counter()
    aligned = foundation.align(train)
    labels = train.obs[data.label_key]
    stats = summarise_real_cells(
        aligned.X,
        labels.cat.codes.to_numpy(),
        list(map(str, labels.cat.categories)),
        gene_names=list(aligned.var_names),
    )
    logger.info(
        "Summarised %d training cells in %.1f s (median library size %.0f)",
        train.n_obs,
        time.perf_counter() - start,
        stats.target_sum,
    )
    return stats.to_checkpoint()


def distill_synthetic_set(  # noqa: PLR0913
    train: ad.AnnData,
    train_embeddings: ad.AnnData,
    validation: ad.AnnData,
    validation_embeddings: ad.AnnData,
    real_cell_stats: dict[str, Any],
    foundation: FoundationModel,
    generator_checkpoint: dict[str, Any] | None,
    params: DistillParams,
    data: DataParams,
    foundation_params: FoundationParams,
    generator_params: GeneratorParams,
) -> tuple[ad.AnnData, pd.DataFrame]:
    """Run ``distill.method`` and write its synthetic set as AnnData.

    Args:
        train: log-normalised training cells (lazy: only seed rows are read).
        train_embeddings: cached ``F(train)`` (same cells, same order).
        validation, validation_embeddings: held-out cells the privacy guard
            compares the training cells with (``distill.privacy``).
        real_cell_stats: cached :class:`RealCellStats` of ``train``.
        foundation: frozen E and D.
        generator_checkpoint: trained SCDG.
        params: ``params:distill``.
        data, foundation_params, generator_params: the groups of the data
            and of the models that made the set (recorded with it).

    The run's ``seed``, ``device`` and ``progress`` drive the optimisation.

    Returns:
        The synthetic AnnData (genes in the foundation gene order with the
        input's ``var`` columns, labels, codes in ``obsm["X_optimised_codes"]``,
        provenance, scanpy's ``uns["log1p"]``) and the loss history.
    """
    start, run = time.perf_counter(), current_run()
    key, method = data.label_key, params.method
    inputs, categories, stats = prepare_inputs(
        train,
        train_embeddings,
        foundation,
        generator_checkpoint if method in NEEDS_GENERATOR else None,
        label_key=key,
        stats=RealCellStats.from_checkpoint(real_cell_stats),
        max_cells_per_class=params.max_cells_per_class,
        seed=run.seed,
    )
    logger.info(
        "Distilling %d cells of %d classes with %s, SPC %d",
        train.n_obs,
        len(categories),
        method,
        params.spc,
    )
    synthetic, output = distill_synthetic(
        inputs,
        categories,
        stats,
        params=params,
        label_key=key,
        seed=run.seed,
        device=run.torch_device,
        progress=run.show_progress,
    )
    synthetic.var = input_var(train.var, synthetic.var_names)
    privacy = scoring.privacy(
        synthetic,
        scoring.embed_synthetic(
            synthetic,
            train_embeddings,
            foundation,
            label_key=key,
            chunk_size=foundation_params.embed.chunk_size,
            device=run.torch_device,
        ),
        train=train,
        train_embeddings=train_embeddings,
        heldout=validation,
        heldout_embeddings=validation_embeddings,
        params=params.privacy,
        label_key=key,
        seed=run.seed,
    )
    apply_guard(synthetic, privacy, params.privacy)
    weights = [foundation.encoder, foundation.decoder]
    models = {"foundation": (foundation_params, weights)}
    if method in NEEDS_GENERATOR:
        models["generator"] = (generator_params, generator_checkpoint)
    _record_stages(synthetic, train, models, params, data, run.seed)
    logger.info(
        "Synthetic set: %d cells x %d genes from %d real cells in %.1f s",
        synthetic.n_obs,
        synthetic.n_vars,
        train.n_obs,
        time.perf_counter() - start,
    )
    history = pd.DataFrame(output.history or [], columns=["step", "loss", *LOSS_TERMS])
    return synthetic, history


def _record_stages(
    synthetic: ad.AnnData,
    train: ad.AnnData,
    models: dict[str, tuple[FoundationParams | GeneratorParams, Any]],
    params: DistillParams,
    data: DataParams,
    seed: int,
) -> None:
    """``uns["scdd"]`` of the synthetic set: the training split's records, one
    per model that made it (``{stage: (parameter group, weights)}``, with the
    weights' digest) and the ``distill`` record; scanpy's log1p marker."""
    synthetic.uns["scdd"] = {
        **{k: v for k, v in train.uns.get("scdd", {}).items() if k != "distill"},
        **synthetic.uns.get("scdd", {}),
    }
    for stage, (group, weights) in models.items():
        record_provenance(
            synthetic,
            stage=stage,
            params={**group.model_dump(), "seed": seed},
            weights_digest=weights_digest(weights),
        )
    record_provenance(
        synthetic,
        stage="distill",
        params={**params.model_dump(), "seed": seed},
        source=data.input,
        log1p=synthetic.n_vars > 0,
        label_key=data.label_key,
    )
