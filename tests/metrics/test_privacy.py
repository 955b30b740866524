"""Privacy: nearest-record ratios, membership attack and copies of training cells."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from scdd.cellstore import lazy_matrix
from scdd.metrics.privacy import (
    PrivacyParams,
    _attack,
    attack_p_value,
    auc_p_value,
    class_matched_samples,
    equal_samples,
    guard_failures,
    model_attack,
    nearest_cosine_distance,
    privacy_report,
    space_report,
)


def _cells(n: int, seed: int, genes: int = 60) -> np.ndarray:
    """Log-normalised-like noisy cells around one profile (a 'class')."""
    rng = np.random.default_rng(seed)
    profile = np.random.default_rng(99).gamma(1.0, 1.0, size=genes)
    return np.log1p(rng.poisson(profile * 3, size=(n, genes))).astype(np.float32)


def _features(x: np.ndarray) -> np.ndarray:
    """A fixed projection standing in for F."""
    w = np.random.default_rng(7).normal(size=(x.shape[1], 8)).astype(np.float32)
    return x @ w


def _report(
    synthetic: np.ndarray,
    train: np.ndarray,
    heldout: np.ndarray,
    labels: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> dict:
    return privacy_report(
        _features(synthetic),
        _features(train),
        _features(heldout),
        PrivacyParams(max_cells=300, chunk_size=64),
        synthetic_genes=sparse.csr_matrix(synthetic),
        train_genes=sparse.csr_matrix(train),
        heldout_genes=heldout,
        labels=labels,
    )


@pytest.fixture(scope="module")
def splits() -> tuple[np.ndarray, np.ndarray]:
    return _cells(400, 0), _cells(400, 1)


def test_chunked_search_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    queries, reference = rng.normal(size=(37, 6)), rng.normal(size=(101, 6))
    dist, index = nearest_cosine_distance(queries, reference, chunk_size=7)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    sim = unit(queries) @ unit(reference).T
    np.testing.assert_array_equal(index, sim.argmax(1))
    np.testing.assert_allclose(dist, 1.0 - sim.max(1), atol=1e-6)


def test_a_lazy_reference_is_searched_block_by_block_alike() -> None:
    rng = np.random.default_rng(1)
    queries, reference = rng.normal(size=(37, 6)), rng.normal(size=(101, 6))
    lazy = lazy_matrix(reference.astype(np.float32), chunk_rows=10)
    expected = nearest_cosine_distance(queries, reference, chunk_size=7)
    got = nearest_cosine_distance(queries, lazy, chunk_size=7)
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_allclose(got[0], expected[0], atol=1e-6)


def test_the_report_on_lazy_features_is_the_in_memory_one() -> None:
    params = PrivacyParams(max_cells=150, ratio_samples=2)
    z = [_cells(n, seed)[:, :8] for n, seed in ((12, 5), (400, 0), (400, 1))]
    lazy = [lazy_matrix(x.astype(np.float32), chunk_rows=64) for x in z[1:]]
    assert privacy_report(*z, params) == privacy_report(z[0], *lazy, params)


def test_exact_copies_are_found_and_fail_the_guard(splits) -> None:
    train, heldout = splits
    report = _report(train[:20], train, heldout)
    genes = report["gene_space"]
    assert genes["exact_copies"] == 20
    # a copied cell is in 300 of 400 training cells' samples: averaged over
    # the sample pairs its ratio is about 1 - 300 / 400
    assert genes["nearest_record_ratio"] < 0.35
    assert report["f_space"]["exact_copies"] == 20
    # 20 of 300 sampled training cells sit on a synthetic cell: the attack
    # picks them at no false positive
    assert genes["attack_tpr_at_1fpr"] > 0.02
    assert report["guard"]["passes"] is False
    assert any("copies" in line for line in report["guard"]["failures"])


def test_near_copies_of_training_cells_are_found(splits) -> None:
    train, heldout = splits
    noise = np.random.default_rng(5).normal(0, 0.02, size=(20, train.shape[1]))
    report = _report(np.clip(train[:20] + noise, 0, None), train, heldout)
    genes = report["gene_space"]
    assert genes["exact_copies"] == 0
    # judged on the 300 sampled training cells: the copies of those sampled
    sampled = len(
        set(range(20)) & set(equal_samples(400, 400, max_cells=300, seed=0)[0])
    )
    assert genes["near_copies"] == sampled > 10
    assert genes["nearest_record_ratio"] < 0.35
    assert report["guard"]["passes"] is False


def test_fresh_cells_of_the_same_distribution_pass(splits) -> None:
    train, heldout = splits
    report = _report(_cells(40, 2), train, heldout)
    for space in ("f_space", "gene_space"):
        figures = report[space]
        assert figures["exact_copies"] == figures["near_copies"] == 0
        assert 0.85 < figures["nearest_record_ratio"] < 1.15
        assert figures["attack_tpr_at_1fpr"] <= 0.03
        assert 0.4 < figures["attack_auc"] < 0.6
    assert report["n_sample"] == 300


def test_small_samples_judge_the_attack_and_copies_not_the_ratio(splits) -> None:
    """Under ``min_sample`` cells per sample the ratio is reported but not
    judged; the attack (its test accounts for the sample size) and copies
    still are."""
    train, heldout = splits
    small = PrivacyParams(max_cells=150, min_sample=200)

    def report(synthetic: np.ndarray) -> dict:
        return privacy_report(
            _features(synthetic),
            _features(train),
            _features(heldout),
            small,
            synthetic_genes=synthetic,
            train_genes=train,
            heldout_genes=heldout,
        )

    fresh, copies = report(_cells(40, 2)), report(train[:20])
    assert fresh["guard"]["judged"] == copies["guard"]["judged"] == "attack, copies"
    assert fresh["guard"]["passes"] is True
    assert copies["gene_space"]["exact_copies"] == 20
    failures = copies["guard"]["failures"]
    assert (
        failures[-1] == "gene_space: 20 exact and 0 near copies of training cells > 0"
    )
    # copying 20 of 400 training cells (about 8 in a sample of 150) is an
    # attack beyond chance in gene space too
    assert [line.split(" membership")[0] for line in failures[:-1]] == ["gene_space"]


def test_attack_p_value_is_the_negative_hypergeometric_tail_of_chance() -> None:
    assert attack_p_value(0.0, 500) == 1.0
    # 6 of 210 cells flagged where chance flags 3: likely enough by chance
    assert 0.1 < attack_p_value(6 / 210, 210) < 0.2
    # below 100 held-out cells the cut-off is the highest held-out cell
    assert attack_p_value(2 / 73, 73) > 0.2
    # 46 of 2000 where chance flags 21: not chance
    assert attack_p_value(46 / 2000, 2000) < 1e-3


def test_the_attack_tests_are_calibrated_when_nothing_leaks() -> None:
    """Members and held-out cells from one distribution: each test's p-value
    falls below alpha in about alpha of the draws (the binomial test that
    took the cut-off as fixed did so twice as often)."""
    rng = np.random.default_rng(0)
    synthetic = rng.normal(size=(3, 5))
    p_rate, p_auc = [], []
    for _ in range(600):
        members, others = rng.normal(size=(2, 100, 5))
        figures = _attack(synthetic, members, others, chunk_size=64)
        p_rate.append(attack_p_value(figures["attack_tpr_at_1fpr"], 100))
        p_auc.append(auc_p_value(figures["attack_auc"], 100))
    for p_values in (np.array(p_rate), np.array(p_auc)):
        assert 0.1 < (p_values < 0.2).mean() < 0.25
        assert (p_values < 0.05).mean() < 0.08


def test_auc_p_value_is_the_mann_whitney_tail() -> None:
    assert auc_p_value(0.5, 100) == pytest.approx(0.5)
    # AUC 0.61 over 105 + 105 cells: z = 2.8, not beyond alpha 0.001
    assert 1e-3 < auc_p_value(0.61, 105) < 1e-2
    assert auc_p_value(0.7, 105) < 1e-5


def _attack_report(tpr: float, n: int, auc: float = 0.5) -> dict:
    space = {
        "nearest_record_ratio": 1.0,
        "attack_tpr_at_1fpr": tpr,
        "attack_auc": auc,
        "exact_copies": 0,
        "near_copies": 0,
    }
    return {"n_sample": n, "f_space": space, "gene_space": space}


@pytest.mark.parametrize(
    ("tpr", "n", "fails"),
    [
        (6 / 210, 210, False),  # above 0.02 but within chance over 210 cells
        (20 / 819, 819, False),  # what chance gives over 819 cells (p = 0.017)
        (46 / 2000, 2000, True),  # above 0.02 and far beyond chance
        (30 / 2000, 2000, False),  # beyond chance but under the threshold
    ],
)
def test_the_attack_fails_a_set_above_the_threshold_and_beyond_chance(
    tpr: float, n: int, fails: bool
) -> None:
    failures = guard_failures(_attack_report(tpr, n), PrivacyParams())
    assert bool(failures) is fails
    assert all("against chance" in line for line in failures)


@pytest.mark.parametrize(
    ("auc", "n", "fails"),
    [
        (0.70, 105, True),  # a leak spread over many cells of a small sample
        (0.61, 105, False),  # above 0.6, within chance over 105 cells
        (0.55, 2000, False),  # beyond chance, under the threshold
    ],
)
def test_the_attack_auc_fails_a_set_above_the_threshold_and_beyond_chance(
    auc: float, n: int, fails: bool
) -> None:
    failures = guard_failures(_attack_report(0.0, n, auc), PrivacyParams())
    assert bool(failures) is fails
    assert all("AUC" in line for line in failures)


def test_the_ratio_averaged_over_sample_pairs_is_steadier(splits) -> None:
    """One sample pair's median ratio of a fixed set moves with the sample;
    averaging the distances over pairs narrows it around the same value."""
    train, heldout = _cells(2000, 0), _cells(300, 1)
    synthetic = _features(_cells(30, 2))

    def ratios(count: int) -> np.ndarray:
        params = PrivacyParams(max_cells=300, ratio_samples=count)
        return np.array(
            [
                privacy_report(
                    synthetic, _features(train), _features(heldout), params, seed=s
                )["f_space"]["nearest_record_ratio"]
                for s in range(12)
            ]
        )

    one, eight = ratios(1), ratios(8)
    assert np.ptp(eight) < 0.5 * np.ptp(one)
    assert abs(np.median(eight) - np.median(one)) < 0.1


def test_a_feature_only_set_has_no_gene_space_figures(splits) -> None:
    train, heldout = splits
    report = privacy_report(
        _features(_cells(10, 3)), _features(train), _features(heldout), PrivacyParams()
    )
    assert report["gene_space"] is None
    assert report["n_sample"] == 400


def test_samples_are_equal_in_size_and_unequal_ones_refused(splits) -> None:
    a, b = equal_samples(1000, 250, max_cells=300, seed=0)
    assert len(a) == len(b) == 250
    train, heldout = splits
    with pytest.raises(ValueError, match="equal in size"):
        space_report(
            train[:3], [(train, heldout[:10])], near_copy_factor=0.5, chunk_size=4096
        )


def test_bad_inputs_are_refused() -> None:
    train = np.ones((10, 6))
    with pytest.raises(ValueError, match="widths differ"):
        nearest_cosine_distance(train, train[:, :3], chunk_size=4096)
    with pytest.raises(ValueError, match="NaN"):
        nearest_cosine_distance(np.full((2, 6), np.nan), train, chunk_size=4096)


# ------------------------------------------------------------- model attack


def _classes(
    seed: int, n: int = 100, genes: int = 2000
) -> tuple[np.ndarray, np.ndarray]:
    """Two classes of sparse count-like cells that differ in 10 genes of
    ``genes`` (the rest: each cell's own noise)."""
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(99).gamma(0.3, 1.0, size=genes)
    cells, labels = [], []
    for c in range(2):
        profile = base.copy()
        profile[c * 10 : (c + 1) * 10] *= 2
        cells.append(np.log1p(rng.poisson(profile, size=(n, genes))))
        labels += [f"type_{c}"] * n
    return np.vstack(cells).astype(np.float32), np.array(labels)


def _class_means(
    cells: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Three slightly jittered copies of each class's mean cell."""
    rng = np.random.default_rng(3)
    rows, names = [], []
    for c in np.unique(labels):
        mean = cells[labels == c].mean(0)
        rows += [mean + rng.normal(0, 0.01, mean.shape) for _ in range(3)]
        names += [c] * 3
    return np.array(rows, dtype=np.float32), np.array(names)


def test_model_attack_reads_training_class_means_not_fresh_ones() -> None:
    """Class means of the training cells carry each cell's noise in every
    gene: a classifier trained on them knows its training cells (the leak
    the distance attacks miss); the means of other cells carry nothing."""
    train, heldout, fresh = _classes(0), _classes(1), _classes(2)
    leaked = model_attack(*_class_means(*train), *train, *heldout)
    clean = model_attack(*_class_means(*fresh), *train, *heldout)
    assert leaked["attack_auc"] > 0.8 and leaked["accuracy_gap"] > 0.2
    assert abs(clean["attack_auc"] - 0.5) < 0.08
    assert abs(clean["accuracy_gap"]) < 0.08


def test_class_matched_samples_hold_each_class_equally() -> None:
    train = np.array(list("aaaabbbbbbc"))
    heldout = np.array(list("abbbbd"))
    t, h = class_matched_samples(train, heldout, max_cells=100, seed=0)
    assert sorted(train[t]) == sorted(heldout[h]) == list("abbbb")
    t, h = class_matched_samples(train, heldout, max_cells=2, seed=0)
    assert len(t) == len(h) <= 2 and sorted(train[t]) == sorted(heldout[h])


def test_report_judges_the_model_attack() -> None:
    (train, train_labels), (heldout, heldout_labels) = _classes(0), _classes(1)
    synthetic, labels = _class_means(train, train_labels)
    report = _report(
        synthetic, train, heldout, labels=(labels, train_labels, heldout_labels)
    )
    assert report["model"]["n_sample"] == 200
    assert report["guard"]["judged"].endswith(", model attack")
    assert any(
        line.startswith("model membership attack")
        for line in report["guard"]["failures"]
    )
