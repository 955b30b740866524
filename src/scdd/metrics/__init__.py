"""Quality metrics computed on numpy arrays (no torch, no Kedro)."""

from scdd.metrics.fidelity import (
    fidelity_report,
    find_markers,
    latent_mmd,
    marker_overlap,
    mmd_rbf,
    moment_correlations,
    zero_fraction,
)
from scdd.metrics.latent import (
    class_consistency,
    fit_latent_classifier,
    frechet_distance,
)
from scdd.metrics.privacy import nearest_cosine_distance, privacy_report

__all__ = [
    "class_consistency",
    "fidelity_report",
    "find_markers",
    "fit_latent_classifier",
    "frechet_distance",
    "latent_mmd",
    "marker_overlap",
    "mmd_rbf",
    "moment_correlations",
    "nearest_cosine_distance",
    "privacy_report",
    "zero_fraction",
]
