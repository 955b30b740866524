import numpy as np
import pytest
import torch
from scipy import sparse

from scdd.cellstore import lazy_matrix
from scdd.distill.real_cells import RealCellStats, summarise_real_cells
from scdd.preprocessing import log_normalise
from tests.conftest import make_counts_adata


def test_library_size_and_class_sparsity_by_hand() -> None:
    x = sparse.csr_matrix(
        np.log1p(np.array([[1, 0, 0, 2], [0, 0, 0, 3], [3, 4, 5, 6], [0, 7, 0, 0]]))
    )
    stats = summarise_real_cells(
        x, np.array([0, 0, 1, 1]), ["a", "b"], gene_names=list("pqrs")
    )
    np.testing.assert_allclose(stats.zero_fractions, [5 / 8, 3 / 8])
    assert stats.target_sum == pytest.approx(np.median([3, 3, 18, 7]))
    assert stats.class_counts.tolist() == [2, 2] and stats.n_genes == 4
    dense = x.toarray()
    np.testing.assert_allclose(  # the cell store holds float32
        stats.classes.means, [dense[:2].mean(0), dense[2:].mean(0)], rtol=1e-6
    )
    np.testing.assert_allclose(
        stats.classes.variances,
        [dense[:2].var(0, ddof=1), dense[2:].var(0, ddof=1)],
        rtol=1e-6,
    )
    assert stats.classes.zero_fraction == pytest.approx(8 / 16)


def test_streamed_equals_in_memory_and_round_trips() -> None:
    real = log_normalise(make_counts_adata(), target_sum=1e4, keep_counts=False)
    labels = real.obs["cell_type"].cat.codes.to_numpy()
    names = list(real.obs["cell_type"].cat.categories)
    genes = list(real.var_names)
    whole = summarise_real_cells(real.X, labels, names, gene_names=genes)
    streamed = summarise_real_cells(
        lazy_matrix(real.X, chunk_rows=7), labels, names, gene_names=genes
    )
    assert whole.target_sum == pytest.approx(1e4, rel=1e-4)
    assert streamed.target_sum == pytest.approx(whole.target_sum, rel=1e-12)
    np.testing.assert_allclose(streamed.zero_fractions, whole.zero_fractions)
    np.testing.assert_allclose(streamed.classes.means, whole.classes.means, rtol=1e-12)
    np.testing.assert_allclose(
        streamed.classes.variances, whole.classes.variances, rtol=1e-9
    )
    checkpoint = streamed.to_checkpoint()
    assert all(
        isinstance(v, torch.Tensor | str | float | int | list)
        for v in checkpoint.values()
    )
    back = RealCellStats.from_checkpoint(checkpoint)
    np.testing.assert_array_equal(back.zero_fractions, streamed.zero_fractions)
    np.testing.assert_array_equal(back.classes.variances, streamed.classes.variances)
    assert back.categories == names and back.genes == genes
    assert back.class_counts.tolist() == streamed.class_counts.tolist()


def test_stats_of_an_older_scdd_are_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="latent_distillation"):
        RealCellStats.from_checkpoint(
            {"categories": ["a"], "class_counts": torch.ones(1), "n_genes": 3}
        )


def test_class_without_cells_is_named() -> None:
    with pytest.raises(ValueError, match=r"\['c'\]"):
        summarise_real_cells(
            sparse.csr_matrix(np.ones((2, 3))),
            np.array([0, 1]),
            ["a", "b", "c"],
            gene_names=list("xyz"),
        )
