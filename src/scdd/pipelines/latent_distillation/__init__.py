"""Latent-code distillation (Algorithm 1) and the baselines: the synthetic set."""

from scdd.pipelines.latent_distillation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
