"""The ``latent_distillation`` pipeline: cached embeddings + models -> synthetic set."""

from kedro.pipeline import Pipeline, node, pipeline

from scdd.pipelines.latent_distillation.nodes import distill_synthetic_set

NAMESPACE = "distillation"


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                distill_synthetic_set,
                inputs=[
                    "train_adata",
                    "train_embeddings",
                    "foundation_model",
                    "generator_checkpoint",
                    "params:distill",
                    "params:data",
                    "params:foundation",
                    "params:seed",
                    "params:device",
                    "params:progress",
                ],
                outputs=["synthetic_adata", "distill_history"],
                name="distill_synthetic_set",
                tags=["gpu"],
            )
        ],
        namespace=NAMESPACE,
        prefix_datasets_with_namespace=False,
    )
