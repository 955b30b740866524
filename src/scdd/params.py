"""Typed parameter groups of ``conf/base/parameters*.yml`` (Pydantic v2).

Each node annotates its ``params:<group>`` inputs with one of these models,
so Kedro validates the group (``Model.model_validate(raw_dict)``) when it
builds the catalog, before any node runs, and hands the node the model.
Every group refuses unknown keys (a typo'd key is an error, not a silently
ignored setting), every choice is a ``Literal`` and every number carries its
valid range. Rules within one group are model validators; rules that
span groups (Kedro validates each group on its own) and the run-wide scalars
(``seed``, ``device``, ``progress``, ``threads``) are checked by
:func:`check_run_params`.

Defaults are those of ``conf/base``, so a model can be built in code (tests,
scripts, notebooks) from the keys that differ; ``data.input`` and
``data.label_key`` have none. The library modules (:mod:`scdd.distill`,
:mod:`scdd.evaluation`, :mod:`scdd.generation`) take plain keyword arguments
or dicts and know nothing of these models: nodes pass them
``group.model_dump()`` or single fields.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from scdd.cellstore import is_zarr, store_exists
from scdd.dask_engine import check_scheduler_choice
from scdd.datasets.h5ad_dataset import _BUNDLED, SCANPY_PREFIX
from scdd.distill.methods import METHODS, SEEDINGS
from scdd.evaluation.benchmark_runs import BENCHMARK_METHODS, BENCHMARK_SPCS
from scdd.evaluation.deepinsight_cnn import LAYOUTS
from scdd.evaluation.suite import MODELS
from scdd.metrics.privacy import PrivacyParams
from scdd.models.foundation import MODEL_FILES
from scdd.models.foundation_training import (
    TrainConfig,
    TrainerConfig,
    launched_externally,
)
from scdd.param_group import (
    NonNegativeFloat,
    NonNegativeInt,
    ParamGroup,
    PositiveFloat,
    PositiveInt,
    Probability,
    Rate,
    Size,
    as_list,
    did_you_mean,
    refuse_repeats,
)

__all__ = [
    "GROUPS",
    "HOOK_GROUPS",
    "BenchmarkParams",
    "CelltypistParams",
    "DaskParams",
    "DataParams",
    "DeepInsightCNNParams",
    "DistillOptimParams",
    "DistillParams",
    "EvaluateParams",
    "FHeadParams",
    "FidelityParams",
    "FigsizeParams",
    "FoundationArchitectureParams",
    "FoundationEmbedParams",
    "FoundationParams",
    "GeneMLPParams",
    "GeneTransformerParams",
    "GeneratorModelParams",
    "GeneratorParams",
    "GeneratorReportParams",
    "GeneratorTrainParams",
    "HvgParams",
    "PreprocessParams",
    "PrivacyParams",
    "ReportParams",
    "RunParams",
    "UmapParams",
    "check_run_params",
    "describe_errors",
]

#: ``rank_genes_groups`` methods of scanpy, or the class mean difference
#: (:func:`scdd.metrics.fidelity.find_markers`).
MARKER_METHODS = (
    "mean_difference",
    "t-test",
    "t-test_overestim_var",
    "wilcoxon",
    "logreg",
)
#: The ``device`` parameter: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


# --------------------------------------------------------------------- data


class DataParams(ParamGroup):
    """``params:data``: the input and its label column (every pipeline)."""

    #: ``scanpy://<name>`` for a bundled dataset, an ``.h5ad`` file (relative
    #: to the working directory: the project root in a kedro run) or a zarr
    #: store (``*.zarr``: a directory or an fsspec URL).
    input: str
    #: ``obs`` column with the cell-type labels.
    label_key: str = Field(min_length=1)
    #: Matrix holding expression: ``None`` (X), ``"raw"`` or a layer name.
    layer: str | None = None

    @field_validator("input")
    @classmethod
    def _input_exists(cls, value: str) -> str:
        if value.startswith(SCANPY_PREFIX):
            name = value[len(SCANPY_PREFIX) :]
            if name not in _BUNDLED:
                raise ValueError(
                    f"data.input={value!r} is not a bundled dataset; use one of "
                    f"{[SCANPY_PREFIX + b for b in _BUNDLED]} or the path of an "
                    ".h5ad file"
                )
            return value
        if is_zarr(value):
            if not store_exists(value):
                raise ValueError(
                    f"data.input={value!r}: no zarr store there. Give an AnnData "
                    "zarr store (adata.write_zarr) as a local directory or an "
                    "fsspec URL (s3://, gs://, ... with its fsspec package "
                    "installed), or an .h5ad file"
                )
            return value
        if not Path(value).is_file():
            raise ValueError(
                f"data.input={value!r}: no such file ({Path(value).resolve()}; a "
                "relative path is read from the working directory, the project "
                "root in a kedro run). Give the path of an existing .h5ad file, "
                "e.g. kedro run --params data.input=path/to/cells.h5ad, or "
                f"{SCANPY_PREFIX}{_BUNDLED[0]}"
            )
        return value


# --------------------------------------------------------------- preprocess


class PreprocessParams(ParamGroup):
    """``params:preprocess``: quality filter, normalisation, the split."""

    min_counts: NonNegativeInt = 10
    min_cells: NonNegativeInt = 3
    target_sum: PositiveFloat = 10_000
    #: Keep raw counts in ``layers["counts"]`` of the splits (no stage reads them).
    keep_counts: bool = False
    max_log_value: PositiveFloat = 20
    duplicate_genes: Literal["make_unique", "merge"] = "make_unique"
    #: A stratified split needs at least 2 cells per class.
    min_cells_per_class: int = Field(default=5, ge=2)
    small_classes: Literal["drop", "error"] = "drop"
    test_size: float = Field(default=0.3, gt=0, lt=1)
    #: Fraction of the training cells held out as the validation split.
    validation_size: float = Field(default=0.15, gt=0, lt=1)


# --------------------------------------------------------------- foundation


class FoundationArchitectureParams(ParamGroup):
    """``foundation.model``: SCimilarity's encoder/decoder sizes."""

    latent_dim: PositiveInt = 128
    hidden_dim: list[PositiveInt] = Field(default=[1024, 1024], min_length=1)
    dropout: Rate = 0.5
    input_dropout: Rate = 0.4


