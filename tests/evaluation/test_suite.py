"""The evaluation model suite (:mod:`scdd.evaluation.suite`): every registered
model on one tiny training set, feature-only sets, model names, retention and
the compact JSON layout."""

from __future__ import annotations

import numpy as np
import pytest

from scdd.evaluation import suite
from scdd.evaluation.config import MODELS, EvaluateParams
from scdd.evaluation.suite import check_models, compact, run_models, with_retention
from tests.conftest import make_log_splits

KEY = "cell_type"
CATEGORIES = ["type_0", "type_1", "type_2"]
#: Every model small enough to train in well under a second.
PARAMS = EvaluateParams.model_validate(
    {
        "f_head": {"n_inits": 3, "epochs": 100, "lr": 0.1},
        "celltypist": {"n_inits": 1},
        "gene_mlp": {"hidden": 16, "n_inits": 2, "steps": 60, "lr": 0.01},
        "gene_transformer": {
            "genes_per_token": 8,
            "d_model": 8,
            "heads": 2,
            "n_inits": 1,
            "steps": 10,
        },
        "deepinsight_cnn": {
            "pixels": 8,
            "layout": "pca",
            "width": 2,
            "n_inits": 1,
            "steps": 10,
        },
    }
)
#: What the benchmark table and ``metrics.json`` read from each result.
RESULT_FIELDS = {
    "accuracy_mean",
    "accuracy_std",
    "balanced_accuracy_mean",
    "balanced_accuracy_std",
    "macro_f1_mean",
    "macro_f1_std",
    "per_init",
    "n_train",
    "n_test",
}


