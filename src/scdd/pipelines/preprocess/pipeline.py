"""The ``preprocess`` pipeline: raw_adata -> train, validation and test splits."""

from kedro.pipeline import Pipeline, node, pipeline

from scdd.pipelines.preprocess.nodes import preprocess_adata, split_adata

NAMESPACE = "preprocess"


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                preprocess_adata,
                inputs=["raw_adata", "params:data", "params:preprocess"],
                outputs=["preprocessed_adata", "preprocess_summary"],
                name="normalise_adata",
            ),
            node(
                split_adata,
                inputs=[
                    "preprocessed_adata",
                    "preprocess_summary",
                    "params:data",
                    "params:preprocess",
                ],
                outputs=[
                    "train_adata",
                    "validation_adata",
                    "test_adata",
                    "preprocess_report",
                ],
                name="split_adata",
            ),
        ],
        namespace=NAMESPACE,
        prefix_datasets_with_namespace=False,
    )
