"""Typed parameters: the shipped conf validates, bad values are refused early."""

from __future__ import annotations

import copy
import pickle
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from kedro.config import OmegaConfigLoader
from kedro.validation.exceptions import ParameterValidationError
from kedro.validation.parameter_validator import ParameterValidator
from kedro.validation.type_extractor import TypeExtractor

from scdd.params import (
    GROUPS,
    HOOK_GROUPS,
    RunParams,
    check_run_params,
)
from scdd.pipelines import (
    benchmark,
    evaluate,
    foundation,
    generator,
    latent_distillation,
    preprocess,
    report,
)
from tests.conftest import PROJECT_ROOT
from tests.kedro_helpers import run_session

PIPELINES = {
    module.__name__.rsplit(".", 1)[-1]: module.create_pipeline()
    for module in (
        preprocess,
        foundation,
        generator,
        latent_distillation,
        evaluate,
        report,
        benchmark,
    )
}


@pytest.fixture(scope="module")
def shipped() -> dict[str, Any]:
    """``conf/base`` parameters as a kedro run without ``--params`` sees them."""
    loader = OmegaConfigLoader(
        str(PROJECT_ROOT / "conf"), base_env="base", default_run_env="local"
    )
    return loader["parameters"]


def _with(params: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``params`` with ``group.key...`` set to ``value``."""
    out = copy.deepcopy(params)
    *parents, last = dotted.split(".")
    node = out
    for key in parents:
        node = node[key]
    node[last] = value
    return out


def test_shipped_conf_validates(shipped: dict[str, Any]) -> None:
    assert set(shipped) == {*GROUPS, *RunParams.model_fields}
    for name, model in GROUPS.items():
        model.model_validate(shipped[name])
    check_run_params(shipped)
    validated = ParameterValidator(PIPELINES).validate_raw_params(shipped)
    for name, model in GROUPS.items():
        if name not in HOOK_GROUPS:  # validated by check_run_params
            assert isinstance(validated[name], model), name


def test_defaults_are_the_shipped_values(shipped: dict[str, Any]) -> None:
    """Models built in code (scripts, notebooks) behave as ``conf/base``."""
    for name, model in GROUPS.items():
        if name != "data":
            assert model() == model.model_validate(shipped[name]), name
    run = {key: shipped[key] for key in RunParams.model_fields}
    assert RunParams() == RunParams.model_validate(run)


def test_validated_groups_pickle(shipped: dict[str, Any]) -> None:
    """ParallelRunner ships the parameters to its worker processes."""
    validated = ParameterValidator(PIPELINES).validate_raw_params(shipped)
    assert pickle.loads(pickle.dumps(validated)) == validated


def test_every_params_input_of_a_node_is_typed() -> None:
    """Kedro finds the model of every ``params:<group>`` input of every node."""
    extractor = TypeExtractor(PIPELINES)
    for pipe in PIPELINES.values():
        for node in pipe.nodes:
            typed = extractor._extract_types_from_node(node)
            groups = {
                name.split(":", 1)[1]
                for name in node.inputs
                if name.startswith("params:") and name.split(":", 1)[1] in GROUPS
            }
            assert {k: typed.get(k) for k in groups} == {
                k: GROUPS[k] for k in groups
            }, node.name
    assert extractor.extract_types_from_pipelines() == {
        name: model for name, model in GROUPS.items() if name not in HOOK_GROUPS
    }


@pytest.mark.parametrize(
    ("dotted", "value", "expected"),
    [
        ("distill.spc", 0, r"'distill'.*\nspc\n.*greater than or equal to 1.*=0,"),
        ("distill.spc", -1, r"'distill'.*\nspc\n.*greater than or equal to 1.*=-1,"),
        (
            "distill.method",
            "nonsense",
            r"'distill'.*\nmethod\n.*'dm', .*'scdd'.*input_value='nonsense'",
        ),
        (
            "distill.spcc",
            2,
            r"'distill'.*unknown key\(s\) \['spcc'\] \(did you mean 'spc'\?\); "
            r"allowed keys: method, spc,",
        ),
        ("distill.optim.lr", -0.1, r"'distill'.*\noptim\.lr\n.*greater than 0.*=-0\.1"),
        (
            "preprocess.test_size",
            1.5,
            r"'preprocess'.*\ntest_size\n.*less than 1.*=1\.5",
        ),
        (
            "foundation.source",
            "pretrained",
            r"'foundation'.*foundation\.source='pretrained' needs "
            r"foundation\.pretrained_path",
        ),
        (
            "data.input",
            "/no/such.zarr",
            r"'data'.*\ninput\n.*data\.input='/no/such\.zarr': no zarr store.*"
            r"fsspec URL",
        ),
        (
            "data.input",
            "/no/such.h5ad",
            r"'data'.*\ninput\n.*data\.input='/no/such\.h5ad': no such file.*"
            r"existing \.h5ad file",
        ),
        (
            "evaluate.f_head.epoch",
            5,
            r"'evaluate'.*\nf_head\n.*\['epoch'\] \(did you mean 'epochs'\?\)",
        ),
        ("generator.model.beta_min", 0.5, r"'generator'.*beta_min=0\.5 must be below"),
        ("benchmark.spcs", [3], r"'benchmark'.*\nspcs\.0\n.*1, 2, 5 or 10.*=3,"),
        ("evaluate.models", [], r"'evaluate'.*\nmodels\n.*at least 1 item"),
    ],
)
def test_bad_value_is_refused_naming_the_parameter(
    shipped: dict[str, Any], dotted: str, value: Any, expected: str
) -> None:
    """As a kedro run reports it: Kedro's validator over every pipeline."""
    params = _with(shipped, dotted, value)
    with pytest.raises(ParameterValidationError) as err:
        ParameterValidator(PIPELINES).validate_raw_params(params)
    message = str(err.value)
    assert f"Parameter '{dotted.partition('.')[0]}'" in message
    assert re.search(expected, message, re.DOTALL), message


@pytest.mark.parametrize(
    ("dotted", "value", "expected"),
    [
        ("seed", -1, "parameter 'seed' = -1: Input should be greater than or equal"),
        ("device", "gpu", "device='gpu'; use 'auto', 'cpu', 'cuda', 'cuda:N'"),
        ("threads", 0, "parameter 'threads' = 0: Input should be greater than"),
        ("progress", "maybe", "parameter 'progress' = 'maybe': Input should be a"),
        ("distill.spc", 0, "parameter 'distill.spc' = 0: Input should be greater"),
        (
            "generator.conditions",
            ["tissue"],
            "generator.conditions=['tissue'] does not include "
            "data.label_key='bulk_labels'",
        ),
        (
            "distill.t_gen",
            2000,
            "distill.t_gen=2000 exceeds generator.model.timesteps=1000",
        ),
        (
            "foundation.trainer.num_nodes",
            2,
            "foundation.trainer.num_nodes=2 needs every rank started by a launcher",
        ),
        (
            "foundation.trainer.strategy",
            "horovod",
            "parameter 'foundation.trainer.strategy' = 'horovod': Input should be",
        ),
    ],
)
def test_check_run_params_refuses(
    shipped: dict[str, Any], dotted: str, value: Any, expected: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(expected)):
        check_run_params(_with(shipped, dotted, value))


def test_check_run_params_refuses_unknown_groups(shipped: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"\['distil'\] \(did you mean 'distill'\?\)"):
        check_run_params({**shipped, "distil": {"spc": 2}})
    # a dotted runtime key is not nested by KedroSession: refused, not ignored
    with pytest.raises(ValueError, match=r"\['distill\.spc'\]"):
        check_run_params({**shipped, "distill.spc": 0})


def test_check_run_params_takes_validated_groups(shipped: dict[str, Any]) -> None:
    """Groups as Kedro hands them over (models) or as plain dicts."""
    validated = ParameterValidator(PIPELINES).validate_raw_params(shipped)
    check_run_params(validated)
    conditions = ["batch", "bulk_labels"]
    check_run_params(_with(shipped, "generator.conditions", conditions))
    check_run_params(_with(shipped, "generator.conditions", None))


def test_device_must_exist_on_this_machine(
    shipped: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match="CUDA is not available"):
            check_run_params({**shipped, "device": device})
    check_run_params({**shipped, "device": "auto"})
    gpus = _with(shipped, "foundation.trainer", {"accelerator": "gpu", "devices": 2})
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="devices=2 but this machine has 1 CUDA"):
        check_run_params(gpus)


@pytest.mark.parametrize(
    "runtime_params", [{"distill": {"spc": 0}}, {"distill.spc": 0}]
)
def test_session_refuses_before_any_node_runs(
    project_copy: Path, runtime_params: dict[str, Any]
) -> None:
    """``kedro run --pipeline distill --params distill.spc=0`` writes nothing.

    The nested form is what ``--params`` gives and Kedro's validator refuses
    it; a flat dotted key is refused by :func:`check_run_params` (the
    ``before_pipeline_run`` hook).
    """

    def listing() -> list[str]:
        return sorted(str(p) for p in (project_copy / "data").rglob("*"))

    before = listing()
    with pytest.raises((ParameterValidationError, ValueError), match="distill"):
        run_session(project_copy, "distill", runtime_params)
    assert listing() == before
