"""The benchmark's run logic on tiny AnnData, with the expensive parts faked.

Distillation, embedding, scoring and SCDG training are replaced by recorders
(:mod:`scdd.distill`, :mod:`scdd.evaluation.scoring` and
:mod:`scdd.generation` have tests of their own); what is tested here is how
:mod:`scdd.benchmark.runs` dispatches them: which label columns, views,
generators, references, seeds and settings each call gets, and how the rows
and the table are put together.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from scdd.benchmark import runs
from scdd.benchmark.config import BenchmarkParams
from scdd.distill.config import DistillParams
from scdd.evaluation import scoring
from scdd.evaluation.config import EvaluateParams
from scdd.models.generator_config import GeneratorTrainParams
from tests.conftest import TINY_SCDG_MODEL, make_counts_adata

MAIN, COARSE = {"condition_columns": ["cell_type"]}, {"name": "coarse SCDG"}
TRAIN = GeneratorTrainParams(steps=5)


def _splits() -> list[ad.AnnData]:
    """Train / test (every other cell of 40 / 30 / 20) and 4-d "embeddings",
    with a second label ``coarse``: a / b, the first cell of each split
    unlabelled and the last in a class ``rare`` (both left out)."""
    adata = make_counts_adata()
    rng = np.random.default_rng(0)
    out = []
    for part in (adata[::2].copy(), adata[1::2].copy()):
        coarse = np.where(part.obs["cell_type"] == "type_0", "a", "b").astype(object)
        coarse[0], coarse[-1] = None, "rare"
        part.obs["coarse"] = coarse
        out.append(part)
    for part in out[:2]:
        z = rng.normal(size=(part.n_obs, 4)).astype(np.float32)
        out.append(ad.AnnData(X=z, obs=part.obs.copy()))
    train, test, train_z, test_z = out
    return [train, test, train_z, test_z]


def _reference(accuracy: float = 0.8, scored_on: str = "test") -> dict[str, Any]:
    result = {
        "accuracy_mean": accuracy,
        "accuracy_std": 0.01,
        "balanced_accuracy_mean": accuracy - 0.1,
        "macro_f1_mean": accuracy - 0.2,
    }
    return {"models": {"f_head": result, "gene_mlp": result}, "scored_on": scored_on}


# ---------------------------------------------------------------- label_view


def test_label_view_refuses_a_split_without_a_training_class() -> None:
    train, test, train_z, test_z = _splits()
    test.obs["coarse"] = "rare"  # a class the training split drops
    with pytest.raises(ValueError, match="no cell of the test split has one of"):
        runs.label_view(
            train, test, train_z, test_z, key="coarse", primary="cell_type", min_cells=3
        )


def test_label_view_keeps_rows_and_embeddings_aligned() -> None:
    splits = _splits()
    train, test, train_z, test_z = runs.label_view(
        *splits, key="coarse", primary="cell_type", min_cells=3
    )
    assert (train.n_obs, test.n_obs) == (splits[0].n_obs - 2, splits[1].n_obs - 2)
    np.testing.assert_array_equal(train_z.X, splits[2].X[1:-1])
    np.testing.assert_array_equal(test_z.X, splits[3].X[1:-1])
    assert train.obs_names.equals(train_z.obs_names)
    for view in (train, test, train_z, test_z):
        assert list(view.obs["coarse"].cat.categories) == ["a", "b"]
    assert "rare" in splits[0].obs["coarse"].to_numpy()  # the input is untouched


# ---------------------------------------------------------- label_generators


@pytest.fixture
def trained(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Calls of a fake ``generation.train_generator`` (nothing is trained)."""
    calls = []

    def fake(embeddings, conditions, *, model, train, seed, device, progress):
        calls.append(
            {
                "conditions": conditions,
                "n_obs": embeddings.n_obs,
                "categories": list(embeddings.obs[conditions[0]].cat.categories),
                "model": model,
                "train": train,
                "seed": seed,
            }
        )
        return {"trained_for": conditions}, None

    monkeypatch.setattr(runs.generation, "train_generator", fake)
    return calls


