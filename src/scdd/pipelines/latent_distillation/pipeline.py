"""The ``latent_distillation`` pipeline: cached embeddings, real-cell statistics
and models -> synthetic set."""

from kedro.pipeline import Pipeline, node, pipeline

from scdd.pipelines.latent_distillation.nodes import (
    distill_synthetic_set,
    summarise_training_cells,
)

NAMESPACE = "distillation"


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                summarise_training_cells,
                inputs=[
                    "train_adata",
                    "foundation_model",
                    "params:data",
                ],
                outputs="real_cell_stats",
                name="summarise_training_cells",
            ),
            node(
                distill_synthetic_set,
                inputs=[
                    "train_adata",
                    "train_embeddings",
                    "validation_adata",
                    "validation_embeddings",
                    "real_cell_stats",
                    "foundation_model",
                    "generator_checkpoint",
                    "params:distill",
                    "params:data",
                    "params:foundation",
                    "params:generator",
                ],
                outputs=["synthetic_adata", "distill_history"],
                name="distill_synthetic_set",
                tags=["gpu"],
            ),
        ],
        namespace=NAMESPACE,
        prefix_datasets_with_namespace=False,
    )
