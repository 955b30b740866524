"""The ``report`` pipeline: real and synthetic sets -> PNGs in ``08_reporting``."""

from kedro.pipeline import Pipeline, node, pipeline

from scdd.pipelines.report.nodes import (
    plot_correlation,
    plot_hvg,
    plot_loss,
    plot_umap,
)

NAMESPACE = "report"


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                plot_umap,
                inputs=[
                    "train_embeddings",
                    "synthetic_embeddings",
                    "params:data",
                    "params:report",
                ],
                outputs="umap_plot",
                name="plot_umap",
            ),
            node(
                plot_correlation,
                inputs=[
                    "train_adata",
                    "synthetic_adata",
                    "params:data",
                    "params:report",
                ],
                outputs="correlation_plot",
                name="plot_correlation",
            ),
            node(
                plot_hvg,
                inputs=[
                    "train_adata",
                    "synthetic_adata",
                    "params:data",
                    "params:report",
                ],
                outputs="hvg_plot",
                name="plot_hvg",
            ),
            node(
                plot_loss,
                inputs=["distill_history", "params:report"],
                outputs="loss_plot",
                name="plot_loss",
            ),
        ],
        namespace=NAMESPACE,
        prefix_datasets_with_namespace=False,
    )
