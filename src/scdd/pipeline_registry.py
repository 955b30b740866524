"""Project pipelines, discovered from ``scdd.pipelines``."""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

#: Pipelines made of other pipelines, left out of the ``__default__`` sum.
_COMPOSITES = ("distill",)


def register_pipelines() -> dict[str, Pipeline]:
    """Every pipeline folder registers itself; ``__default__`` runs them all."""
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum(
        (p for name, p in pipelines.items() if name not in _COMPOSITES), Pipeline([])
    )
    return pipelines
