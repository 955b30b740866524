"""Linear probes: how much label information a representation carries."""

from __future__ import annotations

import numpy as np
from scipy import sparse
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from scdd.cellstore import Matrix, is_lazy_matrix, row_chunks, take_matrix_rows
from scdd.metrics.latent import fit_latent_classifier
from scdd.sampling import stratified_rows


def _dense(x: np.ndarray | sparse.spmatrix) -> np.ndarray:
    return x.toarray() if sparse.issparse(x) else np.asarray(x)


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
    in place (:func:`fit_latent_classifier`), which lets lbfgs converge in a
    few dozen iterations. Either matrix may be lazy (a dask array of CSR row
    blocks): only the training sample is read into memory, the test cells one
    block at a time.

    Returns:
        Test accuracy and balanced accuracy.
    """
    train_y = np.asarray(train_y)
    keep = stratified_rows(train_y, max_train_cells, seed)
    # a sample or a densified matrix is a copy the scaler may overwrite
    owned = (
        is_lazy_matrix(train_x) or sparse.issparse(train_x) or len(keep) < len(train_y)
    )
    if is_lazy_matrix(train_x):
        train_x, train_y = take_matrix_rows(train_x, keep), train_y[keep]
    elif len(keep) < len(train_y):
        train_x, train_y = train_x[keep], train_y[keep]
    clf = fit_latent_classifier(_dense(train_x), train_y, seed=seed, overwrite=owned)
    pred = np.concatenate(
        [clf.predict(_dense(rows)) for _, rows in row_chunks(test_x, chunk_size)]
    )
    return {
        "accuracy": float(accuracy_score(test_y, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(test_y, pred)),
    }
