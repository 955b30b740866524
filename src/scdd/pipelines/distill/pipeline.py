"""The ``distill`` pipeline chains the stages up to the synthetic set.

It has no nodes of its own, so each stage stays runnable (and visible in
kedro-viz) by itself, and ``--only-missing-outputs`` reuses trained models.
Each stage's nodes keep their namespace (``preprocess``, ``foundation``,
``generator``, ``distillation``), so kedro-viz draws the chain as collapsible
groups; dataset and parameter names are not prefixed.
"""

from kedro.pipeline import Pipeline

from scdd.pipelines import foundation, generator, latent_distillation, preprocess


def create_pipeline(**kwargs) -> Pipeline:
    return (
        preprocess.create_pipeline()
        + foundation.create_pipeline()
        + generator.create_pipeline()
        + latent_distillation.create_pipeline()
    )
