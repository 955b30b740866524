"""The paper's evaluation protocol: frozen F + one linear layer trained by SGD.

A linear head ``D -> C`` is trained on foundation-model embeddings of the
training set (synthetic or real), then scored on the embeddings of the real
held-out split. This is repeated for several random head initialisations and
summarised as mean ± std of accuracy, balanced accuracy and macro-F1 (the
latter two because cell-type classes are strongly imbalanced).

The caller embeds genes with F first (``scdd.models.foundation.embed_cells``);
feature-level methods pass their features directly. On a synthetic set the
features are used as they are (the paper's protocol). The full-split
reference standardises them (``standardise``): F's latents are unit-norm, so
their coordinates are ~0.1 and weight decay holds the head's weights too
small to fit thousands of cells (on pbmc_10x the plain head scored 89.6 %,
standardised 91.2 %, a well-fitted logistic regression 91.6 %). A
standardising map is affine, so the result is still a linear head on F.

The head is trained with closed-form gradients instead of autograd, which makes
1000 full-batch epochs on a tiny synthetic set take a few tens of milliseconds.
The update is the one ``torch.optim.SGD(head.parameters(), lr, momentum,
weight_decay=...)`` applies to the mean cross-entropy (weight decay on both the
weight and the bias, as with ``head.parameters()``). On CPU it runs on one
torch thread: the ops are far too small to gain from intra-op parallelism, and
on a busy machine torch's spinning worker threads made them up to ~500x slower.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from scipy import sparse
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from torch import Tensor

from scdd.cellstore import Matrix, row_chunks
from scdd.evaluation.config import FHeadParams

_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")
#: Test rows standardised and predicted at once.
PREDICT_ROWS = 65_536


@contextmanager
def _torch_threads(device: torch.device) -> Iterator[None]:
    """Run torch CPU ops on one thread inside the block, then restore the count."""
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _check_split(
    features: np.ndarray, labels: np.ndarray, num_classes: int, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Validate one split; return float32 ``[n, d]`` features and int64 labels.

    Raises:
        ValueError: wrong shapes, non-finite features, an empty split, or a
            label outside ``[0, num_classes)``.
    """
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(
            f"{name}_features must be a non-empty [n, d] array, got {x.shape}"
        )
    if not np.isfinite(x).all():
        raise ValueError(f"{name}_features contain NaN or inf")
    return x, _check_labels(labels, x.shape[0], num_classes, name)


def _check_labels(
    labels: np.ndarray, n: int, num_classes: int, name: str
) -> np.ndarray:
    """``labels`` as int64, checked: ``n`` of them, each in ``[0, num_classes)``."""
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ValueError(f"{name}_labels must have shape ({n},), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name}_labels must be integers, got {y.dtype}")
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(
            f"{name}_labels must lie in [0, {num_classes}), got range "
            f"[{y.min()}, {y.max()}]"
        )
    return y.astype(np.int64)


def _predict(
    heads: list[tuple[Tensor, Tensor]],
    features: Matrix,
    shift: tuple[np.ndarray, np.ndarray] | None,
    device: torch.device,
) -> np.ndarray:
    """Class predictions ``[n_heads, m]`` of every head on ``features``
    (in memory or lazy: one pass, ``PREDICT_ROWS`` rows at a time), each
    row standardised by ``shift`` (mean, scale) first when given."""
    out = np.empty((len(heads), features.shape[0]), dtype=np.int32)
    for start, chunk in row_chunks(features, PREDICT_ROWS):
        x = np.asarray(chunk.toarray() if sparse.issparse(chunk) else chunk)
        x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            raise ValueError("test_features contain NaN or inf")
        if shift is not None:
            x = (x - shift[0]) / shift[1]
        x_eval = torch.from_numpy(x).to(device)
        for k, (weight, bias) in enumerate(heads):
            logits = torch.addmm(bias, x_eval, weight.T)
            out[k, start : start + len(x)] = logits.argmax(dim=1).cpu().numpy()
    return out


