"""Report figures (paper Figs 5-7 and the loss curve), written through the catalog."""

from scdd.pipelines.report.pipeline import create_pipeline

__all__ = ["create_pipeline"]
