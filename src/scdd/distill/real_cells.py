"""What the distillation needs to know about the real training cells, computed
once in one chunked pass and cached (``real_cell_stats`` in the catalog), so a
distillation run costs O(SPC x classes) whatever the number of real cells,
and fidelity reads the class moments instead of the split."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import sparse

from scdd.cellstore import lazy_matrix, tree_reduce
from scdd.metrics.fidelity import ClassSummary, chunk_class_sums, summary_from_sums


@dataclass(frozen=True)
class RealCellStats:
    """Per-class summaries of the training cells in the foundation gene order.

    Attributes:
        categories: class names; index = class index.
        genes: gene names, in the foundation's order.
        classes: per-class gene means and variances, cell counts and the
            overall zero fraction (what gene-level fidelity compares
            synthetic cells with).
        target_sum: median per-cell ``sum(expm1(x))`` (1e4 after our
            normalisation): the library size synthetic cells are written at.
        zero_fractions: fraction of zero entries per class ``[C]``: the
            sparsity synthetic cells of that class are cut to.
    """

    categories: list[str]
    genes: list[str]
    classes: ClassSummary
    target_sum: float
    zero_fractions: np.ndarray

    @property
    def class_counts(self) -> np.ndarray:
        """Training cells per class ``[C]``."""
        return self.classes.counts.astype(np.int64)

    @property
    def n_genes(self) -> int:
        return len(self.genes)

    def summary_for(self, genes: list[str]) -> ClassSummary | None:
        """:attr:`classes` with its gene columns in the order ``genes``, or
        ``None`` when ``genes`` are not the same set as :attr:`genes`."""
        if len(genes) != len(self.genes) or set(genes) != set(self.genes):
            return None
        order = pd.Index(self.genes).get_indexer(genes)
        return replace(
            self.classes,
            means=self.classes.means[:, order],
            variances=self.classes.variances[:, order],
        )

    def to_checkpoint(self) -> dict[str, Any]:
        """Plain tensors and lists (``TorchCheckpointDataset`` loads it safely)."""
        return {
            "categories": list(self.categories),
            "genes": list(self.genes),
            "class_means": torch.as_tensor(self.classes.means),
            "class_variances": torch.as_tensor(self.classes.variances),
            "class_counts": torch.as_tensor(self.class_counts),
            "zero_fraction": float(self.classes.zero_fraction),
            "target_sum": float(self.target_sum),
            "zero_fractions": torch.as_tensor(self.zero_fractions, dtype=torch.float64),
        }

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any]) -> RealCellStats:
        missing = {"genes", "class_means", "class_variances"} - set(checkpoint)
        if missing:
            raise ValueError(
                f"real_cell_stats lacks {sorted(missing)}: it was written by an "
                "older scdd; rebuild it with kedro run --pipeline latent_distillation"
            )
        return cls(
            categories=list(checkpoint["categories"]),
            genes=list(checkpoint["genes"]),
            classes=ClassSummary(
                means=checkpoint["class_means"].numpy(),
                variances=checkpoint["class_variances"].numpy(),
                counts=checkpoint["class_counts"].numpy().astype(np.float64),
                zero_fraction=float(checkpoint["zero_fraction"]),
            ),
            target_sum=float(checkpoint["target_sum"]),
            zero_fractions=checkpoint["zero_fractions"].numpy(),
        )


def _block_parts(block: Any, labels: np.ndarray, *, num_classes: int) -> tuple:
    """Class sums (:func:`chunk_class_sums`), nonzeros per class and each
    cell's ``sum(expm1(x))`` of one row block."""
    block = sparse.csr_matrix(block, dtype=np.float64)
    sums = chunk_class_sums(block, labels, num_classes)
    nnz = np.bincount(labels, weights=np.diff(block.indptr), minlength=num_classes)
    block.data = np.expm1(block.data)
    return sums, nnz, np.asarray(block.sum(1)).ravel()


def _merge_parts(first: tuple, second: tuple) -> tuple:
    """Two blocks' :func:`_block_parts`: sums added, cell totals in row order."""
    sums = tuple(a + b for a, b in zip(first[0], second[0], strict=True))
    return sums, first[1] + second[1], np.concatenate([first[2], second[2]])


def summarise_real_cells(
    genes: Any, labels: np.ndarray, categories: list[str], gene_names: list[str]
) -> RealCellStats:
    """One pass over the log-normalised training cells ``genes`` ``[N, G]``
    (lazy or in memory, foundation gene order ``gene_names``) with class
    indices ``labels``."""
    labels = np.asarray(labels, dtype=np.int64)
    num_classes = len(categories)
    x = lazy_matrix(genes)
    if len(gene_names) != x.shape[1]:
        raise ValueError(
            f"{len(gene_names)} gene names for a matrix of {x.shape[1]} genes"
        )
    counts = np.bincount(labels, minlength=num_classes)
    if (counts == 0).any():
        empty = [categories[c] for c in np.flatnonzero(counts == 0)]
        raise ValueError(f"Classes {empty} have no training cells.")
    sums, class_nnz, totals = tree_reduce(
        x, partial(_block_parts, num_classes=num_classes), _merge_parts, labels
    )
    return RealCellStats(
        categories=list(categories),
        genes=list(map(str, gene_names)),
        classes=summary_from_sums(*sums),
        target_sum=float(np.median(totals)),
        zero_fractions=1.0 - class_nnz / (counts * x.shape[1]),
    )
