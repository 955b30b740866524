"""Generation quality in a latent space: Fréchet distance and class consistency."""

from __future__ import annotations

import logging

import numpy as np
from scipy import linalg
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

logger = logging.getLogger(__name__)

#: Values per chunk the scaler's statistics are gathered over (64 MiB in
#: float64): ``StandardScaler.fit`` holds a float64 copy of all its input.
_SCALER_CHUNK_VALUES = 1 << 23

#: Relative size of an imaginary part of ``sqrtm`` above which a warning is logged.
_IMAG_TOL = 1e-3


def frechet_distance(a: np.ndarray, b: np.ndarray, *, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two point sets.

    ``||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``, the FID formula
    applied to latents. ``eps * I`` is added to both covariances so the matrix
    square root stays well defined when a set has fewer points than dimensions
    (singular covariance). Imaginary parts left by ``sqrtm`` round-off are
    dropped (a warning is logged if they are not tiny).

    Args:
        a: Points ``[n, d]`` (n >= 2).
        b: Points ``[m, d]`` (m >= 2).
        eps: Ridge added to the covariance diagonals.

    Returns:
        The distance (>= 0 up to round-off; 0 for identical sets).
    """
    a = _as_points(a, "a")
    b = _as_points(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"a and b must have the same width, got {a.shape[1]} and {b.shape[1]}."
        )
    ridge = eps * np.eye(a.shape[1])
    cov_a = np.cov(a, rowvar=False) + ridge
    cov_b = np.cov(b, rowvar=False) + ridge
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if np.iscomplexobj(covmean):
        imag = np.abs(covmean.imag).max()
        if imag > _IMAG_TOL * max(np.abs(covmean.real).max(), eps):
            logger.warning(
                "Fréchet distance: sqrtm left an imaginary part of %.3g; the "
                "covariances are badly conditioned (too few points?).",
                imag,
            )
        covmean = covmean.real
    diff = a.mean(0) - b.mean(0)
    return float(diff @ diff + np.trace(cov_a + cov_b - 2.0 * covmean))


def fit_latent_classifier(
    embeddings: np.ndarray,
    labels: np.ndarray,
    seed: int = 0,
    *,
    overwrite: bool = False,
) -> Pipeline:
    """Standardised multinomial logistic regression on latents.

    The latents are unit-norm (coordinates ~0.1), so features are standardised
    first; otherwise the default L2 penalty would dominate the fit. The
    scaler's statistics are gathered over row chunks (``partial_fit``) and
    ``embeddings`` is scaled in place with ``overwrite`` (else a copy of
    it), so a gene-level sample (20k cells x 12k genes) costs no copy, not
    the float64 temporary and scaled copy of ``StandardScaler`` (2 GB more).

    Args:
        embeddings: Latents ``[n, d]``.
        labels: Class labels ``[n]`` (any hashable dtype).
        seed: ``random_state`` of the solver.
        overwrite: ``embeddings`` may be standardised in place.

    Returns:
        A fitted scikit-learn pipeline with ``predict``.
    """
    x = _as_points(embeddings, "embeddings")
    labels = np.asarray(labels)
    if labels.shape != (x.shape[0],):
        raise ValueError(
            f"labels must be [{x.shape[0]}] to match embeddings, got {labels.shape}."
        )
    if np.unique(labels).size < 2:
        raise ValueError("fit_latent_classifier needs at least 2 classes.")
    scaler = StandardScaler(copy=False)
    step = max(1, _SCALER_CHUNK_VALUES // x.shape[1])
    for start in range(0, len(x), step):
        scaler.partial_fit(x[start : start + step])
    keep = not overwrite and np.may_share_memory(x, embeddings)
    scaled = scaler.transform(x.copy() if keep else x)
    model = LogisticRegression(max_iter=2000, random_state=seed).fit(scaled, labels)
    # predict standardises a copy of what it is given
    return make_pipeline(scaler.set_params(copy=True), model)


def class_consistency(
    classifier: Pipeline, samples: np.ndarray, labels: np.ndarray
) -> dict[str, float | dict[str, float]]:
    """How often ``classifier`` assigns generated samples their intended class.

    Args:
        classifier: A fitted classifier (see :func:`fit_latent_classifier`).
        samples: Generated latents ``[n, d]``.
        labels: The class each sample was generated for ``[n]``.

    Returns:
        ``{"accuracy": float, "per_class": {label: float}}``, per class in
        sorted label order.
    """
    labels = np.asarray(labels)
    correct = classifier.predict(_as_points(samples, "samples")) == labels
    classes = np.unique(labels)
    return {
        "accuracy": float(correct.mean()),
        "per_class": {str(c): float(correct[labels == c].mean()) for c in classes},
    }


def _as_points(x: np.ndarray, name: str) -> np.ndarray:
    """Finite float ``[n >= 2, d]`` array (float32 kept: a gene-level probe's
    sample is cells x genes) or a ``ValueError`` naming ``name``."""
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"{name} must be [n >= 2, d], got shape {x.shape}.")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} has NaN or infinite values.")
    return x
