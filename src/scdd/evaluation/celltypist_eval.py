"""CellTypist as a cross-architecture evaluation model (paper Table IV).

CellTypist (a logistic regression on scaled log-normalised genes) is trained
on a synthetic set as it would be on real cells, then annotates the real
test cells. Two workarounds for celltypist 1.7.1 are applied here:

- ``use_SGD=True``: its default (non-SGD) path passes ``multi_class='ovr'``
  to scikit-learn's ``LogisticRegression``, which the installed
  scikit-learn no longer accepts.
- ``check_expression=False``: the check demands per-cell ``expm1`` totals of
  1e4, which the bundled default dataset (scanpy's pbmc68k_reduced: ~2000
  per cell) and synthetic sets normalised to it do not meet; the values
  are valid log-normalised expression nonetheless.

celltypist is imported lazily: at import it calls ``logging.basicConfig``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import torch

from scdd.cellstore import row_chunks
from scdd.evaluation.config import CelltypistParams
from scdd.evaluation.gene_classifier import require_in_memory
from scdd.evaluation.summary import score_predictions, summarise_inits
from scdd.threads import follow_cores

logger = logging.getLogger(__name__)


@contextmanager
def _quiet_celltypist() -> Iterator[None]:
    """Silence celltypist's per-call INFO chatter inside the block."""
    chatty = logging.getLogger("celltypist")
    previous = chatty.level
    chatty.setLevel(logging.WARNING)
    try:
        yield
    finally:
        chatty.setLevel(previous)


def _annotate(
    celltypist: Any, cells: ad.AnnData, models: list[Any], chunk_size: int = 20_000
) -> list[np.ndarray]:
    """Labels each of ``models`` predicts for ``cells``: one pass over the
    cells, ``chunk_size`` rows at a time (``celltypist.annotate`` densifies
    and scales what it is given); a lazy ``cells.X`` is read one row block
    at a time."""
    out: list[list[np.ndarray]] = [[] for _ in models]
    names = cells.obs_names
    var = pd.DataFrame(index=cells.var_names)
    for start, rows in row_chunks(cells.X, chunk_size):
        chunk = ad.AnnData(
            X=rows,
            obs=pd.DataFrame(index=names[start : start + rows.shape[0]]),
            var=var,
        )
        for i, model in enumerate(models):
            result = celltypist.annotate(chunk, model=model, majority_voting=False)
            out[i].append(result.predicted_labels["predicted_labels"].to_numpy())
    return [np.concatenate(labels) for labels in out]


def evaluate_celltypist(
    train: ad.AnnData,
    test: ad.AnnData,
    *,
    label_key: str,
    categories: list[str],
    params: CelltypistParams,
    seed: int = 0,
) -> dict:
    """Train CellTypist on ``train``; annotate ``test`` (no majority voting).

    Args:
        train: cells ``[n, G]`` with log-normalised ``X`` (in memory) and
            ``obs[label_key]`` (a synthetic set, or a sample of the real
            training split for the reference).
        test: real test cells with the same ``var_names`` in the same order
            (``align_genes`` them first) and ``obs[label_key]``; ``X`` in
            memory or lazy (read one row block at a time, once for all runs).
        label_key: label column.
        categories: class names; index = the int class scored.
        params: ``evaluate.celltypist``: ``n_inits`` training runs, run ``i``
            with ``random_state = seed + i`` (SGD shuffles, so runs differ);
            more training cells than ``mini_batch_above`` train with
            CellTypist's mini-batch SGD (its own advice for large data: a
            fixed budget of batches instead of epochs over every cell;
            ``None``: never); ``train_kwargs``, extra ``celltypist.train``
            arguments (``alpha``, ``max_iter``, ``mini_batch``,
            ``feature_selection``...), override those defaults. ``n_jobs``
            defaults to the run's thread budget (``threads``).
        seed: base seed.

    Returns:
        The layout of ``evaluate_linear_head``: ``<metric>_mean/_std``,
        ``per_init`` (each with ``train_accuracy``), ``n_train``, ``n_test``.

    Raises:
        ValueError: gene orders differ, or a label is not in ``categories``.
    """
    import celltypist

    if list(train.var_names) != list(test.var_names):
        raise ValueError(
            "train and test cells must share var_names in the same order; align "
            "the test cells with align_genes(test, gene_order=train.var_names)"
        )
    require_in_memory(train.X, "CellTypist")
    index = pd.Index(categories)

    def codes(labels: pd.Series | np.ndarray, what: str) -> np.ndarray:
        found = index.get_indexer(np.asarray(labels).astype(str))
        if (found < 0).any():
            unknown = sorted(set(np.asarray(labels).astype(str)[found < 0].tolist()))
            raise ValueError(f"{what} labels {unknown} are not among {categories}")
        return found

    y_train = codes(train.obs[label_key], "training")
    y_test = codes(test.obs[label_key], "test")
    fit = ad.AnnData(
        X=train.X,
        obs=pd.DataFrame(
            {label_key: train.obs[label_key].astype(str).to_numpy()},
            index=train.obs_names,
        ),
        var=pd.DataFrame(index=train.var_names),
    )
    mini_batch_above = params.mini_batch_above
    per_init, models = [], []
    for init in range(params.n_inits):
        follow_cores()  # n_jobs below: the run's count now
        kwargs = {
            "use_SGD": True,
            "check_expression": False,
            "random_state": seed + init,
            "mini_batch": mini_batch_above is not None
            and train.n_obs > mini_batch_above,
            "n_jobs": torch.get_num_threads(),  # one-vs-rest classes in parallel
            **params.train_kwargs,
        }
        with _quiet_celltypist():
            model = celltypist.train(fit, labels=label_key, **kwargs)
            (train_pred,) = _annotate(celltypist, fit, [model])
        models.append(model)
        per_init.append(
            {
                "init": init,
                "seed": seed + init,
                "train_accuracy": float(
                    (codes(train_pred, "predicted") == y_train).mean()
                ),
            }
        )
    with _quiet_celltypist():  # every run scored in one pass over the test cells
        test_preds = _annotate(celltypist, test, models)
    per_init = [
        {
            "init": row["init"],
            "seed": row["seed"],
            **score_predictions(
                y_test, codes(pred, "predicted"), num_classes=len(categories)
            ),
            "train_accuracy": row["train_accuracy"],
        }
        for row, pred in zip(per_init, test_preds, strict=True)
    ]
    return summarise_inits(per_init, n_train=train.n_obs, n_test=test.n_obs)
