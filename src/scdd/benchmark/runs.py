"""The benchmark's runs: label column × method × SPC × draw -> rows of scores.

One draw builds the synthetic set exactly as the ``latent_distillation``
pipeline does (:func:`scdd.distill.inputs.distill_synthetic`, seed
``seed + draw``) and scores it as the ``evaluate`` pipeline does
(:mod:`scdd.evaluation.scoring`) against the label column's full-split
reference.

The split, F and its embeddings are shared by every label column (F is
label-blind). What depends on the label is prepared once per column:
:func:`label_generators` trains an SCDG for each column the main generator is
not conditioned on, and :func:`label_references` trains the evaluation models
on the full training split. For a label column other than the main one
(:func:`label_view`), cells without a label are left out and classes with
fewer than ``min_cells`` training cells are dropped, as preprocessing does
for the main label.

The splits may be lazy (``X`` read from disk by row blocks,
:mod:`scdd.cellstore`): label views stay lazy, and scoring reads samples and
row blocks (:mod:`scdd.evaluation.scoring`). The distillation inputs are
:func:`scdd.distill.inputs.prepare_inputs`' business.

Plain functions (no Kedro): settings come as the parameter groups
themselves (:class:`~scdd.benchmark.config.BenchmarkParams`,
:class:`~scdd.distill.config.DistillParams`,
:class:`~scdd.evaluation.config.EvaluateParams`, ``generator.model`` /
``generator.train``) and as single values (the main label column
``data.label_key``, ``preprocess.min_cells_per_class``, run-wide settings).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import torch

from scdd import generation
from scdd.benchmark.config import BENCHMARK_METHODS, BENCHMARK_SPCS, BenchmarkParams
from scdd.benchmark.table import (
    benchmark_markdown,
    benchmark_table,
    privacy_columns,
)
from scdd.cellstore import is_lazy, obs_subset
from scdd.distill.config import DistillParams
from scdd.distill.inputs import distill_synthetic, final_loss, prepare_inputs
from scdd.distill.names import NEEDS_GENERATOR
from scdd.distill.real_cells import RealCellStats
from scdd.evaluation import scoring
from scdd.evaluation.config import EvaluateParams
from scdd.models.foundation import FoundationModel
from scdd.models.generator_config import GeneratorModelParams, GeneratorTrainParams
from scdd.preprocessing import check_labels, filter_small_classes

__all__ = [
    "BENCHMARK_METHODS",
    "BENCHMARK_SPCS",
    "assemble",
    "cell_runs",
    "label_generators",
    "label_references",
    "label_view",
]

logger = logging.getLogger(__name__)

Splits = tuple[ad.AnnData, ad.AnnData, ad.AnnData, ad.AnnData]


def label_view(
    train: ad.AnnData,
    test: ad.AnnData,
    train_embeddings: ad.AnnData,
    test_embeddings: ad.AnnData,
    *,
    key: str,
    primary: str,
    min_cells: int,
) -> Splits:
    """The splits and their embeddings as seen by label column ``key``.

    The main label (``primary``) was cleaned by preprocessing: returned as is.
    For another column, unlabelled cells are left out, classes with fewer than
    ``min_cells`` training cells are dropped (with a warning), test cells of
    dropped classes are left out, and ``obs[key]`` becomes a categorical of
    the kept classes on all four. A lazy split's view stays lazy (nothing is
    read); the embeddings, in memory, are subset.

    Raises:
        ValueError: the column is missing, or fewer than 2 classes remain.
    """
    if key == primary:
        return train, test, train_embeddings, test_embeddings
    for what, adata in (("training split", train), ("test split", test)):
        if key not in adata.obs.columns:
            raise ValueError(
                f"benchmark.label_keys: column '{key}' is not in the {what} "
                f"(obs columns: {list(adata.obs.columns)}); remove it from "
                "benchmark.label_keys."
            )
    try:  # on the labels only: no gene matrix is copied
        cleaned, dropped = filter_small_classes(
            check_labels(
                ad.AnnData(obs=train.obs),
                label_key=key,
                setting="another entry of benchmark.label_keys",
            ),
            label_key=key,
            min_cells=min_cells,
            on_small="drop",
        )
    except ValueError as err:
        raise ValueError(f"benchmark.label_keys: column '{key}': {err}") from err
    if dropped:
        logger.warning("Label '%s': classes %s left out of the benchmark", key, dropped)
    classes = cleaned.obs[key].cat.categories

    def select(
        cells: ad.AnnData, embeddings: ad.AnnData, what: str
    ) -> tuple[ad.AnnData, ad.AnnData]:
        # Positions, not obs names: merged datasets may repeat cell names.
        labels = cells.obs[key]
        keep = labels.notna().to_numpy() & labels.astype(str).isin(classes).to_numpy()
        if not keep.any():
            raise ValueError(
                f"benchmark.label_keys: column '{key}': no cell of the {what} has "
                f"one of the training classes {list(classes)}."
            )
        rows = np.flatnonzero(keep)
        codes = pd.Categorical(labels.iloc[rows].astype(str), categories=classes)
        # a lazy split stays lazy (nothing read); an in-memory one is subset
        out = tuple(
            obs_subset(a, rows) if is_lazy(a) else a[rows].copy()
            for a in (cells, embeddings)
        )
        for adata in out:
            adata.obs[key] = codes
        return out

    train_view, train_z = select(train, train_embeddings, "training split")
    test_view, test_z = select(test, test_embeddings, "test split")
    return train_view, test_view, train_z, test_z


def label_generators(  # noqa: PLR0913
    generator_checkpoint: dict[str, Any],
    splits: Splits,
    *,
    benchmark: BenchmarkParams,
    primary: str,
    min_cells: int,
    model: GeneratorModelParams,
    train: GeneratorTrainParams,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """An SCDG per benchmarked label column the main generator lacks.

    Nothing is trained when no method of ``benchmark.methods`` uses a
    generator, or when the main generator is conditioned on every
    benchmarked column (``generator.conditions``).

    Args:
        generator_checkpoint: the main SCDG (its ``condition_columns`` need
            no generator of their own).
        splits: train, test and their embeddings.
        benchmark: ``params:benchmark`` (``methods``, ``label_keys``).
        primary: the main label column (``data.label_key``).
        min_cells: fewest training cells of a kept class (another column).
        model, train: ``generator.model`` / ``generator.train``.
        seed, device, progress: as :func:`scdd.generation.train_generator`.

    Returns:
        ``{label column: checkpoint}`` (possibly empty).
    """
    if not set(benchmark.methods) & set(NEEDS_GENERATOR):
        return {}
    known = set(generator_checkpoint.get("condition_columns", []))
    out = {}
    for key in benchmark.label_columns(primary):
        if key in known:
            continue
        _, _, embeddings, _ = label_view(
            *splits, key=key, primary=primary, min_cells=min_cells
        )
        logger.info("Training SCDG for label '%s' (%d cells)", key, embeddings.n_obs)
        out[key], _ = generation.train_generator(
            embeddings,
            [key],
            model=model,
            train=train,
            seed=seed,
            device=device,
            progress=progress,
        )
    return out


def label_references(  # noqa: PLR0913
    full_reference: dict[str, Any],
    splits: Splits,
    *,
    benchmark: BenchmarkParams,
    primary: str,
    min_cells: int,
    evaluate: EvaluateParams,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """``benchmark.models`` trained on the full training split, per label.

    ``full_reference`` (the ``evaluate`` pipeline's) is reused for
    ``primary`` when it was scored on the same split and has every model.

    Args:
        full_reference: the ``evaluate`` pipeline's full-split reference.
        splits: train, test and their embeddings.
        benchmark: ``params:benchmark`` (``models``, ``label_keys``).
        primary, min_cells: as :func:`label_generators`.
        evaluate: ``params:evaluate`` (model settings; ``models`` replaced by
            ``benchmark.models``, the reference settings of
            :meth:`~scdd.evaluation.config.EvaluateParams.for_reference`).
        seed, device, progress: run-wide settings.

    Returns:
        ``{label column: reference}`` in ``benchmark.label_keys`` order.
    """
    evaluate = evaluate.with_models(benchmark.models).for_reference()
    known = full_reference.get("models") or {}
    same_split = full_reference.get("scored_on", "test") == evaluate.split
    out = {}
    for key in benchmark.label_columns(primary):
        if key == primary and same_split and all(known.get(m) for m in evaluate.models):
            out[key] = full_reference
            continue
        out[key] = scoring.full_reference(
            *label_view(*splits, key=key, primary=primary, min_cells=min_cells),
            evaluate=evaluate,
            label_key=key,
            seed=seed,
            device=device,
            progress=progress,
        )
    return out


def cell_runs(  # noqa: PLR0913
    splits: Splits,
    foundation: FoundationModel,
    generator_checkpoint: dict[str, Any] | None,
    label_generators: dict[str, dict[str, Any]],
    references: dict[str, dict[str, Any]],
    *,
    benchmark: BenchmarkParams,
    method: str,
    spc: int,
    primary: str,
    min_cells: int,
    primary_stats: RealCellStats | None = None,
    distill: DistillParams,
    evaluate: EvaluateParams,
    chunk_size: int,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Every label column and draw of one (method, SPC) cell.

    Args:
        splits: train, test and their embeddings.
        foundation: frozen E and D.
        generator_checkpoint: the main SCDG, used for the label columns it is
            conditioned on.
        label_generators: :func:`label_generators`' SCDGs for the others.
        references: :func:`label_references`' output.
        benchmark: ``params:benchmark`` (``label_keys``, ``draws`` per label
            column with seeds ``seed``, ``seed + 1``, ..., ``models``,
            ``steps``).
        method, spc: the cell.
        primary, min_cells: as :func:`label_generators`.
        primary_stats: the cached real-cell statistics of the primary label
            (other columns' are computed here, one pass each).
        distill: ``params:distill`` (method settings; ``method`` and ``spc``
            are this cell's, ``optim.steps`` is ``benchmark.steps`` when set).
        evaluate: ``params:evaluate`` (model settings; ``models`` replaced by
            ``benchmark.models``).
        chunk_size: F's embedding chunk.
        seed, device, progress: run-wide settings.

    Returns:
        One row per (label column, draw, model) with the model's scores,
        ``retention`` and the distillation time.
    """
    distill = distill.for_cell(method, spc, benchmark.steps)
    evaluate = evaluate.with_models(benchmark.models)
    runs = []
    for key in benchmark.label_columns(primary):
        if key not in references:
            raise ValueError(
                f"No full-split reference for label '{key}' in "
                "benchmark_references; re-run the benchmark pipeline without "
                "--only-missing-outputs."
            )
        checkpoint = label_generators.get(key, generator_checkpoint)
        runs += _label_runs(
            label_view(*splits, key=key, primary=primary, min_cells=min_cells),
            foundation,
            checkpoint if method in NEEDS_GENERATOR else None,
            references[key],
            label_key=key,
            stats=primary_stats if key == primary else None,
            draws=benchmark.draws,
            distill=distill,
            evaluate=evaluate,
            chunk_size=chunk_size,
            seed=seed,
            device=device,
            progress=progress,
        )
    return runs


def _label_runs(  # noqa: PLR0913
    splits: Splits,
    foundation: FoundationModel,
    generator_checkpoint: dict[str, Any] | None,
    full_reference: dict[str, Any],
    *,
    label_key: str,
    stats: RealCellStats | None,
    draws: int,
    distill: DistillParams,
    evaluate: EvaluateParams,
    chunk_size: int,
    seed: int,
    device: torch.device | str,
    progress: bool,
) -> list[dict[str, Any]]:
    """Every draw of one (label column, method, SPC)."""
    train, test, train_embeddings, test_embeddings = splits
    key, method, spc = label_key, distill.method, distill.spc
    inputs, categories, stats = prepare_inputs(
        train,
        train_embeddings,
        foundation,
        generator_checkpoint,
        label_key=key,
        stats=stats,
        max_cells_per_class=distill.max_cells_per_class,
        seed=int(seed),
    )
    runs = []
    for draw in range(draws):
        draw_seed = int(seed) + draw
        start = time.perf_counter()
        synthetic, output = distill_synthetic(
            inputs,
            categories,
            stats,
            params=distill,
            label_key=key,
            seed=draw_seed,
            device=device,
            progress=progress,
        )
        seconds = time.perf_counter() - start
        loss = final_loss(output)  # inf: nothing optimised (no loss to show)
        loss = loss if np.isfinite(loss) else np.nan
        depth = synthetic.uns["scdd"]["count_depth"]
        depth = np.nan if depth is None else depth
        embedded = scoring.embed_synthetic(
            synthetic,
            train_embeddings,
            foundation,
            label_key=key,
            chunk_size=chunk_size,
            device=device,
            progress=progress,
        )
        privacy = privacy_columns(
            scoring.privacy(
                synthetic,
                embedded,
                train=train,
                train_embeddings=train_embeddings,
                heldout=test,
                heldout_embeddings=test_embeddings,
                params=distill.privacy,
                label_key=key,
                seed=draw_seed,
            )
        )
        metrics = scoring.synthetic_model_metrics(
            synthetic,
            embedded,
            test,
            test_embeddings,
            full_reference,
            evaluate=evaluate,
            label_key=key,
            seed=draw_seed,
            device=device,
            progress=progress,
        )
        for model, result in metrics["models"].items():
            if result is None:
                logger.info(
                    "%s SPC %d: %s skipped (%s)",
                    method,
                    spc,
                    model,
                    metrics["skipped"].get(model),
                )
                continue
            runs.append(
                {
                    "label_key": key,
                    "model": model,
                    "method": method,
                    "spc": spc,
                    "draw": draw,
                    "seed": draw_seed,
                    "n_synthetic": int(synthetic.n_obs),
                    "accuracy_mean": result["accuracy_mean"],
                    "accuracy_std": result["accuracy_std"],
                    "balanced_accuracy_mean": result["balanced_accuracy_mean"],
                    "macro_f1_mean": result["macro_f1_mean"],
                    "retention": result["retention"],
                    "seconds": seconds,
                    "distill_loss": loss,
                    "count_depth": depth,
                    **privacy,
                }
            )
        logger.info(
            "Benchmark %s, %s SPC %d draw %d: %s (%.1f s distilling)",
            key,
            method,
            spc,
            draw,
            ", ".join(
                f"{r['model']} {r['accuracy_mean']:.3f}"
                for r in runs
                if r["draw"] == draw
            ),
            seconds,
        )
    return runs


def assemble(
    references: dict[str, dict[str, Any]],
    cells: Sequence[dict[str, Any]],
    *,
    benchmark: BenchmarkParams,
) -> tuple[pd.DataFrame, str]:
    """Join the cells' runs into the benchmark table and its markdown.

    Args:
        references: ``{label column: reference}`` (gives the label order).
        cells: ``{"method", "spc", "skipped", "runs"}`` per grid cell.
        benchmark: ``params:benchmark`` (``methods`` in table order,
            ``models``, ``draws`` per cell).

    Returns:
        The table (one row per label × model × method × SPC, plus each
        label's and model's ``full`` row; see
        :mod:`scdd.benchmark.table`) and the markdown rendering.
    """
    methods = list(benchmark.methods)
    runs = pd.DataFrame([run for cell in cells for run in cell["runs"]])
    done = sorted(
        {(c["method"], c["spc"]) for c in cells if not c["skipped"]},
        key=lambda mc: (methods.index(mc[0]), mc[1]),
    )
    logger.info("Benchmark cells computed: %s", done)
    if not runs.empty:
        order = {
            "label_key": {k: i for i, k in enumerate(references)},
            "method": {m: i for i, m in enumerate(methods)},
        }
        runs = runs.sort_values(
            ["label_key", "method", "spc", "draw"],
            key=lambda s: s.map(order[s.name]) if s.name in order else s,
            kind="stable",
        )
    table = benchmark_table(runs, references, list(benchmark.models))
    splits = {ref.get("scored_on", "test") for ref in references.values()}
    return table, benchmark_markdown(
        table, draws=benchmark.draws, scored_on=", ".join(splits)
    )
