"""Nodes of the ``foundation`` pipeline."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from scdd.metrics.probe import linear_probe
from scdd.models.device import resolve_device
from scdd.models.foundation import (
    FoundationModel,
    align_genes,
    embed_cells,
    load_model_dir,
    train_foundation,
)
from scdd.params import DataParams, FoundationParams
from scdd.provenance import record_provenance

logger = logging.getLogger(__name__)


def build_foundation_model(
    train: ad.AnnData,
    data: DataParams,
    params: FoundationParams,
    seed: int,
    device: str,
    progress: bool,
) -> tuple[FoundationModel, pd.DataFrame]:
    """Load the pretrained SCimilarity model, or train one on the training split.

    Args:
        train: Log-normalised training cells.
        data: ``params:data``.
        params: ``params:foundation`` (``source``: ``local`` or ``pretrained``).
        seed, device, progress: run-wide parameters.

    Returns:
        The frozen model and its training history (empty when pretrained).
    """
    if params.source == "pretrained":  # pretrained_path checked by FoundationParams
        path = Path(params.pretrained_path)
        model = load_model_dir(path)
        align_genes(  # fail now, before anything is written, if genes do not match
            train[:1],
            gene_order=model.gene_order,
            min_overlap=params.min_gene_overlap,
        )
        logger.info("Loaded pretrained foundation model from %s", path)
        return model, pd.DataFrame(columns=["epoch", "train_loss", "val_loss"])
    labels = train.obs[data.label_key]
    model, history = train_foundation(
        train.X,
        gene_order=list(train.var_names),
        labels=labels.cat.codes.to_numpy(),
        label_names=list(map(str, labels.cat.categories)),
        architecture=params.model.model_dump(),
        config=params.train,
        seed=seed,
        device=resolve_device(device),
        progress=progress,
    )
    return model, history


def _embed(
    model: FoundationModel,
    adata: ad.AnnData,
    params: FoundationParams,
    device: str,
    progress: bool,
) -> ad.AnnData:
    """Embeddings of ``adata`` as AnnData: X = latents, obs = the cells' obs."""
    aligned = align_genes(
        adata, gene_order=model.gene_order, min_overlap=params.min_gene_overlap
    )
    start = time.perf_counter()
    z = embed_cells(
        model.encoder,
        aligned.X,
        chunk_size=params.embed.chunk_size,
        device=resolve_device(device),
        progress=progress,
    )
    logger.info(
        "Embedded %d cells in %.1f s (%.0f cells/s)",
        len(z),
        time.perf_counter() - start,
        len(z) / max(time.perf_counter() - start, 1e-9),
    )
    out = ad.AnnData(
        X=z,
        obs=adata.obs.copy(),
        var=pd.DataFrame(index=[f"latent_{i}" for i in range(z.shape[1])]),
    )
    out.uns["scdd"] = dict(adata.uns.get("scdd", {}))
    record_provenance(out, stage="foundation", params=params.model_dump())
    return out


def embed_splits(
    model: FoundationModel,
    train: ad.AnnData,
    test: ad.AnnData,
    params: FoundationParams,
    device: str,
    progress: bool,
) -> tuple[ad.AnnData, ad.AnnData]:
    """Cache F(train) and F(test); every later stage reads these, not F again."""
    return (
        _embed(model, train, params, device, progress),
        _embed(model, test, params, device, progress),
    )


def report_foundation(
    train_embeddings: ad.AnnData,
    test_embeddings: ad.AnnData,
    train: ad.AnnData,
    test: ad.AnnData,
    history: pd.DataFrame,
    data: DataParams,
    seed: int,
) -> dict[str, Any]:
    """Does F carry the biology? Linear probes on latents vs on genes.

    A logistic regression trained on the training split is scored on the test
    split, once on the cached embeddings and once on the log-normalised genes;
    ``latent_to_gene_ratio`` near 1 means little label information was lost.
    """
    key = data.label_key
    y_train = train.obs[key].astype(str).to_numpy()
    y_test = test.obs[key].astype(str).to_numpy()
    latent = linear_probe(
        np.asarray(train_embeddings.X),
        y_train,
        np.asarray(test_embeddings.X),
        y_test,
        seed=seed,
    )
    genes = linear_probe(train.X, y_train, test.X, y_test, seed=seed)
    report = {
        "label_key": key,
        "train_cells": int(train.n_obs),
        "test_cells": int(test.n_obs),
        "genes": int(train.n_vars),
        "latent_dim": int(train_embeddings.n_vars),
        "epochs": int(len(history)),
        "best_val_mse": float(history["val_loss"].min()) if len(history) else None,
        "linear_probe_latent": latent,
        "linear_probe_genes": genes,
        "latent_to_gene_ratio": latent["accuracy"] / max(genes["accuracy"], 1e-12),
    }
    logger.info(
        "Linear probe accuracy: latent %.3f vs genes %.3f (ratio %.3f)",
        latent["accuracy"],
        genes["accuracy"],
        report["latent_to_gene_ratio"],
    )
    return report
