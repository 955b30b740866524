"""Nodes of the ``benchmark`` pipeline: every method × SPC × draw -> one table.

Each (method, SPC) cell of the benchmark is its own node
(:func:`benchmark_cell`, bound with :func:`functools.partial`), so Kedro's
ParallelRunner can run them side by side; :func:`assemble_benchmark` joins
their rows. One draw builds the synthetic set exactly as the
``latent_distillation`` pipeline does (``params:distill``, seed
``seed + draw``) and scores it with the ``evaluate`` pipeline's own node
functions (:func:`embed_synthetic_set`, :func:`evaluate_synthetic_models`)
against the cached ``full_reference_metrics``.

Only the configured label column (``data.label_key``) is benchmarked; a
benchmark over several label columns is out of scope (run once per column).
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

import anndata as ad
import pandas as pd

from scdd.distill.inputs import distill_synthetic, prepare_inputs
from scdd.distill.methods import METHODS, NEEDS_GENERATOR
from scdd.evaluation.benchmark_table import benchmark_markdown, benchmark_table
from scdd.models.device import resolve_device
from scdd.models.foundation import FoundationModel
from scdd.pipelines.evaluate.nodes import (
    embed_synthetic_set,
    evaluate_synthetic_models,
)

logger = logging.getLogger(__name__)

#: Methods that get a node (``full`` is the reference row, not a node).
BENCHMARK_METHODS: tuple[str, ...] = tuple(m for m in METHODS if m != "full")
#: SPC values that get a node.
BENCHMARK_SPCS: tuple[int, ...] = (1, 2, 5, 10)


def node_suffix(method: str, spc: int) -> str:
    """``<method>_spc<k>`` with characters Kedro names dislike replaced."""
    return f"{method.replace('+', '_plus_')}_spc{spc}"


def check_benchmark_params(params: dict[str, Any]) -> None:
    """Refuse methods / SPCs that have no node, and an empty model list."""
    unknown = sorted(set(params["methods"]) - set(BENCHMARK_METHODS))
    if unknown:
        raise ValueError(
            f"benchmark.methods lists {unknown}; choose among "
            f"{list(BENCHMARK_METHODS)} (the full training split is always "
            "the reference row)."
        )
    spcs = sorted(set(map(int, params["spcs"])) - set(BENCHMARK_SPCS))
    if spcs:
        raise ValueError(
            f"benchmark.spcs lists {spcs}; the pipeline has nodes for SPC "
            f"{list(BENCHMARK_SPCS)} only (edit BENCHMARK_SPCS in "
            "scdd.pipelines.benchmark.nodes to add more)."
        )
    if not params.get("models"):
        raise ValueError("benchmark.models is empty; list evaluation models.")
    if int(params["draws"]) < 1:
        raise ValueError("benchmark.draws must be at least 1.")


def _distill_params(params: dict[str, Any], distill: dict[str, Any]) -> dict:
    """``params:distill`` with ``benchmark.steps`` (when set) as the step count."""
    out = copy.deepcopy(distill)
    if params.get("steps") is not None:
        out["optim"]["steps"] = int(params["steps"])
    return out


def benchmark_cell(
    train: ad.AnnData,
    test: ad.AnnData,
    train_embeddings: ad.AnnData,
    test_embeddings: ad.AnnData,
    foundation: FoundationModel,
    generator_checkpoint: dict[str, Any] | None,
    full_reference: dict[str, Any],
    params: dict[str, Any],
    distill: dict[str, Any],
    evaluate: dict[str, Any],
    data: dict[str, Any],
    foundation_params: dict[str, Any],
    seed: int,
    device: str,
    progress: bool,
    *,
    method: str,
    spc: int,
) -> dict[str, Any]:
    """All draws of one (method, SPC), or a skipped marker when not selected.

    Args:
        train, test: real splits (log-normalised).
        train_embeddings, test_embeddings: cached F(train), F(test).
        foundation: frozen E and D.
        generator_checkpoint: SCDG (read only by methods that need it).
        full_reference: the ``evaluate`` pipeline's ``full_reference_metrics``.
        params: ``params:benchmark`` (``methods``, ``spcs``, ``draws``,
            ``models``, ``steps``).
        distill: ``params:distill`` (method settings; ``method`` and ``spc``
            are ignored).
        evaluate: ``params:evaluate`` (model settings; ``models`` replaced by
            ``benchmark.models``).
        data, foundation_params, seed, device, progress: shared parameters.
        method, spc: the cell this node computes (bound in the pipeline).

    Returns:
        ``{"method", "spc", "skipped": bool, "runs": [row, ...]}``, one row
        per (draw, model) with the model's scores, ``retention`` and the
        distillation time.
    """
    check_benchmark_params(params)
    out: dict[str, Any] = {"method": method, "spc": spc, "skipped": True, "runs": []}
    if method not in params["methods"] or spc not in set(map(int, params["spcs"])):
        return out
    key = data["label_key"]
    dparams = _distill_params(params, distill)
    eparams = {**evaluate, "models": list(params["models"])}
    inputs, categories, aligned = prepare_inputs(
        train,
        train_embeddings,
        foundation,
        generator_checkpoint if method in NEEDS_GENERATOR else None,
        label_key=key,
        min_gene_overlap=foundation_params["min_gene_overlap"],
    )
    for draw in range(int(params["draws"])):
        draw_seed = int(seed) + draw
        start = time.perf_counter()
        synthetic, _ = distill_synthetic(
            inputs,
            categories,
            aligned,
            method=method,
            params={**dparams, "spc": spc},
            label_key=key,
            seed=draw_seed,
            device=resolve_device(device),
            progress=progress,
        )
        seconds = time.perf_counter() - start
        embedded = embed_synthetic_set(
            synthetic,
            train_embeddings,
            foundation,
            data,
            foundation_params,
            device,
            progress,
        )
        metrics = evaluate_synthetic_models(
            synthetic,
            embedded,
            test,
            test_embeddings,
            full_reference,
            eparams,
            data,
            foundation_params,
            draw_seed,
            device,
            progress,
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
            out["runs"].append(
                {
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
                }
            )
        logger.info(
            "Benchmark %s SPC %d draw %d: %s (%.1f s distilling)",
            method,
            spc,
            draw,
            ", ".join(
                f"{r['model']} {r['accuracy_mean']:.3f}"
                for r in out["runs"]
                if r["draw"] == draw
            ),
            seconds,
        )
    out["skipped"] = False
    return out


def assemble_benchmark(
    full_reference: dict[str, Any],
    params: dict[str, Any],
    data: dict[str, Any],
    *cells: dict[str, Any],
) -> tuple[pd.DataFrame, str]:
    """Join the cells' runs into the benchmark table and its markdown.

    Returns:
        The table (one row per model × method × SPC, plus each model's
        ``full`` row; see :mod:`scdd.evaluation.benchmark_table`) and the
        markdown rendering.
    """
    runs = pd.DataFrame([run for cell in cells for run in cell["runs"]])
    done = sorted(
        {(c["method"], c["spc"]) for c in cells if not c["skipped"]},
        key=lambda mc: (list(params["methods"]).index(mc[0]), mc[1]),
    )
    logger.info("Benchmark cells computed: %s", done)
    if not runs.empty:
        order = {m: i for i, m in enumerate(params["methods"])}
        runs = runs.sort_values(
            ["method", "spc", "draw"],
            key=lambda s: s.map(order) if s.name == "method" else s,
            kind="stable",
        )
    table = benchmark_table(runs, full_reference, params["models"])
    markdown = benchmark_markdown(
        table, label_key=data["label_key"], draws=int(params["draws"])
    )
    return table, markdown
