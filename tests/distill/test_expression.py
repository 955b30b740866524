import numpy as np
import torch

from scdd.distill.expression import as_log_normalised
from scdd.distill.synthetic import finalise_genes


def test_matches_finalise_and_is_differentiable() -> None:
    rng = torch.Generator().manual_seed(0)
    genes = torch.randn(6, 20, generator=rng, dtype=torch.float64, requires_grad=True)
    out = as_log_normalised(genes, target_sum=1e4, zero_threshold=0.2)
    assert (out >= 0).all()
    np.testing.assert_allclose(torch.expm1(out).sum(1).detach(), 1e4, rtol=1e-9)
    written = finalise_genes(
        genes.detach().numpy(),
        np.zeros(6, dtype=int),
        zero_fractions=np.zeros(1),
        target_sum=1e4,
        zero_threshold=0.2,
    )
    np.testing.assert_allclose(written.toarray(), out.detach().numpy(), rtol=1e-5)
    out.sum().backward()
    assert torch.isfinite(genes.grad).all() and genes.grad.abs().sum() > 0
