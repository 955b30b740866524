"""Raw ``.h5ad`` to validated, log-normalised, split train/test AnnData."""

from scdd.pipelines.preprocess.pipeline import create_pipeline

__all__ = ["create_pipeline"]
