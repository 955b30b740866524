"""``kedro run --pipeline distill``: raw h5ad to synthetic h5ad, every stage."""

from scdd.pipelines.distill.pipeline import create_pipeline

__all__ = ["create_pipeline"]
