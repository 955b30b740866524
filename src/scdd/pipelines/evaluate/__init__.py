"""Evaluation of the synthetic set: models, retention, fidelity, privacy."""

from scdd.pipelines.evaluate.pipeline import create_pipeline

__all__ = ["create_pipeline"]