class FoundationEmbedParams(ParamGroup):
    """``foundation.embed``."""

    chunk_size: PositiveInt = 4096


class FoundationParams(ParamGroup):
    """``params:foundation``: train F here (``local``) or load SCimilarity's."""

    source: Literal["local", "pretrained"] = "local"
    #: SCimilarity model directory (``source: pretrained``).
    pretrained_path: str | None = None
    min_gene_overlap: PositiveInt = 500
    model: FoundationArchitectureParams = FoundationArchitectureParams()
    train: TrainConfig = TrainConfig()
    trainer: TrainerConfig = TrainerConfig()
    embed: FoundationEmbedParams = FoundationEmbedParams()
    #: The report's linear probes train on a stratified sample of at most
    #: this many training cells and score as many test cells (gene rows read).
    probe_max_cells: PositiveInt = 20_000

    @model_validator(mode="after")
    def _pretrained_directory(self) -> FoundationParams:
        if self.source != "pretrained":
            return self
        path = self.pretrained_path
        if not path:
            raise ValueError(
                "foundation.source='pretrained' needs foundation.pretrained_path "
                "(a SCimilarity model directory); set it, or use source: local"
            )
        if not Path(path).is_dir():
            raise ValueError(
                f"foundation.pretrained_path={path!r} is not a directory "
                f"({Path(path).resolve()}); give a SCimilarity model directory"
            )
        missing = [name for name in MODEL_FILES if not (Path(path) / name).is_file()]
        if missing:
            raise ValueError(
                f"foundation.pretrained_path={path!r} is not a SCimilarity model "
                f"directory: missing {missing}"
            )
        return self


