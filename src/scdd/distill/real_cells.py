"""What the distillation needs to know about the real training cells, computed
once in one chunked pass and cached (``real_cell_stats`` in the catalog), so a
distillation run costs O(SPC x classes) whatever the number of real cells."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from scipy import sparse

from scdd.cellstore import lazy_matrix, reduce_blocks


@dataclass(frozen=True)
class RealCellStats:
    """Per-class summaries of the training cells in the foundation gene order.

    Attributes:
        categories: class names; index = class index.
        class_counts: training cells per class ``[C]``.
        target_sum: median per-cell ``sum(expm1(x))`` (1e4 after our
            normalisation): the library size synthetic cells are written at.
        zero_fractions: fraction of zero entries per class ``[C]``: the
            sparsity synthetic cells of that class are cut to.
        n_genes: genes per cell (the foundation's gene order).
    """

    categories: list[str]
    class_counts: np.ndarray
    target_sum: float
    zero_fractions: np.ndarray
    n_genes: int

    def to_checkpoint(self) -> dict[str, Any]:
        """Plain tensors and lists (``TorchCheckpointDataset`` loads it safely)."""
        return {
            "categories": list(self.categories),
            "class_counts": torch.as_tensor(self.class_counts, dtype=torch.long),
            "target_sum": float(self.target_sum),
            "zero_fractions": torch.as_tensor(self.zero_fractions, dtype=torch.float64),
            "n_genes": int(self.n_genes),
        }

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any]) -> RealCellStats:
        return cls(
            categories=list(checkpoint["categories"]),
            class_counts=checkpoint["class_counts"].numpy(),
            target_sum=float(checkpoint["target_sum"]),
            zero_fractions=checkpoint["zero_fractions"].numpy(),
            n_genes=int(checkpoint["n_genes"]),
        )


def _block_parts(block: Any, labels: np.ndarray, *, num_classes: int) -> dict:
    block = sparse.csr_matrix(block, dtype=np.float64)
    nnz = np.diff(block.indptr)
    block.data = np.expm1(block.data)
    return {
        "totals": np.asarray(block.sum(1)).ravel(),
        "class_nnz": np.bincount(labels, weights=nnz, minlength=num_classes),
    }


def summarise_real_cells(
    genes: Any, labels: np.ndarray, categories: list[str]
) -> RealCellStats:
    """One pass over the log-normalised training cells ``genes`` ``[N, G]``
    (lazy or in memory, foundation gene order) with class indices ``labels``."""
    labels = np.asarray(labels, dtype=np.int64)
    num_classes = len(categories)
    x = lazy_matrix(genes)
    parts = reduce_blocks(
        x,
        partial(_block_parts, num_classes=num_classes),
        labels,
    )
    counts = np.bincount(labels, minlength=num_classes)
    if (counts == 0).any():
        empty = [categories[c] for c in np.flatnonzero(counts == 0)]
        raise ValueError(f"Classes {empty} have no training cells.")
    class_nnz = np.sum([p["class_nnz"] for p in parts], axis=0)
    totals = np.concatenate([p["totals"] for p in parts])
    return RealCellStats(
        categories=list(categories),
        class_counts=counts,
        target_sum=float(np.median(totals)),
        zero_fractions=1.0 - class_nnz / (counts * x.shape[1]),
        n_genes=int(x.shape[1]),
    )
