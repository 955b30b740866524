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
    expectation), within ``[low, high]``.

    The expected zero fraction ``f(L) = mean(exp(-p L))`` falls with ``L``
    and is at least ``exp(-L / G)`` (Jensen), so the root is at least
    ``-G log(zero_fraction)``. From there Newton's method on ``log f`` in
    ``log L`` runs inside the bracket it narrows (a bisection step where it
    would leave it) until ``f`` is within a millionth of the target or a step
    moves ``log L`` by a few float32 steps: about seven evaluations of ``f``
    where a bisection takes 24.

    Args:
        proportions: ``[n, G]`` non-negative rows summing to 1.
        zero_fraction: ``[n]`` target zero fraction of each row.
    """
    neg, target = -proportions, zero_fraction.log()

    def excess(log_l: Tensor) -> tuple[Tensor, Tensor]:
        """``log f - log zero_fraction`` and its slope in ``log L``."""
        level = log_l.exp().unsqueeze(1)
        zeros = torch.exp(neg * level)
        f = zeros.mean(1).clamp_min(1e-30)
        return f.log() - target, (zeros * neg).mean(1) * level.squeeze(1) / f

    hi = torch.full_like(zero_fraction, math.log(high))
    jensen = torch.log(-proportions.shape[1] * target)
    lo = jensen.clamp(math.log(low), math.log(high))
    beyond_high = excess(hi)[0] > 0
    log_l = lo
    for _ in range(60):
        gap, slope = excess(log_l)
        lo = torch.where(gap > 0, log_l, lo)  # still too sparse: L is larger
        hi = torch.where(gap > 0, hi, log_l)
        step = log_l - gap / slope.clamp_max(-1e-30)
        new = torch.where((step >= lo) & (step <= hi), step, (lo + hi) / 2)
        moved = (new - log_l).abs() > 4 * torch.finfo(new.dtype).eps * new.abs()
        log_l = new
        if not (moved & (gap.abs() > 1e-6) & ~beyond_high).any():
            break
    return torch.where(beyond_high, high, log_l.exp().clamp(low, high))


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
    cells); ``max_library`` (default ``4 * target_sum``) keeps a single count
    above the output cut-off.
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
