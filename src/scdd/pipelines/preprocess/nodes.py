"""Nodes of the ``preprocess`` pipeline."""

from __future__ import annotations

import logging
import time
from typing import Any

import anndata as ad

from scdd import preprocessing as pp
from scdd.preprocessing_config import DataParams, PreprocessParams
from scdd.provenance import record_provenance
from scdd.run_context import current_run

logger = logging.getLogger(__name__)


def preprocess_adata(
    raw: ad.AnnData, data: DataParams, params: PreprocessParams
) -> tuple[ad.AnnData, dict[str, Any]]:
    """Validate the input, detect its kind, filter and log-normalise it.

    Args:
        raw: The user's AnnData (or the bundled default).
        data: ``params:data`` (``input``, ``label_key``, ``layer``).
        params: ``params:preprocess``.

    One pass reads the matrix (checks, totals, per-gene counts); the result
    is lazy (``X`` a dask graph over the input's row blocks), written block by
    block when the splits are saved.

    Returns:
        The log-normalised AnnData (raw counts in ``layers["counts"]`` when the
        input had them and ``preprocess.keep_counts``) and a summary dict for
        the report.
    """
    start = time.perf_counter()
    label_key = data.label_key
    adata = pp.select_matrix(raw, layer=data.layer)
    summary: dict[str, Any] = {
        "input": data.input,
        "label_key": label_key,
        "cells_in": int(adata.n_obs),
        "genes_in": int(adata.n_vars),
    }
    adata = pp.check_labels(adata, label_key=label_key)
    summary["cells_unlabelled"] = summary["cells_in"] - int(adata.n_obs)
    stats = pp.inspect_matrix(adata, min_counts=params.min_counts)
    pp.check_values(stats)
    kind = pp.detect_input_kind(stats, max_log_value=params.max_log_value)
    logger.info(
        "Input %s looks like %s",
        data.input,
        "raw counts: filtering and log-normalising"
        if kind == "counts"
        else "log-normalised values: used as they are, not normalised again",
    )
    before_qc = adata.shape
    merged = pp.dedupe_genes(adata, strategy=params.duplicate_genes, kind=kind)
    if kind == "counts":
        if merged.n_vars != adata.n_vars:  # merged columns: count their cells anew
            stats = pp.inspect_matrix(merged, min_counts=params.min_counts)
        adata = pp.quality_filter(
            merged,
            stats=stats,
            min_counts=params.min_counts,
            min_cells=params.min_cells,
        )
        pp.require_classes(
            adata,
            label_key=label_key,
            after=f"After quality filtering (min_counts={params.min_counts}),",
            fix="Lower preprocess.min_counts (--params preprocess.min_counts=N): "
            "the other classes' cells all hold fewer counts.",
        )
        adata = pp.log_normalise(
            adata, target_sum=params.target_sum, keep_counts=params.keep_counts
        )
    else:  # merging in linear space keeps each cell's sum(expm1)
        adata, total = pp.rescale_log_normalised(
            merged, totals=stats.cell_expm1_sums, target_sum=params.target_sum
        )
        if adata is not merged:
            logger.info(
                "Cells were normalised to ~%.0f counts (median); rescaled to %g",
                total,
                params.target_sum,
            )
    summary["cells_removed_by_qc"] = before_qc[0] - int(adata.n_obs)
    summary["genes_removed_by_qc"] = before_qc[1] - int(adata.n_vars)
    n_before_classes = int(adata.n_obs)
    adata, dropped = pp.filter_small_classes(
        adata,
        label_key=label_key,
        min_cells=params.min_cells_per_class,
        on_small=params.small_classes,
    )
    record_provenance(
        adata,
        stage="preprocess",
        params={**data.model_dump(), **params.model_dump()},
        source=data.input,
        log1p=True,
        input_kind=kind,
        input_uns_source=raw.uns.get("source"),
    )
    summary.update(
        input_kind=kind,
        cells_out=int(adata.n_obs),
        genes_out=int(adata.n_vars),
        dropped_classes=dropped,
        cells_in_dropped_classes=n_before_classes - int(adata.n_obs),
        classes={k: int(v) for k, v in adata.obs[label_key].value_counts().items()},
    )
    logger.info(
        "Preprocessed %d x %d -> %d x %d in %.1f s",
        summary["cells_in"],
        summary["genes_in"],
        adata.n_obs,
        adata.n_vars,
        time.perf_counter() - start,
    )
    return adata, summary


def split_adata(
    adata: ad.AnnData,
    summary: dict[str, Any],
    data: DataParams,
    params: PreprocessParams,
) -> tuple[ad.AnnData, ad.AnnData, ad.AnnData, dict[str, Any]]:
    """Stratified train/validation/test split seeded by the run's ``seed``;
    completes the report.

    The test split is drawn first (``test_size`` of the cells), then
    ``validation_size`` of the remaining training cells become the validation
    split: settings are tuned on it, the test split is only scored.

    Returns:
        Train, validation and test AnnData and the preprocessing report.
    """
    seed = current_run().seed
    train, test = pp.stratified_split(
        adata, label_key=data.label_key, test_size=params.test_size, seed=seed
    )
    train, validation = pp.carve_validation(
        train, label_key=data.label_key, fraction=params.validation_size, seed=seed
    )
    logger.info(
        "Split %d cells into %d train / %d validation / %d test",
        adata.n_obs,
        train.n_obs,
        validation.n_obs,
        test.n_obs,
    )
    report = {
        **summary,
        "seed": seed,
        "test_size": params.test_size,
        "validation_size": params.validation_size,
        "train_cells": int(train.n_obs),
        "validation_cells": int(validation.n_obs),
        "test_cells": int(test.n_obs),
    }
    return train, validation, test, report
