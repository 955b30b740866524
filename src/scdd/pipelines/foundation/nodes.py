"""Nodes of the ``foundation`` pipeline."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from scdd.cellstore import check_dense_fits, take_rows
from scdd.generation import check_embeddings_match, embedding_matrix
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


@dataclass(frozen=True)
class ProbeCells:
    """The probes' cells of the training and test splits: their genes in
    memory and their positions in the splits (the same rows of the cached
    embeddings), so the report need not open the splits again."""

    train: ad.AnnData
    test: ad.AnnData
    train_rows: np.ndarray
    test_rows: np.ndarray
    train_cells: int
    test_cells: int


def sample_probe_cells(
    train: ad.AnnData, test: ad.AnnData, data: DataParams, params: FoundationParams
) -> ProbeCells:
    """A seeded, stratified sample of at most ``params.probe_max_cells``
    training cells and as many test cells, only those rows of the gene
    matrices read. A node of its own: the report then holds the embeddings'
    ``obs`` without the splits' (10M cells: 9M cell names fewer at once)."""
    cap, seed = params.probe_max_cells, current_run().seed
    rows = [
        stratified_rows(label_strings(split.obs[data.label_key]), cap, seed)
        for split in (train, test)
    ]
    check_dense_fits(
        len(rows[0]),
        train.n_vars,
        what="The gene-level linear probe",
        parameter="foundation.probe_max_cells",
    )
    return ProbeCells(
        take_rows(train, rows[0]),
        take_rows(test, rows[1]),
        *rows,
        train_cells=train.n_obs,
        test_cells=test.n_obs,
    )


def report_foundation(
    train_embeddings: ad.AnnData,
    test_embeddings: ad.AnnData,
    cells: ProbeCells,
    history: pd.DataFrame,
    data: DataParams,
    params: FoundationParams,
) -> dict[str, Any]:
    """Does F carry the biology? Linear probes on latents vs on genes.

    A logistic regression trained on the training split is scored on the test
    split, once on the cached embeddings and once on the log-normalised genes;
    ``latent_to_gene_ratio`` near 1 means little label information was lost.
    Both probes use the same cells, ``cells`` (:func:`sample_probe_cells`).
    """
    key, seed = data.label_key, current_run().seed
    check_embeddings_match(cells.train, train_embeddings[cells.train_rows], "train")
    check_embeddings_match(cells.test, test_embeddings[cells.test_rows], "test")
    y_train = label_strings(cells.train.obs[key])
    y_test = label_strings(cells.test.obs[key])
    start = time.perf_counter()

    def probe(train_x: Any, test_x: Any) -> dict[str, float]:
        return linear_probe(
            train_x, y_train, test_x, y_test, max_train_cells=len(y_train), seed=seed
        )

    latent = probe(
        embedding_matrix(train_embeddings, cells.train_rows),
        embedding_matrix(test_embeddings, cells.test_rows),
    )
    genes = probe(cells.train.X, cells.test.X)
    n_fit = cells.train_cells - validation_size(cells.train_cells, params.train)
    cells_seen = int(history["cells_seen"].iloc[-1]) if len(history) else 0
    report = {
        "label_key": key,
        "train_cells": cells.train_cells,
        "test_cells": cells.test_cells,
        "genes": int(cells.train.n_vars),
        "latent_dim": int(train_embeddings.n_vars),
        "rounds": int(len(history)),
        "cells_seen": cells_seen,
        # passes over the training cells (not held out for validation)
        "epochs": round(cells_seen / max(n_fit, 1), 3),
        "best_val_mse": float(history["val_loss"].min()) if len(history) else None,
        "probe_max_cells": params.probe_max_cells,
        "probe_train_cells": len(y_train),
        "probe_test_cells": len(y_test),
        "linear_probe_latent": latent,
        "linear_probe_genes": genes,
        "latent_to_gene_ratio": latent["accuracy"] / max(genes["accuracy"], 1e-12),
    }
    logger.info(
        "Linear probe accuracy on %d test cells (trained on %d): latent %.3f vs "
        "genes %.3f (ratio %.3f) in %.1f s",
        len(y_test),
        len(y_train),
        latent["accuracy"],
        genes["accuracy"],
        report["latent_to_gene_ratio"],
        time.perf_counter() - start,
    )
    return report
