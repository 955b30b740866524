"""Differentiable twin of the output post-processing of synthetic genes."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def as_log_normalised(
    genes: Tensor, *, target_sum: float, zero_threshold: float | None = None
) -> Tensor:
    """Clip, sparsify and log-normalise decoded genes ``[n, G]``, differentiably.

    Distillation optimises through this map so that what F scores during
    optimisation is what is written out (the same steps as
    :func:`scdd.distill.synthetic.finalise_genes` with a fixed cut-off):
    without it the clipping and renormalisation at write time undid up to 10
    points of F-head accuracy (paul15, SPC 1).
    """
    x = torch.relu(genes)
    if zero_threshold:
        x = x * (x > zero_threshold)
    linear = torch.expm1(x)
    empty = linear.sum(1, keepdim=True) == 0
    if empty.any():  # as written: a row thresholded away keeps its largest gene
        top = torch.nn.functional.one_hot(genes.argmax(1), genes.shape[1])
        linear = torch.where(empty, top.to(linear.dtype), linear)
    return torch.log1p(linear / linear.sum(1, keepdim=True) * target_sum)


def library_size_for_zero_fraction(
    proportions: Tensor, zero_fraction: Tensor, *, low: float, high: float
) -> Tensor:
    """Per row, the library size ``L`` at which Poisson counts of
    ``L * proportions`` are zero for ``zero_fraction`` of the genes (in
    expectation), found by bisection in log space within ``[low, high]``.

    Args:
        proportions: ``[n, G]`` non-negative rows summing to 1.
        zero_fraction: ``[n]`` target zero fraction of each row.
    """
    lo = torch.full_like(zero_fraction, math.log(low))
    hi = torch.full_like(zero_fraction, math.log(high))
    for _ in range(40):
        mid = (lo + hi) / 2
        zeros = torch.exp(-proportions * mid.exp().unsqueeze(1)).mean(1)
        too_sparse = zeros > zero_fraction
        new_lo = torch.where(too_sparse, mid, lo)
        new_hi = torch.where(too_sparse, hi, mid)
        # each row's step depends on its bounds alone: once a step moves no
        # bound (float32 has ~24 halvings to give), no later one would
        if torch.equal(new_lo, lo) and torch.equal(new_hi, hi):
            break
        lo, hi = new_lo, new_hi
    return ((lo + hi) / 2).exp()


def sample_counts_like_real(
    cells: Tensor,
    zero_fraction: Tensor,
    *,
    target_sum: float,
    seed: int,
    depth: float = 1.0,
    max_library: float | None = None,
) -> Tensor:
    """Log-normalised cells ``[n, G]`` redrawn as count data.

    Each cell's expression profile gives Poisson rates at the library size that
    makes it as sparse as its class's real cells (``zero_fraction`` ``[n]``);
    the counts are log-normalised to ``target_sum`` again. Decoded cells are
    smooth profiles while real cells are noisy counts: models trained on the
    redrawn cells see the noise they are tested on. The draw is seeded, so the
    same cells give the same counts. It has no gradient: distillation passes
    the gradient straight through it, as if the draw were the identity
    (:func:`scdd.distill.optimise.backward_through_generator`). ``depth``
    multiplies that library size (deeper draws: less sparse, less noisy
    cells); ``max_library``
    (default ``4 * target_sum``) keeps a single count above the output cut-off.
    """
    with torch.no_grad():
        linear = torch.expm1(cells.clamp_min(0))
        proportions = linear / linear.sum(1, keepdim=True).clamp_min(1e-30)
        high = max_library or 4 * target_sum
        library = library_size_for_zero_fraction(
            proportions, zero_fraction, low=10.0, high=high
        )
        library = (library * depth).clamp_max(high)
        draw = torch.Generator(device=cells.device).manual_seed(seed)
        counts = torch.poisson(proportions * library.unsqueeze(1), generator=draw)
        empty = counts.sum(1) == 0  # keep a cell's top gene rather than nothing
        if empty.any():
            top = proportions[empty].argmax(1)
            counts[empty.nonzero().flatten(), top] = 1.0
        return torch.log1p(counts / counts.sum(1, keepdim=True) * target_sum)
