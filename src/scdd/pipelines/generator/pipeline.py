"""The ``generator`` pipeline: train_embeddings -> generator_checkpoint, report."""

from kedro.pipeline import Pipeline, node, pipeline

from scdd.pipelines.generator.nodes import report_generator, train_generator

NAMESPACE = "generator"


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                train_generator,
                inputs=[
                    "train_embeddings",
                    "params:generator",
                    "params:data",
                ],
                outputs=["generator_checkpoint", "generator_history"],
                name="train_scdg",
                tags=["gpu"],
            ),
            node(
                report_generator,
                inputs=[
                    "generator_checkpoint",
                    "train_embeddings",
                    "test_embeddings",
                    "params:generator",
                    "params:data",
                ],
                outputs="generator_report",
                name="report_quality",
            ),
        ],
        namespace=NAMESPACE,
        prefix_datasets_with_namespace=False,
    )
