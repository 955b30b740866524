"""Privacy of a synthetic set: does it carry individual training cells?

Three views, each in F-space (cosine distance of the foundation features)
and in gene space (``1 - Pearson`` of log-normalised genes):

- **Nearest-record ratio** of the synthetic cells: distance to the nearest
  training cell over distance to the nearest held-out cell, against
  *equal-size* samples of both, so ~1 means no closer to training than to
  cells the distillation never saw; a copy of a training cell has ratio 0.
  Smooth class prototypes are close to many cells, training and held-out
  alike: the ratio compares the two, so smoothness cancels.
- **Membership inference** (a distance attack): each training and held-out
  cell of the samples is scored by its distance to the nearest synthetic
  cell, and the attack guesses "training" below a cut-off. Reported as the
  true-positive rate at a 1% false-positive rate (chance: 0.01; Carlini et
  al. 2022: an average AUC hides a handful of copied cells) and the AUC.
- **Model attack** (a loss attack, Yeom et al. 2018; labelled sets with
  genes): a logistic regression trained on the synthetic set scores each
  training and held-out cell by the probability it gives the cell's own
  class, on samples with as many cells of each class on both sides. It reads
  what no single synthetic cell shows: a class mean over a hundred cells in
  thousands of genes carries each cell's own noise, and a model trained on
  it recognises its training cells (paul15, SPC 10: AUC 0.77, accuracy 28
  points higher on training than on held-out cells, against 0.54 for real
  coreset cells).
- **Copies**: synthetic cells equal to a training cell (exact; every
  training cell's F-space nearest neighbour is checked too), or closer to a
  sampled one than ``near_copy_factor`` times the distance that only 1% of
  held-out cells come within of a training cell and than ``near_copy_factor``
  times their own distance to the nearest held-out cell (near: a smooth
  prototype is close to training and held-out cells alike).

The ratio, the attack and near copies use equal-size samples, so they see
the training cells that fall in the sample (``n_sample / n_train`` of them).
The ratio averages each synthetic cell's two distances over several sample
pairs (``ratio_samples``): on one pair the median ratio of a fixed set moves
by +-0.15 with the sample, and a guard on it fails sets on chance. Averaged,
a set of real cells has a ratio of about ``1 - n_sample / n_train`` (its cells
are in a sample that often), and is caught by its copies and the attack.

Samples are capped (``max_cells`` of each split) and searched in chunks, so
the cost does not grow with the number of cells; copies are also looked for
among every training cell's F-space nearest neighbour. :class:`PrivacyParams`
holds the settings and the guard's thresholds (:func:`guard_failures`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
from pydantic import Field, NonNegativeInt, PositiveInt
from scipy import sparse
from scipy.stats import nhypergeom, norm
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve

from scdd.cellstore import row_chunks, take_matrix_rows
from scdd.param_group import ParamGroup

#: Added to both distances of a ratio: a cell identical to a training *and* a
#: test cell (duplicates across splits) gets ratio 1, not 0/0.
_EPS = 1e-12


def _unit_rows(x: np.ndarray, name: str) -> np.ndarray:
    """Finite float32 ``[n, d]`` rows scaled to unit norm (zero rows stay 0)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty [n, d] array, got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def nearest_cosine_distance(
    queries: np.ndarray, reference: np.ndarray, *, chunk_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine distance from each query to its nearest reference row.

    Works through ``chunk_size x chunk_size`` blocks of the similarity matrix,
    keeping a running maximum, so memory stays at one block whatever the
    number of reference cells.

    Args:
        queries: ``[n, d]`` points (normalised here).
        reference: ``[m, d]`` points (normalised here; lazy: read one row
            block at a time).
        chunk_size: rows per block on each side.

    Returns:
        Distances ``[n]`` in ``[0, 2]`` and the index of the nearest
        reference row ``[n]``.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    q = _unit_rows(queries, "queries")
    if q.shape[1] != reference.shape[1]:
        raise ValueError(
            f"queries and reference widths differ: {q.shape[1]} vs {reference.shape[1]}"
        )
    if reference.shape[0] == 0:
        raise ValueError("reference must be a non-empty [n, d] array, got no rows")
    best = np.full(len(q), -np.inf, dtype=np.float32)
    where = np.zeros(len(q), dtype=np.int64)
    for rs, chunk in row_chunks(reference, chunk_size):
        r = _unit_rows(
            chunk.toarray() if sparse.issparse(chunk) else chunk, "reference"
        )
        for qs in range(0, len(q), chunk_size):
            sim = q[qs : qs + chunk_size] @ r.T
            arg = sim.argmax(1)
            top = sim[np.arange(len(arg)), arg]
            better = top > best[qs : qs + chunk_size]
            best[qs : qs + chunk_size][better] = top[better]
            where[qs : qs + chunk_size][better] = arg[better] + rs
    return np.clip(1.0 - best.astype(np.float64), 0.0, 2.0), where


class PrivacyParams(ParamGroup):
    """``distill.privacy``: how privacy is measured and what a shareable set
    must pass (the guard; measured by ``distill``, ``evaluate`` and the
    benchmark alike)."""

    #: Training and held-out cells sampled (each, equal sizes), at most.
    max_cells: PositiveInt = 2000
    #: Sample pairs the nearest-record ratio averages each synthetic cell's
    #: distances over (one pair's median ratio moves by +-0.15 with the
    #: sample: a guard on one pair fails sets on chance); the attack and
    #: copies are judged on the first.
    ratio_samples: PositiveInt = 8
    #: Rows per block of the nearest-neighbour search.
    chunk_size: PositiveInt = 4096
    #: A near copy is closer to a training cell than this times the 1%
    #: quantile of the held-out cells' nearest-training distance, and than
    #: this times its own distance to the nearest held-out cell.
    near_copy_factor: float = Field(default=0.5, gt=0, le=1)
    #: Guard: lowest median nearest-record ratio (F-space and gene space).
    min_ratio: float = Field(default=0.9, ge=0)
    #: Guard: highest membership-attack true-positive rate at 1% FPR.
    max_tpr_at_1fpr: float = Field(default=0.02, ge=0, le=1)
    #: Guard: an attack above ``max_tpr_at_1fpr`` or ``max_auc`` fails the
    #: set only if it beats chance at this significance (:func:`attack_p_value`,
    #: :func:`auc_p_value`): over a few hundred cells a rate of 0.02-0.03 is
    #: what chance gives.
    attack_alpha: float = Field(default=0.001, gt=0, lt=1)
    #: Guard: highest membership-attack AUC (0.5: chance). The 1%-FPR rate of
    #: a sample of a hundred held-out cells rests on its one or two highest
    #: scores; a leak spread over many cells shows in the AUC instead.
    max_auc: float = Field(default=0.6, ge=0.5, le=1)
    #: Guard: most exact or near copies of training cells.
    max_copies: NonNegativeInt = 0
    #: Fewest cells per sample for the nearest-record ratio to be judged;
    #: below it the ratio is reported, the attack and copies judged.
    min_sample: PositiveInt = 200
    #: Refuse to write a set that fails the guard (else: warn and flag it).
    enforce: bool = False


def _centred(x: np.ndarray) -> np.ndarray:
    """Rows minus their mean: cosine distance of centred rows is 1 - Pearson."""
    x = np.asarray(x, dtype=np.float32)
    return x - x.mean(axis=1, keepdims=True)


def _attack(
    synthetic: np.ndarray, members: np.ndarray, others: np.ndarray, chunk_size: int
) -> dict[str, float]:
    """A distance attack: members (training) vs others (held-out) scored by
    their distance to the nearest synthetic cell; TPR at 1% FPR and AUC."""
    d_members, _ = nearest_cosine_distance(members, synthetic, chunk_size=chunk_size)
    d_others, _ = nearest_cosine_distance(others, synthetic, chunk_size=chunk_size)
    return attack_figures(d_members, d_others)


def attack_figures(d_members: np.ndarray, d_others: np.ndarray) -> dict[str, float]:
    """TPR at 1% FPR and AUC of guessing "training" below a cut-off, from
    members' and others' scores (lower: more likely a member), e.g. their
    distances to the nearest synthetic cell."""
    truth = np.r_[np.ones(len(d_members)), np.zeros(len(d_others))]
    score = -np.r_[d_members, d_others]
    fpr, tpr, _ = roc_curve(truth, score)
    return {
        "attack_tpr_at_1fpr": float(tpr[fpr <= 0.01].max()),
        "attack_auc": float(roc_auc_score(truth, score)),
    }


def class_matched_samples(
    train_labels: np.ndarray,
    heldout_labels: np.ndarray,
    *,
    max_cells: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted rows of seeded samples of the two splits with the same number
    of cells of each class on both sides (at most ``max_cells`` in all, each
    class in proportion to the smaller split's share), so a model's accuracy
    on the two compares membership, not class mix."""
    # each split's rows per class, ascending, grouped in one hashing pass
    members = [
        pd.Series(np.arange(len(labels))).groupby(np.asarray(labels)).indices
        for labels in (train_labels, heldout_labels)
    ]
    classes = np.intersect1d(list(members[0]), list(members[1]))
    sizes = np.array([min(len(m[c]) for m in members) for c in classes])
    scale = min(1.0, max_cells / max(sizes.sum(), 1))
    rng = np.random.default_rng(seed)
    rows: tuple[list, list] = ([], [])
    for c, size in zip(classes, np.floor(sizes * scale).astype(int), strict=True):
        for side, by_class in zip(rows, members, strict=True):
            side.append(rng.choice(by_class[c], size, replace=False))
    return tuple(np.sort(np.concatenate(side)).astype(np.int64) for side in rows)


def model_attack(  # noqa: PLR0913
    synthetic_genes,
    synthetic_labels: np.ndarray,
    members,
    member_labels: np.ndarray,
    others,
    other_labels: np.ndarray,
) -> dict[str, float]:
    """A loss attack: a logistic regression trained on the synthetic cells
    scores members (training) and others (held-out) by the probability it
    gives their own class; TPR at 1% FPR, AUC, and the accuracy gap.

    Gene matrices are sparse or dense ``[n, G]`` in one gene order; the
    samples should hold as many cells of each class on both sides
    (:func:`class_matched_samples`).
    """
    model = LogisticRegression(max_iter=500).fit(synthetic_genes, synthetic_labels)
    classes = model.classes_  # sorted

    def own_class(genes, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        proba = model.predict_proba(genes)
        columns = np.searchsorted(classes, labels).clip(max=len(classes) - 1)
        known = classes[columns] == labels  # a class the set lacks: probability 0
        own = np.where(known, proba[np.arange(len(labels)), columns], 0.0)
        return own, (classes[proba.argmax(1)] == labels)

    p_members, hit_members = own_class(members, np.asarray(member_labels))
    p_others, hit_others = own_class(others, np.asarray(other_labels))
    return {
        **attack_figures(-p_members, -p_others),
        "accuracy_gap": float(hit_members.mean() - hit_others.mean()),
    }


def _pair_figures(  # noqa: PLR0913
    synthetic: np.ndarray,
    train: np.ndarray,
    heldout: np.ndarray,
    d_train: np.ndarray,
    d_heldout: np.ndarray,
    *,
    nearest_train: np.ndarray | None,
    near_copy_factor: float,
    chunk_size: int,
    copy_tolerance: float,
) -> dict[str, float]:
    """Copies and the attack, judged on one equal-size sample pair."""
    fresh, _ = nearest_cosine_distance(heldout, train, chunk_size=chunk_size)
    near = near_copy_factor * float(np.quantile(fresh, 0.01))
    nearest = d_train if nearest_train is None else np.minimum(d_train, nearest_train)
    exact = nearest <= copy_tolerance
    # near: closer to a sampled training cell than fresh cells ever get, and
    # much closer to it than to any held-out cell (a smooth prototype is close
    # to training and held-out cells alike); judged on the equal-size samples,
    # as a larger training side would hold closer cells by chance alone
    near_copy = (d_train < near) & (d_train < near_copy_factor * d_heldout)
    return {
        "exact_copies": int(exact.sum()),
        "near_copies": int((~exact & near_copy).sum()),
        "near_copy_distance": near,
        **_attack(synthetic, train, heldout, chunk_size),
    }


def space_report(
    synthetic: np.ndarray,
    samples: Iterable[tuple[np.ndarray, np.ndarray]],
    *,
    nearest_train: np.ndarray | None = None,
    near_copy_factor: float,
    chunk_size: int,
    copy_tolerance: float = 1e-5,
) -> dict[str, float]:
    """Privacy figures of ``synthetic`` in one space (cosine distances).

    Args:
        synthetic: synthetic cells ``[n, d]``.
        samples: pairs of equal-size samples ``([m, d] training cells,
            [m, d] held-out cells)``, one or more: the ratio averages each
            synthetic cell's nearest distances over the pairs (one pair's
            median ratio moves by +-0.15 with the sample), the copies and
            the attack are judged on the first.
        nearest_train: ``[n]`` distance of each synthetic cell to training
            cells searched elsewhere (e.g. all of them in F-space); copies
            count the smaller of it and the sample's.
        near_copy_factor: see :class:`PrivacyParams`.
        chunk_size: block size of the nearest-neighbour search.
        copy_tolerance: a distance at or below it is an exact copy.

    Returns:
        ``nearest_record_ratio`` (median over synthetic cells),
        ``frac_closer_to_train`` (0.5 expected), ``median_d_train``,
        ``median_d_heldout``, ``exact_copies``, ``near_copies``,
        ``near_copy_distance``, ``attack_tpr_at_1fpr``, ``attack_auc``.
    """
    sums, figures, pairs = np.zeros((2, len(synthetic))), None, 0
    for train, heldout in samples:
        if len(train) != len(heldout):
            raise ValueError(
                f"train and held-out samples must be equal in size ({len(train)} "
                f"vs {len(heldout)}): the ratio and the attack compare like with like"
            )
        d_train, _ = nearest_cosine_distance(synthetic, train, chunk_size=chunk_size)
        d_heldout, _ = nearest_cosine_distance(
            synthetic, heldout, chunk_size=chunk_size
        )
        if figures is None:
            figures = _pair_figures(
                synthetic,
                train,
                heldout,
                d_train,
                d_heldout,
                nearest_train=nearest_train,
                near_copy_factor=near_copy_factor,
                chunk_size=chunk_size,
                copy_tolerance=copy_tolerance,
            )
        sums += (d_train, d_heldout)
        pairs += 1
    if figures is None:
        raise ValueError("space_report needs at least one sample pair")
    d_train, d_heldout = sums / pairs
    return {
        "nearest_record_ratio": float(np.median((d_train + _EPS) / (d_heldout + _EPS))),
        "frac_closer_to_train": float((d_train < d_heldout).mean()),
        "median_d_train": float(np.median(d_train)),
        "median_d_heldout": float(np.median(d_heldout)),
        **figures,
    }


def equal_samples(
    n_train: int, n_heldout: int, *, max_cells: int, seed: int | Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted rows of equal-size seeded samples of the two splits."""
    size = min(max_cells, n_train, n_heldout)
    rng = np.random.default_rng(seed)
    train = np.sort(rng.choice(n_train, size, replace=False))
    return train, np.sort(rng.choice(n_heldout, size, replace=False))


def sample_pairs(
    n_train: int, n_heldout: int, *, max_cells: int, seed: int, count: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` :func:`equal_samples` pairs; the first is seeded by ``seed``
    alone (the one the attack and copies are judged on), the others by
    ``(seed, k)``."""
    return [
        equal_samples(
            n_train, n_heldout, max_cells=max_cells, seed=seed if k == 0 else (seed, k)
        )
        for k in range(count)
    ]


class _RowsReadOnce:
    """The rows of a gene matrix (lazy, sparse or dense) that the privacy
    figures use, read in one pass; indexed by the original row positions."""

    def __init__(self, x, *row_sets: np.ndarray) -> None:
        self.rows = np.unique(np.concatenate([np.asarray(r) for r in row_sets]))
        self.genes = take_matrix_rows(x, self.rows)

    def __getitem__(self, rows: np.ndarray) -> sparse.csr_matrix:
        return self.genes[np.searchsorted(self.rows, rows)]


def _centred_rows(x, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` of a lazy, sparse or dense gene matrix (only those read),
    dense and centred (:func:`_centred`)."""
    return _centred(take_matrix_rows(x, rows).toarray())


def gene_samples(
    train_genes, heldout_genes, pairs: list[tuple[np.ndarray, np.ndarray]]
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The pairs' centred gene rows, densified one pair at a time; each split
    is read once for all pairs (a lazy matrix: one pass over its blocks)."""
    train = take_matrix_rows(train_genes, np.concatenate([t for t, _ in pairs]))
    heldout = take_matrix_rows(heldout_genes, np.concatenate([h for _, h in pairs]))
    start = 0
    for rows, _ in pairs:
        stop = start + len(rows)
        yield (
            _centred(train[start:stop].toarray()),
            _centred(heldout[start:stop].toarray()),
        )
        start = stop


def privacy_report(  # noqa: PLR0913
    synthetic_features: np.ndarray,
    train_features: np.ndarray,
    heldout_features: np.ndarray,
    params: PrivacyParams,
    *,
    synthetic_genes=None,
    train_genes=None,
    heldout_genes=None,
    labels: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    seed: int = 0,
) -> dict:
    """F-space and gene-space privacy figures of a synthetic set, and the
    guard's verdict.

    Args:
        synthetic_features: F(synthetic cells) or synthetic features ``[n, D]``.
        train_features, heldout_features: F of the training and held-out
            cells (all of them, in memory or lazy; samples are drawn here and
            only their rows read).
        params: sample sizes, chunking and the guard's thresholds.
        synthetic_genes: log-normalised synthetic genes ``[n, G]`` (``None``
            for a feature-only set: no gene-space figures).
        train_genes, heldout_genes: the splits' log-normalised genes in the
            same gene order (lazy, sparse or dense; only sampled rows read).
        labels: class labels of the synthetic, training and held-out cells
            (with genes: the model attack, :func:`model_report`).
        seed: seeds the samples.

    Returns:
        ``{"f_space": {...}, "gene_space": {...} | None, "model": {...} |
        None, "n_synthetic", "n_sample", "guard": {"passes", "failures",
        thresholds}}``.
    """
    pairs = sample_pairs(
        len(train_features),
        len(heldout_features),
        max_cells=params.max_cells,
        seed=seed,
        count=params.ratio_samples,
    )
    options = {
        "near_copy_factor": params.near_copy_factor,
        "chunk_size": params.chunk_size,
    }
    nearest_all, where = nearest_cosine_distance(
        synthetic_features, train_features, chunk_size=params.chunk_size
    )
    # the sampled rows only, each split read once (a lazy one: one pass)
    train_features = _RowsReadOnce(train_features, *(t for t, _ in pairs))
    heldout_features = _RowsReadOnce(heldout_features, *(h for _, h in pairs))
    report = {
        "n_synthetic": len(synthetic_features),
        "n_sample": len(pairs[0][0]),
        "f_space": space_report(
            synthetic_features,
            (
                (train_features[t].toarray(), heldout_features[h].toarray())
                for t, h in pairs
            ),
            nearest_train=nearest_all,
            **options,
        ),
        "gene_space": None,
    }
    report["model"] = None
    if synthetic_genes is not None:
        matched = None
        if labels is not None:
            labels = tuple(map(np.asarray, labels))
            matched = class_matched_samples(
                labels[1], labels[2], max_cells=params.max_cells, seed=seed
            )
        # every training and held-out row used below, each split read once
        train_genes = _RowsReadOnce(
            train_genes, where, *(t for t, _ in pairs), *(matched or ())[:1]
        )
        heldout_genes = _RowsReadOnce(
            heldout_genes, *(h for _, h in pairs), *(matched or ())[1:]
        )
        synthetic = _centred_rows(synthetic_genes, np.arange(len(where)))
        # each synthetic cell's nearest training cell in F-space (all of them
        # searched) is a copy candidate beside the gene-space sample
        candidates = _centred_rows(train_genes, where)
        paired = 1.0 - np.sum(
            _unit_rows(synthetic, "synthetic") * _unit_rows(candidates, "train"), axis=1
        )
        report["gene_space"] = space_report(
            synthetic,
            gene_samples(train_genes, heldout_genes, pairs),
            nearest_train=np.clip(paired, 0.0, 2.0),
            **options,
        )
        if matched is not None:
            genes = (synthetic_genes, train_genes, heldout_genes)
            report["model"] = model_report(genes, labels, matched)
    failures = guard_failures(report, params)
    report["guard"] = {
        "passes": not failures,
        "failures": failures,
        "judged": (
            "attack, copies"
            if report["n_sample"] < params.min_sample
            else "ratio, attack, copies"
        )
        + (", model attack" if report["model"] else ""),
        "min_ratio": params.min_ratio,
        "max_tpr_at_1fpr": params.max_tpr_at_1fpr,
        "max_auc": params.max_auc,
        "max_copies": params.max_copies,
    }
    return report


def model_report(
    genes: tuple, labels: tuple, rows: tuple[np.ndarray, np.ndarray]
) -> dict | None:
    """:func:`model_attack` on the training and held-out ``rows`` (class
    matched, :func:`class_matched_samples`; ``genes`` and ``labels``:
    synthetic, training, held-out), with the sample's size; ``None`` when the
    synthetic set has one class or the splits share none."""
    synthetic_genes, train_genes, heldout_genes = genes
    synthetic_labels, train_labels, heldout_labels = labels
    train_rows, heldout_rows = rows
    if len(np.unique(synthetic_labels)) < 2 or not len(train_rows):
        return None
    figures = model_attack(
        take_matrix_rows(synthetic_genes, np.arange(len(synthetic_labels))),
        synthetic_labels,
        take_matrix_rows(train_genes, train_rows),
        train_labels[train_rows],
        take_matrix_rows(heldout_genes, heldout_rows),
        heldout_labels[heldout_rows],
    )
    return {**figures, "n_sample": len(train_rows)}


def attack_p_value(tpr: float, n: int) -> float:
    """How likely chance alone flags at least ``tpr`` of ``n`` training cells
    against ``n`` held-out cells (one-sided).

    The attack flags the members that score above the ``r``-th highest
    held-out cell, ``r = floor(0.01 n) + 1``. When members and held-out cells
    are exchangeable, the number flagged is negative hypergeometric: members
    drawn, best score first, before the ``r``-th held-out cell. A binomial
    test that takes the cut-off as fixed ignores that the cut-off is itself
    drawn from the sample, and fails about 1.7% of sets that carry nothing
    at a nominal 0.1% (docs/pipelines.md, "Privacy guard").
    """
    flagged = round(tpr * n)
    if not flagged:
        return 1.0
    return float(nhypergeom(2 * n, n, int(0.01 * n) + 1).sf(flagged - 1))


def auc_p_value(auc: float, n: int) -> float:
    """How likely chance alone gives an attack AUC of at least ``auc`` with
    ``n`` training and ``n`` held-out cells (one-sided Mann-Whitney test,
    normal approximation)."""
    return float(norm.sf((auc - 0.5) / np.sqrt((2 * n + 1) / (12 * n * n))))


#: Words of the guard's failure line for the attack AUC (the distill guard
#: adds what lowers it to such failures).
AUC_FAILURE = "membership attack AUC"
#: The model attack's name in guard failures (the distance attacks carry
#: their space's), so the guard can tell which attack failed.
MODEL_ATTACK = "model"


def _attack_failures(
    space: str, figures: dict, n: int, params: PrivacyParams
) -> list[str]:
    """The attack's rate at 1% FPR and its AUC, each judged against its
    threshold and against chance."""
    failures = []
    tpr, auc = figures["attack_tpr_at_1fpr"], figures["attack_auc"]
    p_value = attack_p_value(tpr, n)
    if tpr > params.max_tpr_at_1fpr and p_value < params.attack_alpha:
        failures.append(
            f"{space} membership attack TPR {tpr:.3f} at 1% FPR > "
            f"{params.max_tpr_at_1fpr} (p = {p_value:.1e} against chance)"
        )
    p_value = auc_p_value(auc, n)
    if auc > params.max_auc and p_value < params.attack_alpha:
        failures.append(
            f"{space} {AUC_FAILURE} {auc:.3f} > {params.max_auc} "
            f"(p = {p_value:.1e} against chance)"
        )
    return failures


def guard_failures(report: dict, params: PrivacyParams) -> list[str]:
    """What of ``report`` breaks the guard's thresholds, one line each.

    Ratios are judged in both spaces when the samples hold at least
    ``params.min_sample`` cells (with fewer, a median over a handful of
    synthetic cells is noise); an attack rate above the threshold fails a
    set when it beats chance (:func:`attack_p_value` below
    ``params.attack_alpha``: the test accounts for the sample's size); copies
    always, in gene space (F-space only for a
    feature-only set): F maps nearby cells together, so in its 128
    dimensions a smooth prototype can fall on a training cell's features
    without carrying its genes. The model attack is judged like the
    distance attacks, on its own class-matched sample.
    """
    failures = []
    copies_in = "gene_space" if report.get("gene_space") else "f_space"
    judge_samples = report["n_sample"] >= params.min_sample
    for space in ("f_space", "gene_space"):
        figures = report.get(space)
        if figures is None:
            continue
        if judge_samples and figures["nearest_record_ratio"] < params.min_ratio:
            failures.append(
                f"{space} nearest-record ratio {figures['nearest_record_ratio']:.2f}"
                f" < {params.min_ratio}"
            )
        failures += _attack_failures(space, figures, report["n_sample"], params)
        copies = figures["exact_copies"] + figures["near_copies"]
        if space == copies_in and copies > params.max_copies:
            failures.append(
                f"{space}: {figures['exact_copies']} exact and "
                f"{figures['near_copies']} near copies of training cells "
                f"> {params.max_copies}"
            )
    model = report.get("model")
    if model is not None:
        failures += _attack_failures(MODEL_ATTACK, model, model["n_sample"], params)
    return failures
