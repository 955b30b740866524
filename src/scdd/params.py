"""Typed parameter groups of ``conf/base/parameters*.yml`` (Pydantic v2).

Each node annotates its ``params:<group>`` inputs with one of these models,
so Kedro validates the group (``Model.model_validate(raw_dict)``) when it
builds the catalog, before any node runs, and hands the node the model.
Every group refuses unknown keys (a typo'd key is an error, not a silently
ignored setting), every choice is a ``Literal`` and every number carries its
valid range. Rules within one group are model validators; rules that
span groups (Kedro validates each group on its own) and the run-wide group
(``seed``, ``device``, ``progress``, ``threads``:
:class:`scdd.run_context.RunParams`, which nodes read from the run context,
not as inputs) are checked by :func:`check_run_params`.

Defaults are those of ``conf/base``, so a model can be built in code (tests,
scripts, notebooks) from the keys that differ; ``data.input`` and
``data.label_key`` have none. A group that lives beside its code is what
that code takes (``distill``: :mod:`scdd.distill.config`; ``evaluate``:
:mod:`scdd.evaluation.config`; ``foundation``:
:mod:`scdd.models.foundation_training`, its ``model`` and ``embed`` in
:mod:`scdd.models.foundation`; ``generator``:
:mod:`scdd.models.generator_config`, taken by :mod:`scdd.generation`;
``data`` and ``preprocess``: :mod:`scdd.preprocessing_config`; ``report``:
:mod:`scdd.report_config`; ``benchmark``: :mod:`scdd.benchmark.config`;
``dask``: :mod:`scdd.dask_engine`). Nodes hand the scverse-style functions
of :mod:`scdd.preprocessing` and :mod:`scdd.plots` single fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from scdd.benchmark.config import BenchmarkParams
from scdd.dask_engine import DaskParams
from scdd.distill.config import DistillOptimParams, DistillParams
from scdd.evaluation.config import (
    CelltypistParams,
    DeepInsightCNNParams,
    EvaluateParams,
    FHeadParams,
    FidelityParams,
    GeneMLPParams,
    GeneTransformerParams,
)
from scdd.metrics.privacy import PrivacyParams
from scdd.models.foundation import (
    FoundationArchitectureParams,
    FoundationEmbedParams,
)
from scdd.models.foundation_training import (
    FoundationParams,
    TrainerConfig,
    launched_externally,
)
from scdd.models.generator_config import (
    GeneratorModelParams,
    GeneratorParams,
    GeneratorReportParams,
    GeneratorTrainParams,
)
from scdd.param_group import ParamGroup, did_you_mean
from scdd.preprocessing_config import DataParams, PreprocessParams
from scdd.report_config import (
    FigsizeParams,
    HvgParams,
    ReportParams,
    UmapParams,
)
from scdd.run_context import RunParams

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
    "run_group",
    "describe_errors",
]

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


def run_group(params: Mapping[str, Any]) -> RunParams:
    """The run-wide group of ``params`` (its top-level ``seed``, ``device``,
    ``progress``, ``threads``), validated."""
    try:
        return RunParams.model_validate(
            {key: params[key] for key in RunParams.model_fields if key in params}
        )
    except ValidationError as err:
        raise ValueError(describe_errors(err)) from None


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
    _check_device_available(run_group(params).device)

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
