"""Run the evaluation models on one training set and score them on the test split.

One training set is either a synthetic set or the full real training split
(the reference that retention divides by). The models:

- ``f_head``: the paper protocol, frozen F + a linear head
  (:func:`scdd.evaluation.linear_head.evaluate_linear_head`) on F-space
  features;
- ``celltypist``: CellTypist on genes
  (:func:`scdd.evaluation.celltypist_eval.evaluate_celltypist`);
- ``gene_mlp``: an MLP on genes without F
  (:func:`scdd.evaluation.gene_mlp.evaluate_gene_mlp`);
- ``gene_transformer``: a TOSICA-like transformer over gene-group tokens
  (:func:`scdd.evaluation.gene_transformer.evaluate_gene_transformer`);
- ``deepinsight_cnn``: a CNN on DeepInsight images of the genes
  (:func:`scdd.evaluation.deepinsight_cnn.evaluate_deepinsight_cnn`).

Gene-level models are skipped, with a reason, for a feature-only set.
"""

from __future__ import annotations

import logging
import time

import anndata as ad
import numpy as np
import torch

from scdd.cellstore import Matrix
from scdd.evaluation.celltypist_eval import evaluate_celltypist
from scdd.evaluation.config import GENE_MODELS, MODELS, EvaluateParams
from scdd.evaluation.deepinsight_cnn import evaluate_deepinsight_cnn
from scdd.evaluation.gene_mlp import evaluate_gene_mlp
from scdd.evaluation.gene_transformer import evaluate_gene_transformer
from scdd.evaluation.linear_head import evaluate_linear_head
from scdd.evaluation.summary import METRICS

logger = logging.getLogger(__name__)

#: The function of each torch model on genes; ``evaluate.<name>`` is its
#: parameter group.
TORCH_GENE_FUNCTIONS = {
    "gene_mlp": evaluate_gene_mlp,
    "gene_transformer": evaluate_gene_transformer,
    "deepinsight_cnn": evaluate_deepinsight_cnn,
}


def check_models(models: list[str]) -> list[str]:
    """Validate the ``evaluate.models`` list; return it as a list of str."""
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise ValueError(
            f"Unknown evaluation models {unknown}; evaluate.models may list "
            f"{list(MODELS)}."
        )
    if not models:
        raise ValueError(f"evaluate.models is empty; list some of {list(MODELS)}.")
    return list(models)


def run_models(  # noqa: PLR0913
    *,
    models: list[str],
    train_z: np.ndarray | None,
    train_labels: np.ndarray,
    test_z: Matrix,
    test_labels: np.ndarray,
    train_genes: ad.AnnData | None,
    test_genes: ad.AnnData | None,
    label_key: str,
    categories: list[str],
    params: EvaluateParams,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
    what: str = "synthetic",
) -> tuple[dict[str, dict | None], dict[str, str]]:
    """Train each model in ``models`` on one training set; score on the test split.

    Args:
        models: names from :data:`MODELS`.
        train_z: F-space features of the training set ``[n, d]`` (read by
            the F-head only; ``None`` when it is not among ``models``).
        train_labels: int classes ``[n]``.
        test_z: cached F(test) ``[m, d]`` (in memory or lazy).
        test_labels: int classes ``[m]``.
        train_genes: training cells with log-normalised genes and
            ``obs[label_key]``, or ``None`` for a feature-only set.
        test_genes: test cells in ``train_genes``' gene order.
        label_key: label column.
        categories: class names, index = int class.
        params: ``params:evaluate`` (one sub-group per model, the group
            that model's function takes; ``params.models`` is not read:
            ``models`` is); ``f_head.batch_size`` ``None`` trains full batch.
        seed: base seed of every model.
        device: torch device of the linear head and the MLP.
        progress: progress bars.
        what: name of the training set in log lines.

    Returns:
        ``{model: result or None}`` and ``{model: reason}`` for the skipped.
    """
    results: dict[str, dict | None] = {}
    skipped: dict[str, str] = {}
    num_classes = len(categories)
    for name in check_models(models):
        start = time.perf_counter()
        if name in GENE_MODELS and train_genes is None:
            results[name] = None
            skipped[name] = (
                "feature-only synthetic set (no gene matrix): this model reads genes"
            )
            logger.info("%s on %s set: skipped (%s)", name, what, skipped[name])
            continue
        if name == "f_head":
            results[name] = evaluate_linear_head(
                train_z,
                train_labels,
                test_z,
                test_labels,
                num_classes=num_classes,
                params=params.f_head,
                seed=seed,
                device=device,
            )
        elif name == "celltypist":
            results[name] = evaluate_celltypist(
                train_genes,
                test_genes,
                label_key=label_key,
                categories=categories,
                params=params.celltypist,
                seed=seed,
            )
        else:
            results[name] = TORCH_GENE_FUNCTIONS[name](
                train_genes.X,
                train_labels,
                test_genes.X,
                test_labels,
                num_classes=num_classes,
                params=getattr(params, name),
                seed=seed,
                device=device,
                progress=progress,
            )
        result = results[name]
        logger.info(
            "%s on %s set (%d cells): accuracy %.3f ± %.3f, balanced %.3f, "
            "macro-F1 %.3f (%.1f s)",
            name,
            what,
            result["n_train"],
            result["accuracy_mean"],
            result["accuracy_std"],
            result["balanced_accuracy_mean"],
            result["macro_f1_mean"],
            time.perf_counter() - start,
        )
    return results, skipped


def with_retention(result: dict | None, reference: dict | None) -> dict | None:
    """``result`` plus ``retention`` (accuracy) and ``retention_<metric>``.

    Retention = mean score on the synthetic set / mean score of the same model
    trained on the full training split; ``None`` when there is no reference or
    the reference scored 0. The reference's means are kept under ``full``.
    """
    if result is None:
        return None
    out = dict(result)
    ratios = {}
    for metric in METRICS:
        ref = None if reference is None else reference.get(f"{metric}_mean")
        ratios[metric] = (
            result[f"{metric}_mean"] / ref if ref is not None and ref > 0 else None
        )
    out["retention"] = ratios["accuracy"]
    out.update({f"retention_{m}": ratios[m] for m in METRICS if m != "accuracy"})
    keys = [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
    out["full"] = (
        None
        if reference is None
        else {key: reference[key] for key in keys if key in reference}
    )
    return out


def compact(result: dict | None) -> dict | None:
    """Replace ``per_init`` rows by per-metric lists (for a readable JSON)."""
    if result is None or "per_init" not in result:
        return result
    out = {k: v for k, v in result.items() if k != "per_init"}
    rows = result["per_init"]
    out["n_inits"] = len(rows)
    for metric in (*METRICS, "train_accuracy"):
        out[f"{metric}_per_init"] = [row[metric] for row in rows]
    return out
