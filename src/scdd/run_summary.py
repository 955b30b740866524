"""What a run found and where it put it.

:func:`model_table` and :func:`privacy_table` turn ``metrics.json`` into the
tables users ask for first (models x accuracy, full-split accuracy,
retention; the privacy figures); :func:`summary_text` is the screenful a run
ends with (:class:`scdd.hooks.SummaryHooks`), the notebook shows the same
tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anndata as ad
import pandas as pd

#: Artefacts the summary points to, in the order it lists them.
REPORTED = (
    "evaluation_metrics",
    "umap_plot",
    "correlation_plot",
    "hvg_plot",
    "loss_plot",
    "benchmark_markdown",
    "benchmark_table",
)


def model_table(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """One row per evaluation model: accuracy (%) on the scored split when
    trained on the synthetic set and on the whole training split, and the
    retention (their ratio)."""
    rows = {
        name: {
            "accuracy": 100 * scores["accuracy_mean"],
            "± std": 100 * scores.get("accuracy_std", float("nan")),
            "full split": 100
            * scores.get("full", {}).get("accuracy_mean", float("nan")),
            "retention": scores.get("retention", float("nan")),
        }
        for name, scores in metrics.get("models", {}).items()
    }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "model"
    return table.round({"accuracy": 1, "± std": 1, "full split": 1, "retention": 3})


def privacy_table(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """One row per attack: the distance attacks in F-space and gene space
    (nearest-record ratio, attack TPR at 1% FPR and AUC, exact and near
    copies) and the model attack (TPR and AUC)."""
    privacy = metrics.get("privacy", {})
    rows = {
        space.replace("_", " "): {
            "nearest-record ratio": figures["nearest_record_ratio"],
            "attack TPR@1%FPR": figures["attack_tpr_at_1fpr"],
            "attack AUC": figures["attack_auc"],
            "copies": figures["exact_copies"] + figures["near_copies"],
        }
        for space in ("f_space", "gene_space")
        if (figures := privacy.get(space))
    }
    if model := privacy.get("model"):
        rows["model"] = {
            "attack TPR@1%FPR": model["attack_tpr_at_1fpr"],
            "attack AUC": model["attack_auc"],
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "space"
    return table.round(3)


def privacy_verdict(metrics: Mapping[str, Any]) -> str:
    """The guard's verdict in words (what was judged, what failed)."""
    guard = metrics.get("privacy", {}).get("guard")
    if not guard:
        return "not measured"
    judged = f" (judged: {guard['judged']})" if guard.get("judged") else ""
    if guard["passes"]:
        return f"passes the guard{judged}"
    return f"FAILS the guard{judged}: " + "; ".join(guard.get("failures", []))


def describe_synthetic(synthetic: ad.AnnData, label_key: str, method: str) -> str:
    """``"16 cells, 8 classes x 2 per class (scdd), real cells: no"``."""
    counts = synthetic.obs[label_key].value_counts()
    low, high = int(counts.min()), int(counts.max())
    per_class = f"{high}" if low == high else f"{low}-{high}"
    real = bool(synthetic.uns.get("scdd", {}).get("real_cells", False))
    return (
        f"{synthetic.n_obs} cells, {len(counts)} classes x {per_class} per class "
        f"({method}), real cells: {'yes' if real else 'no'}"
    )


def summary_text(
    *,
    data: Mapping[str, Any],
    method: str,
    synthetic: tuple[ad.AnnData, str] | None,
    metrics: Mapping[str, Any] | None,
    files: Mapping[str, str],
) -> str:
    """The end-of-run screenful.

    Args:
        data: ``params:data`` as plain values (``input``, ``label_key``).
        method: ``distill.method``.
        synthetic: the synthetic set and its path, when the run made it.
        metrics: ``metrics.json``, when the run evaluated the set.
        files: artefact name -> path of what else the run wrote.
    """
    label_key = data["label_key"]
    lines = [f"Input: {data['input']} (label: {label_key})"]
    if synthetic is not None:
        adata, path = synthetic
        lines.append(
            f"Synthetic set: {path}: {describe_synthetic(adata, label_key, method)}"
        )
        recorded = adata.uns.get("scdd", {})
        if metrics is None and "privacy" in recorded:  # the distill-time guard
            lines.append(
                "Privacy (against the validation split): " + privacy_verdict(recorded)
            )
    if metrics is not None:
        lines += [
            f"Scored on the {metrics.get('scored_on', 'test')} split "
            "(accuracy %, full split = the model trained on every training cell):",
            model_table(metrics).to_string(),
            f"Privacy: {privacy_verdict(metrics)}",
            privacy_table(metrics).to_string(),
        ]
    lines += [f"{name}: {path}" for name, path in files.items()]
    return "\n".join(lines)