# ---------------------------------------------------------------- generator


class GeneratorModelParams(ParamGroup):
    """``generator.model``: :class:`scdd.models.scdg.SCDGConfig` fields
    (``latent_dim`` and ``n_classes`` come from the data)."""

    width: PositiveInt = 512
    depth: NonNegativeInt = 3
    time_embed_dim: PositiveInt = 128
    dropout: Rate = 0.0
    timesteps: PositiveInt = 1000
    beta_min: float = Field(default=1e-4, gt=0, lt=1)
    beta_max: float = Field(default=0.1, gt=0, lt=1)
    schedule: Literal["linear", "cosine"] = "linear"
    p_uncond: Probability = 0.1
    normalise_output: bool = True

    @model_validator(mode="after")
    def _betas_increase(self) -> GeneratorModelParams:
        if not self.beta_min < self.beta_max:
            raise ValueError(
                f"beta_min={self.beta_min} must be below beta_max={self.beta_max}"
            )
        return self


class GeneratorTrainParams(ParamGroup):
    """``generator.train``: keyword arguments of :func:`scdd.models.scdg.train_scdg`."""

    steps: PositiveInt = 1000
    batch_size: PositiveInt = 256
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 1e-4
    ema_decay: Rate = 0.999


class GeneratorReportParams(ParamGroup):
    """``generator.report``: :func:`scdd.generation.generator_quality_report`."""

    t_values: list[PositiveInt] = Field(default=[10, 50, 200, 500], min_length=1)
    sample_steps: list[PositiveInt] = Field(default=[1, 50], min_length=1)
    guidance_scale: NonNegativeFloat = 1.0
    samples_per_class: PositiveInt = 200
    #: A per-class covariance needs at least 2 cells.
    min_cells_frechet: int = Field(default=20, ge=2)
    #: The judging classifier, the reconstructions and the Fréchet distances
    #: use a stratified sample of at most this many train and test cells.
    max_cells: PositiveInt = 20_000


class GeneratorParams(ParamGroup):
    """``params:generator``: SCDG architecture, training, conditions, report."""

    model: GeneratorModelParams = GeneratorModelParams()
    train: GeneratorTrainParams = GeneratorTrainParams()
    #: ``obs`` columns to condition on; ``None`` = ``[data.label_key]``.
    conditions: list[Annotated[str, Field(min_length=1)]] | None = Field(
        default=None, min_length=1
    )
    report: GeneratorReportParams = GeneratorReportParams()

    @field_validator("conditions", mode="before")
    @classmethod
    def _conditionsas_list(cls, value: Any) -> Any:
        return as_list(value)

    @field_validator("conditions")
    @classmethod
    def _conditionsrefuse_repeats(cls, value: list[str] | None) -> list[str] | None:
        refuse_repeats(value, "generator.conditions")
        return value

    @model_validator(mode="after")
    def _steps_within_timesteps(self) -> GeneratorParams:
        steps = self.model.timesteps
        for name in ("t_values", "sample_steps"):
            values = getattr(self.report, name)
            if max(values) > steps:
                raise ValueError(
                    f"generator.report.{name}={values} exceeds "
                    f"generator.model.timesteps={steps}; use values in 1..{steps}"
                )
        return self


# ------------------------------------------------------------------ distill


