"""Glue between AnnData embeddings and SCDG: condition codes, training, report.

Condition columns of ``obs`` become integer codes (one column per condition,
categories kept in the checkpoint so later stages map labels the same way).
The quality report measures generated latents against real ones with the
metrics of :mod:`scdd.metrics`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import torch

from scdd.cellstore import is_lazy_matrix, take_matrix_rows
from scdd.metrics import class_consistency, fit_latent_classifier, frechet_distance
from scdd.models.device import make_generator
from scdd.models.diffusion import LatentDiffusion
from scdd.models.generator_config import (
    GeneratorModelParams,
    GeneratorReportParams,
    GeneratorTrainParams,
)
from scdd.models.scdg import SCDGConfig, load_scdg, scdg_checkpoint, train_scdg
from scdd.sampling import label_strings, stratified_rows

logger = logging.getLogger(__name__)


def condition_columns(conditions: Sequence[str] | None, label_key: str) -> list[str]:
    """The obs columns SCDG is conditioned on.

    Args:
        conditions: ``generator.conditions``; ``None`` means ``[label_key]``.
        label_key: The label column; it must be one of the conditions, since
            distillation and the report generate cells per class.

    Returns:
        Column names, label column included, in the given order.
    """
    if conditions is None:
        return [label_key]
    if isinstance(conditions, str):
        conditions = [conditions]
    columns = [str(c) for c in conditions]
    if len(set(columns)) != len(columns):
        raise ValueError(f"generator.conditions lists a column twice: {columns}.")
    if label_key not in columns:
        raise ValueError(
            f"generator.conditions {columns} must include the label column "
            f"'{label_key}' (cells are generated per class); add it or set "
            "generator.conditions to null."
        )
    return columns


def condition_codes(
    obs: pd.DataFrame,
    columns: Sequence[str],
    categories: dict[str, list[str]] | None = None,
) -> tuple[np.ndarray, dict[str, list[str]]]:
    """Map condition columns of ``obs`` to integer codes.

    Values are compared as strings. Without ``categories`` each column's
    categories are its observed values (in categorical order for a categorical
    column, else sorted), so codes are ``0..n_classes-1`` with no unused class.

    Args:
        obs: Cell annotations ``[n]``.
        columns: Condition columns, in order.
        categories: Known categories per column (e.g. from a checkpoint); values
            outside them raise ``ValueError``.

    Returns:
        Codes ``int64 [n, len(columns)]`` and ``{column: categories}``.
    """
    missing = [c for c in columns if c not in obs.columns]
    if missing:
        raise ValueError(
            f"Condition column(s) {missing} not found in obs. Available columns: "
            f"{list(obs.columns)}. Set data.label_key / generator.conditions to "
            "one of them."
        )
    codes = np.empty((len(obs), len(columns)), dtype=np.int64)
    known: dict[str, list[str]] = {}
    for j, column in enumerate(columns):
        values = obs[column]
        n_missing = int(values.isna().sum())
        if n_missing:
            raise ValueError(
                f"Condition column '{column}' has {n_missing} missing values; "
                "drop those cells or fill the column."
            )
        if categories is None:
            known[column] = _observed_categories(values)
        elif column in categories:
            known[column] = [str(c) for c in categories[column]]
        else:
            raise ValueError(
                f"No categories given for condition column '{column}'; known: "
                f"{sorted(categories)}."
            )
        strings = label_strings(values)
        index = pd.Index(known[column]).get_indexer(strings)
        if (index < 0).any():
            unknown = sorted(set(strings[index < 0]))
            raise ValueError(
                f"Condition column '{column}' has values the generator was not "
                f"trained on: {unknown[:10]}; known: {known[column]}."
            )
        codes[:, j] = index
    return codes, known


def check_embeddings_match(
    adata: ad.AnnData, embeddings: ad.AnnData, split: str
) -> None:
    """Fail unless the cached embeddings are of ``adata``'s cells, in order."""
    if not adata.obs_names.equals(embeddings.obs_names):
        raise ValueError(
            f"{split}_embeddings do not match {split}_adata cell for cell; re-run "
            "the foundation pipeline (kedro run --pipeline foundation)."
        )


