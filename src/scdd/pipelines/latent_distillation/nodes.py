"""Nodes of the ``latent_distillation`` pipeline."""

from __future__ import annotations

import logging
import time
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from scdd.distill.methods import (
    NEEDS_GENERATOR,
    ConditionSpec,
    DistillInputs,
    run_method,
)
from scdd.distill.optimise import DistillConfig
from scdd.distill.synthetic import synthetic_adata
from scdd.generation import embedding_matrix, load_generator
from scdd.models.device import resolve_device
from scdd.models.foundation import FoundationModel, align_genes
from scdd.provenance import record_provenance

logger = logging.getLogger(__name__)


def _condition_spec(
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


def distill_synthetic_set(
    train: ad.AnnData,
    train_embeddings: ad.AnnData,
    foundation: FoundationModel,
    generator_checkpoint: dict[str, Any] | None,
    params: dict[str, Any],
    data: dict[str, Any],
    foundation_params: dict[str, Any],
    seed: int,
    device: str,
    progress: bool,
) -> tuple[ad.AnnData, pd.DataFrame]:
    """Run ``distill.method`` and write its synthetic set as AnnData.

    Args:
        train: log-normalised training cells.
        train_embeddings: cached ``F(train)`` (same cells, same order).
        foundation: frozen E and D.
        generator_checkpoint: trained SCDG.
        params: ``params:distill``.
        data, foundation_params, seed, device, progress: shared parameters.

    Returns:
        The synthetic AnnData (genes in the foundation gene order, labels,
        codes in ``obsm["X_latent"]``, provenance) and the loss history.
    """
    start = time.perf_counter()
    key = data["label_key"]
    if list(train.obs_names) != list(train_embeddings.obs_names):
        raise ValueError(
            "train_embeddings do not match train_adata cell for cell; re-run the "
            "foundation pipeline (kedro run --pipeline foundation)."
        )
    categories = list(map(str, train.obs[key].cat.categories))
    labels = train.obs[key].cat.codes.to_numpy().astype(np.int64)
    method = params["method"]
    generator, conditions = None, None
    if method in NEEDS_GENERATOR:
        generator, _ = load_generator(generator_checkpoint)
        conditions = _condition_spec(generator_checkpoint, key, categories)
    aligned = align_genes(
        train,
        gene_order=foundation.gene_order,
        min_overlap=foundation_params["min_gene_overlap"],
    )
    inputs = DistillInputs(
        genes=aligned.X.tocsr(),
        embeddings=embedding_matrix(train_embeddings),
        labels=labels,
        num_classes=len(categories),
        foundation=foundation,
        generator=generator,
        conditions=conditions,
    )
    logger.info(
        "Distilling %d cells of %d classes with %s, SPC %d",
        train.n_obs,
        len(categories),
        method,
        params["spc"],
    )
    output = run_method(
        method,
        inputs,
        spc=params["spc"],
        config=DistillConfig(**params["optim"]),
        t_gen=params["t_gen"],
        guidance_scale=params["guidance_scale"],
        sample_steps=params["sample_steps"],
        seed=seed,
        device=resolve_device(device),
        progress=progress,
    )
    synthetic = synthetic_adata(
        output,
        label_key=key,
        categories=categories,
        var_names=foundation.gene_order,
        real=aligned,
        real_labels=labels,
        zero_threshold=params["zero_threshold"],
        method=method,
    )
    record_provenance(
        synthetic,
        stage="distill",
        params={**params, "seed": seed},
        source=data["input"],
    )
    logger.info(
        "Synthetic set: %d cells x %d genes from %d real cells in %.1f s",
        synthetic.n_obs,
        synthetic.n_vars,
        train.n_obs,
        time.perf_counter() - start,
    )
    history = pd.DataFrame(output.history or [], columns=["step", "loss", "dm", "dc"])
    return synthetic, history
