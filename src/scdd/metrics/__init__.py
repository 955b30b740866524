"""Quality metrics computed on numpy arrays (no torch, no Kedro)."""

from scdd.metrics.latent import (
    class_consistency,
    fit_latent_classifier,
    frechet_distance,
)

__all__ = ["class_consistency", "fit_latent_classifier", "frechet_distance"]
