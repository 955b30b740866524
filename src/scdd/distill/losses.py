"""Matching losses for latent-code distillation and the cache of real embeddings.

Real cells enter distillation only through a :class:`RealEmbeddingBank` of their
(frozen) foundation-model embeddings, so the cost of a distillation step depends
on the synthetic set size, not on how many real cells exist.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def validate_labels(labels: Tensor, num_classes: int, length: int) -> None:
    """Check that ``labels`` is an int64 vector of ``length`` values in range.

    Raises:
        ValueError: wrong shape or dtype, or a label outside ``[0, num_classes)``.
    """
    if labels.ndim != 1 or labels.shape[0] != length:
        raise ValueError(
            f"labels must have shape [{length}], got {tuple(labels.shape)}"
        )
    if labels.dtype != torch.long:
        raise ValueError(f"labels must be int64, got {labels.dtype}")
    if length and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got range "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )


class RealEmbeddingBank:
    """Cached real-cell embeddings with per-class means and batch sampling.

    Row indices are grouped by class once at construction, so sampling a batch
    costs O(batch size) whatever the number of real cells.

    Attributes:
        embeddings: ``[N, D]`` real embeddings (detached).
        labels: ``[N]`` int64 class labels.
        num_classes: number of classes ``C``.
        class_means: ``[C, D]`` mean embedding of each class.
    """

    def __init__(
        self, embeddings: Tensor, labels: Tensor, num_classes: int | None = None
    ) -> None:
        """Group ``embeddings`` ``[N, D]`` by ``labels`` ``[N]``.

        Args:
            embeddings: real embeddings, floating point ``[N, D]``.
            labels: int64 class of each row, ``[N]``.
            num_classes: ``C``; defaults to ``labels.max() + 1``.

        Raises:
            ValueError: bad shapes or labels, or a class without any row.
        """
        if embeddings.ndim != 2 or not embeddings.is_floating_point():
            raise ValueError(
                "embeddings must be a floating [N, D] tensor, got "
                f"{embeddings.dtype} {tuple(embeddings.shape)}"
            )
        if embeddings.shape[0] == 0:
            raise ValueError("the embedding bank needs at least one row")
        labels = labels.to(embeddings.device)
        if num_classes is None:
            num_classes = int(labels.max()) + 1
        validate_labels(labels, num_classes, embeddings.shape[0])
        counts = torch.bincount(labels, minlength=num_classes)
        empty = (counts == 0).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"class {empty[0]} has no real embeddings in the bank")
        self.embeddings = embeddings.detach()
        self.labels = labels
        self.num_classes = num_classes
        order = torch.argsort(labels, stable=True)
        self._class_indices = order.split(counts.tolist())
        sums = torch.zeros(
            num_classes, self.dim, dtype=embeddings.dtype, device=embeddings.device
        ).index_add_(0, labels, self.embeddings)
        self.class_means = sums / counts.unsqueeze(1).to(embeddings.dtype)

    @property
    def dim(self) -> int:
        """Embedding width ``D``."""
        return self.embeddings.shape[1]

    def to(self, device: torch.device | str) -> RealEmbeddingBank:
        """Return the bank on ``device`` (``self`` when it is already there)."""
        if self.embeddings.device == torch.device(device):
            return self
        return RealEmbeddingBank(
            self.embeddings.to(device), self.labels.to(device), self.num_classes
        )

    def sample_batch(
        self, class_index: int, batch_size: int, generator: torch.Generator
    ) -> Tensor:
        """Random real embeddings of one class, ``[batch_size, D]``.

        Rows are drawn uniformly *with* replacement so the cost is O(batch_size)
        and the batch size is fixed even for classes smaller than it.
        """
        if not 0 <= class_index < self.num_classes:
            raise ValueError(
                f"class_index must lie in [0, {self.num_classes}), got {class_index}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        indices = self._class_indices[class_index]
        picks = torch.randint(
            len(indices), (batch_size,), generator=generator, device=generator.device
        )
        return self.embeddings[indices[picks.to(indices.device)]]


def distribution_matching_loss(
    syn_embeddings: Tensor, syn_labels: Tensor, real_class_means: Tensor
) -> Tensor:
    """DM loss: sum over classes of the squared gap between class-mean embeddings.

    Args:
        syn_embeddings: ``[n, D]`` embeddings of the synthetic cells.
        syn_labels: ``[n]`` int64 classes of the synthetic cells.
        real_class_means: ``[C, D]`` mean real embedding of each class.

    Returns:
        Scalar ``sum_c ||real_mean_c - syn_mean_c||^2`` over the classes that have
        synthetic cells.
    """
    num_classes, dim = real_class_means.shape
    if syn_embeddings.ndim != 2 or syn_embeddings.shape[1] != dim:
        raise ValueError(
            f"syn_embeddings must have shape [n, {dim}], got "
            f"{tuple(syn_embeddings.shape)}"
        )
    validate_labels(syn_labels, num_classes, syn_embeddings.shape[0])
    syn_means, counts = _class_means(syn_embeddings, syn_labels, num_classes)
    gaps = (real_class_means - syn_means).pow(2).sum(dim=1)
    return (gaps * (counts > 0)).sum()


def _class_means(
    embeddings: Tensor, labels: Tensor, num_classes: int
) -> tuple[Tensor, Tensor]:
    """Each class's mean row ``[C, D]`` (0 for an empty class) and its row
    count ``[C]``."""
    sums = embeddings.new_zeros(num_classes, embeddings.shape[1]).index_add(
        0, labels, embeddings
    )
    counts = torch.bincount(labels, minlength=num_classes).to(sums.dtype)
    return sums / counts.clamp_min(1).unsqueeze(1), counts


def part_matching_loss(syn_embeddings: Tensor, part_means: Tensor, spc: int) -> Tensor:
    """Each synthetic cell against the centre of its own part of its class.

    Args:
        syn_embeddings: ``[n, D]`` embeddings of the synthetic cells.
        part_means: ``[n, D]`` centre of each cell's part (row-aligned).
        spc: synthetic cells per class; the sum is divided by it, so at SPC 1
            (one part: the class) this is the DM loss.

    Returns:
        Scalar ``sum_i ||part_mean_i - syn_i||^2 / spc``.
    """
    if syn_embeddings.shape != part_means.shape:
        raise ValueError(
            "part_means must match the synthetic embeddings row for row, got "
            f"{tuple(part_means.shape)} and {tuple(syn_embeddings.shape)}"
        )
    return (part_means - syn_embeddings).pow(2).sum() / spc


def prototype_loss(
    syn_embeddings: Tensor,
    syn_labels: Tensor,
    real_embeddings: Tensor,
    real_labels: Tensor,
    *,
    num_classes: int,
    temperature: float,
) -> Tensor:
    """Cross-entropy of real embeddings classified by the synthetic class means.

    A linear head trained briefly on a few cells per class scores a cell by
    its dot product with each class's mean minus the mean over classes; this
    loss asks the synthetic set's means to be prototypes that classify real
    cells correctly under that rule, a discriminative signal that matching
    means alone lacks. Real cells enter only as a batch of embeddings.

    Args:
        syn_embeddings: ``[n, D]`` embeddings of the synthetic cells (every
            class represented).
        syn_labels: ``[n]`` int64 classes of the synthetic cells.
        real_embeddings: ``[m, D]`` real embeddings; ``real_labels`` ``[m]``.
        num_classes: ``C``.
        temperature: inverse temperature of the logits.

    Returns:
        Scalar mean cross-entropy over the real batch.
    """
    validate_labels(syn_labels, num_classes, syn_embeddings.shape[0])
    validate_labels(real_labels, num_classes, real_embeddings.shape[0])
    means, _ = _class_means(syn_embeddings, syn_labels, num_classes)
    prototypes = means - means.mean(0, keepdim=True)
    logits = temperature * real_embeddings @ prototypes.T
    return F.cross_entropy(logits, real_labels)


def gradient_distance(g_real: Tensor, g_syn: Tensor) -> Tensor:
    """Sum over rows (output units) of ``1 - cosine(g_real_row, g_syn_row)``.

    This is the 'ours' distance of the dataset-condensation reference code for a
    linear layer's ``[C_out, D]`` weight gradient.
    """
    if g_real.ndim != 2 or g_real.shape != g_syn.shape:
        raise ValueError(
            "gradients must be matching [C_out, D] tensors, got "
            f"{tuple(g_real.shape)} and {tuple(g_syn.shape)}"
        )
    return (1 - F.cosine_similarity(g_real, g_syn, dim=1)).sum()


def _weight_gradient(
    embeddings: Tensor, target: int, weight: Tensor, bias: Tensor
) -> Tensor:
    """Gradient of the mean cross-entropy w.r.t. a linear head's ``weight``.

    All ``embeddings`` (``[b, D]``) belong to class ``target``; ``weight`` is
    ``[C_out, D]``. Uses the closed form ``(softmax(logits) - onehot)^T x / b``,
    which equals the autograd weight gradient and stays differentiable in
    ``embeddings`` without a double backward. Returns ``[C_out, D]``.
    """
    logits = F.linear(embeddings, weight, bias)
    targets = torch.full_like(logits[:, 0], target, dtype=torch.long)
    residual = logits.softmax(dim=1) - F.one_hot(targets, logits.shape[1]).to(
        logits.dtype
    )
    return residual.T @ embeddings / embeddings.shape[0]


def gradient_matching_loss(
    encoder_out_syn: Tensor,
    syn_labels: Tensor,
    real_batches: Sequence[Tensor],
    head: nn.Linear,
) -> Tensor:
    """DC loss of one inner step: gradient distance summed over classes.

    For each class with synthetic cells, compares the head's weight gradient on
    that class's real batch (constant) with the one on its synthetic embeddings
    (differentiable), via :func:`gradient_distance`. The bias gradient is
    ignored and the head's parameters are treated as constants (no gradient
    reaches them, and updating them afterwards does not break the graph).

    Args:
        encoder_out_syn: ``[n, D]`` embeddings of the synthetic cells.
        syn_labels: ``[n]`` int64 classes of the synthetic cells.
        real_batches: one ``[b_c, D]`` batch of real embeddings per class.
        head: linear classifier ``D -> C`` on the embeddings.

    Returns:
        Scalar loss, differentiable w.r.t. ``encoder_out_syn``.
    """
    num_classes = head.out_features
    if len(real_batches) != num_classes:
        raise ValueError(
            f"expected {num_classes} real batches (one per class), "
            f"got {len(real_batches)}"
        )
    if encoder_out_syn.ndim != 2 or encoder_out_syn.shape[1] != head.in_features:
        raise ValueError(
            f"encoder_out_syn must have shape [n, {head.in_features}], got "
            f"{tuple(encoder_out_syn.shape)}"
        )
    validate_labels(syn_labels, num_classes, encoder_out_syn.shape[0])
    counts = torch.bincount(syn_labels, minlength=num_classes).tolist()
    order = torch.argsort(syn_labels, stable=True)
    syn_groups = encoder_out_syn[order].split(counts)
    # Snapshot the head: the caller may update it in place before backward.
    weight, bias = head.weight.detach().clone(), head.bias.detach().clone()
    loss = encoder_out_syn.new_zeros(())
    for class_index, (syn, real) in enumerate(
        zip(syn_groups, real_batches, strict=True)
    ):
        if syn.shape[0] == 0:
            continue
        if real.shape[0] == 0:
            raise ValueError(f"real batch of class {class_index} is empty")
        g_real = _weight_gradient(real.detach(), class_index, weight, bias)
        g_syn = _weight_gradient(syn, class_index, weight, bias)
        loss = loss + gradient_distance(g_real, g_syn)
    return loss