def embedding_matrix(adata: ad.AnnData, rows: np.ndarray | None = None) -> np.ndarray:
    """Finite float32 latents ``[n, d]`` from ``adata.X``: rows ``rows``
    (positions, any order; all when ``None``). A lazy ``X`` is read only in
    the blocks that hold them, so a sample of an atlas's cached embeddings
    costs the sample's memory."""
    x = adata.X
    if rows is not None or is_lazy_matrix(x):
        rows = np.arange(adata.n_obs) if rows is None else rows
        x = take_matrix_rows(x, rows, dense=True)
    x = x.toarray() if hasattr(x, "toarray") else x
    x = np.asarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError(
            "Embeddings contain NaN or infinite values; re-run the foundation pipeline."
        )
    return x


def generator_checkpoint(
    model: LatentDiffusion, config: SCDGConfig, categories: dict[str, list[str]]
) -> dict[str, Any]:
    """:func:`scdg_checkpoint` plus the condition columns and their categories.

    Returns:
        The SCDG checkpoint with ``condition_columns`` (list of str) and
        ``condition_categories`` ({column: list of str}); still loadable with
        ``torch.load(weights_only=True)``.
    """
    return {
        **scdg_checkpoint(model, config),
        "condition_columns": list(categories),
        "condition_categories": {c: list(v) for c, v in categories.items()},
    }


def load_generator(
    checkpoint: dict[str, Any],
) -> tuple[LatentDiffusion, dict[str, list[str]]]:
    """Rebuild SCDG from :func:`generator_checkpoint` output.

    Returns:
        The model (eval mode, frozen, CPU) and ``{column: categories}`` in
        condition order, for :func:`condition_codes`.
    """
    model = load_scdg(checkpoint)
    categories = checkpoint["condition_categories"]
    return model, {c: list(categories[c]) for c in checkpoint["condition_columns"]}


def seen_rows(n_cells: int, seen: int, seed: int) -> np.ndarray | None:
    """Sorted rows of a seeded uniform sample of ``seen`` of ``n_cells``
    cells, or ``None`` (all) when there are no more."""
    if n_cells <= seen:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_cells, seen, replace=False))


