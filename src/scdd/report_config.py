"""The ``report`` parameter group: the settings of the figures of
:mod:`scdd.plots`.

The ``report`` pipeline's nodes take :class:`ReportParams` and hand it to
the plotting functions, which read their settings from it.
"""

from __future__ import annotations

from pydantic import Field

from scdd.param_group import ParamGroup, PositiveInt, Size

__all__ = [
    "CorrelationParams",
    "FigsizeParams",
    "HvgParams",
    "ReportParams",
    "UmapParams",
]


class UmapParams(ParamGroup):
    """``report.umap``."""

    n_neighbors: int = Field(default=15, ge=2)
    #: UMAP needs ``min_dist <= spread`` (1).
    min_dist: float = Field(default=0.5, ge=0, le=1)
    #: Real cells drawn at most (stratified sample); ``None``: all.
    max_cells: PositiveInt | None = 20_000


class HvgParams(ParamGroup):
    """``report.hvg``."""

    n_genes: PositiveInt = 20
    #: Real cells the genes are ranked and averaged on (stratified sample);
    #: ``None``: all.
    max_cells: PositiveInt | None = 20_000


class CorrelationParams(ParamGroup):
    """``report.correlation``."""

    #: Real cells the class means are taken over (stratified sample);
    #: ``None``: all.
    max_cells: PositiveInt | None = 20_000


class FigsizeParams(ParamGroup):
    """``report.figsize``: ``[width, height]`` in inches per figure."""

    umap: Size = (8, 6)
    correlation: Size = (7, 6)
    hvg: Size = (12, 5)
    loss: Size = (6, 4)


class ReportParams(ParamGroup):
    """``params:report``: the report pipeline's figures."""

    umap: UmapParams = UmapParams()
    correlation: CorrelationParams = CorrelationParams()
    hvg: HvgParams = HvgParams()
    figsize: FigsizeParams = FigsizeParams()
