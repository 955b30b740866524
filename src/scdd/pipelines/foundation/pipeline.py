"""The ``foundation`` pipeline: model directory, cached embeddings, probe report."""

from kedro.pipeline import Pipeline, node, pipeline

from scdd.pipelines.foundation.nodes import (
    build_foundation_model,
    embed_splits,
    report_foundation,
    sample_probe_cells,
)

NAMESPACE = "foundation"


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                build_foundation_model,
                inputs=["train_adata", "params:data", "params:foundation"],
                outputs=["foundation_model", "foundation_history"],
                name="build_model",
                tags=["gpu"],
            ),
            node(
                embed_splits,
                inputs=[
                    "foundation_model",
                    "train_adata",
                    "validation_adata",
                    "test_adata",
                    "params:foundation",
                ],
                outputs=[
                    "train_embeddings",
                    "validation_embeddings",
                    "test_embeddings",
                ],
                name="embed_splits",
                tags=["gpu"],
            ),
            node(
                sample_probe_cells,
                inputs=[
                    "train_adata",
                    "test_adata",
                    "params:data",
                    "params:foundation",
                ],
                outputs="probe_cells",
                name="sample_probe_cells",
            ),
            node(
                report_foundation,
                inputs=[
                    "train_embeddings",
                    "test_embeddings",
                    "probe_cells",
                    "foundation_history",
                    "params:data",
                    "params:foundation",
                ],
                outputs="foundation_report",
                name="probe_embeddings",
            ),
        ],
        namespace=NAMESPACE,
        prefix_datasets_with_namespace=False,
    )
