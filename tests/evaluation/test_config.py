"""The ``evaluate`` parameter group (:mod:`scdd.evaluation.config`)."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
from kedro.config import OmegaConfigLoader
from pydantic import ValidationError

from scdd.evaluation.config import (
    GENE_MODELS,
    MODELS,
    TORCH_GENE_MODELS,
    CelltypistParams,
    DeepInsightCNNParams,
    EvaluateParams,
    FHeadParams,
    FidelityParams,
    GeneMLPParams,
    GeneModelParams,
    GeneTransformerParams,
)
from tests.conftest import PROJECT_ROOT


def test_defaults_are_the_shipped_conf() -> None:
    """A group built in code is what ``kedro run`` validates from conf/base."""
    loader = OmegaConfigLoader(
        str(PROJECT_ROOT / "conf"), base_env="base", default_run_env="local"
    )
    shipped = EvaluateParams.model_validate(loader["parameters"]["evaluate"])
    assert shipped == EvaluateParams()


def test_every_model_has_its_group_and_function() -> None:
    from scdd.evaluation.suite import TORCH_GENE_FUNCTIONS

    assert tuple(TORCH_GENE_FUNCTIONS) == TORCH_GENE_MODELS
    assert set(GENE_MODELS) == set(MODELS) - {"f_head"}
    groups = {
        "f_head": FHeadParams,
        "celltypist": CelltypistParams,
        "gene_mlp": GeneMLPParams,
        "gene_transformer": GeneTransformerParams,
        "deepinsight_cnn": DeepInsightCNNParams,
    }
    assert set(groups) == set(MODELS)
    for name, group in groups.items():
        assert EvaluateParams.model_fields[name].annotation is group, name
    for name in TORCH_GENE_MODELS:
        assert issubclass(groups[name], GeneModelParams), name
    assert EvaluateParams.model_fields["fidelity"].annotation is FidelityParams


def test_for_reference_copies_the_group() -> None:
    evaluate = EvaluateParams(f_head={"epochs": 100, "reference_max_steps": 50})
    reference = evaluate.for_reference().f_head
    assert (reference.batch_size, reference.epochs, reference.max_steps) == (
        64,
        100,
        50,
    )
    assert reference.standardise is True
    assert evaluate.f_head.batch_size is None
    assert EvaluateParams().for_reference().f_head.epochs == 1000  # = epochs
    benchmark = evaluate.with_models(("f_head",))
    assert (benchmark.models, evaluate.models) == (["f_head"], list(MODELS))


@pytest.mark.parametrize(
    ("group", "settings", "message"),
    [
        (GeneTransformerParams, {"d_model": 10, "heads": 4}, "divisible by heads"),
        (FHeadParams, {"epochs": 0}, "greater than or equal to 1"),
        (FHeadParams, {"n_inits": 0}, "greater than or equal to 1"),
        (FHeadParams, {"lr": 0}, "greater than 0"),
        (FHeadParams, {"momentum": -0.1}, "greater than or equal to 0"),
        (FHeadParams, {"batch_size": 0}, "greater than or equal to 1"),
        (FHeadParams, {"max_steps": 0}, "greater than or equal to 1"),
        (CelltypistParams, {"n_inits": 0}, "greater than or equal to 1"),
        (GeneMLPParams, {"hidden": 0}, "greater than or equal to 1"),
        (GeneMLPParams, {"steps": 0}, "greater than or equal to 1"),
        (GeneMLPParams, {"batch_size": 0}, "greater than or equal to 1"),
        (GeneTransformerParams, {"dropout": 1.0}, "less than 1"),
        (DeepInsightCNNParams, {"pixels": 3}, "greater than or equal to 4"),
        (DeepInsightCNNParams, {"layout": "umap"}, "'tsne' or 'pca'"),
        (DeepInsightCNNParams, {"width": 0}, "greater than or equal to 1"),
        (FidelityParams, {"marker_method": "anova"}, "'mean_difference'"),
        (EvaluateParams, {"models": ["f_head", "f_head"]}, "twice"),
        (EvaluateParams, {"models": ["tosica"]}, "'f_head'"),
        (EvaluateParams, {"split": "train"}, "'test' or 'validation'"),
        (FHeadParams, {"epoch": 5}, r"\['epoch'\] \(did you mean 'epochs'\?\)"),
    ],
)
def test_bad_settings_are_refused(group, settings: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        group(**settings)


def test_groups_are_frozen() -> None:
    evaluate = EvaluateParams()
    with pytest.raises(ValidationError, match="frozen"):
        evaluate.gene_transformer.d_model = 64  # type: ignore[misc]


def test_config_imports_no_evaluation_module() -> None:
    """The model modules and :mod:`scdd.params` import the group: it must not
    import them back."""
    code = (
        "import sys, scdd.evaluation.config; "
        "print(sorted(m for m in sys.modules if m.startswith('scdd.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert ast.literal_eval(out) == [
        "scdd.evaluation",
        "scdd.evaluation.config",
        "scdd.param_group",
    ]
