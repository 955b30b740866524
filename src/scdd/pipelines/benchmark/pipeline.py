"""The ``benchmark`` pipeline: labels × methods × SPC × draws -> ``benchmark.csv/.md``.

``create_pipeline`` cannot read parameters, so the node set is fixed: one
node per (method, SPC) in :data:`BENCHMARK_METHODS` × :data:`BENCHMARK_SPCS`
(named ``benchmark.distil_and_score_<method>_spc<k>``, output
``benchmark_row_<method>_spc<k>``, ``+`` spelled ``_plus_``); the nodes sit in
the ``benchmark`` namespace (one collapsible group in kedro-viz), dataset and
parameter names stay unprefixed. ``benchmark.methods`` / ``benchmark.spcs`` choose
which of them compute; the others return a "skipped" marker at once. Each
cell covers every label column of ``benchmark.label_keys``; the
label-dependent generators and full-split references are made first, by
two nodes of their own. The cells are independent and picklable (top-level
functions bound with ``functools.partial``; the catalog's datasets pickle
too), so ``--runner ParallelRunner`` runs them side by side.
"""

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node, pipeline

from scdd.benchmark.config import BENCHMARK_METHODS, BENCHMARK_SPCS
from scdd.pipelines.benchmark.nodes import (
    assemble_benchmark,
    benchmark_cell,
    label_references,
    train_label_generators,
)
from scdd.pipelines.evaluate.pipeline import heldout_pipeline

NAMESPACE = "benchmark"

_SPLITS = [
    "train_adata",
    "heldout_adata",
    "train_embeddings",
    "heldout_embeddings",
]
_INPUTS = [
    *_SPLITS,
    "real_cell_stats",
    "foundation_model",
    "generator_checkpoint",
    "benchmark_label_generators",
    "benchmark_references",
    "params:benchmark",
    "params:distill",
    "params:evaluate",
    "params:data",
    "params:foundation",
    "params:preprocess",
]


def node_suffix(method: str, spc: int) -> str:
    """``<method>_spc<k>`` with characters Kedro names dislike replaced."""
    return f"{method.replace('+', '_plus_')}_spc{spc}"


def _cell(method: str, spc: int) -> partial:
    func = partial(benchmark_cell, method=method, spc=spc)
    update_wrapper(func, benchmark_cell)  # a __name__ for Kedro's logs
    return func


def create_pipeline(**kwargs) -> Pipeline:
    generators = node(
        train_label_generators,
        inputs=[
            "generator_checkpoint",
            *_SPLITS,
            "params:benchmark",
            "params:generator",
            "params:data",
            "params:preprocess",
        ],
        outputs="benchmark_label_generators",
        name="train_label_generators",
        tags=["gpu"],
    )
    references = node(
        label_references,
        inputs=[
            "full_reference_metrics",
            *_SPLITS,
            "params:benchmark",
            "params:evaluate",
            "params:data",
            "params:preprocess",
        ],
        outputs="benchmark_references",
        name="train_label_references",
        tags=["gpu"],
    )
    cells = [
        node(
            _cell(method, spc),
            inputs=_INPUTS,
            outputs=f"benchmark_row_{node_suffix(method, spc)}",
            name=f"distil_and_score_{node_suffix(method, spc)}",
            tags=["gpu", "benchmark_cell"],
        )
        for method in BENCHMARK_METHODS
        for spc in BENCHMARK_SPCS
    ]
    assemble = node(
        assemble_benchmark,
        inputs=[
            "benchmark_references",
            "params:benchmark",
            *(cell.outputs[0] for cell in cells),
        ],
        outputs=["benchmark_table", "benchmark_markdown"],
        name="assemble_table",
    )
    return heldout_pipeline() + pipeline(
        [generators, references, *cells, assemble],
        namespace=NAMESPACE,
        prefix_datasets_with_namespace=False,
    )
