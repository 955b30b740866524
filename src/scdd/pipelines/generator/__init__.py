"""Train SCDG on the cached train embeddings and report its generation quality."""

from scdd.pipelines.generator.pipeline import create_pipeline

__all__ = ["create_pipeline"]
