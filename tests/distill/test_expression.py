import numpy as np
import pytest
import torch

from scdd.distill.expression import as_log_normalised
from scdd.distill.synthetic import finalise_genes

RANDOM_GENES = torch.randn(
    6, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64
)
#: the first cell falls wholly under the cut-off: it is written with its top
#: gene, and its gradient once came out NaN and poisoned the optimisation
ONE_CELL_CUT_AWAY = torch.tensor([[0.1, 0.15, 0.05], [1.0, 2.0, 0.1]])


@pytest.mark.parametrize("genes", [RANDOM_GENES, ONE_CELL_CUT_AWAY])
def test_matches_finalise_and_is_differentiable(genes: torch.Tensor) -> None:
    genes = genes.clone().requires_grad_()
    out = as_log_normalised(genes, target_sum=1e4, zero_threshold=0.2)
    assert (out >= 0).all()
    np.testing.assert_allclose(torch.expm1(out).sum(1).detach(), 1e4, rtol=1e-5)
    written = finalise_genes(
        genes.detach().numpy(),
        np.zeros(len(genes), dtype=int),
        zero_fractions=np.zeros(1),
        target_sum=1e4,
        zero_threshold=0.2,
    )
    np.testing.assert_allclose(written.toarray(), out.detach().numpy(), rtol=1e-5)
    out.sum().backward()
    assert torch.isfinite(genes.grad).all() and genes.grad.abs().sum() > 0


def test_counts_are_drawn_as_sparse_as_real_cells() -> None:
    """Smooth cells redrawn as counts: each as sparse as asked, log-normalised
    to the target, the same draw for the same seed."""
    from scdd.distill.expression import sample_counts_like_real

    torch.manual_seed(0)
    profile = torch.rand(4, 500) * torch.linspace(0.01, 3, 500)
    cells = as_log_normalised(profile, target_sum=1e4)
    wanted = torch.tensor([0.5, 0.7, 0.9, 0.9])
    drawn = sample_counts_like_real(cells, wanted, target_sum=1e4, seed=1)
    zeros = (drawn == 0).float().mean(1)
    assert torch.allclose(zeros, wanted, atol=0.06), zeros
    np.testing.assert_allclose(torch.expm1(drawn).sum(1), 1e4, rtol=1e-4)
    again = sample_counts_like_real(cells, wanted, target_sum=1e4, seed=1)
    assert torch.equal(again, drawn)
    assert not torch.equal(
        sample_counts_like_real(cells, wanted, target_sum=1e4, seed=2), drawn
    )


def test_deeper_counts_are_less_sparse_and_closer_to_the_smooth_cells() -> None:
    """``depth`` > 1 draws at a larger library: fewer zeros than the real
    class and less noise around the smooth profile."""
    from scdd.distill.expression import sample_counts_like_real

    torch.manual_seed(0)
    profile = torch.rand(8, 500) * torch.linspace(0.01, 3, 500)
    cells = as_log_normalised(profile, target_sum=1e4)
    wanted = torch.full((8,), 0.8)
    shallow = sample_counts_like_real(cells, wanted, target_sum=1e4, seed=1)
    deep = sample_counts_like_real(cells, wanted, target_sum=1e4, seed=1, depth=4.0)
    assert (deep == 0).float().mean() < (shallow == 0).float().mean() - 0.1
    assert (deep - cells).abs().mean() < (shallow - cells).abs().mean()


def test_the_library_size_solves_uniform_profiles_to_float_precision():
    """Uniform proportions over G genes are zero for a fraction exp(-L / G),
    so L = -G log(zero fraction); a target beyond a bound gets that bound."""
    from scdd.distill.expression import library_size_for_zero_fraction

    genes = 1000
    proportions = torch.full((5, genes), 1.0 / genes)
    zero_fraction = torch.tensor([0.5, 0.8, 0.95, 0.999, 0.0])
    library = library_size_for_zero_fraction(
        proportions, zero_fraction, low=10.0, high=1e5
    )
    expected = -genes * torch.log(zero_fraction[:3])
    torch.testing.assert_close(library[:3], expected, rtol=1e-5, atol=0)
    assert library[3].item() == 10.0 and library[4].item() == 1e5


def test_the_library_size_makes_skewed_profiles_as_sparse_as_asked():
    """On skewed profiles of 20k genes the expected zero fraction at the
    library size found is the target, to float32 precision."""
    from scdd.distill.expression import library_size_for_zero_fraction

    torch.manual_seed(0)
    profile = torch.rand(50, 20_000) ** 4 * torch.linspace(0.01, 3, 20_000)
    proportions = (profile / profile.sum(1, keepdim=True)).double()
    wanted = torch.rand(50, dtype=torch.float64) * 0.6 + 0.3
    library = library_size_for_zero_fraction(
        proportions.float(), wanted.float(), low=10.0, high=1e7
    )
    zeros = torch.exp(-proportions * library.double().unsqueeze(1)).mean(1)
    torch.testing.assert_close(zeros, wanted, rtol=0, atol=1e-5)
