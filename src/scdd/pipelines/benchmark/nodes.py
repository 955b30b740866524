"""Nodes of the ``benchmark`` pipeline: label × method × SPC × draw -> one table.

Each (method, SPC) cell of the benchmark is its own node
(:func:`benchmark_cell`, bound with :func:`functools.partial`), so Kedro's
ParallelRunner can run them side by side; :func:`assemble_benchmark` joins
their rows. A cell loops over the label columns (``benchmark.label_keys``;
default ``data.label_key``). One draw builds the synthetic set exactly as
the ``latent_distillation`` pipeline does (``params:distill``, seed
``seed + draw``) and scores it with the ``evaluate`` pipeline's own node
functions (:func:`embed_synthetic_set`, :func:`evaluate_synthetic_models`)
against the label's full-split reference.

The split, F and its embeddings are shared by every label column (F is
label-blind). What depends on the label is prepared once, before the cells:
:func:`train_label_generators` trains an SCDG for each label column the
main generator is not conditioned on, and :func:`label_references` trains
the evaluation models on the full training split per label column (the
main ``full_reference_metrics`` serves ``data.label_key``). For a label
column other than ``data.label_key`` (:func:`label_view`), cells without a
label are left out and classes with fewer than
``preprocess.min_cells_per_class`` training cells are dropped, as
preprocessing does for the main label.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

import anndata as ad
import pandas as pd

from scdd import generation
from scdd.distill.inputs import distill_synthetic, prepare_inputs
from scdd.distill.methods import METHODS, NEEDS_GENERATOR
from scdd.evaluation.benchmark_table import benchmark_markdown, benchmark_table
from scdd.models.device import resolve_device
from scdd.models.foundation import FoundationModel
from scdd.pipelines.evaluate.nodes import (
    embed_synthetic_set,
    evaluate_full_reference,
    evaluate_synthetic_models,
)
from scdd.preprocessing import check_labels, filter_small_classes

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


def benchmark_label_keys(params: dict[str, Any], data: dict[str, Any]) -> list[str]:
    """``benchmark.label_keys``, or ``[data.label_key]`` when it is null/empty."""
    keys = params.get("label_keys") or [data["label_key"]]
    keys = [str(k) for k in ([keys] if isinstance(keys, str) else keys)]
    if len(set(keys)) != len(keys):
        raise ValueError(f"benchmark.label_keys lists a column twice: {keys}.")
    return keys


def label_view(
    train: ad.AnnData,
    test: ad.AnnData,
    train_embeddings: ad.AnnData,
    test_embeddings: ad.AnnData,
    *,
    key: str,
    primary: str,
    min_cells: int,
) -> tuple[ad.AnnData, ad.AnnData, ad.AnnData, ad.AnnData]:
    """The splits and their embeddings as seen by label column ``key``.

    The main label (``primary``) was cleaned by preprocessing: returned as is.
    For another column, unlabelled cells are left out, classes with fewer than
    ``min_cells`` training cells are dropped (with a warning), test cells of
    dropped classes are left out, and ``obs[key]`` becomes a categorical of
    the kept classes on all four.

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
    try:
        cleaned, dropped = filter_small_classes(
            check_labels(train, label_key=key), label_key=key, min_cells=min_cells
        )
    except ValueError as err:
        raise ValueError(f"benchmark.label_keys: column '{key}': {err}") from err
    if dropped:
        logger.warning("Label '%s': classes %s left out of the benchmark", key, dropped)
    classes = cleaned.obs[key].cat.categories

    def select(
        cells: ad.AnnData, embeddings: ad.AnnData, what: str
    ) -> tuple[ad.AnnData, ad.AnnData]:
        # Boolean masks, not obs names: merged datasets may repeat cell names.
        labels = cells.obs[key]
        keep = labels.notna().to_numpy() & labels.astype(str).isin(classes).to_numpy()
        if not keep.any():
            raise ValueError(
                f"benchmark.label_keys: column '{key}': no cell of the {what} has "
                f"one of the training classes {list(classes)}."
            )
        codes = pd.Categorical(labels[keep].astype(str), categories=classes)
        out = cells[keep].copy(), embeddings[keep].copy()
        for adata in out:
            adata.obs[key] = codes
        return out

    train_view, train_z = select(train, train_embeddings, "training split")
    test_view, test_z = select(test, test_embeddings, "test split")
    return train_view, test_view, train_z, test_z


