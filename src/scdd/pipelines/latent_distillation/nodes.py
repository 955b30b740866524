"""Nodes of the ``latent_distillation`` pipeline."""

from __future__ import annotations

import logging
import time
from typing import Any

import anndata as ad
import pandas as pd

from scdd.distill.inputs import prepare_inputs
from scdd.distill.methods import NEEDS_GENERATOR, run_method
from scdd.distill.optimise import DistillConfig
from scdd.distill.synthetic import synthetic_adata
from scdd.models.device import resolve_device
from scdd.models.foundation import FoundationModel
from scdd.provenance import record_provenance

logger = logging.getLogger(__name__)


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
    key, method = data["label_key"], params["method"]
    inputs, categories, aligned = prepare_inputs(
        train,
        train_embeddings,
        foundation,
        generator_checkpoint if method in NEEDS_GENERATOR else None,
        label_key=key,
        min_gene_overlap=foundation_params["min_gene_overlap"],
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
        zero_threshold=params["zero_threshold"],
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
        real_labels=inputs.labels,
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