class DistillOptimParams(ParamGroup):
    """``distill.optim``: fields of :class:`scdd.distill.optimise.DistillConfig`."""

    #: 0: the seeds as the method maps them (scdd: decoded, unoptimised).
    steps: NonNegativeInt = 300
    lr: PositiveFloat = 0.03
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: NonNegativeFloat = 0.5
    lambda_dm: NonNegativeFloat = 1.0
    lambda_dc: NonNegativeFloat = 0.0
    #: Match each cell to its k-means part of the class (scdd, scdd_decoder).
    lambda_part: NonNegativeFloat = 1.0
    #: Ablations (scdd, with DC): hidden widths of the task head; train F too.
    head_hidden: list[PositiveInt] = []
    finetune_encoder: bool = False
    inner_steps: PositiveInt = 5
    head_lr: PositiveFloat = 0.01
    real_batch_size: PositiveInt = 256
    #: Codes per chunk through G; 0 or ``None`` = all at once.
    chunk_size: NonNegativeInt | None = 64
    log_every: PositiveInt = 10

    @model_validator(mode="after")
    def _some_loss(self) -> DistillOptimParams:
        if self.lambda_dm == 0 and self.lambda_dc == 0:
            raise ValueError(
                "lambda_dm and lambda_dc are both 0: nothing to optimise; make "
                "at least one of them > 0"
            )
        return self


Depth = Annotated[float, Field(ge=1)]


class DistillParams(ParamGroup):
    """``params:distill``: the distillation method and its settings."""

    method: Literal[METHODS] = "scdd"
    #: Synthetic cells per class.
    spc: PositiveInt = 1
    #: Diffusion step of the ``scdd`` codes (0 = no noise).
    t_gen: NonNegativeInt = 50
    guidance_scale: NonNegativeFloat = 1.0
    #: Denoising steps of ``generator_only``.
    sample_steps: PositiveInt = 50
    #: Log1p values at or below it become 0; ``None`` = per-class quantile.
    zero_threshold: NonNegativeFloat | None = 0.2
    #: From this SPC up, redraw scdd's cells as counts as sparse as the real
    #: class (inside the optimisation, straight-through); ``None``: never.
    sample_counts_from_spc: PositiveInt | None = 5
    #: Of each class's cells from that SPC up, the fraction drawn as counts
    #: (the others stay smooth).
    count_fraction: Annotated[float, Field(gt=0, le=1)] = 1.0
    #: Library size of the drawn counts, in multiples of the one that makes
    #: them as sparse as the real class (deeper: less noisy); several: the
    #: depth whose set ends closest to the real cells in F-space is kept.
    count_depth: Depth | Annotated[list[Depth], Field(min_length=1)] = [1.0, 4.0]
    #: Add each class's decoder bias (real class mean minus the mean of its
    #: decoded training cells) to scdd's decoded cells.
    decoder_bias: bool = False
    #: The real cells every optimised method starts from: ``medoid`` (the
    #: cells nearest the centres of SPC equal-size k-means parts per class)
    #: or ``random``.
    seeding: Literal[tuple(SEEDINGS)] = "medoid"
    optim: DistillOptimParams = DistillOptimParams()
    privacy: PrivacyParams = PrivacyParams()

    def for_cell(
        self, method: str, spc: int, steps: int | None = None
    ) -> DistillParams:
        """This group for one benchmark cell: ``method``, ``spc`` and, when
        given, ``steps`` optimisation steps."""
        optim = self.optim
        if steps is not None:
            optim = optim.model_copy(update={"steps": steps})
        return self.model_copy(update={"method": method, "spc": spc, "optim": optim})


# ----------------------------------------------------------------- evaluate


class FHeadParams(ParamGroup):
    """``evaluate.f_head``: frozen F + linear head (the paper protocol)."""

    n_inits: PositiveInt = 10
    epochs: PositiveInt = 1000
    lr: PositiveFloat = 0.01
    momentum: NonNegativeFloat = 0.9
    weight_decay: NonNegativeFloat = 5e-4
    #: ``None``: full batch (a synthetic set).
    batch_size: PositiveInt | None = None
    #: Cap on the SGD steps per init; ``None``: ``epochs`` passes.
    max_steps: PositiveInt | None = None
    #: Standardise the features (training mean and std) before the head.
    standardise: bool = False
    #: Mini-batch size on the full training split (the retention reference).
    reference_batch_size: PositiveInt | None = 64
    #: ``None``: ``epochs``.
    reference_epochs: PositiveInt | None = None
    #: The reference's epochs stop at this many SGD steps per init, so an
    #: atlas costs what a ~6k-cell split does.
    reference_max_steps: PositiveInt = 100_000
    #: The reference standardises F's features: unit-norm latents under weight
    #: decay underfit a real split (see ``linear_head``).
    reference_standardise: bool = True


