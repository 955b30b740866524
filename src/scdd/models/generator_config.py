"""The ``generator`` parameter group: SCDG's architecture, its training, the
conditions and the quality report.

:func:`scdd.generation.train_generator` takes :class:`GeneratorModelParams`
and :class:`GeneratorTrainParams`, :func:`scdd.generation.generator_quality_report`
takes :class:`GeneratorReportParams`, and
:func:`scdd.generation.condition_columns` takes ``conditions``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from scdd.param_group import (
    NonNegativeFloat,
    NonNegativeInt,
    ParamGroup,
    PositiveFloat,
    PositiveInt,
    Probability,
    Rate,
    as_list,
    refuse_repeats,
)

__all__ = [
    "GeneratorModelParams",
    "GeneratorParams",
    "GeneratorReportParams",
    "GeneratorTrainParams",
]


class GeneratorModelParams(ParamGroup):
    """``generator.model``: SCDG's architecture and diffusion; with
    ``latent_dim`` and ``n_classes``, which come from the data, it makes a
    :class:`scdd.models.scdg.SCDGConfig`."""

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
    """``generator.train``: how :func:`scdd.models.scdg.train_scdg` trains."""

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
