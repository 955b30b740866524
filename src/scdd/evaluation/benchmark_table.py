"""The benchmark table: per-draw runs -> mean ± std per method and SPC, markdown.

Pure pandas. One *run* is one (model, method, SPC, draw) with the evaluation
model's scores (``accuracy_mean`` is the mean over the model's random
initialisations, ``accuracy_std`` their spread) and ``retention`` (accuracy /
the same model trained on the whole training split). The table aggregates
runs over draws: ``<metric>_mean`` / ``<metric>_std`` are the mean and the
population standard deviation (``ddof=0``, as :mod:`scdd.evaluation.summary`)
of the per-draw means; ``head_std`` is the mean within-draw spread over
initialisations.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

#: Scores aggregated over draws.
SCORES = ("accuracy", "balanced_accuracy", "macro_f1", "retention")
#: Name of the whole-training-split row.
FULL = "full"
#: Columns of the benchmark table, in order.
COLUMNS = (
    "model",
    "method",
    "spc",
    "n_draws",
    *(f"{s}_{a}" for s in SCORES for a in ("mean", "std")),
    "head_std",
    "seconds_mean",
)


def summarise_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over draws per (model, method, SPC), in first-seen order.

    Args:
        runs: one row per run with ``model``, ``method``, ``spc``, ``draw``,
            ``accuracy_mean``, ``accuracy_std``, ``balanced_accuracy_mean``,
            ``macro_f1_mean``, ``retention`` and ``seconds``.

    Returns:
        One row per (model, method, SPC) with :data:`COLUMNS`.
    """
    if runs.empty:
        return pd.DataFrame(columns=list(COLUMNS))
    values = runs.assign(
        accuracy=runs["accuracy_mean"],
        balanced_accuracy=runs["balanced_accuracy_mean"],
        macro_f1=runs["macro_f1_mean"],
        retention=pd.to_numeric(runs["retention"], errors="coerce"),
    )
    groups = values.groupby(["model", "method", "spc"], sort=False)
    out = groups.size().rename("n_draws").to_frame()
    for score in SCORES:
        out[f"{score}_mean"] = groups[score].mean()
        out[f"{score}_std"] = groups[score].std(ddof=0)
    out["head_std"] = groups["accuracy_std"].mean()
    out["seconds_mean"] = groups["seconds"].mean()
    return out.reset_index()[list(COLUMNS)]


def full_rows(reference: Mapping[str, Any], models: Iterable[str]) -> pd.DataFrame:
    """The whole-training-split row of each model (retention 1; SPC missing).

    Args:
        reference: ``full_reference_metrics`` (``{"models": {name: result}}``).
        models: evaluation models of the benchmark; a model the reference
            lacks gets no row.
    """
    rows = []
    for model in models:
        result = (reference.get("models") or {}).get(model)
        if result is None:
            continue
        row = {"model": model, "method": FULL, "spc": np.nan, "n_draws": 1}
        for score in ("accuracy", "balanced_accuracy", "macro_f1"):
            row[f"{score}_mean"] = result[f"{score}_mean"]
            row[f"{score}_std"] = 0.0
        row.update(
            retention_mean=1.0,
            retention_std=0.0,
            head_std=result.get("accuracy_std", np.nan),
            seconds_mean=np.nan,
        )
        rows.append(row)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def benchmark_table(
    runs: pd.DataFrame, reference: Mapping[str, Any], models: Iterable[str]
) -> pd.DataFrame:
    """Full rows first, then :func:`summarise_runs`, SPC as a nullable int."""
    models = list(models)
    parts = [full_rows(reference, models), summarise_runs(runs)]
    table = pd.concat([p for p in parts if not p.empty], ignore_index=True)
    if table.empty:
        return pd.DataFrame(columns=list(COLUMNS))
    table["spc"] = pd.array(table["spc"], dtype="Int64")
    order = {m: i for i, m in enumerate(models)}
    table = table.sort_values(
        "model", key=lambda s: s.map(order).fillna(len(order)), kind="stable"
    )
    return table.reset_index(drop=True)


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
    """Header and rows (method × SPC, "mean ± std" in percent) of one model.

    The full row repeats its single value under every SPC.
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


def benchmark_markdown(
    table: pd.DataFrame,
    *,
    label_key: str,
    draws: int | None = None,
    digits: int = 1,
) -> str:
    """The benchmark as markdown: per model, an accuracy and a retention table
    (rows: methods, columns: SPC; cells "mean ± std" in percent over draws)."""
    lines = [f"# Benchmark: label `{label_key}`", ""]
    if draws is not None:
        lines += [
            f"Mean ± std over {draws} draw(s) of the seed cells (percent); "
            "retention = accuracy / the same model trained on the whole "
            "training split (row `full`).",
            "",
        ]
    if table.empty:
        return "\n".join([*lines, "No benchmark runs.", ""])
    for model in dict.fromkeys(table["model"]):
        for score, title in (("accuracy", "accuracy"), ("retention", "retention")):
            header, body = score_grid(table, model, score, digits)
            lines += [f"## {model}: {title} (%)", "", _pipe_table(header, body), ""]
    return "\n".join(lines)
