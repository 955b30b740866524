"""The ``evaluate`` pipeline: synthetic set + real splits -> ``metrics.json``.

Models are scored on ``heldout_adata``: the test split, or the validation
split with ``evaluate.split: validation``."""

from kedro.pipeline import Pipeline, node, pipeline

from scdd.pipelines.evaluate.nodes import (
    assemble_metrics,
    embed_synthetic_set,
    evaluate_full_reference,
    evaluate_synthetic_models,
    measure_fidelity,
    measure_privacy,
    select_heldout_split,
)

NAMESPACE = "evaluate"


def heldout_pipeline() -> Pipeline:
    """The node that picks the scored split (``evaluate.split``); the
    benchmark pipeline includes the same node."""
    return pipeline(
        [
            node(
                select_heldout_split,
                inputs=[
                    "test_adata",
                    "test_embeddings",
                    "validation_adata",
                    "validation_embeddings",
                    "params:evaluate",
                ],
                outputs=["heldout_adata", "heldout_embeddings"],
                name="select_heldout_split",
            )
        ],
        namespace=NAMESPACE,
        prefix_datasets_with_namespace=False,
    )


def create_pipeline(**kwargs) -> Pipeline:
    return heldout_pipeline() + pipeline(
        [
            node(
                embed_synthetic_set,
                inputs=[
                    "synthetic_adata",
                    "train_embeddings",
                    "foundation_model",
                    "params:data",
                    "params:foundation",
                ],
                outputs="synthetic_embeddings",
                name="embed_synthetic_set",
                tags=["gpu"],
            ),
            node(
                evaluate_full_reference,
                inputs=[
                    "train_adata",
                    "heldout_adata",
                    "train_embeddings",
                    "heldout_embeddings",
                    "params:evaluate",
                    "params:data",
                ],
                outputs="full_reference_metrics",
                name="train_full_reference",
                tags=["gpu"],
            ),
            node(
                evaluate_synthetic_models,
                inputs=[
                    "synthetic_adata",
                    "synthetic_embeddings",
                    "heldout_adata",
                    "heldout_embeddings",
                    "full_reference_metrics",
                    "params:evaluate",
                    "params:data",
                ],
                outputs="synthetic_model_metrics",
                name="score_synthetic_models",
                tags=["gpu"],
            ),
            node(
                measure_fidelity,
                inputs=[
                    "synthetic_adata",
                    "synthetic_embeddings",
                    "train_adata",
                    "train_embeddings",
                    "real_cell_stats",
                    "params:evaluate",
                    "params:data",
                ],
                outputs="fidelity_metrics",
                name="measure_fidelity",
            ),
            node(
                measure_privacy,
                inputs=[
                    "synthetic_adata",
                    "synthetic_embeddings",
                    "train_adata",
                    "train_embeddings",
                    "heldout_adata",
                    "heldout_embeddings",
                    "params:distill",
                    "params:data",
                ],
                outputs="privacy_metrics",
                name="measure_privacy",
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
                name="assemble_metrics",
            ),
        ],
        namespace=NAMESPACE,
        prefix_datasets_with_namespace=False,
    )
