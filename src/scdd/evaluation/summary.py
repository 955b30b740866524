"""Scores and mean ± std summaries shared by the evaluation models.

The metrics themselves (accuracy, balanced accuracy, macro-F1 over all
``num_classes`` labels) are those of the paper protocol in
:mod:`scdd.evaluation.linear_head`; the other evaluation models reuse them so
every row of ``metrics.json`` means the same thing.
"""

from __future__ import annotations

import numpy as np

from scdd.evaluation.linear_head import _METRICS, _scores

METRICS = _METRICS


def score_predictions(
    y_true: np.ndarray, y_pred: np.ndarray, *, num_classes: int
) -> dict[str, float]:
    """Accuracy, balanced accuracy and macro-F1 of int predictions ``[m]``."""
    return _scores(np.asarray(y_true), np.asarray(y_pred), num_classes)


def summarise_inits(per_init: list[dict], *, n_train: int, n_test: int) -> dict:
    """``<metric>_mean`` / ``<metric>_std`` (``ddof=0``) over repeated runs.

    Same layout as :func:`scdd.evaluation.linear_head.evaluate_linear_head`:
    the per-run rows are kept under ``per_init``.
    """
    if not per_init:
        raise ValueError("summarise_inits needs at least one run")
    result: dict = {}
    for metric in METRICS:
        values = np.array([row[metric] for row in per_init])
        result[f"{metric}_mean"] = float(values.mean())
        result[f"{metric}_std"] = float(values.std())
    result.update(per_init=per_init, n_train=int(n_train), n_test=int(n_test))
    return result