def _train_heads(  # noqa: PLR0913
    x: Tensor,
    y_onehot: Tensor,
    *,
    epochs: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    batch_size: int | None,
    generators: list[torch.Generator],
    max_steps: int | None,
) -> tuple[Tensor, Tensor]:
    """SGD on the mean cross-entropy of fresh linear heads, one per generator,
    trained side by side; returns ``(W [H, C, d], b [H, C])``.

    Head ``k`` starts from PyTorch's ``nn.Linear`` init, ``U(-1/sqrt(d),
    1/sqrt(d))``, drawn from ``generators[k]``, which also shuffles its
    mini-batches, so the global RNG is never touched. Each head sees its own
    batches; the heads only share the batched matrix products (one step of
    ten heads costs what one head's did: the steps are too small to fill a
    core, and ten heads on 1,786 cells took 29 s one after the other).

    Args:
        x: ``[n, d]`` training features.
        y_onehot: ``[n, C]`` one-hot training labels.
        epochs: passes over the training set.
        lr: learning rate.
        momentum: SGD momentum.
        weight_decay: L2 penalty added to the gradient of ``W`` and ``b``.
        batch_size: rows per step; ``None`` (or ``>= n``) for full batch.
        generators: one CPU generator per head (its init and batch order).
        max_steps: at most this many SGD steps, however many ``epochs`` ask
            for: a budget that stops growing with the number of cells (the
            full-split reference on an atlas would otherwise take hours).
    """
    n, dim = x.shape
    num_classes = y_onehot.shape[1]
    bound = 1 / math.sqrt(dim)
    inits = [
        (
            torch.empty(num_classes, dim).uniform_(-bound, bound, generator=g),
            torch.empty(num_classes).uniform_(-bound, bound, generator=g),
        )
        for g in generators
    ]
    weight = torch.stack([w for w, _ in inits]).to(x.device)
    bias = torch.stack([b for _, b in inits]).to(x.device)
    buf_w, buf_b = torch.zeros_like(weight), torch.zeros_like(bias)
    full_batch = batch_size is None or batch_size >= n

    def step(xb: Tensor, yb: Tensor) -> None:
        # xb: [n, d] shared, or [H, b, d]; d mean-CE / d logits = (p - onehot) / b
        logits = torch.matmul(xb, weight.transpose(1, 2)).add_(bias[:, None, :])
        residual = logits.softmax(dim=2).sub_(yb).div_(xb.shape[-2])
        grad_w = torch.matmul(residual.transpose(1, 2), xb).add_(
            weight, alpha=weight_decay
        )
        grad_b = residual.sum(dim=1).add_(bias, alpha=weight_decay)
        buf_w.mul_(momentum).add_(grad_w)
        buf_b.mul_(momentum).add_(grad_b)
        weight.sub_(buf_w, alpha=lr)
        bias.sub_(buf_b, alpha=lr)

    budget = epochs if full_batch else epochs * math.ceil(n / batch_size)
    budget = min(budget, max_steps or budget)
    if full_batch:
        for _ in range(budget):
            step(x, y_onehot)
        return weight, bias
    taken = 0
    while taken < budget:  # reshuffled passes, the last one cut at the budget
        orders = torch.stack([torch.randperm(n, generator=g) for g in generators])
        orders = orders.to(x.device)
        for start in range(0, n, batch_size):
            if taken == budget:
                break
            rows = orders[:, start : start + batch_size]
            step(x[rows], y_onehot[rows])
            taken += 1
    return weight, bias


def _scores(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict:
    """Accuracy, balanced accuracy and macro-F1 over ``range(num_classes)``."""
    with warnings.catch_warnings():
        # Predicting a class absent from the test split is legitimate here.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in")
        balanced = balanced_accuracy_score(y_true, y_pred)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced),
        "macro_f1": float(
            f1_score(
                y_true,
                y_pred,
                labels=list(range(num_classes)),
                average="macro",
                zero_division=0,
            )
        ),
    }


