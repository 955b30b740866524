"""Nodes of the ``evaluate`` pipeline: synthetic set -> ``metrics.json``.

Models are trained on the synthetic set and scored on the real test split;
the same models trained on the full training split give the reference that
retention divides by (its own node and catalog entry, so it can be cached).
Fidelity compares the synthetic cells with the real training cells; privacy
compares their nearest-neighbour distances to training vs test cells.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from scdd.evaluation.suite import check_models, compact, run_models, with_retention
from scdd.generation import check_embeddings_match, embedding_matrix
from scdd.metrics.fidelity import fidelity_report
from scdd.metrics.privacy import memorisation_report
from scdd.models.device import resolve_device
from scdd.models.foundation import FoundationModel, align_genes, embed_cells

logger = logging.getLogger(__name__)

_DEFAULT_CHUNK = 4096


def _categories(adata: ad.AnnData, key: str, what: str) -> list[str]:
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


def _codes(adata: ad.AnnData, key: str, categories: list[str], what: str) -> np.ndarray:
    """Int classes ``[n]`` of ``obs[key]`` in ``categories`` order."""
    _categories(adata, key, what)
    names = adata.obs[key].astype(str).to_numpy()
    codes = pd.Index(categories).get_indexer(names)
    if (codes < 0).any():
        raise ValueError(
            f"The {what} has classes {sorted(set(names[codes < 0]))} that the "
            f"training split does not have ({categories}); re-run the distill "
            "pipeline on the current training split."
        )
    return codes.astype(np.int64)


def _is_feature_only(synthetic: ad.AnnData) -> bool:
    return synthetic.n_vars == 0


def _provenance(synthetic: ad.AnnData) -> dict[str, Any]:
    """Distillation parameters recorded in ``uns["scdd"]["distill"]`` (or {})."""
    record = synthetic.uns.get("scdd", {}).get("distill", {})
    try:
        return json.loads(record.get("params", "{}"))
    except (TypeError, json.JSONDecodeError):
        return {}


def embed_synthetic_set(
    synthetic: ad.AnnData,
    train_embeddings: ad.AnnData,
    foundation: FoundationModel,
    data: dict[str, Any],
    foundation_params: dict[str, Any],
    device: str,
    progress: bool,
) -> ad.AnnData:
    """F(synthetic genes), or the stored features of a feature-only set.

    Args:
        synthetic: the synthetic set: genes in ``X`` (any gene order; aligned
            to F's here) or ``n_vars == 0`` with ``obsm["X_features"]``.
        train_embeddings: cached F(train) (gives the class names and width).
        foundation: frozen E and D.
        data: ``params:data``.
        foundation_params: ``params:foundation`` (``min_gene_overlap``,
            ``embed.chunk_size``).
        device, progress: run-wide parameters.

    Returns:
        AnnData with ``X`` = features ``[n_synthetic, d]`` and the synthetic
        cells' ``obs``.

    Raises:
        ValueError: empty set, missing label column, unknown classes, no
            gene matrix and no features, or features of the wrong width.
    """
    key = data["label_key"]
    if synthetic.n_obs == 0:
        raise ValueError("The synthetic set has no cells; re-run the distill pipeline.")
    categories = _categories(train_embeddings, key, "training split")
    _codes(synthetic, key, categories, "synthetic set")
    if _is_feature_only(synthetic):
        if "X_features" not in synthetic.obsm:
            raise ValueError(
                "The synthetic set has neither genes (n_vars == 0) nor "
                "obsm['X_features']; re-run the distill pipeline."
            )
        z = np.asarray(synthetic.obsm["X_features"], dtype=np.float32)
        if z.shape[1] != train_embeddings.n_vars:
            raise ValueError(
                f"obsm['X_features'] has width {z.shape[1]} but F's latents have "
                f"{train_embeddings.n_vars}; distil and evaluate with the same "
                "foundation model."
            )
        logger.info("Feature-only synthetic set: %d x %d features", *z.shape)
    else:
        aligned = align_genes(
            synthetic,
            gene_order=foundation.gene_order,
            min_overlap=foundation_params["min_gene_overlap"],
        )
        z = embed_cells(
            foundation.encoder,
            aligned.X,
            chunk_size=foundation_params.get("embed", {}).get(
                "chunk_size", _DEFAULT_CHUNK
            ),
            device=resolve_device(device),
            progress=progress,
        )
    return ad.AnnData(
        X=z,
        obs=synthetic.obs.copy(),
        var=pd.DataFrame(index=[f"latent_{i}" for i in range(z.shape[1])]),
    )


def _reference_params(params: dict[str, Any]) -> dict[str, Any]:
    """``params:evaluate`` with the linear head's ``reference_*`` settings.

    Full-batch SGD at the paper's lr underfits a real training split (on the
    bundled PBMC data: train accuracy 0.76, test 0.74; mini-batches of 64:
    0.86 / 0.82), so the reference uses mini-batches, as one trains on real
    data; ``reference_epochs`` can shorten training on 100k+ cells. The
    gene-level torch models need nothing here: they train for a number of
    steps, full batch on a synthetic set and on mini-batches on a real split.
    """
    head = params["f_head"]
    return {
        **params,
        "f_head": {
            **head,
            "batch_size": head.get("reference_batch_size"),
            "epochs": head.get("reference_epochs") or head["epochs"],
        },
    }


def evaluate_full_reference(
    train: ad.AnnData,
    test: ad.AnnData,
    train_embeddings: ad.AnnData,
    test_embeddings: ad.AnnData,
    params: dict[str, Any],
    data: dict[str, Any],
    foundation_params: dict[str, Any],
    seed: int,
    device: str,
    progress: bool,
) -> dict[str, Any]:
    """The evaluation models trained on the whole training split (the
    "Original dataset" row; the denominator of retention).

    It does not depend on the synthetic set, so it is its own catalog entry
    (``full_reference_metrics``) and ``--only-missing-outputs`` reuses it.
    Gene-level models read the training split in its own gene space; the
    linear head uses ``evaluate.f_head.reference_batch_size`` and
    ``reference_epochs`` (see :func:`_reference_params`).

    Returns:
        ``{"label_key", "categories", "n_train", "n_test", "models": {name:
        result}}``.
    """
    start = time.perf_counter()
    key = data["label_key"]
    categories = _categories(train, key, "training split")
    check_embeddings_match(train, train_embeddings, "train")
    check_embeddings_match(test, test_embeddings, "test")
    logger.info(
        "Reference: %s trained on the full training split (%d cells)",
        params["models"],
        train.n_obs,
    )
    results, _ = run_models(
        models=check_models(params["models"]),
        train_z=embedding_matrix(train_embeddings),
        train_labels=_codes(train, key, categories, "training split"),
        test_z=embedding_matrix(test_embeddings),
        test_labels=_codes(test, key, categories, "test split"),
        train_genes=train,
        test_genes=align_genes(
            test,
            gene_order=list(train.var_names),
            min_overlap=foundation_params["min_gene_overlap"],
        ),
        label_key=key,
        categories=categories,
        params=_reference_params(params),
        seed=seed,
        device=resolve_device(device),
        progress=progress,
        what="full training",
    )
    logger.info("Reference models done in %.1f s", time.perf_counter() - start)
    return {
        "label_key": key,
        "categories": categories,
        "n_train": int(train.n_obs),
        "n_test": int(test.n_obs),
        "models": results,
    }


def evaluate_synthetic_models(
    synthetic: ad.AnnData,
    synthetic_embeddings: ad.AnnData,
    test: ad.AnnData,
    test_embeddings: ad.AnnData,
    full_reference: dict[str, Any],
    params: dict[str, Any],
    data: dict[str, Any],
    foundation_params: dict[str, Any],
    seed: int,
    device: str,
    progress: bool,
) -> dict[str, Any]:
    """The evaluation models trained on the synthetic set, with retention.

    Args:
        synthetic: the synthetic set (genes, or feature-only).
        synthetic_embeddings: output of :func:`embed_synthetic_set`.
        test: real test cells (log-normalised, data gene space).
        test_embeddings: cached F(test).
        full_reference: output of :func:`evaluate_full_reference`.
        params: ``params:evaluate``.
        data, foundation_params, seed, device, progress: shared parameters.

    Returns:
        ``{"models": {name: result or None}, "skipped": {name: reason}}``;
        each result has ``retention`` and the reference's scores (``full``).
    """
    key = data["label_key"]
    check_embeddings_match(test, test_embeddings, "test")
    # The reference's classes, so both sides score the same C labels.
    categories = full_reference.get("categories") or _categories(
        test, key, "test split"
    )
    feature_only = _is_feature_only(synthetic)
    test_genes = (
        None
        if feature_only
        else align_genes(
            test,
            gene_order=list(synthetic.var_names),
            min_overlap=foundation_params["min_gene_overlap"],
        )
    )
    results, skipped = run_models(
        models=check_models(params["models"]),
        train_z=embedding_matrix(synthetic_embeddings),
        train_labels=_codes(synthetic, key, categories, "synthetic set"),
        test_z=embedding_matrix(test_embeddings),
        test_labels=_codes(test, key, categories, "test split"),
        train_genes=None if feature_only else synthetic,
        test_genes=test_genes,
        label_key=key,
        categories=categories,
        params=params,
        seed=seed,
        device=resolve_device(device),
        progress=progress,
        what="synthetic",
    )
    reference = full_reference.get("models", {})
    return {
        "models": {
            name: with_retention(result, reference.get(name))
            for name, result in results.items()
        },
        "skipped": skipped,
    }


def measure_fidelity(
    synthetic: ad.AnnData,
    synthetic_embeddings: ad.AnnData,
    train: ad.AnnData,
    train_embeddings: ad.AnnData,
    params: dict[str, Any],
    data: dict[str, Any],
    foundation_params: dict[str, Any],
    seed: int,
) -> dict[str, Any]:
    """Gene-level fidelity (moments, sparsity, markers) and MMD in F-space.

    The training cells are aligned to the synthetic set's gene order first;
    for a feature-only set only the MMD is computed (gene metrics are null).
    """
    start = time.perf_counter()
    key = data["label_key"]
    categories = _categories(train, key, "training split")
    check_embeddings_match(train, train_embeddings, "train")
    feature_only = _is_feature_only(synthetic)
    real = (
        train
        if feature_only
        else align_genes(
            train,
            gene_order=list(synthetic.var_names),
            min_overlap=foundation_params["min_gene_overlap"],
        )
    )
    settings = params["fidelity"]
    report = fidelity_report(
        real.X,
        _codes(train, key, categories, "training split"),
        None if feature_only else synthetic.X,
        _codes(synthetic, key, categories, "synthetic set"),
        real_z=embedding_matrix(train_embeddings),
        syn_z=embedding_matrix(synthetic_embeddings),
        class_names=categories,
        top_k=settings["top_k"],
        marker_method=settings["marker_method"],
        mmd_max_cells=settings["mmd_max_cells"],
        seed=seed,
    )
    logger.info("Fidelity measured in %.1f s", time.perf_counter() - start)
    return report


def measure_privacy(
    synthetic_embeddings: ad.AnnData,
    train_embeddings: ad.AnnData,
    test_embeddings: ad.AnnData,
    params: dict[str, Any],
) -> dict[str, Any]:
    """Nearest-train vs nearest-test cosine distance ratios in F-space."""
    settings = params["privacy"]
    return memorisation_report(
        embedding_matrix(synthetic_embeddings),
        embedding_matrix(train_embeddings),
        embedding_matrix(test_embeddings),
        threshold=settings["threshold"],
        chunk_size=settings["chunk_size"],
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def assemble_metrics(
    synthetic: ad.AnnData,
    model_metrics: dict[str, Any],
    fidelity: dict[str, Any],
    privacy: dict[str, Any],
    data: dict[str, Any],
) -> dict[str, Any]:
    """The ``metrics.json`` document, with one summary log line per model.

    Returns:
        ``{"method", "spc", "label_key", "n_synthetic", "feature_only",
        "models", "skipped", "fidelity", "privacy"}``.
    """
    recorded = _provenance(synthetic)
    if "scdd_method" in synthetic.obs.columns and synthetic.n_obs:
        method = str(synthetic.obs["scdd_method"].iloc[0])
    else:
        method = str(recorded.get("method", "unknown"))
    key = data["label_key"]
    spc = recorded.get("spc")
    if spc is None:
        spc = int(synthetic.obs[key].value_counts().max())
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
        "fidelity: mean corr %s, var corr %s, marker overlap %s, MMD %.4f; "
        "privacy: median d_train/d_test %.3f (memorised: %s)",
        _fmt((fidelity.get("mean_correlation") or {}).get("mean")),
        _fmt((fidelity.get("variance_correlation") or {}).get("mean")),
        _fmt(((fidelity.get("markers") or {}).get("overlap") or {}).get("mean")),
        fidelity["mmd"]["mmd"],
        privacy["median_ratio"],
        privacy["memorised"],
    )
    return {
        "method": method,
        "spc": int(spc),
        "label_key": key,
        "n_synthetic": int(synthetic.n_obs),
        "feature_only": _is_feature_only(synthetic),
        "models": models,
        "skipped": model_metrics["skipped"],
        "fidelity": fidelity,
        "privacy": privacy,
    }
