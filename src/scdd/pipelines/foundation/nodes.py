"""Nodes of the ``foundation`` pipeline."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import anndata as ad
import pandas as pd

from scdd.cellstore import check_dense_fits, take_rows
from scdd.generation import embedding_matrix
from scdd.metrics.probe import linear_probe
from scdd.models.foundation import FoundationModel, lazy_embeddings, load_model_dir
from scdd.models.foundation_training import (
    HISTORY_COLUMNS,
    FoundationParams,
    train_foundation,
    validation_size,
)
from scdd.preprocessing_config import DataParams
from scdd.provenance import record_provenance
from scdd.run_context import current_run
from scdd.sampling import label_strings, stratified_rows

logger = logging.getLogger(__name__)


def build_foundation_model(
    train: ad.AnnData,
    data: DataParams,
    params: FoundationParams,
    out_dir: Path | None = None,
) -> tuple[FoundationModel, pd.DataFrame]:
    """Load the pretrained SCimilarity model, or train one on the training split.

    Args:
        train: Log-normalised training cells (lazy or in memory; training
            streams its row blocks).
        data: ``params:data``.
        params: ``params:foundation`` (``source``: ``local`` or ``pretrained``).
        out_dir: where rank 0 writes the trained model directory (a temporary
            one when ``None``, as in a Kedro run; ``scripts/train_foundation.py``
            names one). Ranks other than 0 get ``(None, None)``.

    Returns:
        The frozen model (carrying ``params.min_gene_overlap``) and its
        training history, one row per validation round (``round``,
        ``cells_seen``, ``train_loss``, ``val_loss``; empty when pretrained).
    """
    if params.source == "pretrained":  # pretrained_path checked by FoundationParams
        path = Path(params.pretrained_path)
        model = load_model_dir(path, min_gene_overlap=params.min_gene_overlap)
        model.check_genes(train.var_names)  # fail now, before anything is written
        logger.info("Loaded pretrained foundation model from %s", path)
        return model, pd.DataFrame(columns=HISTORY_COLUMNS)
    labels = train.obs[data.label_key]
    run = current_run()
    model, history = train_foundation(
        train.X,
        gene_order=list(train.var_names),
        labels=labels.cat.codes.to_numpy(),
        label_names=list(map(str, labels.cat.categories)),
        architecture=params.model,
        config=params.train,
        trainer=params.trainer,
        seed=run.seed,
        device=run.torch_device,
        progress=run.show_progress,
        out_dir=out_dir,
        min_gene_overlap=params.min_gene_overlap,
    )
    return model, history


def _embed(
    model: FoundationModel,
    adata: ad.AnnData,
    params: FoundationParams,
) -> ad.AnnData:
    """Embeddings of ``adata`` as AnnData: X = latents (lazy: computed block
    by block as the catalog writes them, never all in memory), obs = the
    cells' obs."""
    z = lazy_embeddings(
        model.encoder,
        model.align(adata).X,
        chunk_size=params.embed.chunk_size,
        device=current_run().device,  # a spec: on a cluster each worker's own
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
    validation: ad.AnnData,
    test: ad.AnnData,
    params: FoundationParams,
) -> tuple[ad.AnnData, ad.AnnData, ad.AnnData]:
    """Cache F of the train, validation and test cells; every later stage
    reads these, not F again.

    Each split streams through E one row block at a time as it is written.
    """
    return tuple(_embed(model, split, params) for split in (train, validation, test))


def report_foundation(
    train_embeddings: ad.AnnData,
    test_embeddings: ad.AnnData,
    train: ad.AnnData,
    test: ad.AnnData,
    history: pd.DataFrame,
    data: DataParams,
    params: FoundationParams,
) -> dict[str, Any]:
    """Does F carry the biology? Linear probes on latents vs on genes.

    A logistic regression trained on the training split is scored on the test
    split, once on the cached embeddings and once on the log-normalised genes;
    ``latent_to_gene_ratio`` near 1 means little label information was lost.
    Both probes use the same cells: a seeded, stratified sample of at most
    ``params.probe_max_cells`` training cells and as many test cells (only
    those rows of the gene matrices are read).
    """
    key = data.label_key
    y_train = label_strings(train.obs[key])
    y_test = label_strings(test.obs[key])
    cap, seed = params.probe_max_cells, current_run().seed
    train_rows = stratified_rows(y_train, cap, seed)
    test_rows = stratified_rows(y_test, cap, seed)
    start = time.perf_counter()

    def probe(train_x: Any, test_x: Any) -> dict[str, float]:
        return linear_probe(
            train_x,
            y_train[train_rows],
            test_x,
            y_test[test_rows],
            max_train_cells=len(train_rows),
            seed=seed,
        )

    latent = probe(
        embedding_matrix(train_embeddings, train_rows),
        embedding_matrix(test_embeddings, test_rows),
    )
    check_dense_fits(
        len(train_rows),
        train.n_vars,
        what="The gene-level linear probe",
        parameter="foundation.probe_max_cells",
    )
    genes = probe(take_rows(train, train_rows).X, take_rows(test, test_rows).X)
    n_fit = train.n_obs - validation_size(train.n_obs, params.train)
    cells_seen = int(history["cells_seen"].iloc[-1]) if len(history) else 0
    report = {
        "label_key": key,
        "train_cells": int(train.n_obs),
        "test_cells": int(test.n_obs),
        "genes": int(train.n_vars),
        "latent_dim": int(train_embeddings.n_vars),
        "rounds": int(len(history)),
        "cells_seen": cells_seen,
        # passes over the training cells (not held out for validation)
        "epochs": round(cells_seen / max(n_fit, 1), 3),
        "best_val_mse": float(history["val_loss"].min()) if len(history) else None,
        "probe_max_cells": cap,
        "probe_train_cells": int(len(train_rows)),
        "probe_test_cells": int(len(test_rows)),
        "linear_probe_latent": latent,
        "linear_probe_genes": genes,
        "latent_to_gene_ratio": latent["accuracy"] / max(genes["accuracy"], 1e-12),
    }
    logger.info(
        "Linear probe accuracy on %d test cells (trained on %d): latent %.3f vs "
        "genes %.3f (ratio %.3f) in %.1f s",
        len(test_rows),
        len(train_rows),
        latent["accuracy"],
        genes["accuracy"],
        report["latent_to_gene_ratio"],
        time.perf_counter() - start,
    )
    return report
