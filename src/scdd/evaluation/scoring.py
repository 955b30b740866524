"""Score one training set (a synthetic set, or the full split) on real cells.

The steps of the ``evaluate`` pipeline as plain functions (no Kedro): embed
the synthetic set with F, train the evaluation models on it and score them on
the real test split (with retention against the same models trained on the
full training split), fidelity against the real training cells, and the
``metrics.json`` document. The benchmark pipeline reuses them per draw.

Settings come as plain values and parameter groups: ``evaluate`` is the
``params:evaluate`` group (:class:`~scdd.evaluation.config.EvaluateParams`;
see :func:`scdd.evaluation.suite.run_models`), ``params`` of
:func:`fidelity` its ``fidelity`` sub-group.

The real splits may be lazy (``X`` read from disk by row blocks,
:mod:`scdd.cellstore`) or in memory. Models train on cells in memory (the
synthetic set, or a stratified sample of the training split read once);
test predictions and fidelity moments read the real cells one row block at a
time, aligned to the training genes as they are read
(:mod:`scdd.evaluation.cells`): no split is ever read whole.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import torch

from scdd.cellstore import check_dense_fits, take_rows
from scdd.distill.real_cells import RealCellStats
from scdd.evaluation.config import GENE_MODELS, EvaluateParams, FidelityParams
from scdd.evaluation.suite import compact, run_models, with_retention
from scdd.generation import check_embeddings_match, embedding_matrix
from scdd.metrics.fidelity import fidelity_report
from scdd.metrics.privacy import PrivacyParams, privacy_report
from scdd.models.foundation import FoundationModel, align_genes, embed_cells
from scdd.provenance import recorded_params
from scdd.sampling import label_strings, stratified_rows

logger = logging.getLogger(__name__)


def class_names(adata: ad.AnnData, key: str, what: str) -> list[str]:
    """Class names of ``obs[key]``, or a ValueError listing the columns."""
    if key not in adata.obs.columns:
        raise ValueError(
            f"Label column '{key}' is not in the {what} (obs columns: "
            f"{list(adata.obs.columns)}). Set data.label_key to one of them, or "
            f"re-run the pipeline that wrote the {what} with this label."
        )
    labels = adata.obs[key]
    if isinstance(labels.dtype, pd.CategoricalDtype):
        return list(map(str, labels.cat.categories))
    return sorted(map(str, labels.unique()))


def class_codes(
    adata: ad.AnnData, key: str, categories: list[str], what: str
) -> np.ndarray:
    """Int classes ``[n]`` of ``obs[key]`` in ``categories`` order."""
    class_names(adata, key, what)
    names = label_strings(adata.obs[key])
    codes = pd.Index(categories).get_indexer(names)
    if (codes < 0).any():
        raise ValueError(
            f"The {what} has classes {sorted(set(names[codes < 0]))} that the "
            f"training split does not have ({categories}); re-run the distill "
            "pipeline on the current training split."
        )
    return codes.astype(np.int64)


def is_feature_only(synthetic: ad.AnnData) -> bool:
    """A feature-level set: no genes, F-space features in ``obsm``."""
    return synthetic.n_vars == 0


def in_genes_of(adata: ad.AnnData, reference: ad.AnnData) -> ad.AnnData:
    """``adata``'s cells in ``reference``'s genes (absent ones zero; lazy
    stays lazy).

    Real splits share the input's genes, and a synthetic set sharing too few
    genes with F was refused when it was embedded (:func:`embed_synthetic`),
    so a single shared gene is asked for here.
    """
    return align_genes(adata, gene_order=list(reference.var_names), min_overlap=1)


def embed_synthetic(
    synthetic: ad.AnnData,
    train_embeddings: ad.AnnData,
    foundation: FoundationModel,
    *,
    label_key: str,
    chunk_size: int,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> ad.AnnData:
    """F(synthetic genes), or the stored features of a feature-only set.

    Args:
        synthetic: genes in ``X`` (any gene order; aligned to F's here) or
            ``n_vars == 0`` with ``obsm["X_foundation"]``.
        train_embeddings: cached F(train) (gives the class names and width).
        foundation: frozen E and D (a gene set sharing fewer than its
            ``min_gene_overlap`` genes with F is refused).
        label_key: label column.
        chunk_size: cells per forward pass.
        device, progress: where F runs; progress bars.

    Returns:
        AnnData with ``X`` = features ``[n_synthetic, d]`` and the synthetic
        cells' ``obs``.

    Raises:
        ValueError: empty set, missing label column, unknown classes, no
            gene matrix and no features, or features of the wrong width.
    """
    if synthetic.n_obs == 0:
        raise ValueError("The synthetic set has no cells; re-run the distill pipeline.")
    categories = class_names(train_embeddings, label_key, "training split")
    class_codes(synthetic, label_key, categories, "synthetic set")
    if is_feature_only(synthetic):
        if "X_foundation" not in synthetic.obsm:
            raise ValueError(
                "The synthetic set has neither genes (n_vars == 0) nor "
                "obsm['X_foundation']; re-run the distill pipeline."
            )
        z = np.asarray(synthetic.obsm["X_foundation"], dtype=np.float32)
        if z.shape[1] != train_embeddings.n_vars:
            raise ValueError(
                f"obsm['X_foundation'] has width {z.shape[1]} but F's latents have "
                f"{train_embeddings.n_vars}; distil and evaluate with the same "
                "foundation model."
            )
        logger.info("Feature-only synthetic set: %d x %d features", *z.shape)
    else:
        z = embed_cells(
            foundation.encoder,
            foundation.align(synthetic).X,
            chunk_size=chunk_size,
            device=device,
            progress=progress,
        )
    return ad.AnnData(
        X=z,
        obs=synthetic.obs.copy(),
        var=pd.DataFrame(index=[f"latent_{i}" for i in range(z.shape[1])]),
    )


def full_reference(  # noqa: PLR0913
    train: ad.AnnData,
    test: ad.AnnData,
    train_embeddings: ad.AnnData,
    test_embeddings: ad.AnnData,
    *,
    evaluate: EvaluateParams,
    label_key: str,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """``evaluate.models`` trained on the whole training split (the
    "Original dataset" row; the denominator of retention).

    Gene-level models read the training split in its own gene space, on a
    stratified sample of at most ``evaluate.reference_max_cells`` cells
    (CellTypist densifies its input; each model's ``n_train`` says how many it
    saw), read into memory once and shared by every gene-level model; the
    F-head reads the 128-d features of a stratified sample of at most
    ``evaluate.f_head.reference_max_cells`` (every cell of any but an atlas).
    The test split is read one row block at a time, once per model. Pass the
    reference settings (``EvaluateParams.for_reference()``).

    Returns:
        ``{"label_key", "categories", "n_train", "n_test", "scored_on",
        "reference_max_cells", "models": {name: result}}``.
    """
    start = time.perf_counter()
    key = label_key
    categories = class_names(train, key, "training split")
    check_embeddings_match(train, train_embeddings, "train")
    check_embeddings_match(test, test_embeddings, "test")
    labels = class_codes(train, key, categories, "training split")
    max_cells = evaluate.reference_max_cells
    rows = stratified_rows(labels, max_cells, seed)
    feature_rows = stratified_rows(labels, evaluate.f_head.reference_max_cells, seed)
    logger.info(
        "Reference: %s trained on the full training split (%d cells; the F-head "
        "on a stratified sample of %d, evaluate.f_head.reference_max_cells=%s; "
        "gene-level models on one of %d, evaluate.reference_max_cells=%s)",
        evaluate.models,
        train.n_obs,
        len(feature_rows),
        evaluate.f_head.reference_max_cells,
        len(rows),
        max_cells,
    )
    test_genes = in_genes_of(test, train)  # lazy: nothing read until predicted
    shared = {
        "test_z": test_embeddings.X,  # lazy: predicted a row block at a time
        "test_labels": class_codes(test, key, categories, "test split"),
        "test_genes": test_genes,
        "label_key": key,
        "categories": categories,
        "params": evaluate,
        "seed": seed,
        "device": device,
        "progress": progress,
        "what": "full training",
    }
    models = list(evaluate.models)
    features = [m for m in models if m not in GENE_MODELS]
    genes = [m for m in models if m in GENE_MODELS]
    results: dict[str, Any] = {}
    if features:  # 128-d features: cheap, trained on up to 1M cells
        results |= run_models(
            models=features,
            train_z=embedding_matrix(train_embeddings, feature_rows),
            train_labels=labels[feature_rows],
            train_genes=None,
            **shared,
        )[0]
    if genes:  # models that densify genes: a bounded sample, read once
        check_dense_fits(
            len(rows),
            train.n_vars,
            what=f"The gene-level references ({', '.join(genes)})",
            parameter="evaluate.reference_max_cells",
        )
        sample = take_rows(train, rows)
        results |= run_models(
            models=genes,
            train_z=None,  # read by the F-head only
            train_labels=labels[rows],
            train_genes=sample,
            **shared,
        )[0]
    logger.info("Reference models done in %.1f s", time.perf_counter() - start)
    return {
        "label_key": key,
        "categories": categories,
        "n_train": int(train.n_obs),
        "n_test": int(test.n_obs),
        "scored_on": evaluate.split,
        "reference_max_cells": max_cells,
        "models": {name: results[name] for name in models},
    }


def synthetic_model_metrics(  # noqa: PLR0913
    synthetic: ad.AnnData,
    synthetic_embeddings: ad.AnnData,
    test: ad.AnnData,
    test_embeddings: ad.AnnData,
    reference: dict[str, Any],
    *,
    evaluate: EvaluateParams,
    label_key: str,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """``evaluate.models`` trained on the synthetic set, with retention.

    Args:
        synthetic: the synthetic set (genes, or feature-only).
        synthetic_embeddings: output of :func:`embed_synthetic`.
        test: real test cells (log-normalised, data gene space; lazy or in
            memory: read one row block at a time).
        test_embeddings: cached F(test).
        reference: output of :func:`full_reference`.
        evaluate: ``params:evaluate``.
        label_key, seed, device, progress: as
            :func:`full_reference`.

    Returns:
        ``{"models": {name: result or None}, "skipped": {name: reason}}``;
        each result has ``retention`` and the reference's scores (``full``).
    """
    key = label_key
    check_embeddings_match(test, test_embeddings, "test")
    # The reference's classes, so both sides score the same C labels.
    categories = reference.get("categories") or class_names(test, key, "test split")
    feature_only = is_feature_only(synthetic)
    test_genes = None if feature_only else in_genes_of(test, synthetic)
    results, skipped = run_models(
        models=list(evaluate.models),
        train_z=embedding_matrix(synthetic_embeddings),
        train_labels=class_codes(synthetic, key, categories, "synthetic set"),
        test_z=test_embeddings.X,  # lazy: predicted a row block at a time
        test_labels=class_codes(test, key, categories, "test split"),
        train_genes=None if feature_only else synthetic,
        test_genes=test_genes,
        label_key=key,
        categories=categories,
        params=evaluate,
        seed=seed,
        device=device,
        progress=progress,
        what="synthetic",
    )
    known = reference.get("models", {})
    return {
        "models": {
            name: with_retention(result, known.get(name))
            for name, result in results.items()
        },
        "skipped": skipped,
        "scored_on": evaluate.split,
    }


def fidelity(  # noqa: PLR0913
    synthetic: ad.AnnData,
    synthetic_embeddings: ad.AnnData,
    train: ad.AnnData,
    train_embeddings: ad.AnnData,
    *,
    label_key: str,
    params: FidelityParams,
    seed: int = 0,
    real_stats: RealCellStats | None = None,
) -> dict[str, Any]:
    """Gene-level fidelity (moments, sparsity, markers) and MMD in F-space,
    as ``params`` (``evaluate.fidelity``) sets them.

    The training cells are aligned to the synthetic set's gene order (a lazy
    split block by block, as its one chunked pass reads them); for a
    feature-only set only the MMD is computed (gene metrics are null). See
    :func:`scdd.metrics.fidelity.fidelity_report`. With the cached
    ``real_stats`` of the same classes and genes (in any order), their class
    moments replace that pass.
    """
    start = time.perf_counter()
    key = label_key
    categories = class_names(train, key, "training split")
    check_embeddings_match(train, train_embeddings, "train")
    feature_only = is_feature_only(synthetic)
    real = train if feature_only else in_genes_of(train, synthetic)
    cached = (
        real_stats.summary_for(list(map(str, real.var_names)))
        if real_stats is not None and real_stats.categories == categories
        else None
    )
    report = fidelity_report(
        real.X,
        class_codes(train, key, categories, "training split"),
        None if feature_only else synthetic.X,
        class_codes(synthetic, key, categories, "synthetic set"),
        real_z=train_embeddings.X,  # lazy: only the sampled rows are read
        syn_z=embedding_matrix(synthetic_embeddings),
        class_names=categories,
        params=params,
        seed=seed,
        real_summary=cached,
    )
    logger.info(
        "Fidelity measured in %.1f s (real class moments %s)",
        time.perf_counter() - start,
        "read from the split" if cached is None else "cached",
    )
    return report


def privacy(  # noqa: PLR0913
    synthetic: ad.AnnData,
    synthetic_embeddings: ad.AnnData,
    *,
    train: ad.AnnData,
    train_embeddings: ad.AnnData,
    heldout: ad.AnnData,
    heldout_embeddings: ad.AnnData,
    params: PrivacyParams,
    label_key: str,
    seed: int = 0,
) -> dict[str, Any]:
    """F-space and gene-space privacy of a synthetic set against training and
    held-out cells, the model attack on its ``label_key`` classes, and the
    guard's verdict (:func:`scdd.metrics.privacy.privacy_report`). The real
    splits are aligned to the synthetic set's genes and only sampled rows are
    read; a feature-only set gets F-space figures alone."""
    genes = {}
    if not is_feature_only(synthetic):
        genes = {
            "synthetic_genes": synthetic.X,
            "train_genes": in_genes_of(train, synthetic).X,
            "heldout_genes": in_genes_of(heldout, synthetic).X,
            "labels": tuple(
                label_strings(adata.obs[label_key])
                for adata in (synthetic, train, heldout)
            ),
        }
    report = privacy_report(
        embedding_matrix(synthetic_embeddings),
        train_embeddings.X,  # lazy on disk: streamed, only samples held
        heldout_embeddings.X,
        params,
        seed=seed,
        **genes,
    )
    logger.info("Privacy: %s", privacy_summary(report))
    return report


def privacy_summary(report: dict[str, Any]) -> str:
    """One line: ratios, attack rates, copies and the guard's verdict."""
    parts = []
    for space in ("f_space", "gene_space"):
        figures = report.get(space)
        if figures is not None:
            parts.append(
                f"{space.replace('_', '-')} nearest-record ratio "
                f"{figures['nearest_record_ratio']:.2f}, attack TPR@1%FPR "
                f"{figures['attack_tpr_at_1fpr']:.3f} (AUC "
                f"{figures['attack_auc']:.2f}), copies "
                f"{figures['exact_copies']}+{figures['near_copies']} near"
            )
    model = report.get("model")
    if model is not None:
        parts.append(
            f"model attack TPR@1%FPR {model['attack_tpr_at_1fpr']:.3f} (AUC "
            f"{model['attack_auc']:.2f}, accuracy {model['accuracy_gap']:+.2f} "
            "on training cells)"
        )
    guard = report["guard"]
    verdict = "passes the guard" if guard["passes"] else "FAILS the guard"
    return "; ".join(parts) + f" -> {verdict} (judged: {guard['judged']})"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def metrics_document(
    synthetic: ad.AnnData,
    model_metrics: dict[str, Any],
    fidelity_metrics: dict[str, Any],
    privacy: dict[str, Any],
    *,
    label_key: str,
) -> dict[str, Any]:
    """The ``metrics.json`` document, with one summary log line per model.

    Returns:
        ``{"method", "spc", "label_key", "n_synthetic", "feature_only",
        "scored_on", "models", "skipped", "fidelity", "privacy"}``
        (``scored_on``: the held-out split, ``test`` or ``validation``).
    """
    recorded = recorded_params(synthetic, "distill")
    if "scdd_method" in synthetic.obs.columns and synthetic.n_obs:
        method = str(synthetic.obs["scdd_method"].iloc[0])
    else:
        method = str(recorded.get("method", "unknown"))
    spc = recorded.get("spc")
    if spc is None:
        spc = int(synthetic.obs[label_key].value_counts().max())
    models = {name: compact(r) for name, r in model_metrics["models"].items()}
    for name, result in models.items():
        if result is None:
            logger.info("%s: skipped (%s)", name, model_metrics["skipped"].get(name))
            continue
        full = (result.get("full") or {}).get("accuracy_mean")
        logger.info(
            "%s: accuracy %.3f ± %.3f (full split %s, retention %s), balanced "
            "%.3f, macro-F1 %.3f",
            name,
            result["accuracy_mean"],
            result["accuracy_std"],
            _fmt(full),
            _fmt(result["retention"]),
            result["balanced_accuracy_mean"],
            result["macro_f1_mean"],
        )
    logger.info(
        "fidelity: mean corr %s, var corr %s, marker overlap %s, MMD %.4f; privacy: %s",
        _fmt((fidelity_metrics.get("mean_correlation") or {}).get("mean")),
        _fmt((fidelity_metrics.get("variance_correlation") or {}).get("mean")),
        _fmt(
            ((fidelity_metrics.get("markers") or {}).get("overlap") or {}).get("mean")
        ),
        fidelity_metrics["mmd"]["mmd"],
        privacy_summary(privacy),
    )
    return {
        "method": method,
        "spc": int(spc),
        "label_key": label_key,
        "n_synthetic": int(synthetic.n_obs),
        "feature_only": is_feature_only(synthetic),
        "scored_on": model_metrics.get("scored_on", "test"),
        "models": models,
        "skipped": model_metrics["skipped"],
        "fidelity": fidelity_metrics,
        "privacy": privacy,
    }
