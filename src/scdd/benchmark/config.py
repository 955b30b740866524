"""The ``benchmark`` parameter group and the grid it picks from.

:class:`BenchmarkParams` (``params:benchmark``) chooses which cells of the
grid (:data:`BENCHMARK_METHODS` × :data:`BENCHMARK_SPCS`) compute, the draws
per cell, the evaluation models and the label columns. Defaults are those of
``conf/base/parameters_benchmark.yml``.

This module imports nothing of :mod:`scdd.benchmark`: :mod:`scdd.benchmark.runs`
imports the grid from it, and :mod:`scdd.params` the group.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from scdd.distill.names import METHODS
from scdd.evaluation.config import MODELS
from scdd.param_group import ParamGroup, PositiveInt, as_list, refuse_repeats

__all__ = ["BENCHMARK_METHODS", "BENCHMARK_SPCS", "BenchmarkParams"]

#: Methods of the benchmark grid (``full`` is the reference row, not a run).
BENCHMARK_METHODS: tuple[str, ...] = tuple(m for m in METHODS if m != "full")
#: SPC values of the benchmark grid.
BENCHMARK_SPCS: tuple[int, ...] = (1, 2, 5, 10)


class BenchmarkParams(ParamGroup):
    """``params:benchmark``: which cells of the benchmark grid compute.

    The grid (:data:`BENCHMARK_METHODS` × :data:`BENCHMARK_SPCS`) is fixed by
    the pipeline's nodes; ``methods`` and ``spcs`` pick from it.
    """

    methods: list[Literal[BENCHMARK_METHODS]] = Field(
        default=[
            "random_real",
            "herding",
            "kmeans_medoid",
            "dm",
            "featdistill",
            "scdd",
        ],
        min_length=1,
    )
    spcs: list[Literal[BENCHMARK_SPCS]] = Field(
        default=list(BENCHMARK_SPCS), min_length=1
    )
    #: Seeds ``seed``, ``seed + 1``, ...
    draws: PositiveInt = 2
    #: Evaluation models (settings from ``params:evaluate``).
    models: list[Literal[MODELS]] = Field(default=["f_head"], min_length=1)
    #: Optimisation steps; ``None`` = ``distill.optim.steps``.
    steps: PositiveInt | None = None
    #: Label columns; ``None`` = ``[data.label_key]``.
    label_keys: list[Annotated[str, Field(min_length=1)]] | None = None

    @field_validator("label_keys", mode="before")
    @classmethod
    def _label_keysas_list(cls, value: Any) -> Any:
        return as_list(value)

    @field_validator("methods", "spcs", "models", "label_keys")
    @classmethod
    def _no_duplicates(cls, value: list | None, info: ValidationInfo) -> list | None:
        refuse_repeats(value, f"benchmark.{info.field_name}")
        return value

    def label_columns(self, label_key: str) -> list[str]:
        """``label_keys``, or ``[label_key]`` (``data.label_key``) when unset."""
        return list(self.label_keys or [label_key])
