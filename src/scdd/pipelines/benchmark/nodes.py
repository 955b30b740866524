"""Nodes of the ``benchmark`` pipeline: label × method × SPC × draw -> one table.

Each (method, SPC) cell of the benchmark is its own node
(:func:`benchmark_cell`, bound with :func:`functools.partial`), so Kedro's
ParallelRunner can run them side by side; :func:`assemble_benchmark` joins
their rows. A cell loops over the label columns (``benchmark.label_keys``;
default ``data.label_key``) and draws; the label-dependent generators and
full-split references are made first, by :func:`train_label_generators` and
:func:`label_references`. The work is done by
:mod:`scdd.benchmark.runs`; these wrappers hand it the parameter groups
(``benchmark.methods`` / ``spcs`` are validated by
:class:`~scdd.benchmark.config.BenchmarkParams` before the run).
"""

from __future__ import annotations

import logging
from typing import Any

import anndata as ad
import pandas as pd

from scdd.benchmark import runs
from scdd.distill.real_cells import RealCellStats
from scdd.models.foundation import FoundationModel
from scdd.params import (
    BenchmarkParams,
    DataParams,
    DistillParams,
    EvaluateParams,
    FoundationParams,
    GeneratorParams,
    PreprocessParams,
)
from scdd.run_context import current_run

__all__ = [
    "assemble_benchmark",
    "benchmark_cell",
    "label_references",
    "train_label_generators",
]

logger = logging.getLogger(__name__)


def _labels(
    params: BenchmarkParams, data: DataParams, preprocess: PreprocessParams
) -> dict[str, Any]:
    """The benchmark and label-column arguments of :mod:`scdd.benchmark.runs`."""
    return {
        "benchmark": params,
        "primary": data.label_key,
        "min_cells": preprocess.min_cells_per_class,
    }


def train_label_generators(  # noqa: PLR0913
    generator_checkpoint: dict[str, Any],
    train: ad.AnnData,
    test: ad.AnnData,
    train_embeddings: ad.AnnData,
    test_embeddings: ad.AnnData,
    params: BenchmarkParams,
    generator: GeneratorParams,
    data: DataParams,
    preprocess: PreprocessParams,
) -> dict[str, dict[str, Any]]:
    """An SCDG per benchmarked label column the main generator lacks.

    Nothing is trained when no selected method uses a generator, or when the
    main generator is conditioned on every benchmarked column
    (``generator.conditions``).

    Returns:
        ``{label column: checkpoint}`` (possibly empty).
    """
    return runs.label_generators(
        generator_checkpoint,
        (train, test, train_embeddings, test_embeddings),
        **_labels(params, data, preprocess),
        model=generator.model,
        train=generator.train,
        **current_run().kwargs(),
    )


def label_references(  # noqa: PLR0913
    full_reference: dict[str, Any],
    train: ad.AnnData,
    test: ad.AnnData,
    train_embeddings: ad.AnnData,
    test_embeddings: ad.AnnData,
    params: BenchmarkParams,
    evaluate: EvaluateParams,
    data: DataParams,
    preprocess: PreprocessParams,
) -> dict[str, dict[str, Any]]:
    """The benchmark's models trained on the full training split, per label.

    ``full_reference`` (the ``evaluate`` pipeline's) is reused for
    ``data.label_key`` when it has every model of ``benchmark.models``.

    Returns:
        ``{label column: reference}`` in ``benchmark.label_keys`` order.
    """
    return runs.label_references(
        full_reference,
        (train, test, train_embeddings, test_embeddings),
        **_labels(params, data, preprocess),
        evaluate=evaluate,
        **current_run().kwargs(),
    )


def benchmark_cell(  # noqa: PLR0913
    train: ad.AnnData,
    test: ad.AnnData,
    train_embeddings: ad.AnnData,
    test_embeddings: ad.AnnData,
    real_cell_stats: dict[str, Any],
    foundation: FoundationModel,
    generator_checkpoint: dict[str, Any] | None,
    label_generators: dict[str, dict[str, Any]],
    references: dict[str, dict[str, Any]],
    params: BenchmarkParams,
    distill: DistillParams,
    evaluate: EvaluateParams,
    data: DataParams,
    foundation_params: FoundationParams,
    preprocess: PreprocessParams,
    *,
    method: str,
    spc: int,
) -> dict[str, Any]:
    """All label columns and draws of one (method, SPC), or a skipped marker.

    Args:
        train, test: real splits (log-normalised; lazy or in memory).
        train_embeddings, test_embeddings: cached F(train), F(test).
        real_cell_stats: cached statistics of the training cells (main label).
        foundation: frozen E and D.
        generator_checkpoint: the main SCDG (read only by methods that need
            one), used for the label columns it is conditioned on.
        label_generators: :func:`train_label_generators`' SCDGs for the others.
        references: :func:`label_references`' output.
        params: ``params:benchmark`` (``label_keys``, ``methods``, ``spcs``,
            ``draws``, ``models``, ``steps``).
        distill: ``params:distill`` (method settings; ``method`` and ``spc``
            are this cell's, ``optim.steps`` is ``benchmark.steps`` when set).
        evaluate: ``params:evaluate`` (model settings; ``models`` replaced by
            ``benchmark.models``).
        data, foundation_params, preprocess: shared parameter groups (the
            run's ``seed``, ``device`` and ``progress`` come from
            :func:`scdd.run_context.current_run`).
        method, spc: the cell this node computes (bound in the pipeline).

    Returns:
        ``{"method", "spc", "skipped": bool, "runs": [row, ...]}``, one row
        per (label column, draw, model) with the model's scores,
        ``retention`` and the distillation time.
    """
    out: dict[str, Any] = {"method": method, "spc": spc, "skipped": True, "runs": []}
    if method not in params.methods or spc not in params.spcs:
        return out
    out["runs"] = runs.cell_runs(
        (train, test, train_embeddings, test_embeddings),
        foundation,
        generator_checkpoint,
        label_generators,
        references,
        **_labels(params, data, preprocess),
        method=method,
        spc=spc,
        primary_stats=RealCellStats.from_checkpoint(real_cell_stats),
        distill=distill,
        evaluate=evaluate,
        chunk_size=foundation_params.embed.chunk_size,
        **current_run().kwargs(),
    )
    out["skipped"] = False
    return out


def assemble_benchmark(
    references: dict[str, dict[str, Any]],
    params: BenchmarkParams,
    *cells: dict[str, Any],
) -> tuple[pd.DataFrame, str]:
    """Join the cells' runs into the benchmark table and its markdown.

    Returns:
        The table (one row per label × model × method × SPC, plus each
        label's and model's ``full`` row; see
        :mod:`scdd.benchmark.table`) and the markdown rendering.
    """
    return runs.assemble(references, cells, benchmark=params)
