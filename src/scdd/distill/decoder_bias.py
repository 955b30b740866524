"""Per-class decoder bias: what D misses of each class on average.

D reconstructs a cell from its 128-d embedding, but not without a class-wise
bias: on cbmc_citeseq the mean of the decoded training cells of a class
correlates 0.89-0.99 with the class's real mean (centred on the overall
mean), and a nearest-class-mean classifier built on decoded means loses 7
points against one built on real means. Adding ``bias[c]`` = real class mean
minus decoded class mean to every decoded cell of class ``c`` removes that
loss. The bias is an average over the whole class (a sample of at most
``max_cells`` decoded cells), so it carries no single training cell, and
classes with few cells are shrunk towards no correction.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from scdd.distill.parts import class_members


def class_decoder_bias(  # noqa: PLR0913
    decoder: nn.Module,
    embeddings: np.ndarray,
    labels: np.ndarray,
    class_means: np.ndarray,
    *,
    num_classes: int,
    max_cells: int = 2000,
    shrinkage: float = 10.0,
    seed: int = 0,
    chunk_size: int = 4096,
) -> Tensor:
    """``[C, G]``: real class mean minus the mean of the decoded cells.

    Args:
        decoder: D, frozen (float32 genes in the order of ``class_means``).
        embeddings: cached ``F(x)`` of the training cells ``[N, D]``.
        labels: class index per training cell ``[N]``.
        class_means: real per-class gene means ``[C, G]`` (all training cells).
        num_classes: ``C``.
        max_cells: decoded cells per class the decoded mean is taken over.
        shrinkage: a class of ``n`` cells gets ``n / (n + shrinkage)`` of its
            bias, so a handful of cells cannot set their class's correction.
        seed: which cells are sampled in classes above ``max_cells``.
        chunk_size: embeddings decoded at a time.
    """
    rng = np.random.default_rng(seed)
    rows = np.concatenate(
        [class_members(labels, c, max_cells, rng) for c in range(num_classes)]
    )
    device = next(decoder.parameters()).device
    sums = torch.zeros(class_means.shape, dtype=torch.float64, device=device)
    lab = torch.as_tensor(labels[rows], dtype=torch.long, device=device)
    with torch.no_grad():
        for start in range(0, len(rows), chunk_size):
            z = torch.as_tensor(
                embeddings[rows[start : start + chunk_size]], device=device
            )
            sums.index_add_(
                0, lab[start : start + chunk_size], decoder(z.float()).double()
            )
    counts = torch.bincount(lab, minlength=num_classes).double()
    decoded = sums / counts.clamp_min(1)[:, None]
    class_sizes = torch.as_tensor(
        np.bincount(labels, minlength=num_classes), device=device
    )
    weight = (class_sizes / (class_sizes + shrinkage)).double()[:, None]
    bias = weight * (torch.as_tensor(class_means, device=device) - decoded)
    return bias.float()
