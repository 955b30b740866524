import io
import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

from scdd import generation
from scdd.models.device import make_generator
from scdd.models.generator_config import GeneratorReportParams, GeneratorTrainParams
from tests.conftest import TINY_SCDG_MODEL

MODEL = TINY_SCDG_MODEL
TRAIN = GeneratorTrainParams(steps=40, batch_size=32, lr=1e-3, weight_decay=1e-4)
REPORT = GeneratorReportParams(
    t_values=[5, 50],
    sample_steps=[1, 5],
    guidance_scale=1.5,
    samples_per_class=20,
    min_cells_frechet=10,
)


def make_embeddings_adata(
    n_per_class: tuple[int, ...] = (30, 20, 12), dim: int = 16, seed: int = 0
) -> ad.AnnData:
    """Unit-norm latents around one distinct centre per class, string labels."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(123).normal(size=(len(n_per_class), dim))
    blocks = [
        c + rng.normal(scale=0.3, size=(n, dim))
        for c, n in zip(centres, n_per_class, strict=True)
    ]
    x = np.vstack(blocks)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = np.repeat([f"type_{i}" for i in range(len(n_per_class))], n_per_class)
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(labels),
            "batch": np.where(np.arange(len(labels)) % 2, "b1", "b0"),
        },
        index=[f"cell_{i}" for i in range(len(labels))],
    )
    var = pd.DataFrame(index=[f"latent_{j}" for j in range(dim)])
    return ad.AnnData(X=x.astype(np.float32), obs=obs, var=var)


@pytest.fixture(scope="module")
def trained() -> dict:
    checkpoint, history = generation.train_generator(
        make_embeddings_adata(),
        ["cell_type", "batch"],
        model=MODEL,
        train=TRAIN,
        seed=0,
        progress=False,
    )
    assert list(history.columns) == ["step", "loss"]
    return checkpoint


def test_condition_columns_default_and_checks() -> None:
    assert generation.condition_columns(None, "cell_type") == ["cell_type"]
    assert generation.condition_columns(["batch", "cell_type"], "cell_type") == [
        "batch",
        "cell_type",
    ]
    with pytest.raises(ValueError, match="must include the label column"):
        generation.condition_columns(["batch"], "cell_type")
    with pytest.raises(ValueError, match="twice"):
        generation.condition_columns(["cell_type", "cell_type"], "cell_type")


def test_condition_codes_categories() -> None:
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(["b", "a", "b"], categories=["b", "z", "a"]),
            "stage": [3, 1, 3],
        }
    )
    codes, categories = generation.condition_codes(obs, ["cell_type", "stage"])
    # categorical order kept, unused "z" dropped; other columns sorted as strings
    assert categories == {"cell_type": ["b", "a"], "stage": ["1", "3"]}
    np.testing.assert_array_equal(codes, [[0, 1], [1, 0], [0, 1]])
    assert codes.dtype == np.int64
    again, _ = generation.condition_codes(obs.iloc[::-1], ["stage"], categories)
    np.testing.assert_array_equal(again[:, 0], [1, 0, 1])


def test_condition_codes_errors() -> None:
    obs = pd.DataFrame({"cell_type": ["a", None], "tissue": ["x", "y"]})
    with pytest.raises(ValueError, match=r"Available columns: \['cell_type', 'tissue'"):
        generation.condition_codes(obs, ["celltype"])
    with pytest.raises(ValueError, match="1 missing values"):
        generation.condition_codes(obs, ["cell_type"])
    with pytest.raises(ValueError, match=r"not trained on: \['y'\]"):
        generation.condition_codes(obs, ["tissue"], {"tissue": ["x"]})


def test_scdg_trains_on_a_sample_of_the_cells_it_can_see(monkeypatch) -> None:
    """More cells than ``steps x batch_size``: a seeded sample of that many
    is read, with its own conditions; fewer: all of them."""
    seen = {}

    def record(z, codes, config, **kwargs):
        seen["z"], seen["codes"] = z, codes
        raise StopIteration

    monkeypatch.setattr(generation, "train_scdg", record)
    adata = make_embeddings_adata()
    small = TRAIN.model_copy(update={"steps": 5, "batch_size": 8})
    with pytest.raises(StopIteration):
        generation.train_generator(
            adata, ["cell_type"], model=MODEL, train=small, seed=0, progress=False
        )
    rows = generation.seen_rows(adata.n_obs, 40, 0)
    assert len(rows) == 40 and len(seen["z"]) == 40
    np.testing.assert_array_equal(seen["z"], adata.X[rows])
    codes = adata.obs["cell_type"].cat.codes.to_numpy()[rows]
    np.testing.assert_array_equal(seen["codes"][:, 0], codes)
    assert generation.seen_rows(adata.n_obs, adata.n_obs, 0) is None


def test_checkpoint_keeps_conditions_and_loads_weights_only(trained: dict) -> None:
    assert trained["condition_columns"] == ["cell_type", "batch"]
    assert trained["condition_categories"] == {
        "cell_type": ["type_0", "type_1", "type_2"],
        "batch": ["b0", "b1"],
    }
    assert trained["config"]["n_classes"] == [3, 2]
    buffer = io.BytesIO()
    torch.save(trained, buffer)
    buffer.seek(0)
    model, categories = generation.load_generator(torch.load(buffer, weights_only=True))
    assert list(categories) == ["cell_type", "batch"]
    reference, _ = generation.load_generator(trained)
    cond = torch.tensor([[0, 1], [2, 2]])  # 2 = null token of "batch"
    torch.testing.assert_close(
        model.sample(cond, n_steps=3, generator=make_generator(7)),
        reference.sample(cond, n_steps=3, generator=make_generator(7)),
    )


def test_quality_report(trained: dict) -> None:
    model, categories = generation.load_generator(trained)
    train = make_embeddings_adata()
    test = make_embeddings_adata((15, 10, 5), seed=1)
    report = generation.generator_quality_report(
        model, categories, train, test, label_key="cell_type", seed=0, report=REPORT
    )
    json.dumps(report, allow_nan=False)
    assert report["classes"]["type_2"] == {"train_cells": 12, "test_cells": 5}
    assert [r["steps"] for r in report["from_noise"]] == [1, 5]
    assert [r["t"] for r in report["reconstruction"]] == [5, 50]
    for entry in report["from_noise"] + report["reconstruction"]:
        assert 0.0 <= entry["consistency"]["accuracy"] <= 1.0
        assert set(entry["consistency"]["per_class"]) == set(categories["cell_type"])
        per_class = entry["frechet"]["per_class"]
        assert per_class["type_2"] is None  # 5 test cells < min_cells_frechet
        assert per_class["type_0"] >= 0.0
        assert entry["frechet"]["overall"] >= 0.0
    small, large = report["reconstruction"]
    assert small["mse"] < large["mse"]
    assert small["mse_over_total_variance"] == pytest.approx(
        small["mse"] / report["total_variance"]
    )
    assert report["real"]["test_consistency"]["accuracy"] == 1.0


def test_report_judges_a_capped_stratified_sample(trained: dict) -> None:
    """Atlas-sized embeddings: the classifier, reconstructions and distances
    use at most ``max_cells`` cells of each split, every class kept."""
    model, categories = generation.load_generator(trained)
    train = make_embeddings_adata()
    test = make_embeddings_adata((15, 10, 5), seed=1)
    report = generation.generator_quality_report(
        model,
        categories,
        train,
        test,
        label_key="cell_type",
        seed=0,
        report=REPORT.model_copy(update={"max_cells": 12}),
    )
    assert report["max_cells"] == 12
    counts = report["classes"].values()
    assert 12 <= sum(c["train_cells"] for c in counts) <= 12 + len(counts)
    assert 12 <= sum(c["test_cells"] for c in counts) <= 12 + len(counts)
    assert all(c["train_cells"] >= 1 and c["test_cells"] >= 1 for c in counts)


def test_report_needs_label_condition(trained: dict) -> None:
    model, categories = generation.load_generator(trained)
    data = make_embeddings_adata()
    with pytest.raises(ValueError, match="not on the label column 'tissue'"):
        generation.generator_quality_report(
            model, categories, data, data, label_key="tissue", report=REPORT
        )


def test_report_rejects_unknown_test_class(trained: dict) -> None:
    model, categories = generation.load_generator(trained)
    train = make_embeddings_adata()
    test = make_embeddings_adata((5, 5, 5, 5), seed=1)
    with pytest.raises(ValueError, match=r"not trained on: \['type_3'\]"):
        generation.generator_quality_report(
            model, categories, train, test, label_key="cell_type", report=REPORT
        )


def test_match_composition_follows_target_shares() -> None:
    labels = np.array(["a", "b"] * 10)
    keep = generation._match_composition(labels, np.array(["a", "a", "a", "b"]))
    assert (labels[keep] == "a").sum() == 10
    assert (labels[keep] == "b").sum() == 3
    with pytest.raises(ValueError, match=r"\['c'\]"):
        generation._match_composition(labels, np.array(["a", "c"]))
