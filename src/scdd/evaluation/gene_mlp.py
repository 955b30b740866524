"""A gene-level MLP without F: a cross-architecture evaluation model (DESIGN §8).

The network reads log-normalised genes directly (``G -> hidden -> C``, ReLU),
so it shows whether a synthetic set carries label information outside the
foundation model's latent space, the paper's "unseen architecture" test
(Table IV). It is trained with Adam on the mean cross-entropy, several times
from different seeds, and scored like the linear head.

Inputs may be scipy-sparse: only one mini-batch (or prediction chunk) is
densified at a time, so a full training split of 100k+ cells fits in memory.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import sparse
from torch import nn
from tqdm.auto import tqdm

from scdd.evaluation.linear_head import _torch_threads
from scdd.evaluation.summary import score_predictions, summarise_inits

Matrix = np.ndarray | sparse.spmatrix


def _rows(x: Matrix, rows: np.ndarray | slice, device: torch.device) -> torch.Tensor:
    """Dense float32 tensor of ``x[rows]`` on ``device``."""
    block = x[rows]
    block = block.toarray() if sparse.issparse(block) else np.asarray(block)
    return torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32)).to(device)


def _check(x: Matrix, y: np.ndarray, num_classes: int, name: str) -> np.ndarray:
    """Validate one split; return int64 labels."""
    y = np.asarray(y)
    if x.ndim != 2 or x.shape[0] == 0 or y.shape != (x.shape[0],):
        raise ValueError(
            f"{name} must be a non-empty [n, G] matrix with [n] labels, got "
            f"{x.shape} and {y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"{name} labels must be ints in [0, {num_classes})")
    values = x.data if sparse.issparse(x) else np.asarray(x)
    if not np.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or inf")
    return y.astype(np.int64)


def build_gene_mlp(n_genes: int, num_classes: int, hidden: int = 256) -> nn.Module:
    """``Linear(G, hidden) -> ReLU -> Linear(hidden, C)``."""
    return nn.Sequential(
        nn.Linear(n_genes, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
    )


def _predict(
    model: nn.Module, x: Matrix, device: torch.device, chunk_size: int
) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for start in range(0, x.shape[0], chunk_size):
            block = _rows(x, slice(start, start + chunk_size), device)
            out.append(model(block).argmax(1).cpu().numpy())
    return np.concatenate(out)


def evaluate_gene_mlp(
    train_x: Matrix,
    train_labels: np.ndarray,
    test_x: Matrix,
    test_labels: np.ndarray,
    *,
    num_classes: int,
    hidden: int = 256,
    n_inits: int = 3,
    epochs: int = 200,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int = 256,
    chunk_size: int = 4096,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> dict:
    """Train the gene MLP ``n_inits`` times on train genes; score each on test.

    Run ``i`` seeds its weights and batch order with ``seed + i`` (the global
    RNG is restored afterwards). A set of at most ``batch_size`` cells (any
    synthetic set) is trained full batch: ``epochs`` Adam steps.

    Args:
        train_x: ``[n, G]`` log-normalised training genes (dense or sparse).
        train_labels: ``[n]`` ints in ``[0, num_classes)``.
        test_x: ``[m, G]`` test genes in the same gene order.
        test_labels: ``[m]`` ints.
        num_classes: ``C``.
        hidden: hidden width.
        n_inits: training runs from different seeds.
        epochs: passes over the training set per run.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        batch_size: rows per optimiser step.
        chunk_size: rows per prediction forward pass.
        seed: base seed.
        device: torch device.
        progress: show a progress bar over runs.

    Returns:
        The layout of ``evaluate_linear_head``: ``<metric>_mean/_std``,
        ``per_init`` (each with ``train_accuracy``), ``n_train``, ``n_test``.
    """
    if n_inits < 1 or epochs < 1 or batch_size < 1 or hidden < 1:
        raise ValueError("n_inits, epochs, batch_size and hidden must be >= 1")
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(
            f"train and test gene counts differ: {train_x.shape[1]} vs "
            f"{test_x.shape[1]}; align the test cells with align_genes first"
        )
    y_train = _check(train_x, train_labels, num_classes, "train_x")
    y_test = _check(test_x, test_labels, num_classes, "test_x")
    if sparse.issparse(train_x):
        train_x = sparse.csr_matrix(train_x)
    if sparse.issparse(test_x):
        test_x = sparse.csr_matrix(test_x)
    device = torch.device(device)
    n = train_x.shape[0]
    full = n <= batch_size
    x_full = _rows(train_x, slice(None), device) if full else None
    y_all = torch.from_numpy(y_train).to(device)

    per_init = []
    with _torch_threads(device):
        for init in tqdm(range(n_inits), desc="gene MLP", disable=not progress):
            run_seed = seed + init
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(run_seed)
                model = build_gene_mlp(train_x.shape[1], num_classes, hidden)
            model.to(device).train()
            optimiser = torch.optim.Adam(
                model.parameters(), lr=lr, weight_decay=weight_decay
            )
            rng = np.random.default_rng(run_seed)
            for _ in range(epochs):
                if full:
                    batches = [(x_full, y_all)]
                else:
                    order = rng.permutation(n)
                    batches = (
                        (
                            _rows(train_x, rows, device),
                            y_all[torch.from_numpy(rows).to(device)],
                        )
                        for rows in map(
                            np.sort, np.array_split(order, -(-n // batch_size))
                        )
                    )
                for xb, yb in batches:
                    loss = nn.functional.cross_entropy(model(xb), yb)
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()
            model.eval()
            pred = _predict(model, test_x, device, chunk_size)
            train_pred = _predict(model, train_x, device, chunk_size)
            per_init.append(
                {
                    "init": init,
                    "seed": run_seed,
                    **score_predictions(y_test, pred, num_classes=num_classes),
                    "train_accuracy": float((train_pred == y_train).mean()),
                }
            )
    return summarise_inits(per_init, n_train=n, n_test=test_x.shape[0])