def evaluate_linear_head(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    *,
    num_classes: int,
    params: FHeadParams,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict:
    """Train a linear head on frozen features ``params.n_inits`` times; score
    each on test.

    Init ``i`` draws its head (and its mini-batch order) from a CPU
    ``torch.Generator`` seeded with ``seed + i``, so results are reproducible
    and independent of the global RNG. Classes missing from the training set
    (possible for a synthetic set) are fine: the head still has ``num_classes``
    outputs.

    Args:
        train_features: ``[n, d]`` F-space features of the training set.
        train_labels: ``[n]`` int labels in ``[0, num_classes)``.
        test_features: ``[m, d]`` features of the real test cells (in
            memory or lazy: read once, a row block at a time, for every head).
        test_labels: ``[m]`` int labels in ``[0, num_classes)``.
        num_classes: number of classes ``C`` (head outputs).
        params: ``evaluate.f_head`` (the reference's:
            :meth:`~scdd.evaluation.config.EvaluateParams.for_reference`):
            ``n_inits`` random head initialisations, ``epochs`` passes over
            the training set per init, SGD's ``lr``, ``momentum`` and
            ``weight_decay``; ``batch_size`` ``None`` trains full batch (right
            for synthetic sets; set it for a full training split of many
            cells); ``max_steps`` caps the SGD steps per init (``epochs``
            passes unless they would take more: bounds the cost on 100k+
            cells); ``standardise`` centres and scales each feature by the
            training set's mean and standard deviation (applied to the test
            features too). Its ``reference_*`` fields are not read here.
        seed: base seed; init ``i`` uses ``seed + i``.
        device: torch device for training and prediction.

    Returns:
        ``accuracy_mean/_std``, ``balanced_accuracy_mean/_std``,
        ``macro_f1_mean/_std`` (std over inits, ``ddof=0``), ``per_init`` (one
        dict per init: ``init``, ``seed``, the three metrics and
        ``train_accuracy``), ``n_train`` and ``n_test``. Macro-F1 averages over
        all ``num_classes`` labels, counting a class neither present in the
        test split nor predicted as F1 = 0.

    Raises:
        ValueError: bad shapes or labels.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    batch_size, epochs, max_steps = params.batch_size, params.epochs, params.max_steps
    x_train, y_train = _check_split(train_features, train_labels, num_classes, "train")
    if len(test_features.shape) != 2 or test_features.shape[0] == 0:
        raise ValueError(
            "test_features must be a non-empty [n, d] array, got "
            f"{tuple(test_features.shape)}"
        )
    y_test = _check_labels(test_labels, test_features.shape[0], num_classes, "test")
    if x_train.shape[1] != test_features.shape[1]:
        raise ValueError(
            f"train and test feature widths differ: {x_train.shape[1]} vs "
            f"{test_features.shape[1]}"
        )
    shift = None
    if params.standardise:
        mean, scale = x_train.mean(axis=0), x_train.std(axis=0)
        scale[scale == 0] = 1.0
        shift = (mean, scale)
        x_train = (x_train - mean) / scale
    device = torch.device(device)
    x = torch.from_numpy(x_train).to(device)
    y_onehot = torch.nn.functional.one_hot(torch.from_numpy(y_train), num_classes).to(
        device=device, dtype=x.dtype
    )
    generators = [
        torch.Generator().manual_seed(seed + init) for init in range(params.n_inits)
    ]
    with _torch_threads(device):
        weights, biases = _train_heads(
            x,
            y_onehot,
            epochs=epochs,
            lr=params.lr,
            momentum=params.momentum,
            weight_decay=params.weight_decay,
            batch_size=batch_size,
            generators=generators,
            max_steps=max_steps,
        )
        heads = list(zip(weights, biases, strict=True))
        train_accuracy = [
            float(accuracy_score(y_train, torch.addmm(b, x, w.T).argmax(1).cpu()))
            for w, b in heads
        ]
        predictions = _predict(heads, test_features, shift, device)
    per_init = [
        {
            "init": init,
            "seed": seed + init,
            **_scores(y_test, predictions[init], num_classes),
            "train_accuracy": train_accuracy[init],
        }
        for init in range(params.n_inits)
    ]
    result: dict = {}
    for metric in _METRICS:
        values = np.array([row[metric] for row in per_init])
        result[f"{metric}_mean"] = float(values.mean())
        result[f"{metric}_std"] = float(values.std())
    result.update(
        per_init=per_init, n_train=int(x_train.shape[0]), n_test=int(len(y_test))
    )
    per_epoch = 1 if batch_size is None else math.ceil(len(x_train) / batch_size)
    result["steps"] = int(min(epochs * per_epoch, max_steps or epochs * per_epoch))
    return result
