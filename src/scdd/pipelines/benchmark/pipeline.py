"""The ``benchmark`` pipeline: methods × SPC × draws -> ``benchmark.csv/.md``.

``create_pipeline`` cannot read parameters, so the node set is fixed: one
node per (method, SPC) in :data:`BENCHMARK_METHODS` × :data:`BENCHMARK_SPCS`
(named ``benchmark_<method>_spc<k>_node``, output ``benchmark_row_<method>_spc<k>``,
``+`` spelled ``_plus_``). ``benchmark.methods`` / ``benchmark.spcs`` choose
which of them compute; the others return a "skipped" marker at once. The
cells are independent and picklable (top-level functions bound with
``functools.partial``), so a parallel runner can run them side by side:
``--runner ThreadRunner`` works; ``ParallelRunner`` also needs picklable
catalog datasets, which ``scdd.datasets.H5ADDataset`` (a lambda in its
``__init__``) and ``TorchCheckpointDataset`` are not yet.
"""

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node, pipeline

from scdd.pipelines.benchmark.nodes import (
    BENCHMARK_METHODS,
    BENCHMARK_SPCS,
    assemble_benchmark,
    benchmark_cell,
    node_suffix,
)

_INPUTS = [
    "train_adata",
    "test_adata",
    "train_embeddings",
    "test_embeddings",
    "foundation_model",
    "generator_checkpoint",
    "full_reference_metrics",
    "params:benchmark",
    "params:distill",
    "params:evaluate",
    "params:data",
    "params:foundation",
    "params:seed",
    "params:device",
    "params:progress",
]


def _cell(method: str, spc: int) -> partial:
    func = partial(benchmark_cell, method=method, spc=spc)
    update_wrapper(func, benchmark_cell)  # a __name__ for Kedro's logs
    return func


def create_pipeline(**kwargs) -> Pipeline:
    cells = [
        node(
            _cell(method, spc),
            inputs=_INPUTS,
            outputs=f"benchmark_row_{node_suffix(method, spc)}",
            name=f"benchmark_{node_suffix(method, spc)}_node",
            tags=["gpu", "benchmark_cell"],
        )
        for method in BENCHMARK_METHODS
        for spc in BENCHMARK_SPCS
    ]
    assemble = node(
        assemble_benchmark,
        inputs=[
            "full_reference_metrics",
            "params:benchmark",
            "params:data",
            *(cell.outputs[0] for cell in cells),
        ],
        outputs=["benchmark_table", "benchmark_markdown"],
        name="assemble_benchmark_node",
    )
    return pipeline([*cells, assemble])
