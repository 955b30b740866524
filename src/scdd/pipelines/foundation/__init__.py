"""Foundation model F (trained here or loaded) and cached embeddings of the cells."""

from scdd.pipelines.foundation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