def _one_hot_features(labels: np.ndarray, seed: int) -> np.ndarray:
    """Separable 8-d stand-ins for F's features: class one-hot plus noise."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 0.1, (len(labels), 8)).astype(np.float32)
    z[np.arange(len(labels)), labels] += 1.0
    return z


@pytest.fixture(scope="module")
def data() -> dict:
    """``run_models`` keyword arguments: 30 training and 45 test cells."""
    train, test = make_log_splits(32, (12, 10, 8), (20, 15, 10))
    y = train.obs[KEY].cat.codes.to_numpy().astype(np.int64)
    y_test = test.obs[KEY].cat.codes.to_numpy().astype(np.int64)
    return {
        "train_z": _one_hot_features(y, 0),
        "train_labels": y,
        "test_z": _one_hot_features(y_test, 1),
        "test_labels": y_test,
        "train_genes": train,
        "test_genes": test,
        "label_key": KEY,
        "categories": CATEGORIES,
        "params": PARAMS,
    }


@pytest.fixture(scope="module")
def every_model(data) -> tuple[dict, dict]:
    return run_models(models=list(MODELS), seed=4, **data)


def test_every_registered_model_runs_and_gives_the_table_fields(every_model) -> None:
    results, skipped = every_model
    assert list(results) == list(MODELS) and skipped == {}
    for name, result in results.items():
        assert RESULT_FIELDS <= set(result), name
        assert (result["n_train"], result["n_test"]) == (30, 45), name
        for metric in ("accuracy", "balanced_accuracy", "macro_f1"):
            assert 0.0 <= result[f"{metric}_mean"] <= 1.0, (name, metric)
            assert result[f"{metric}_std"] >= 0.0, (name, metric)
        assert result["per_init"][0]["seed"] == 4, name  # the base seed
    # separable features and marker genes: the well-trained ones learn them
    for name in ("f_head", "celltypist", "gene_mlp"):
        assert results[name]["accuracy_mean"] > 0.8, name


def test_each_model_reads_its_own_parameter_group(every_model) -> None:
    results, _ = every_model
    inits = {name: len(result["per_init"]) for name, result in results.items()}
    assert inits == {
        "f_head": 3,
        "celltypist": 1,
        "gene_mlp": 2,
        "gene_transformer": 1,
        "deepinsight_cnn": 1,
    }


def test_models_argument_wins_over_params_models(data) -> None:
    """``params.models`` is not read: ``models`` says what runs, in its order."""
    params = PARAMS.with_models(["celltypist"])
    results, skipped = run_models(
        models=["gene_mlp", "f_head"], **{**data, "params": params}
    )
    assert list(results) == ["gene_mlp", "f_head"] and skipped == {}


def test_feature_only_sets_skip_the_gene_models_with_a_reason(data) -> None:
    results, skipped = run_models(
        models=list(MODELS), **{**data, "train_genes": None, "test_genes": None}
    )
    gene_models = ["celltypist", "gene_mlp", "gene_transformer", "deepinsight_cnn"]
    assert list(results) == list(MODELS)
    assert set(skipped) == set(gene_models)
    for name in gene_models:
        assert results[name] is None
        assert "feature-only" in skipped[name] and "reads genes" in skipped[name]
    assert results["f_head"]["n_train"] == 30


def test_unknown_or_no_models_are_refused_before_any_training(
    data, monkeypatch
) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("a model was trained")

    monkeypatch.setattr(suite, "evaluate_linear_head", boom)
    with pytest.raises(
        ValueError, match=r"Unknown evaluation models \['scvi', 'tosica'\]"
    ) as info:
        run_models(models=["f_head", "tosica", "scvi"], **data)
    assert "evaluate.models may list" in str(info.value)
    for name in MODELS:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="evaluate.models is empty"):
        run_models(models=[], **data)


def test_check_models_returns_a_list() -> None:
    names = ("gene_mlp", "f_head")
    assert check_models(names) == ["gene_mlp", "f_head"]
    assert isinstance(check_models(names), list)


def _result(accuracy: float, balanced: float, f1: float, n: int = 2) -> dict:
    rows = [
        {
            "init": i,
            "seed": i,
            "accuracy": accuracy,
            "balanced_accuracy": balanced,
            "macro_f1": f1,
            "train_accuracy": 1.0 - 0.1 * i,
        }
        for i in range(n)
    ]
    return {
        "accuracy_mean": accuracy,
        "accuracy_std": 0.0,
        "balanced_accuracy_mean": balanced,
        "balanced_accuracy_std": 0.0,
        "macro_f1_mean": f1,
        "macro_f1_std": 0.0,
        "per_init": rows,
        "n_train": 6,
        "n_test": 45,
    }


def test_retention_is_synthetic_over_full_split_for_every_metric() -> None:
    synthetic = _result(0.6, 0.5, 0.3)
    full = _result(0.8, 0.5, 0.6)
    out = with_retention(synthetic, full)
    assert out["retention"] == pytest.approx(0.75)
    assert out["retention_balanced_accuracy"] == pytest.approx(1.0)
    assert out["retention_macro_f1"] == pytest.approx(0.5)
    assert "retention_accuracy" not in out  # accuracy's is plain ``retention``
    # the reference's means and stds only, not its runs or sizes
    assert out["full"] == {
        "accuracy_mean": 0.8,
        "accuracy_std": 0.0,
        "balanced_accuracy_mean": 0.5,
        "balanced_accuracy_std": 0.0,
        "macro_f1_mean": 0.6,
        "macro_f1_std": 0.0,
    }
    assert "retention" not in synthetic and "full" not in synthetic  # a copy
    none = with_retention(synthetic, None)
    assert none["retention"] is none["retention_macro_f1"] is none["full"] is None
    zero = with_retention(synthetic, _result(0.0, 0.5, 0.6))
    assert zero["retention"] is None
    assert zero["retention_macro_f1"] == pytest.approx(0.5)
    assert with_retention(None, full) is None


def test_compact_turns_runs_into_lists_per_metric() -> None:
    result = _result(0.6, 0.5, 0.3, n=3)
    small = compact(result)
    assert "per_init" not in small and "per_init" in result
    assert small["n_inits"] == 3
    assert small["accuracy_per_init"] == [0.6] * 3
    assert small["train_accuracy_per_init"] == pytest.approx([1.0, 0.9, 0.8])
    assert small["accuracy_mean"] == 0.6 and small["n_train"] == 6
    assert compact(None) is None
    flat = {"accuracy_mean": 0.5}
    assert compact(flat) == flat
