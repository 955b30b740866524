"""The benchmark table: per-draw runs -> mean ± std per method and SPC, markdown.

Pure pandas. One *run* is one (label column, model, method, SPC, draw) with
the evaluation model's scores (``accuracy_mean`` is the mean over the model's random
initialisations, ``accuracy_std`` their spread) and ``retention`` (accuracy /
the same model trained on the whole training split). The table aggregates
runs over draws: ``<metric>_mean`` / ``<metric>_std`` are the mean and the
population standard deviation (``ddof=0``, as :mod:`scdd.evaluation.summary`)
of the per-draw means; ``head_std`` is the mean within-draw spread over
initialisations. ``distill_loss_mean`` and ``count_depth_mean`` say how
close the sets got to the real cells in F-space and at which count depth.
The :data:`PRIVACY` columns (means over draws) say whether the sets carry
training cells (:mod:`scdd.metrics.privacy`): nearest-record ratios in F-space
and gene space (~1: no closer to training than to held-out cells), the
membership attacks' true-positive rates at 1% false positives (chance 0.01)
and AUCs (distance attacks; the model attack of a classifier trained on the
set), copies of training cells, and the share of draws passing the guard.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

#: Scores aggregated over draws.
SCORES = ("accuracy", "balanced_accuracy", "macro_f1", "retention")
#: Privacy figures of each run (:func:`privacy_columns`), averaged over draws.
PRIVACY = (
    "ratio_f",
    "ratio_gene",
    "attack_tpr_f",
    "attack_tpr_gene",
    "attack_auc_gene",
    "attack_tpr_model",
    "attack_auc_model",
    "copies",
    "passes_guard",
)
#: Name of the whole-training-split row.
FULL = "full"
#: Columns of the benchmark table, in order.
COLUMNS = (
    "label_key",
    "model",
    "method",
    "spc",
    "n_draws",
    *(f"{s}_{a}" for s in SCORES for a in ("mean", "std")),
    "head_std",
    "seconds_mean",
    "distill_loss_mean",
    "count_depth_mean",
    *(f"{p}_mean" for p in PRIVACY),
)


def privacy_columns(report: Mapping[str, Any]) -> dict[str, float]:
    """One run's :data:`PRIVACY` figures from a privacy report (gene-space
    figures NaN for a feature-only set; copies in gene space, else F-space)."""
    f, gene = report["f_space"], report.get("gene_space")
    model = report.get("model")
    copies = gene or f
    return {
        "ratio_f": f["nearest_record_ratio"],
        "ratio_gene": gene["nearest_record_ratio"] if gene else np.nan,
        "attack_tpr_f": f["attack_tpr_at_1fpr"],
        "attack_tpr_gene": gene["attack_tpr_at_1fpr"] if gene else np.nan,
        "attack_auc_gene": gene["attack_auc"] if gene else np.nan,
        "attack_tpr_model": model["attack_tpr_at_1fpr"] if model else np.nan,
        "attack_auc_model": model["attack_auc"] if model else np.nan,
        "copies": copies["exact_copies"] + copies["near_copies"],
        "passes_guard": float(report["guard"]["passes"]),
    }


def summarise_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over draws per (label, model, method, SPC), in first-seen order.

    Args:
        runs: one row per run with ``label_key``, ``model``, ``method``,
            ``spc``, ``draw``,
            ``accuracy_mean``, ``accuracy_std``, ``balanced_accuracy_mean``,
            ``macro_f1_mean``, ``retention`` and ``seconds``; optionally
            ``distill_loss`` (the final F-space loss, NaN where nothing was
            optimised), ``count_depth`` (the depth kept, NaN where no
            counts were drawn) and the :data:`PRIVACY` figures.

    Returns:
        One row per (label, model, method, SPC) with :data:`COLUMNS`.
    """
    if runs.empty:
        return pd.DataFrame(columns=list(COLUMNS))
    values = runs.assign(
        accuracy=runs["accuracy_mean"],
        balanced_accuracy=runs["balanced_accuracy_mean"],
        macro_f1=runs["macro_f1_mean"],
        retention=pd.to_numeric(runs["retention"], errors="coerce"),
    )
    groups = values.groupby(["label_key", "model", "method", "spc"], sort=False)
    out = groups.size().rename("n_draws").to_frame()
    for score in SCORES:
        out[f"{score}_mean"] = groups[score].mean()
        out[f"{score}_std"] = groups[score].std(ddof=0)
    out["head_std"] = groups["accuracy_std"].mean()
    out["seconds_mean"] = groups["seconds"].mean()
    # a depth mean between two candidates says the draws kept different ones
    for column in ("distill_loss", "count_depth", *PRIVACY):
        out[f"{column}_mean"] = groups[column].mean() if column in runs else np.nan
    return out.reset_index()[list(COLUMNS)]