def _generators(splits: list, **bench: Any) -> dict[str, Any]:
    return runs.label_generators(
        MAIN,
        splits,
        benchmark=BenchmarkParams(**bench),
        primary="cell_type",
        min_cells=3,
        model=TINY_SCDG_MODEL,
        train=TRAIN,
        seed=4,
    )


def test_a_generator_per_label_column_the_main_one_lacks(trained: list) -> None:
    splits = _splits()
    out = _generators(
        splits, methods=["scdd", "dm"], label_keys=["cell_type", "coarse"]
    )
    assert out == {"coarse": {"trained_for": ["coarse"]}}
    assert len(trained) == 1
    call = trained[0]
    assert call["conditions"] == ["coarse"]
    assert call["n_obs"] == splits[2].n_obs - 2  # on the coarse view
    assert call["categories"] == ["a", "b"]
    assert (call["model"], call["train"], call["seed"]) == (TINY_SCDG_MODEL, TRAIN, 4)


def test_no_generator_without_a_method_that_needs_one(trained: list) -> None:
    splits = _splits()
    assert _generators(splits, methods=["dm", "random_real"], label_keys="coarse") == {}
    # the main label (the default column) is one the main generator knows
    assert _generators(splits, methods=["generator_only"]) == {}
    assert trained == []


# ---------------------------------------------------------- label_references


