"""Assemble :class:`DistillInputs` from the catalog's artefacts and run a method."""

from __future__ import annotations

import logging
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import torch

from scdd.distill.config import DistillParams
from scdd.distill.methods import (
    SCDD_METHODS,
    ConditionSpec,
    DistillInputs,
    MethodOutput,
    run_method,
)
from scdd.distill.real_cells import RealCellStats, summarise_real_cells
from scdd.distill.synthetic import synthetic_adata
from scdd.generation import check_embeddings_match, embedding_matrix, load_generator
from scdd.models.foundation import FoundationModel
from scdd.sampling import capped_class_rows

logger = logging.getLogger(__name__)


def condition_spec(
    checkpoint: dict[str, Any], label_key: str, categories: list[str]
) -> ConditionSpec:
    """Map our class indices to the generator's condition tokens."""
    columns = list(checkpoint["condition_columns"])
    if label_key not in columns:
        raise ValueError(
            f"The generator was trained on conditions {columns}, not on the label "
            f"'{label_key}'; re-run the generator pipeline with this label."
        )
    known = pd.Index(checkpoint["condition_categories"][label_key])
    label_map = known.get_indexer(categories)
    if (label_map < 0).any():
        missing = [c for c, i in zip(categories, label_map, strict=True) if i < 0]
        raise ValueError(
            f"Classes {missing} are unknown to the generator; re-run the generator "
            "pipeline on the current training split."
        )
    null = [len(checkpoint["condition_categories"][c]) for c in columns]
    return ConditionSpec(
        null=null, position=columns.index(label_key), label_map=list(label_map)
    )


def prepare_inputs(  # noqa: PLR0913
    train: ad.AnnData,
    train_embeddings: ad.AnnData,
    foundation: FoundationModel,
    generator_checkpoint: dict[str, Any] | None,
    *,
    label_key: str,
    stats: RealCellStats | None = None,
    max_cells_per_class: int | None = None,
    seed: int = 0,
) -> tuple[DistillInputs, list[str], RealCellStats]:
    """Training cells in F's gene order (lazy when ``train`` is: only the seed
    rows a method asks for are read), their cached embeddings, frozen models.

    ``stats`` are the cached :class:`RealCellStats` of these cells; without
    them they are computed here (one pass over ``train``). A class of more
    than ``max_cells_per_class`` cells (``distill.max_cells_per_class``) is
    a seeded sample (``seed``) of that many: only their embeddings are read.

    Returns:
        The inputs, the class names (index = class index) and the real-cell
        statistics (sparsity and library size the synthetic cells match).
    """
    check_embeddings_match(train, train_embeddings, "train")
    categories = list(map(str, train.obs[label_key].cat.categories))
    generator, conditions = None, None
    if generator_checkpoint is not None:
        generator, _ = load_generator(generator_checkpoint)
        conditions = condition_spec(generator_checkpoint, label_key, categories)
    aligned = foundation.align(train)
    labels = train.obs[label_key].cat.codes.to_numpy().astype(np.int64)
    if stats is None:
        stats = summarise_real_cells(
            aligned.X, labels, categories, gene_names=list(aligned.var_names)
        )
    elif stats.categories != categories or stats.genes != list(aligned.var_names):
        raise ValueError(
            "real_cell_stats describe other cells (classes "
            f"{stats.categories[:5]}..., {stats.n_genes} genes) than the training "
            f"split ({categories[:5]}..., {aligned.n_vars} genes); rebuild them with "
            "kedro run --pipeline latent_distillation."
        )
    rows = None
    if max_cells_per_class is not None:
        rows = capped_class_rows(labels, max_cells_per_class, seed)
    if rows is not None:
        logger.info(
            "Distilling from %d of %d training cells (at most %d per class)",
            len(rows),
            len(labels),
            max_cells_per_class,
        )
    inputs = DistillInputs(
        genes=aligned.X,
        embeddings=embedding_matrix(train_embeddings, rows),
        labels=labels if rows is None else labels[rows],
        num_classes=len(categories),
        foundation=foundation,
        generator=generator,
        conditions=conditions,
        target_sum=stats.target_sum,
        zero_fractions=stats.zero_fractions,
        rows=rows,
    )
    return inputs, categories, stats


def distill_synthetic(
    inputs: DistillInputs,
    categories: list[str],
    stats: RealCellStats,
    *,
    params: DistillParams,
    label_key: str,
    seed: int,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> tuple[ad.AnnData, MethodOutput]:
    """One synthetic set of ``params.method`` (the ``distill`` parameter group).

    The one place that turns ``params:distill`` into :func:`run_method` and
    :func:`synthetic_adata` calls, shared by the pipeline node, the benchmark
    pipeline and the benchmark script. Where counts are drawn,
    ``uns["scdd"]["count_depth"]`` gives their depth (else None);
    ``uns["scdd"]["real_cells"]`` says whether the rows are real training
    cells (``random_real``, the coresets, ``full``).

    Returns:
        The synthetic AnnData and the raw method output (codes, history).
    """
    method = params.method
    counts_from = params.sample_counts_from_spc
    draws_counts = (
        counts_from is not None and params.spc >= counts_from and method in SCDD_METHODS
    )
    output = run_method(
        params,
        inputs,
        count_fraction=params.count_fraction if draws_counts else 0.0,
        count_depth=params.count_depth,
        seed=seed,
        device=device,
        progress=progress,
    )
    synthetic = synthetic_adata(
        output,
        label_key=label_key,
        categories=categories,
        var_names=inputs.foundation.gene_order,
        stats=stats,
        zero_threshold=params.zero_threshold,
        method=method,
    )
    synthetic.uns["scdd"] = {
        "count_depth": params.count_depth if draws_counts else None,
        "real_cells": output.real_cells,
    }
    return synthetic, output


def final_loss(output: MethodOutput) -> float:
    """The last recorded optimisation loss (``inf`` when nothing was optimised)."""
    return output.history[-1]["loss"] if output.history else float("inf")