class CelltypistParams(ParamGroup):
    """``evaluate.celltypist``."""

    n_inits: PositiveInt = 3
    #: More training cells than this use CellTypist's mini-batch SGD.
    mini_batch_above: PositiveInt | None = 20_000
    #: Extra ``celltypist.train`` arguments.
    train_kwargs: dict[str, Any] = {}


class _GeneModelParams(ParamGroup):
    """Training settings shared by the torch gene models
    (:func:`scdd.evaluation.gene_classifier.evaluate_gene_classifier`)."""

    n_inits: PositiveInt = 3
    steps: PositiveInt = 300
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 0.0
    batch_size: PositiveInt = 256
    #: Rows per prediction forward pass.
    chunk_size: PositiveInt = 4096


class GeneMLPParams(_GeneModelParams):
    """``evaluate.gene_mlp``."""

    hidden: PositiveInt = 256


class GeneTransformerParams(_GeneModelParams):
    """``evaluate.gene_transformer``."""

    genes_per_token: PositiveInt = 32
    d_model: PositiveInt = 48
    heads: PositiveInt = 4
    depth: PositiveInt = 1
    dropout: Rate = 0.1

    @model_validator(mode="after")
    def _heads_divide_d_model(self) -> GeneTransformerParams:
        if self.d_model % self.heads:
            raise ValueError(
                f"d_model={self.d_model} is not divisible by heads={self.heads}"
            )
        return self


class DeepInsightCNNParams(_GeneModelParams):
    """``evaluate.deepinsight_cnn``."""

    pixels: int = Field(default=32, ge=4)
    layout: Literal[LAYOUTS] = "tsne"
    layout_max_cells: int = Field(default=5000, ge=3)
    width: PositiveInt = 16


class FidelityParams(ParamGroup):
    """``evaluate.fidelity``."""

    top_k: PositiveInt = 50
    marker_method: Literal[MARKER_METHODS] = "mean_difference"
    #: Real cells a scanpy ``marker_method`` reads (stratified sample);
    #: ``None``: all. ``mean_difference`` reads every cell, block by block.
    marker_max_cells: PositiveInt | None = 50_000
    #: ``None``: every real cell in the MMD kernel matrix.
    mmd_max_cells: PositiveInt | None = 2000


class EvaluateParams(ParamGroup):
    """``params:evaluate``: the evaluation models and the metrics' settings."""

    models: list[Literal[MODELS]] = Field(default=list(MODELS), min_length=1)
    #: The held-out cells scored: ``validation`` to tune, ``test`` to report.
    split: Literal["test", "validation"] = "test"
    #: Gene-level models train their full-split reference on a stratified
    #: sample of at most this many cells (``None``: all of them).
    reference_max_cells: PositiveInt | None = 50_000
    f_head: FHeadParams = FHeadParams()
    celltypist: CelltypistParams = CelltypistParams()
    gene_mlp: GeneMLPParams = GeneMLPParams()
    gene_transformer: GeneTransformerParams = GeneTransformerParams()
    deepinsight_cnn: DeepInsightCNNParams = DeepInsightCNNParams()
    fidelity: FidelityParams = FidelityParams()

    @field_validator("models")
    @classmethod
    def _modelsrefuse_repeats(cls, value: list[str]) -> list[str]:
        refuse_repeats(value, "evaluate.models")
        return value

    def for_reference(self) -> EvaluateParams:
        """Settings for the full training split (the retention reference).

        Full-batch SGD at the paper's lr underfits a real training split (on
        the bundled PBMC data: train accuracy 0.76, test 0.74; mini-batches
        of 64: 0.86 / 0.82), so the linear head uses
        ``f_head.reference_batch_size`` for ``reference_epochs`` (``None``:
        ``epochs``), at most ``reference_max_steps`` SGD steps (epochs over an
        atlas would take hours). The torch gene models
        need nothing: they train for a number of steps, full batch on a
        synthetic set and on mini-batches on a real split.
        """
        head = self.f_head
        return self.model_copy(
            update={
                "f_head": head.model_copy(
                    update={
                        "batch_size": head.reference_batch_size,
                        "epochs": head.reference_epochs or head.epochs,
                        "max_steps": head.reference_max_steps,
                        "standardise": head.reference_standardise,
                    }
                )
            }
        )