def _view(
    key: str, data: dict[str, Any], preprocess: dict[str, Any], *splits: ad.AnnData
) -> tuple[ad.AnnData, ad.AnnData, ad.AnnData, ad.AnnData]:
    """:func:`label_view` of the four splits with the run's parameters."""
    return label_view(
        *splits,
        key=key,
        primary=data["label_key"],
        min_cells=preprocess["min_cells_per_class"],
    )


def train_label_generators(
    generator_checkpoint: dict[str, Any],
    train: ad.AnnData,
    test: ad.AnnData,
    train_embeddings: ad.AnnData,
    test_embeddings: ad.AnnData,
    params: dict[str, Any],
    generator: dict[str, Any],
    data: dict[str, Any],
    preprocess: dict[str, Any],
    seed: int,
    device: str,
    progress: bool,
) -> dict[str, dict[str, Any]]:
    """An SCDG per benchmarked label column the main generator lacks.

    Nothing is trained when no selected method uses a generator, or when the
    main generator is conditioned on every benchmarked column
    (``generator.conditions``).

    Returns:
        ``{label column: checkpoint}`` (possibly empty).
    """
    check_benchmark_params(params)
    if not set(params["methods"]) & set(NEEDS_GENERATOR):
        return {}
    known = set(generator_checkpoint.get("condition_columns", []))
    out = {}
    for key in benchmark_label_keys(params, data):
        if key in known:
            continue
        _, _, embeddings, _ = _view(
            key, data, preprocess, train, test, train_embeddings, test_embeddings
        )
        logger.info("Training SCDG for label '%s' (%d cells)", key, embeddings.n_obs)
        out[key], _ = generation.train_generator(
            embeddings,
            [key],
            model=generator["model"],
            train=generator["train"],
            seed=seed,
            device=resolve_device(device),
            progress=progress,
        )
    return out