@pytest.fixture
def referenced(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Calls of a fake ``scoring.full_reference`` (nothing is trained)."""
    calls = []

    def fake(train, test, train_z, test_z, *, evaluate, label_key, **kwargs):
        calls.append(
            {
                "label_key": label_key,
                "n_obs": (train.n_obs, test.n_obs, train_z.n_obs, test_z.n_obs),
                "evaluate": evaluate,
                **kwargs,
            }
        )
        return {"trained_for": label_key}

    monkeypatch.setattr(scoring, "full_reference", fake)
    return calls


def _references(full: dict, splits: list, **bench: Any) -> dict[str, Any]:
    return runs.label_references(
        full,
        splits,
        benchmark=BenchmarkParams(models=["f_head", "gene_mlp"], **bench),
        primary="cell_type",
        min_cells=3,
        evaluate=EvaluateParams(),
        seed=3,
    )


def test_references_reuse_the_main_one_and_train_the_others(
    referenced: list,
) -> None:
    splits = _splits()
    full = _reference()
    out = _references(full, splits, label_keys=["coarse", "cell_type"])
    assert list(out) == ["coarse", "cell_type"]  # label_keys order
    assert out["cell_type"] is full  # reused: same split, every model
    assert out["coarse"] == {"trained_for": "coarse"}
    (call,) = referenced
    n = [s.n_obs - 2 for s in splits]
    assert call["n_obs"] == tuple(n)  # the coarse view of all four
    # the benchmark's models, with the full-split reference settings
    expected = EvaluateParams().with_models(["f_head", "gene_mlp"]).for_reference()
    assert call["evaluate"] == expected
    assert call["evaluate"].f_head.batch_size == expected.f_head.reference_batch_size
    assert call["seed"] == 3
    # F's gene floor is the model's own: the reference gets none
    assert "min_gene_overlap" not in call


@pytest.mark.parametrize(
    "full",
    [
        _reference(scored_on="validation"),  # another split
        {"models": {"f_head": _reference()["models"]["f_head"]}},  # no gene_mlp
        {},  # no reference at all
    ],
)
def test_main_reference_is_retrained_when_it_does_not_fit(
    referenced: list, full: dict
) -> None:
    splits = _splits()
    out = _references(full, splits)  # label_keys: data.label_key
    assert out == {"cell_type": {"trained_for": "cell_type"}}
    (call,) = referenced
    assert call["n_obs"] == tuple(s.n_obs for s in splits)  # the splits as they are


# ----------------------------------------------------------------- cell_runs


class Recorder:
    """Fakes of the distillation and scoring steps of one draw, recording the
    arguments each got. Draw ``seed`` (base ``seed`` + draw) decides what comes
    back: even seeds optimise nothing and draw no counts; the privacy figures
    and scores depend on the seed; ``gene_mlp`` is always skipped."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.prepared: list[dict[str, Any]] = []
        self.distilled: list[dict[str, Any]] = []
        self.privacy: list[dict[str, Any]] = []
        self.scored: list[dict[str, Any]] = []
        self.embedded: list[dict[str, Any]] = []
        monkeypatch.setattr(runs, "prepare_inputs", self.prepare_inputs)
        monkeypatch.setattr(runs, "distill_synthetic", self.distill_synthetic)
        monkeypatch.setattr(scoring, "embed_synthetic", self.embed_synthetic)
        monkeypatch.setattr(scoring, "privacy", self.privacy_report)
        monkeypatch.setattr(scoring, "synthetic_model_metrics", self.metrics)

    def prepare_inputs(self, train, train_z, foundation, checkpoint, **kwargs):
        self.prepared.append({"n_obs": train.n_obs, "checkpoint": checkpoint, **kwargs})
        categories = list(map(str, train.obs[kwargs["label_key"]].cat.categories))
        return "inputs", categories, kwargs["stats"] or "computed stats"

    def distill_synthetic(self, inputs, categories, stats, *, params, seed, **kwargs):
        self.distilled.append({"params": params, "seed": seed, "stats": stats})
        n = params.spc * len(categories)
        depth = None if seed % 2 == 0 else 4
        synthetic = ad.AnnData(
            X=np.zeros((n, 3), dtype=np.float32),
            uns={"scdd": {"count_depth": depth}},
        )
        history = [] if seed % 2 == 0 else [{"loss": 1.0}, {"loss": seed / 100}]
        return synthetic, SimpleNamespace(history=history)

    def embed_synthetic(self, synthetic, train_z, foundation, **kwargs):
        self.embedded.append(kwargs)
        return "embedded"

    def privacy_report(self, synthetic, embedded, *, seed, **kwargs):
        self.privacy.append({"seed": seed, **kwargs})
        f_space = {
            "nearest_record_ratio": seed / 10,
            "attack_tpr_at_1fpr": 0.01,
            "exact_copies": 1,
            "near_copies": seed,
        }
        gene = None if seed % 2 == 0 else {**f_space, "attack_auc": 0.5}
        return {"f_space": f_space, "gene_space": gene, "guard": {"passes": True}}

    def metrics(self, synthetic, embedded, test, test_z, reference, **kwargs):
        self.scored.append({"reference": reference, "n_test": test.n_obs, **kwargs})
        seed = kwargs["seed"]
        result = {
            "accuracy_mean": seed / 20,
            "accuracy_std": 0.0,
            "balanced_accuracy_mean": seed / 30,
            "macro_f1_mean": seed / 40,
            "retention": seed / 16,
        }
        return {
            "models": {"f_head": result, "gene_mlp": None},
            "skipped": {"gene_mlp": "no genes"},
        }


REFERENCES = {"cell_type": _reference(0.8), "coarse": _reference(0.9)}
BENCH = BenchmarkParams(
    label_keys=["cell_type", "coarse"], draws=2, models=["f_head", "gene_mlp"], steps=7
)


def _cell_runs(splits: list, method: str = "scdd", **kwargs: Any) -> list[dict]:
    return runs.cell_runs(
        splits,
        "foundation",
        MAIN,
        {"coarse": COARSE},
        kwargs.pop("references", REFERENCES),
        benchmark=kwargs.pop("benchmark", BENCH),
        method=method,
        spc=2,
        primary="cell_type",
        min_cells=3,
        primary_stats="cached stats",
        distill=DistillParams(),
        evaluate=EvaluateParams(),
        chunk_size=4096,
        seed=5,
    )


def test_cell_runs_give_a_row_per_label_draw_and_scored_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = Recorder(monkeypatch)
    splits = _splits()
    rows = _cell_runs(splits)
    # gene_mlp was skipped: one row per (label, draw)
    assert [(r["label_key"], r["draw"], r["seed"]) for r in rows] == [
        ("cell_type", 0, 5),
        ("cell_type", 1, 6),
        ("coarse", 0, 5),
        ("coarse", 1, 6),
    ]
    for row in rows:
        assert (row["model"], row["method"], row["spc"]) == ("f_head", "scdd", 2)
        assert row["seconds"] >= 0
    assert [r["n_synthetic"] for r in rows] == [6, 6, 4, 4]  # 2 per class
    assert [r["accuracy_mean"] for r in rows] == [0.25, 0.3, 0.25, 0.3]
    assert [r["retention"] for r in rows] == [5 / 16, 6 / 16, 5 / 16, 6 / 16]
    # the last loss of an optimised draw; NaN where nothing was optimised or
    # no counts were drawn
    assert rows[0]["distill_loss"] == pytest.approx(0.05)
    assert np.isnan(rows[1]["distill_loss"])
    assert rows[0]["count_depth"] == 4 and np.isnan(rows[1]["count_depth"])
    # privacy per draw: its own seed, gene figures only where the set has genes
    assert [p["seed"] for p in fake.privacy] == [5, 6, 5, 6]
    assert [r["ratio_f"] for r in rows] == [0.5, 0.6, 0.5, 0.6]
    assert [r["copies"] for r in rows] == [6, 7, 6, 7]
    assert rows[0]["ratio_gene"] == 0.5 and rows[0]["attack_auc_gene"] == 0.5
    assert np.isnan(rows[1]["ratio_gene"]) and np.isnan(rows[1]["attack_tpr_gene"])
    assert all(r["passes_guard"] == 1.0 for r in rows)
    assert all(p["params"] == DistillParams().privacy for p in fake.privacy)


def test_cell_runs_hand_each_label_its_view_generator_and_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = Recorder(monkeypatch)
    splits = _splits()
    _cell_runs(splits)
    # prepared once per label column, drawn twice
    n_train, n_test = splits[0].n_obs, splits[1].n_obs
    assert [(p["label_key"], p["n_obs"]) for p in fake.prepared] == [
        ("cell_type", n_train),
        ("coarse", n_train - 2),
    ]
    # the main generator for the label it is conditioned on, the label's own
    # SCDG for the other; cached statistics for the main label only
    assert [p["checkpoint"] for p in fake.prepared] == [MAIN, COARSE]
    assert [p["stats"] for p in fake.prepared] == ["cached stats", None]
    assert [d["stats"] for d in fake.distilled] == ["cached stats"] * 2 + [
        "computed stats"
    ] * 2
    # this cell's method and SPC, benchmark.steps optimisation steps
    for call in fake.distilled:
        params = call["params"]
        assert (params.method, params.spc, params.optim.steps) == ("scdd", 2, 7)
        assert params.optim.lr == DistillParams().optim.lr
    # scored against the label's reference on its view of the test split,
    # with the benchmark's models
    assert [s["reference"] for s in fake.scored] == [REFERENCES["cell_type"]] * 2 + [
        REFERENCES["coarse"]
    ] * 2
    assert [s["n_test"] for s in fake.scored] == [n_test] * 2 + [n_test - 2] * 2
    assert all(s["evaluate"].models == ["f_head", "gene_mlp"] for s in fake.scored)
    assert [s["label_key"] for s in fake.scored] == ["cell_type"] * 2 + ["coarse"] * 2
    # F's gene floor is the model's own: no step is handed one
    for call in (*fake.prepared, *fake.embedded, *fake.privacy, *fake.scored):
        assert "min_gene_overlap" not in call


def test_methods_without_a_generator_get_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = Recorder(monkeypatch)
    bench = BENCH.model_copy(update={"draws": 1, "steps": None})
    _cell_runs(_splits(), method="dm", benchmark=bench)
    assert [p["checkpoint"] for p in fake.prepared] == [None, None]
    assert len(fake.distilled) == 2
    for call in fake.distilled:
        params = call["params"]
        assert (params.method, params.spc) == ("dm", 2)
        assert params.optim.steps == DistillParams().optim.steps  # steps unset


def test_a_label_without_a_reference_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = Recorder(monkeypatch)
    references = {"coarse": REFERENCES["coarse"]}
    with pytest.raises(ValueError, match="No full-split reference for label 'cell_t"):
        _cell_runs(_splits(), references=references)
    assert fake.prepared == []  # refused before its label's work


# ------------------------------------------------------------------ assemble


def _run(label: str, method: str, spc: int, draw: int, acc: float) -> dict:
    return {
        "label_key": label,
        "model": "f_head",
        "method": method,
        "spc": spc,
        "draw": draw,
        "accuracy_mean": acc,
        "accuracy_std": 0.0,
        "balanced_accuracy_mean": acc,
        "macro_f1_mean": acc,
        "retention": acc / 0.8,
        "seconds": 1.0,
    }


def _cells() -> list[dict]:
    """Grid cells as the nodes return them, out of table order."""

    def cell(method: str, spc: int, skipped: bool = False) -> dict:
        rows = [
            _run(label, method, spc, draw, 0.1 * spc + 0.01 * draw)
            for draw in (1, 0)
            for label in ("cell_type", "coarse")
        ]
        return {
            "method": method,
            "spc": spc,
            "skipped": skipped,
            "runs": [] if skipped else rows,
        }

    return [
        cell("scdd", 2),
        cell("random_real", 5),
        cell("dm", 1, skipped=True),
        cell("random_real", 2),
    ]


def test_assemble_orders_by_label_method_and_spc() -> None:
    references = {
        "coarse": _reference(scored_on="validation"),
        "cell_type": _reference(scored_on="validation"),
    }
    bench = BenchmarkParams(methods=["random_real", "scdd"], models=["f_head"], draws=2)
    table, markdown = runs.assemble(references, _cells(), benchmark=bench)
    # labels in the references' order, each with its full row first
    expected = ["full", "random_real", "random_real", "scdd"]
    assert table.label_key.tolist() == ["coarse"] * 4 + ["cell_type"] * 4
    assert table.method.tolist() == expected * 2
    assert table.spc.tolist()[:4] == [pd.NA, 2, 5, 2]
    assert (table.n_draws[table.method != "full"] == 2).all()
    row = table[(table.method == "random_real") & (table.spc == 5)].iloc[0]
    assert row.accuracy_mean == pytest.approx(0.505)
    assert "Scored on the real **validation** split." in markdown
    assert "Mean ± std over 2 draw(s)" in markdown
    assert markdown.index("## Label `coarse`") < markdown.index("## Label `cell_type`")
    assert "| scdd | 20.5 ± 0.5 | – |" in markdown


def test_assemble_follows_the_order_of_benchmark_methods() -> None:
    bench = BenchmarkParams(methods=["scdd", "random_real"], models=["f_head"], draws=2)
    table, _ = runs.assemble({"cell_type": _reference()}, _cells(), benchmark=bench)
    assert table.method.tolist() == ["full", "scdd", "random_real", "random_real"]


def test_assemble_without_runs_gives_the_full_rows() -> None:
    cells = [c for c in _cells() if c["skipped"]]
    bench = BenchmarkParams(models=["f_head", "gene_mlp"], draws=3)
    table, markdown = runs.assemble({"cell_type": _reference()}, cells, benchmark=bench)
    assert table.method.tolist() == ["full", "full"]
    assert table.model.tolist() == ["f_head", "gene_mlp"]
    assert "Mean ± std over 3 draw(s)" in markdown
    assert "Scored on the real **test** split." in markdown
