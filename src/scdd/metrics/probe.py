"""Linear probes: how much label information a representation carries."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from scdd.cellstore import Matrix, is_lazy_matrix, row_chunks, take_matrix_rows
from scdd.metrics.latent import check_points
from scdd.sampling import stratified_rows

#: Values per float64 chunk while standardising (64 MiB).
_CHUNK_VALUES = 1 << 23


def _dense(x: np.ndarray | sparse.spmatrix) -> np.ndarray:
    return x.toarray() if sparse.issparse(x) else np.asarray(x)


@dataclass(frozen=True)
class Standardiser:
    """Column centring and scaling as scikit-learn's ``StandardScaler`` does
    it (float64 statistics, population variance, constant columns scaled by
    1), computed over row chunks and applied in place.

    ``StandardScaler`` holds a float64 temporary and a scaled copy beside its
    input: 2 GB more for a gene-level probe's 20k cells x 12k genes.
    """

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardiser:
        """Mean and standard deviation of the columns of ``x`` ``[n, d]``."""
        step = max(1, _CHUNK_VALUES // max(x.shape[1], 1))
        chunks = [slice(i, i + step) for i in range(0, len(x), step)]
        mean = sum(x[c].sum(0, dtype=np.float64) for c in chunks) / len(x)
        squares = sum(np.square(x[c].astype(np.float64) - mean).sum(0) for c in chunks)
        scale = np.sqrt(squares / len(x))
        scale[scale < 10 * np.finfo(np.float64).eps] = 1.0
        return cls(mean, scale)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``x`` standardised in place (pass a copy of data to keep)."""
        x -= self.mean.astype(x.dtype)
        x /= self.scale.astype(x.dtype)
        return x


def linear_probe(
    train_x: Matrix,
    train_y: np.ndarray,
    test_x: Matrix,
    test_y: np.ndarray,
    *,
    max_train_cells: int,
    chunk_size: int = 10_000,
    seed: int = 0,
) -> dict[str, float]:
    """Fit a standardised logistic regression on train, score it on test.

    At most about ``max_train_cells`` training cells (a seeded, stratified
    sample) are used and the test cells are densified ``chunk_size`` rows at a
    time, so the probe stays cheap on large inputs; features are standardised
    in place (:class:`Standardiser`), which lets lbfgs converge in a few dozen
    iterations. Either matrix may be lazy (a dask array of CSR row blocks):
    only the training sample is read into memory, the test cells one block at
    a time.

    Returns:
        Test accuracy and balanced accuracy.
    """
    train_y = np.asarray(train_y)
    keep = stratified_rows(train_y, max_train_cells, seed)
    if is_lazy_matrix(train_x):
        train_x, train_y = take_matrix_rows(train_x, keep), train_y[keep]
    elif len(keep) < len(train_y):
        train_x, train_y = train_x[keep], train_y[keep]
    dense = check_points(_dense(train_x), "train_x")
    if np.may_share_memory(dense, train_x):  # standardised in place below
        dense = dense.copy()
    if np.unique(train_y).size < 2:
        raise ValueError("A linear probe needs at least 2 classes.")
    standardise = Standardiser.fit(dense)
    clf = LogisticRegression(max_iter=2000, random_state=seed)
    clf.fit(standardise.apply(dense), train_y)
    del dense
    pred = np.concatenate(
        [
            clf.predict(standardise.apply(_dense(rows).astype(np.float32)))
            for _, rows in row_chunks(test_x, chunk_size)
        ]
    )
    return {
        "accuracy": float(accuracy_score(test_y, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(test_y, pred)),
    }