def full_rows(
    reference: Mapping[str, Any], models: Iterable[str], label_key: str
) -> pd.DataFrame:
    """The whole-training-split row of each model (retention 1; SPC missing).

    Args:
        reference: ``full_reference_metrics`` (``{"models": {name: result}}``).
        models: evaluation models of the benchmark; a model the reference
            lacks gets no row.
        label_key: the label column the reference was trained on.
    """
    rows = []
    for model in models:
        result = (reference.get("models") or {}).get(model)
        if result is None:
            continue
        row = {
            "label_key": label_key,
            "model": model,
            "method": FULL,
            "spc": np.nan,
            "n_draws": 1,
        }
        for score in ("accuracy", "balanced_accuracy", "macro_f1"):
            row[f"{score}_mean"] = result[f"{score}_mean"]
            row[f"{score}_std"] = 0.0
        row.update(
            retention_mean=1.0,
            retention_std=0.0,
            head_std=result.get("accuracy_std", np.nan),
            seconds_mean=np.nan,
            distill_loss_mean=np.nan,
            count_depth_mean=np.nan,
            **{f"{p}_mean": np.nan for p in PRIVACY},
        )
        rows.append(row)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def benchmark_table(
    runs: pd.DataFrame,
    references: Mapping[str, Mapping[str, Any]],
    models: Iterable[str],
) -> pd.DataFrame:
    """Per label column (in ``references``' order): full rows first, then
    :func:`summarise_runs`, rows grouped by model; SPC as a nullable int.

    Args:
        runs: the runs of every label column (column ``label_key``).
        references: ``{label column: full_reference_metrics}``.
        models: evaluation models, in table order.
    """
    models = list(models)
    order = {m: i for i, m in enumerate(models)}
    parts = []
    for label_key, reference in references.items():
        mine = runs[runs["label_key"] == label_key] if not runs.empty else runs
        pieces = [full_rows(reference, models, label_key), summarise_runs(mine)]
        pieces = [p for p in pieces if not p.empty]
        if not pieces:
            continue
        label = pd.concat(pieces, ignore_index=True)
        parts.append(
            label.sort_values(
                "model", key=lambda s: s.map(order).fillna(len(order)), kind="stable"
            )
        )
    if not parts:
        return pd.DataFrame(columns=list(COLUMNS))
    table = pd.concat(parts, ignore_index=True)
    table["spc"] = pd.array(table["spc"], dtype="Int64")
    return table


def _cell(mean: float, std: float, scale: float, digits: int) -> str:
    if mean is None or pd.isna(mean):
        return "n/a"
    std = 0.0 if std is None or pd.isna(std) else std
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def _pipe_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def score_grid(
    table: pd.DataFrame, model: str, score: str = "accuracy", digits: int = 1
) -> tuple[list[str], list[list[str]]]:
    """Header and rows (method × SPC, "mean ± std" in percent) of one model
    in a one-label ``table``. The full row repeats its value under every SPC.
    """
    rows = table[table["model"] == model]
    spcs = sorted(int(s) for s in rows["spc"].dropna().unique())
    header = ["Method", *(f"SPC {k}" for k in spcs)]
    body = []
    for method in dict.fromkeys(rows["method"]):
        sub = rows[rows["method"] == method]
        cells = []
        for k in spcs:
            hit = sub if method == FULL else sub[sub["spc"] == k]
            cells.append(
                "–"
                if hit.empty
                else _cell(
                    hit[f"{score}_mean"].iloc[0],
                    hit[f"{score}_std"].iloc[0],
                    100.0,
                    digits,
                )
            )
        body.append([method, *cells])
    return header, body


def privacy_grid(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and rows (method × SPC) of the privacy figures of a one-label
    ``table`` (the same sets are scored by every model: the first model's
    rows are read)."""
    rows = table[(table["model"] == table["model"].iloc[0]) & (table["method"] != FULL)]
    spcs = sorted(int(s) for s in rows["spc"].dropna().unique())
    body = []
    for method in dict.fromkeys(rows["method"]):
        cells = []
        for k in spcs:
            hit = rows[(rows["method"] == method) & (rows["spc"] == k)]
            if hit.empty:
                cells.append("–")
                continue
            cells.append(privacy_cell(hit.iloc[0]))
        body.append([method, *cells])
    return ["Method", *(f"SPC {k}" for k in spcs)], body


def privacy_cell(row: pd.Series) -> str:
    """One table row's privacy figures: "ratio gene / F · attack TPR gene / F
    · copies" (means over draws; ``n/a`` where a set has no genes)."""
    return (
        f"{_num(row.ratio_gene_mean, 2)} / {_num(row.ratio_f_mean, 2)} · "
        f"{_num(row.attack_tpr_gene_mean, 3)} / {_num(row.attack_tpr_f_mean, 3)}"
        f" · {_num(row.copies_mean, 1)}"
    )


def _num(value: float, digits: int) -> str:
    return "n/a" if pd.isna(value) else f"{value:.{digits}f}"


def benchmark_markdown(
    table: pd.DataFrame,
    *,
    draws: int | None = None,
    scored_on: str | None = None,
    digits: int = 1,
) -> str:
    """The benchmark as markdown: per label column and model, an accuracy and
    a retention table (rows: methods, columns: SPC; cells "mean ± std" in
    percent over draws), scored on the ``scored_on`` split, and a privacy
    table per label (:func:`privacy_grid`)."""
    lines = ["# Benchmark", ""]
    if scored_on is not None:
        lines += [f"Scored on the real **{scored_on}** split.", ""]
    if draws is not None:
        lines += [
            f"Mean ± std over {draws} draw(s) of the seed cells (percent); "
            "retention = accuracy / the same model trained on the whole "
            "training split (row `full`).",
            "",
        ]
    if table.empty:
        return "\n".join([*lines, "No benchmark runs.", ""])
    for label_key in dict.fromkeys(table["label_key"]):
        mine = table[table["label_key"] == label_key]
        lines += [f"## Label `{label_key}`", ""]
        if f"{PRIVACY[0]}_mean" in mine and mine[f"{PRIVACY[0]}_mean"].notna().any():
            lines += [
                "### Privacy: nearest-record ratio gene / F · attack TPR at 1% "
                "FPR gene / F · copies (means over draws; guard: ratio >= 0.9, "
                "TPR <= 0.02, no copies)",
                "",
                _pipe_table(*privacy_grid(mine)),
                "",
            ]
        for model in dict.fromkeys(mine["model"]):
            for score in ("accuracy", "retention"):
                header, body = score_grid(mine, model, score, digits)
                lines += [
                    f"### {model}: {score} (%)",
                    "",
                    _pipe_table(header, body),
                    "",
                ]
    return "\n".join(lines)
