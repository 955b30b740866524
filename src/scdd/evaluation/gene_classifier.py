"""Train a torch classifier on genes several times and score it on the test split.

The gene-level evaluation models (the MLP, the gene-group transformer and the
DeepInsight CNN) differ only in the network; this module holds
what they share: input checks, seeded runs, mini-batches densified one at a
time (so a sparse training split of 100k+ cells fits in memory), Adam on the
mean cross-entropy for a fixed number of optimiser steps, and the scores of
:mod:`scdd.evaluation.summary`. A step budget (not epochs) gives a 10-cell
synthetic set and a training split of thousands of cells the same amount of
training: the first is trained full batch, the second on mini-batches.

Training cells are in memory (a synthetic set, or a sample of a split). The
test cells may be lazy (a dask array of CSR row blocks,
:mod:`scdd.cellstore`): every run's network is trained first, then one pass
over the test cells, a chunk at a time, predicts with all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from scipy import sparse
from torch import nn
from tqdm import tqdm

from scdd.allocator import freed_memory_kept
from scdd.cellstore import Matrix, is_lazy_matrix, row_chunks
from scdd.evaluation.config import GeneModelParams
from scdd.evaluation.summary import score_predictions, summarise_inits
from scdd.models.device import fused_adam
from scdd.threads import follow_cores


def dense_rows(x: Matrix, rows: np.ndarray | slice) -> np.ndarray:
    """``x[rows]`` as a C-contiguous float32 array."""
    block = x[rows]
    block = block.toarray() if sparse.issparse(block) else np.asarray(block)
    return np.ascontiguousarray(block, dtype=np.float32)


def require_in_memory(train_x: Matrix, name: str) -> None:
    """Refuse a lazy training matrix: models train on cells in memory."""
    if is_lazy_matrix(train_x):
        raise TypeError(
            f"{name}: train_x must be in memory; read a sample of a lazy split "
            "with scdd.cellstore.take_rows"
        )


def check_gene_split(
    x: Matrix, y: np.ndarray, num_classes: int, name: str
) -> np.ndarray:
    """Validate one ``[n, G]`` split and its labels; return int64 labels.

    A lazy ``x`` is not read: its values are checked as they are read.
    """
    y = np.asarray(y)
    if x.ndim != 2 or x.shape[0] == 0 or y.shape != (x.shape[0],):
        raise ValueError(
            f"{name} must be a non-empty [n, G] matrix with [n] labels, got "
            f"{x.shape} and {y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"{name} labels must be ints in [0, {num_classes})")
    if is_lazy_matrix(x):
        return y.astype(np.int64)
    values = x.data if sparse.issparse(x) else np.asarray(x)
    if not np.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or inf")
    return y.astype(np.int64)


def _train_run(
    make_model: Callable[[], nn.Module],
    batches: Callable[[np.random.Generator], Iterator[tuple[torch.Tensor, ...]]],
    params: GeneModelParams,
    device: torch.device,
    run_seed: int,
) -> nn.Module:
    """One training run from ``run_seed``: ``params.steps`` Adam steps on the
    run's batches, on the run's thread count (followed as the machine
    changes), with freed memory kept for the next step; the global RNG is
    restored afterwards."""
    with torch.random.fork_rng(devices=[]), freed_memory_kept():
        torch.manual_seed(run_seed)
        model = make_model().to(device).train()
        optimiser = torch.optim.Adam(
            model.parameters(),
            lr=params.lr,
            weight_decay=params.weight_decay,
            **fused_adam(device),
        )
        stream = batches(np.random.default_rng(run_seed))
        for _, (xb, yb) in zip(range(params.steps), stream, strict=False):
            loss = nn.functional.cross_entropy(model(xb), yb)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            follow_cores()
    return model.eval()


def _predict(
    models: list[nn.Module],
    x: Matrix,
    device: torch.device,
    chunk_size: int,
    name: str,
) -> np.ndarray:
    """Predicted classes ``[len(models), n]``: one pass over ``x``'s rows,
    ``chunk_size`` at a time (a lazy ``x``: one row block at a time, its
    values checked for NaN/inf)."""
    check = is_lazy_matrix(x)
    out: list[list[np.ndarray]] = [[] for _ in models]
    with torch.inference_mode():
        for _, rows in row_chunks(x, chunk_size):
            block = dense_rows(rows, slice(None))
            if check and not np.isfinite(block).all():
                raise ValueError(f"{name} contains NaN or inf")
            block = torch.from_numpy(block).to(device)
            for i, model in enumerate(models):
                out[i].append(model(block).argmax(1).cpu().numpy())
    return np.stack([np.concatenate(pred) for pred in out])


def evaluate_gene_classifier(  # noqa: PLR0913
    make_model: Callable[[], nn.Module],
    train_x: Matrix,
    train_labels: np.ndarray,
    test_x: Matrix,
    test_labels: np.ndarray,
    *,
    num_classes: int,
    params: GeneModelParams,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
    name: str = "gene model",
) -> dict:
    """Train ``make_model()`` ``params.n_inits`` times on train genes; score
    each on test.

    Run ``i`` builds its network and orders its batches with seed ``seed + i``
    (the global RNG is restored afterwards). A set of at most
    ``params.batch_size`` cells (any synthetic set) is trained full batch; a
    larger one on shuffled mini-batches, epoch after epoch, until
    ``params.steps`` Adam steps are done.

    Args:
        make_model: builds a fresh network ``[b, G] -> [b, num_classes]``.
        train_x: ``[n, G]`` log-normalised training genes in memory (dense or
            sparse; sample a lazy split with :func:`scdd.cellstore.take_rows`).
        train_labels: ``[n]`` ints in ``[0, num_classes)``.
        test_x: ``[m, G]`` test genes in the same gene order (in memory, or
            lazy: read one row block at a time, once for all runs).
        test_labels: ``[m]`` ints.
        num_classes: ``C``.
        params: the model's group (any :class:`GeneModelParams`): ``n_inits``
            training runs from different seeds, ``steps`` Adam steps per run
            at ``lr`` and ``weight_decay``, ``batch_size`` rows per optimiser
            step, ``chunk_size`` rows per prediction forward pass.
        seed: base seed.
        device: torch device.
        progress: show a progress bar over runs.
        name: the model's name in the progress bar.

    Returns:
        The layout of ``evaluate_linear_head``: ``<metric>_mean/_std``,
        ``per_init`` (each with ``train_accuracy``), ``n_train``, ``n_test``.
    """
    batch_size, chunk_size = params.batch_size, params.chunk_size
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(
            f"train and test gene counts differ: {train_x.shape[1]} vs "
            f"{test_x.shape[1]}; align the test cells with align_genes first"
        )
    require_in_memory(train_x, name)
    y_train = check_gene_split(train_x, train_labels, num_classes, "train_x")
    y_test = check_gene_split(test_x, test_labels, num_classes, "test_x")
    if sparse.issparse(train_x):
        train_x = sparse.csr_matrix(train_x)
    if sparse.issparse(test_x):
        test_x = sparse.csr_matrix(test_x)
    device = torch.device(device)
    n = train_x.shape[0]
    full = n <= batch_size
    x_full = (
        torch.from_numpy(dense_rows(train_x, slice(None))).to(device) if full else None
    )
    y_all = torch.from_numpy(y_train).to(device)

    def batches(rng: np.random.Generator):
        """Endless (x, y) batches: the full set, or epochs of shuffled rows."""
        while True:
            if full:
                yield x_full, y_all
                continue
            for split in np.array_split(rng.permutation(n), -(-n // batch_size)):
                rows = np.sort(split)
                yield (
                    torch.from_numpy(dense_rows(train_x, rows)).to(device),
                    y_all[torch.from_numpy(rows).to(device)],
                )

    per_init, models = [], []
    for init in tqdm(range(params.n_inits), desc=name, disable=not progress):
        run_seed = seed + init
        model = _train_run(make_model, batches, params, device, run_seed)
        models.append(model)
        (train_pred,) = _predict([model], train_x, device, chunk_size, "train_x")
        per_init.append(
            {
                "init": init,
                "seed": run_seed,
                "train_accuracy": float((train_pred == y_train).mean()),
            }
        )
    # every run scored in one pass over the (possibly lazy) test cells
    preds = _predict(models, test_x, device, chunk_size, "test_x")
    per_init = [
        {
            "init": row["init"],
            "seed": row["seed"],
            **score_predictions(y_test, pred, num_classes=num_classes),
            "train_accuracy": row["train_accuracy"],
        }
        for row, pred in zip(per_init, preds, strict=True)
    ]
    return summarise_inits(per_init, n_train=n, n_test=test_x.shape[0])
