"""The ``evaluate`` pipeline: synthetic set + real splits -> ``metrics.json``."""

from kedro.pipeline import Pipeline, node, pipeline

from scdd.pipelines.evaluate.nodes import (
    assemble_metrics,
    embed_synthetic_set,
    evaluate_full_reference,
    evaluate_synthetic_models,
    measure_fidelity,
    measure_privacy,
)

_RUN = ["params:seed", "params:device", "params:progress"]


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                embed_synthetic_set,
                inputs=[
                    "synthetic_adata",
                    "train_embeddings",
                    "foundation_model",
                    "params:data",
                    "params:foundation",
                    "params:device",
                    "params:progress",
                ],
                outputs="synthetic_embeddings",
                name="embed_synthetic_set_node",
                tags=["gpu"],
            ),
            node(
                evaluate_full_reference,
                inputs=[
                    "train_adata",
                    "test_adata",
                    "train_embeddings",
                    "test_embeddings",
                    "params:evaluate",
                    "params:data",
                    "params:foundation",
                    *_RUN,
                ],
                outputs="full_reference_metrics",
                name="evaluate_full_reference_node",
                tags=["gpu"],
            ),
            node(
                evaluate_synthetic_models,
                inputs=[
                    "synthetic_adata",
                    "synthetic_embeddings",
                    "test_adata",
                    "test_embeddings",
                    "full_reference_metrics",
                    "params:evaluate",
                    "params:data",
                    "params:foundation",
                    *_RUN,
                ],
                outputs="synthetic_model_metrics",
                name="evaluate_synthetic_models_node",
                tags=["gpu"],
            ),
            node(
                measure_fidelity,
                inputs=[
                    "synthetic_adata",
                    "synthetic_embeddings",
                    "train_adata",
                    "train_embeddings",
                    "params:evaluate",
                    "params:data",
                    "params:foundation",
                    "params:seed",
                ],
                outputs="fidelity_metrics",
                name="measure_fidelity_node",
            ),
            node(
                measure_privacy,
                inputs=[
                    "synthetic_embeddings",
                    "train_embeddings",
                    "test_embeddings",
                    "params:evaluate",
                ],
                outputs="privacy_metrics",
                name="measure_privacy_node",
            ),
            node(
                assemble_metrics,
                inputs=[
                    "synthetic_adata",
                    "synthetic_model_metrics",
                    "fidelity_metrics",
                    "privacy_metrics",
                    "params:data",
                ],
                outputs="evaluation_metrics",
                name="assemble_metrics_node",
            ),
        ]
    )
