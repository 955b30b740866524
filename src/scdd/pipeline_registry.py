"""Project pipelines, discovered from ``scdd.pipelines``."""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

#: Left out of ``__default__``: ``distill`` is made of other pipelines and the
#: ``benchmark`` (methods x SPC) is run on purpose, not on every ``kedro run``.
_NOT_DEFAULT = ("distill", "benchmark")


def register_pipelines() -> dict[str, Pipeline]:
    """Every pipeline folder registers itself; ``__default__`` runs them all."""
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum(
        (p for name, p in pipelines.items() if name not in _NOT_DEFAULT), Pipeline([])
    )
    return pipelines