def train_generator(
    adata: ad.AnnData,
    columns: Sequence[str],
    *,
    model: GeneratorModelParams,
    train: GeneratorTrainParams,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Train SCDG on the latents in ``adata.X``, conditioned on ``columns``.

    Training sees ``train.steps x train.batch_size`` cells, each once at
    most; a larger split is first sampled (seeded, uniform) to that many
    cells, the only rows read, so an atlas costs no more than that.

    Args:
        adata: Embeddings ``[n_cells, d]`` with the condition columns in ``obs``.
        columns: Condition columns (see :func:`condition_columns`).
        model: ``generator.model``: SCDG's architecture and diffusion
            (``latent_dim`` and ``n_classes`` come from the data).
        train: ``generator.train``, for :func:`train_scdg` (steps,
            batch_size, ...).
        seed: Seed of all randomness in training.
        device: Device to train on.
        progress: Show a progress bar.

    Returns:
        The checkpoint dict (:func:`generator_checkpoint`) and the loss history
        (``step``, ``loss``).
    """
    rows = seen_rows(adata.n_obs, train.steps * train.batch_size, seed)
    z = embedding_matrix(adata, rows)
    codes, categories = condition_codes(
        adata.obs if rows is None else adata.obs.iloc[rows], columns
    )
    config = SCDGConfig(
        model=model,
        latent_dim=z.shape[1],
        n_classes=[len(categories[c]) for c in columns],
    )
    scdg, history = train_scdg(
        z,
        codes,
        config,
        train=train,
        seed=seed,
        device=device,
        progress=progress,
    )
    return generator_checkpoint(scdg, config, categories), pd.DataFrame(history)


def generator_quality_report(
    model: LatentDiffusion,
    categories: dict[str, list[str]],
    train: ad.AnnData,
    test: ad.AnnData,
    *,
    label_key: str,
    report: GeneratorReportParams | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-class quality of SCDG in the latent space.

    A classifier fitted on the real train latents judges whether samples
    generated for class ``c`` look like ``c`` (consistency); Fréchet distances
    compare generated and real test latents. Both are measured for samples from
    noise (``report.sample_steps`` denoiser calls, ``report.samples_per_class``
    per class) and for single-step reconstructions of the real test latents
    noised to each ``t`` in ``report.t_values``, whose mean squared error is
    set against the total variance of the test latents (ratio < 1: better
    than predicting the mean).
    Real-data references (classifier accuracy on test, train-vs-test Fréchet)
    give the scale. Only the label column is given; other condition columns
    get their null token. The pooled Fréchet distance uses a subset of the
    generated set with the test set's class proportions. Per-class distances
    need ``report.min_cells_frechet`` cells on both sides, else they are
    ``None``.

    Args:
        model: Trained SCDG (eval mode).
        categories: ``{column: categories}`` from :func:`load_generator`.
        train: Real train latents with ``obs[label_key]``.
        test: Real test latents with ``obs[label_key]``.
        label_key: Label column; must be a condition column.
        report: ``generator.report`` (default: its defaults): ``t_values``,
            the noise levels of the reconstructions (``1..T``);
            ``sample_steps``, the step counts of generation from noise;
            ``guidance_scale`` (classifier-free guidance);
            ``samples_per_class`` from noise; ``min_cells_frechet``, the
            fewest cells per class for a per-class distance; ``max_cells``:
            train and test latents are a seeded stratified sample of at most
            this many cells each.
        seed: Seed of the classifier, the sampling and the reconstruction noise.

    Returns:
        A JSON-able dict.
    """
    start = time.perf_counter()
    report = report or GeneratorReportParams()
    guidance_scale = report.guidance_scale
    samples_per_class = report.samples_per_class
    min_cells_frechet = report.min_cells_frechet
    max_cells = report.max_cells
    columns = list(categories)
    if label_key not in columns:
        raise ValueError(
            f"The generator is conditioned on {columns}, not on the label column "
            f"'{label_key}'; retrain it with '{label_key}' in generator.conditions."
        )
    classes = categories[label_key]
    for name, split in (("train", train), ("test", test)):
        if split.n_vars != model.latent_dim:
            raise ValueError(
                f"{name} embeddings have {split.n_vars} dimensions, the generator "
                f"{model.latent_dim}; re-run the generator pipeline."
            )
    y_train = _labels(train.obs, label_key, classes)
    y_test = _labels(test.obs, label_key, classes)
    rows = stratified_rows(y_train, max_cells, seed)
    z_train, y_train = embedding_matrix(train, rows), y_train[rows]
    rows = stratified_rows(y_test, max_cells, seed)
    z_test, y_test = embedding_matrix(test, rows), y_test[rows]
    classifier = fit_latent_classifier(z_train, y_train, seed)
    frechet = partial(_frechet_summary, classes=classes, min_cells=min_cells_frechet)

    def judge(samples: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        """Consistency and Fréchet distance to test of latents ``[n, d]``."""
        return {
            "consistency": class_consistency(classifier, samples, labels),
            "frechet": frechet(samples, labels, z_test, y_test),
        }

    label_index = columns.index(label_key)
    sample_labels = np.repeat(np.asarray(classes), samples_per_class)
    sample_cond = _class_conditions(model, label_index, classes, sample_labels)
    from_noise = [
        {
            "steps": int(n_steps),
            **judge(
                model.sample(
                    sample_cond,
                    n_steps=int(n_steps),
                    guidance_scale=guidance_scale,
                    generator=make_generator(seed),
                ).numpy(),
                sample_labels,
            ),
        }
        for n_steps in report.sample_steps
    ]

    total_variance = float(z_test.var(0).sum())
    test_cond = _class_conditions(model, label_index, classes, y_test)
    reconstruction = []
    for t in report.t_values:
        with torch.inference_mode():
            codes = model.encode_codes(
                torch.from_numpy(z_test), int(t), make_generator(seed)
            )
            recon = model.denoise(codes, int(t), test_cond, guidance_scale).numpy()
        mse = float(((recon - z_test) ** 2).sum(1).mean())
        reconstruction.append(
            {
                "t": int(t),
                "mse": mse,
                "mse_over_total_variance": mse / total_variance,
                **judge(recon, y_test),
            }
        )

    result = {
        "label_key": label_key,
        "condition_columns": columns,
        "seed": seed,
        "guidance_scale": guidance_scale,
        "samples_per_class": samples_per_class,
        "min_cells_frechet": min_cells_frechet,
        "max_cells": max_cells,
        "classes": {
            c: {
                "train_cells": int((y_train == c).sum()),
                "test_cells": int((y_test == c).sum()),
            }
            for c in classes
        },
        "total_variance": total_variance,
        "real": {
            "test_consistency": class_consistency(classifier, z_test, y_test),
            "train_vs_test_frechet": frechet(z_train, y_train, z_test, y_test),
        },
        "from_noise": from_noise,
        "reconstruction": reconstruction,
    }
    logger.info(
        "Generator report in %.1f s: %s",
        time.perf_counter() - start,
        _summary(result),
    )
    return result


def _summary(report: dict[str, Any]) -> str:
    """One line of headline figures of a generator report, for the log."""
    parts = [f"real test acc {report['real']['test_consistency']['accuracy']:.3f}"]
    parts += [
        f"{r['steps']}-step samples acc {r['consistency']['accuracy']:.3f} "
        f"FD {r['frechet']['overall']:.4f}"
        for r in report["from_noise"]
    ]
    parts += [
        f"t={r['t']} recon mse/var {r['mse_over_total_variance']:.3f} "
        f"acc {r['consistency']['accuracy']:.3f}"
        for r in report["reconstruction"]
    ]
    return "; ".join(parts)


def _observed_categories(values: pd.Series) -> list[str]:
    """Observed values as strings: categorical order if categorical, else sorted."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return [str(c) for c in values.cat.remove_unused_categories().cat.categories]
    return sorted(set(values.astype(str)))


def _labels(obs: pd.DataFrame, label_key: str, classes: list[str]) -> np.ndarray:
    """Labels ``[n]`` as strings, checked against the generator's ``classes``."""
    codes, _ = condition_codes(obs, [label_key], {label_key: classes})
    return np.asarray(classes)[codes[:, 0]]


def _class_conditions(
    model: LatentDiffusion, label_index: int, classes: list[str], labels: np.ndarray
) -> torch.Tensor:
    """Conditions ``LongTensor [n, n_conditions]`` for class ``labels [n]``.

    The label column holds each label's class index, every other condition
    column its null token.
    """
    cond = model.denoiser.null_condition(len(labels), "cpu")
    codes = pd.Index(classes).get_indexer(labels)
    cond[:, label_index] = torch.as_tensor(codes, dtype=torch.long)
    return cond


def _frechet_summary(
    gen: np.ndarray,
    gen_labels: np.ndarray,
    real: np.ndarray,
    real_labels: np.ndarray,
    *,
    classes: list[str],
    min_cells: int,
) -> dict[str, Any]:
    """Pooled and per-class Fréchet distances of ``gen [n, d]`` to ``real [m, d]``.

    The pooled distance uses the subset of ``gen`` with ``real``'s class
    proportions; a class gets ``None`` unless both sides have ``min_cells``.

    Returns:
        ``{"overall": float, "per_class": {class: float | None}}``.
    """
    per_class = {}
    for c in classes:
        a, b = gen[gen_labels == c], real[real_labels == c]
        enough = min(len(a), len(b)) >= max(min_cells, 2)
        per_class[c] = frechet_distance(a, b) if enough else None
    keep = _match_composition(gen_labels, real_labels)
    return {"overall": frechet_distance(gen[keep], real), "per_class": per_class}


def _match_composition(labels: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Indices of the largest subset of ``labels`` with ``target``'s proportions.

    Keeps the first ``floor(m * p_c)`` items of each class ``c``, where ``p_c``
    is the class's share of ``target`` and ``m`` is as large as the counts of
    ``labels`` allow.
    """
    classes, counts = np.unique(target, return_counts=True)
    shares = counts / counts.sum()
    available = np.array([(labels == c).sum() for c in classes])
    if not available.all():
        raise ValueError(
            f"Classes {[str(c) for c in classes[available == 0]]} of the test set "
            "are missing from the compared set; train and test must share their "
            "classes."
        )
    m = (available / shares).min()
    keep = [
        np.flatnonzero(labels == c)[: int(np.floor(m * p + 1e-9))]
        for c, p in zip(classes, shares, strict=True)
    ]
    return np.concatenate(keep)