def label_references(
    full_reference: dict[str, Any],
    train: ad.AnnData,
    test: ad.AnnData,
    train_embeddings: ad.AnnData,
    test_embeddings: ad.AnnData,
    params: dict[str, Any],
    evaluate: dict[str, Any],
    data: dict[str, Any],
    foundation_params: dict[str, Any],
    preprocess: dict[str, Any],
    seed: int,
    device: str,
    progress: bool,
) -> dict[str, dict[str, Any]]:
    """The benchmark's models trained on the full training split, per label.

    ``full_reference`` (the ``evaluate`` pipeline's) is reused for
    ``data.label_key`` when it has every model of ``benchmark.models``.

    Returns:
        ``{label column: reference}`` in ``benchmark.label_keys`` order.
    """
    check_benchmark_params(params)
    models = list(params["models"])
    known = full_reference.get("models") or {}
    out = {}
    for key in benchmark_label_keys(params, data):
        if key == data["label_key"] and all(known.get(m) for m in models):
            out[key] = full_reference
            continue
        out[key] = evaluate_full_reference(
            *_view(
                key, data, preprocess, train, test, train_embeddings, test_embeddings
            ),
            {**evaluate, "models": models},
            {**data, "label_key": key},
            foundation_params,
            seed,
            device,
            progress,
        )
    return out


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
    label_generators: dict[str, dict[str, Any]],
    references: dict[str, dict[str, Any]],
    params: dict[str, Any],
    distill: dict[str, Any],
    evaluate: dict[str, Any],
    data: dict[str, Any],
    foundation_params: dict[str, Any],
    preprocess: dict[str, Any],
    seed: int,
    device: str,
    progress: bool,
    *,
    method: str,
    spc: int,
) -> dict[str, Any]:
    """All label columns and draws of one (method, SPC), or a skipped marker.

    Args:
        train, test: real splits (log-normalised).
        train_embeddings, test_embeddings: cached F(train), F(test).
        foundation: frozen E and D.
        generator_checkpoint: the main SCDG (read only by methods that need
            one), used for the label columns it is conditioned on.
        label_generators: :func:`train_label_generators`' SCDGs for the others.
        references: :func:`label_references`' output.
        params: ``params:benchmark`` (``label_keys``, ``methods``, ``spcs``,
            ``draws``, ``models``, ``steps``).
        distill: ``params:distill`` (method settings; ``method`` and ``spc``
            are ignored).
        evaluate: ``params:evaluate`` (model settings; ``models`` replaced by
            ``benchmark.models``).
        data, foundation_params, preprocess, seed, device, progress: shared
            parameters.
        method, spc: the cell this node computes (bound in the pipeline).

    Returns:
        ``{"method", "spc", "skipped": bool, "runs": [row, ...]}``, one row
        per (label column, draw, model) with the model's scores,
        ``retention`` and the distillation time.
    """
    check_benchmark_params(params)
    out: dict[str, Any] = {"method": method, "spc": spc, "skipped": True, "runs": []}
    if method not in params["methods"] or spc not in set(map(int, params["spcs"])):
        return out
    for key in benchmark_label_keys(params, data):
        if key not in references:
            raise ValueError(
                f"No full-split reference for label '{key}' in "
                "benchmark_references; re-run the benchmark pipeline without "
                "--only-missing-outputs."
            )
        views = _view(
            key, data, preprocess, train, test, train_embeddings, test_embeddings
        )
        checkpoint = label_generators.get(key, generator_checkpoint)
        out["runs"] += _label_runs(
            *views,
            foundation,
            checkpoint if method in NEEDS_GENERATOR else None,
            references[key],
            params,
            distill,
            evaluate,
            {**data, "label_key": key},
            foundation_params,
            seed,
            device,
            progress,
            method=method,
            spc=spc,
        )
    out["skipped"] = False
    return out


def _label_runs(
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
) -> list[dict[str, Any]]:
    """Every draw of one (label column = ``data.label_key``, method, SPC)."""
    key = data["label_key"]
    dparams = _distill_params(params, distill)
    eparams = {**evaluate, "models": list(params["models"])}
    inputs, categories, aligned = prepare_inputs(
        train,
        train_embeddings,
        foundation,
        generator_checkpoint,
        label_key=key,
        min_gene_overlap=foundation_params["min_gene_overlap"],
    )
    runs = []
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


def assemble_benchmark(
    references: dict[str, dict[str, Any]],
    params: dict[str, Any],
    *cells: dict[str, Any],
) -> tuple[pd.DataFrame, str]:
    """Join the cells' runs into the benchmark table and its markdown.

    Returns:
        The table (one row per label × model × method × SPC, plus each
        label's and model's ``full`` row; see
        :mod:`scdd.evaluation.benchmark_table`) and the markdown rendering.
    """
    runs = pd.DataFrame([run for cell in cells for run in cell["runs"]])
    done = sorted(
        {(c["method"], c["spc"]) for c in cells if not c["skipped"]},
        key=lambda mc: (list(params["methods"]).index(mc[0]), mc[1]),
    )
    logger.info("Benchmark cells computed: %s", done)
    if not runs.empty:
        order = {
            "label_key": {k: i for i, k in enumerate(references)},
            "method": {m: i for i, m in enumerate(params["methods"])},
        }
        runs = runs.sort_values(
            ["label_key", "method", "spc", "draw"],
            key=lambda s: s.map(order[s.name]) if s.name in order else s,
            kind="stable",
        )
    table = benchmark_table(runs, references, params["models"])
    return table, benchmark_markdown(table, draws=int(params["draws"]))