# ---------------------------------------------------------------- benchmark


class BenchmarkParams(ParamGroup):
    """``params:benchmark``: which cells of the benchmark grid compute.

    The grid (:data:`~scdd.evaluation.benchmark_runs.BENCHMARK_METHODS` ×
    :data:`~scdd.evaluation.benchmark_runs.BENCHMARK_SPCS`) is fixed by the
    pipeline's nodes; ``methods`` and ``spcs`` pick from it.
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


# ------------------------------------------------------------------- report


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


# --------------------------------------------------------------------- dask


class DaskParams(ParamGroup):
    """``params:dask``: which Dask scheduler runs the passes over real cells
    (:mod:`scdd.dask_engine`). Read by the run hook, not by nodes, so it
    never makes an artefact stale."""

    #: Address of an existing ``distributed`` scheduler (``tcp://host:8786``).
    address: str | None = None
    #: ``local``: start a ``distributed.LocalCluster`` for the run.
    cluster: Literal["local"] | None = None
    #: Worker processes of ``cluster: local``.
    n_workers: PositiveInt = 2
    #: Threads (tasks at once) per worker of ``cluster: local``.
    threads_per_worker: PositiveInt = 1

    @model_validator(mode="after")
    def _one_scheduler(self) -> DaskParams:
        check_scheduler_choice(self.address, self.cluster)
        return self


# ---------------------------------------------------------------------- run


class RunParams(ParamGroup):
    """The top-level scalars every pipeline shares."""

    seed: NonNegativeInt = 0
    #: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda``, ``cuda:N``,
    #: ``mps``.
    device: str = "auto"
    #: Progress bars in long loops; ``None``: only on a terminal.
    progress: bool | None = None
    #: torch/numba/BLAS threads; ``None``: the CPU cores not busy at the start.
    threads: PositiveInt | None = None

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not _DEVICE.fullmatch(value):
            raise ValueError(
                f"device={value!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' "
                "(N = GPU index) or 'mps'"
            )
        return value


#: Every parameter group and its model (the top-level keys besides
#: :class:`RunParams`' fields).
GROUPS: dict[str, type[ParamGroup]] = {
    "data": DataParams,
    "preprocess": PreprocessParams,
    "foundation": FoundationParams,
    "generator": GeneratorParams,
    "distill": DistillParams,
    "evaluate": EvaluateParams,
    "benchmark": BenchmarkParams,
    "report": ReportParams,
    "dask": DaskParams,
}

#: Groups read by run hooks, not by nodes: Kedro does not validate them (no
#: node annotates them; :func:`check_run_params` does), and no artefact's
#: lineage depends on them.
HOOK_GROUPS = frozenset({"dask"})


def describe_errors(err: ValidationError, prefix: str = "") -> str:
    """One line per error of ``err``: ``parameter 'prefix.loc' = value: msg``."""
    lines = []
    for error in err.errors(include_url=False):
        loc = ".".join(str(part) for part in (prefix, *error["loc"]) if part != "")
        where = f"parameter '{loc}'" if loc else "parameters"
        value = error.get("input")
        shown = "" if isinstance(value, Mapping) else f" = {value!r}"
        lines.append(f"{where}{shown}: {error['msg']}")
    return "; ".join(lines)


def _group(params: Mapping[str, Any], name: str) -> ParamGroup | None:
    """``params[name]`` as its model (validated here when still a dict)."""
    if name not in params:
        return None
    value, model = params[name], GROUPS[name]
    if isinstance(value, model):
        return value
    try:
        return model.model_validate(value)
    except ValidationError as err:
        raise ValueError(describe_errors(err, name)) from None


def _check_device_available(device: str) -> None:
    """Refuse a CUDA / MPS device this machine does not have."""
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} but CUDA is not available on this machine; "
                "set device to 'auto' or 'cpu'"
            )
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s) (cuda:0 ...); "
                "set device to 'auto', 'cuda' or an existing index"
            )
    if device == "mps" and not torch.backends.mps.is_available():
        raise ValueError(
            "device='mps' but MPS is not available on this machine; set device "
            "to 'auto' or 'cpu'"
        )


def _trainer_errors(trainer: TrainerConfig) -> list[str]:
    """What ``foundation.trainer`` asks that this machine or launch cannot give."""
    import torch

    errors = []
    if trainer.num_nodes > 1 and not launched_externally():
        errors.append(
            f"foundation.trainer.num_nodes={trainer.num_nodes} needs every rank "
            "started by a launcher (torchrun or srun on each node running "
            "scripts/train_foundation.py); a plain `kedro run` is one node: set "
            "num_nodes to 1."
        )
    if trainer.accelerator in ("gpu", "cuda"):
        have = torch.cuda.device_count()
        if trainer.devices > have:
            errors.append(
                f"foundation.trainer.accelerator={trainer.accelerator!r} with "
                f"devices={trainer.devices} but this machine has {have} CUDA "
                "GPU(s); lower devices or set accelerator to null (follow `device`)"
                " or 'cpu'."
            )
    return errors


def check_run_params(params: Mapping[str, Any]) -> None:
    """Validate the run-wide scalars and every rule that spans groups.

    Kedro validates each annotated group on its own; this checks what it
    cannot: ``seed``, ``device`` (also that this machine has it),
    ``progress``, ``threads``, unknown top-level keys (a typo'd group would
    otherwise be ignored), and the rules between groups. Groups may be given
    as dicts (validated here) or as models (as Kedro passes them).

    Args:
        params: all parameters (``context.params`` or the catalog's
            ``parameters``).

    Raises:
        ValueError: naming each offending parameter, its value, what is
            allowed and the fix.
    """
    known = [*RunParams.model_fields, *GROUPS]
    unknown = [str(key) for key in params if key not in known]
    if unknown:
        raise ValueError(
            f"Unknown top-level parameter(s) {unknown}"
            f"{did_you_mean(unknown[0], known)}; allowed: {', '.join(known)}. "
            "Nested keys are given as nested dicts (or `--params group.key=value` "
            "on the command line)."
        )
    try:
        run = RunParams.model_validate(
            {key: params[key] for key in RunParams.model_fields if key in params}
        )
    except ValidationError as err:
        raise ValueError(describe_errors(err)) from None
    _check_device_available(run.device)

    data = _group(params, "data")
    generator = _group(params, "generator")
    distill = _group(params, "distill")
    foundation = _group(params, "foundation")
    for name in ("preprocess", "evaluate", "benchmark", "report", "dask"):
        _group(params, name)

    errors = [] if foundation is None else _trainer_errors(foundation.trainer)
    if data is not None and generator is not None and generator.conditions:
        if data.label_key not in generator.conditions:
            errors.append(
                f"generator.conditions={generator.conditions} does not include "
                f"data.label_key={data.label_key!r}: cells are generated per "
                f"class, so the label column must be a condition. Add "
                f"'{data.label_key}' to generator.conditions or set it to null."
            )
    if generator is not None and distill is not None:
        steps = generator.model.timesteps
        for name in ("t_gen", "sample_steps"):
            value = getattr(distill, name)
            if value > steps:
                errors.append(
                    f"distill.{name}={value} exceeds generator.model.timesteps="
                    f"{steps}; use a value up to {steps} (or raise timesteps "
                    "and retrain the generator)."
                )
    if errors:
        raise ValueError(" ".join(errors))
