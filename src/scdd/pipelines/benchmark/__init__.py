"""Benchmark of every distillation method × SPC × draw (paper-style tables)."""

from scdd.pipelines.benchmark.pipeline import create_pipeline

__all__ = ["create_pipeline"]
