"""Scoring one training set (:mod:`scdd.evaluation.scoring`), function by
function, on tiny splits and an untrained tiny F (no foundation training)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import sparse

from scdd.evaluation import scoring
from scdd.evaluation.config import EvaluateParams
from scdd.metrics.privacy import PrivacyParams
from scdd.models.foundation import (
    FoundationArchitectureParams,
    FoundationModel,
    build_autoencoder,
    embed_cells,
)
from scdd.sampling import stratified_rows
from tests.conftest import make_counts_adata, make_log_splits
from tests.evaluation.lazy_helpers import spied

KEY = "cell_type"
CATEGORIES = ["type_0", "type_1", "type_2"]
LATENT = 8
N_GENES = 30
#: The F-head and the gene MLP, small enough for a fraction of a second.
PARAMS = EvaluateParams.model_validate(
    {
        "models": ["f_head", "gene_mlp"],
        "reference_max_cells": 20,
        "f_head": {
            "n_inits": 2,
            "epochs": 100,
            "lr": 0.1,
            "reference_batch_size": 16,
            "reference_epochs": 10,
        },
        "gene_mlp": {"hidden": 16, "n_inits": 1, "steps": 40, "lr": 0.01},
        "fidelity": {"top_k": 5, "mmd_max_cells": 40},
    }
)
PRIVACY = PrivacyParams(chunk_size=16)


@dataclass
class Splits:
    train: ad.AnnData
    test: ad.AnnData
    train_embeddings: ad.AnnData
    test_embeddings: ad.AnnData
    foundation: FoundationModel


def _embeddings(foundation: FoundationModel, adata: ad.AnnData) -> ad.AnnData:
    return ad.AnnData(
        X=embed_cells(foundation.encoder, adata.X, progress=False),
        obs=adata.obs.copy(),
        var=pd.DataFrame(index=[f"latent_{i}" for i in range(LATENT)]),
    )


@pytest.fixture(scope="module")
def splits() -> Splits:
    """37 training and 37 test cells (3 classes, 30 genes); F untrained (E
    30 -> 16 -> 8, seeded), which is all scoring needs of it."""
    train, test = make_log_splits(N_GENES, (15, 12, 10))
    torch.manual_seed(0)
    encoder, decoder = build_autoencoder(
        N_GENES,
        FoundationArchitectureParams(
            latent_dim=LATENT, hidden_dim=[16], dropout=0.0, input_dropout=0.0
        ),
    )
    foundation = FoundationModel(
        encoder, decoder, list(train.var_names), min_gene_overlap=10
    ).freeze()
    return Splits(
        train,
        test,
        _embeddings(foundation, train),
        _embeddings(foundation, test),
        foundation,
    )


def _gene_set(splits: Splits, rows: list[int]) -> ad.AnnData:
    """Training cells ``rows`` as a gene-level synthetic set, genes reversed."""
    synthetic = splits.train[rows].copy()[:, ::-1].copy()
    synthetic.obs_names = [f"syn_{i}" for i in range(len(rows))]
    return synthetic


def _feature_set(splits: Splits) -> ad.AnnData:
    """A feature-only set: one class-mean feature vector per class."""
    z = np.asarray(splits.train_embeddings.X)
    labels = splits.train.obs[KEY].to_numpy()
    features = np.stack([z[labels == c].mean(0) for c in CATEGORIES])
    synthetic = ad.AnnData(
        X=sparse.csr_matrix((3, 0), dtype=np.float32),
        obs=pd.DataFrame({KEY: pd.Categorical(CATEGORIES)}, index=["f0", "f1", "f2"]),
    )
    synthetic.obsm["X_foundation"] = features.astype(np.float32)
    return synthetic


def _embed(splits: Splits, synthetic: ad.AnnData, **kwargs) -> ad.AnnData:
    return scoring.embed_synthetic(
        synthetic,
        splits.train_embeddings,
        splits.foundation,
        label_key=KEY,
        chunk_size=kwargs.pop("chunk_size", 4096),
        **kwargs,
    )


def _reference(splits: Splits, params: EvaluateParams = PARAMS) -> dict:
    return scoring.full_reference(
        splits.train,
        splits.test,
        splits.train_embeddings,
        splits.test_embeddings,
        evaluate=params.for_reference(),
        label_key=KEY,
    )


@pytest.fixture(scope="module")
def reference(splits: Splits) -> dict:
    return _reference(splits)


def _synthetic_metrics(
    splits: Splits, synthetic: ad.AnnData, reference: dict, params=PARAMS
) -> dict:
    return scoring.synthetic_model_metrics(
        synthetic,
        _embed(splits, synthetic),
        splits.test,
        splits.test_embeddings,
        reference,
        evaluate=params,
        label_key=KEY,
    )


# ---------------------------------------------------------------- class labels


def test_class_names_keep_category_order_or_sort_strings() -> None:
    adata = make_counts_adata((2, 2, 2), n_genes=5)
    adata.obs[KEY] = pd.Categorical(
        adata.obs[KEY].astype(str), categories=["type_2", "unused", "type_0", "type_1"]
    )
    assert scoring.class_names(adata, KEY, "x") == [
        "type_2",
        "unused",
        "type_0",
        "type_1",
    ]
    adata.obs["plain"] = ["b", "a", "c", "a", "b", "c"]
    assert scoring.class_names(adata, "plain", "x") == ["a", "b", "c"]
    with pytest.raises(
        ValueError,
        match=r"'tissue' is not in the synthetic set \(obs columns: "
        r"\['cell_type', 'batch', 'plain'\]\)\. Set data\.label_key",
    ):
        scoring.class_names(adata, "tissue", "synthetic set")


def test_class_codes_follow_the_given_categories() -> None:
    adata = make_counts_adata((1, 2, 1), n_genes=5)
    codes = scoring.class_codes(adata, KEY, ["type_2", "type_0", "type_1"], "x")
    assert codes.dtype == np.int64 and codes.tolist() == [1, 2, 2, 0]
    with pytest.raises(
        ValueError, match=r"The synthetic set has classes \['type_2'\] that the "
    ):
        scoring.class_codes(adata, KEY, ["type_0", "type_1"], "synthetic set")


# ------------------------------------------------------------ embed_synthetic


def test_gene_level_set_is_embedded_in_fs_gene_order(splits: Splits) -> None:
    """Genes stored reversed, one foreign gene added, dense X: F sees the
    cells as they are in its own gene order."""
    rows = [0, 1, 15, 16, 27, 28]
    synthetic = _gene_set(splits, rows)
    extra = ad.AnnData(
        X=np.hstack([synthetic.X.toarray(), np.full((6, 1), 3.0, np.float32)]),
        obs=synthetic.obs,
        var=pd.DataFrame(index=[*synthetic.var_names, "foreign_gene"]),
    )
    embedded = _embed(splits, extra)
    np.testing.assert_allclose(
        embedded.X, np.asarray(splits.train_embeddings.X)[rows], atol=1e-5
    )
    assert list(embedded.obs_names) == list(synthetic.obs_names)
    assert embedded.obs[KEY].tolist() == synthetic.obs[KEY].tolist()
    assert list(embedded.var_names) == [f"latent_{i}" for i in range(LATENT)]
    strict = replace(splits.foundation, min_gene_overlap=N_GENES + 1)
    with pytest.raises(ValueError, match="foundation.min_gene_overlap"):
        _embed(replace(splits, foundation=strict), synthetic)


def test_fs_own_gene_floor_decides_and_real_splits_follow_the_set(
    splits: Splits,
) -> None:
    """A set of 11 of F's 30 genes (the markers of type_0 and type_1, one of
    type_2): embedded above F's floor (10), refused under a floor of 12;
    fidelity and privacy read the real splits in the set's 11 genes."""
    rows = [0, 15, 27]
    synthetic = _gene_set(splits, rows)[:, -11:].copy()
    assert _embed(splits, synthetic).shape == (3, LATENT)
    strict = replace(splits.foundation, min_gene_overlap=12)
    with pytest.raises(
        ValueError, match=r"Only 11 of the data's 11 genes .*at least 12 are needed"
    ):
        _embed(replace(splits, foundation=strict), synthetic)
    real = scoring.in_genes_of(splits.train, synthetic)
    assert list(real.var_names) == list(synthetic.var_names)
    np.testing.assert_array_equal(real.X[rows].toarray(), synthetic.X.toarray())
    report = scoring.fidelity(
        synthetic,
        _embed(splits, synthetic),
        splits.train,
        splits.train_embeddings,
        label_key=KEY,
        params=PARAMS.fidelity,
    )
    assert report["zero_fraction"]["synthetic"] is not None
    assert _privacy(splits, synthetic)["gene_space"]["exact_copies"] == 3


def test_feature_only_set_passes_its_features_through(splits: Splits) -> None:
    synthetic = _feature_set(splits)
    assert scoring.is_feature_only(synthetic)
    assert not scoring.is_feature_only(_gene_set(splits, [0]))
    embedded = _embed(splits, synthetic)
    np.testing.assert_array_equal(embedded.X, synthetic.obsm["X_foundation"])
    assert list(embedded.obs_names) == ["f0", "f1", "f2"]


def test_embed_synthetic_refuses_unusable_sets(splits: Splits) -> None:
    synthetic = _feature_set(splits)
    narrow = synthetic.copy()
    narrow.obsm["X_foundation"] = narrow.obsm["X_foundation"][:, :5]
    with pytest.raises(ValueError, match="width 5 but F's latents have 8"):
        _embed(splits, narrow)
    bare = synthetic.copy()
    del bare.obsm["X_foundation"]
    with pytest.raises(ValueError, match=r"neither genes .* nor obsm"):
        _embed(splits, bare)
    with pytest.raises(ValueError, match="no cells"):
        _embed(splits, synthetic[:0].copy())
    unknown = synthetic.copy()
    unknown.obs[KEY] = pd.Categorical(["type_0", "type_1", "type_X"])
    with pytest.raises(ValueError, match=r"\['type_X'\]"):
        _embed(splits, unknown)


# ------------------------------------------------------------ full_reference


def test_full_reference_document(splits: Splits, reference: dict) -> None:
    assert set(reference) == {
        "label_key",
        "categories",
        "n_train",
        "n_test",
        "scored_on",
        "reference_max_cells",
        "models",
    }
    assert reference["label_key"] == KEY
    assert reference["categories"] == CATEGORIES
    assert (reference["n_train"], reference["n_test"]) == (37, 37)
    assert reference["scored_on"] == "test"
    assert reference["reference_max_cells"] == 20
    models = reference["models"]
    assert list(models) == ["f_head", "gene_mlp"]
    assert models["f_head"]["n_train"] == 37  # features of every cell
    # gene models: the stratified sample of about reference_max_cells cells
    labels = splits.train.obs[KEY].cat.codes.to_numpy()
    assert models["gene_mlp"]["n_train"] == len(stratified_rows(labels, 20, 0)) == 19
    assert models["gene_mlp"]["accuracy_mean"] > 0.8
    assert all(m["n_test"] == 37 for m in models.values())


def test_full_reference_keeps_the_listed_model_order_and_split(
    splits: Splits,
) -> None:
    """Gene models run after the feature ones, but come back in the listed
    order; ``scored_on`` says which held-out split was scored."""
    params = PARAMS.model_copy(
        update={"models": ["gene_mlp", "f_head"], "split": "validation"}
    )
    reference = _reference(splits, params)
    assert list(reference["models"]) == ["gene_mlp", "f_head"]
    assert reference["scored_on"] == "validation"


def test_the_f_head_reference_reads_a_capped_sample_of_lazy_latents(
    splits: Splits,
) -> None:
    """On lazy embeddings the F-head reference reads only its stratified
    sample of ``f_head.reference_max_cells`` training cells, and the test
    latents one row block at a time, once."""
    lazy = {}
    for name in ("train", "test"):
        lazy[name], lazy[f"{name}_reads"] = spied(
            getattr(splits, f"{name}_embeddings"), chunk_rows=8
        )
    head = PARAMS.f_head.model_copy(update={"reference_max_cells": 20})
    params = PARAMS.model_copy(update={"models": ["f_head"], "f_head": head})
    reference = scoring.full_reference(
        splits.train,
        splits.test,
        lazy["train"],
        lazy["test"],
        evaluate=params.for_reference(),
        label_key=KEY,
    )
    labels = splits.train.obs[KEY].cat.codes.to_numpy()
    assert reference["models"]["f_head"]["n_train"] == len(
        stratified_rows(labels, 20, 0)
    )
    assert set(lazy["test_reads"].counts.values()) == {1}
    assert sum(lazy["train_reads"].counts.values()) == len(lazy["train"].X.chunks[0])


def test_full_reference_refuses_embeddings_of_other_cells(splits: Splits) -> None:
    other = splits.test_embeddings[::-1].copy()
    with pytest.raises(ValueError, match="test_embeddings do not match test_adata"):
        scoring.full_reference(
            splits.train,
            splits.test,
            splits.train_embeddings,
            other,
            evaluate=PARAMS.for_reference(),
            label_key=KEY,
        )


# --------------------------------------------------- synthetic_model_metrics


def test_retention_is_synthetic_accuracy_over_the_full_split(
    splits: Splits, reference: dict
) -> None:
    synthetic = _gene_set(splits, [0, 1, 15, 16, 27, 28])
    metrics = _synthetic_metrics(splits, synthetic, reference)
    assert metrics["skipped"] == {} and metrics["scored_on"] == "test"
    for name in ("f_head", "gene_mlp"):
        result = metrics["models"][name]
        full = reference["models"][name]["accuracy_mean"]
        assert result["n_train"] == 6 and result["n_test"] == 37
        assert result["retention"] == pytest.approx(result["accuracy_mean"] / full)
        assert result["full"]["accuracy_mean"] == full
    # a model the reference lacks: scored, no retention
    partial = {**reference, "models": {"f_head": reference["models"]["f_head"]}}
    metrics = _synthetic_metrics(splits, synthetic, partial)
    assert metrics["models"]["gene_mlp"]["retention"] is None
    assert metrics["models"]["gene_mlp"]["full"] is None
    assert metrics["models"]["f_head"]["retention"] is not None


def test_feature_only_set_scores_the_f_head_alone(
    splits: Splits, reference: dict
) -> None:
    metrics = _synthetic_metrics(splits, _feature_set(splits), reference)
    assert metrics["models"]["gene_mlp"] is None
    assert "feature-only" in metrics["skipped"]["gene_mlp"]
    head = metrics["models"]["f_head"]
    assert head["n_train"] == 3
    full = reference["models"]["f_head"]["accuracy_mean"]
    assert head["retention"] == pytest.approx(head["accuracy_mean"] / full)


def test_the_references_classes_are_scored(splits: Splits, reference: dict) -> None:
    """A set without ``type_2`` is scored on the reference's 3 classes."""
    synthetic = _gene_set(splits, [0, 1, 15, 16])
    metrics = _synthetic_metrics(splits, synthetic, reference)
    for name in ("f_head", "gene_mlp"):
        result = metrics["models"][name]
        assert result["accuracy_mean"] <= 27 / 37  # 10 type_2 test cells missed
        assert result["macro_f1_mean"] <= 2 / 3 + 1e-9


def test_held_out_split_is_the_one_evaluate_names(
    splits: Splits, reference: dict
) -> None:
    params = PARAMS.model_copy(update={"split": "validation", "models": ["f_head"]})
    metrics = _synthetic_metrics(splits, _feature_set(splits), reference, params)
    assert metrics["scored_on"] == "validation"
    assert list(metrics["models"]) == ["f_head"]


# ---------------------------------------------------------- fidelity, privacy


def test_fidelity_aligns_genes_and_skips_them_for_feature_sets(
    splits: Splits,
) -> None:
    kwargs = {"label_key": KEY, "params": PARAMS.fidelity}
    # the whole training split, genes reversed: the real class moments exactly
    whole = _gene_set(splits, list(range(splits.train.n_obs)))
    report = scoring.fidelity(
        whole,
        _embed(splits, whole),
        splits.train,
        splits.train_embeddings,
        **kwargs,
    )
    assert report["mean_correlation"]["mean"] == pytest.approx(1.0, abs=1e-5)
    assert report["markers"]["overlap"]["mean"] == pytest.approx(1.0)
    features = _feature_set(splits)
    report = scoring.fidelity(
        features,
        _embed(splits, features),
        splits.train,
        splits.train_embeddings,
        **kwargs,
    )
    assert report["mean_correlation"] is None and report["markers"] is None
    assert report["zero_fraction"]["synthetic"] is None
    assert report["mmd"]["mmd"] >= 0.0


def _privacy(splits: Splits, synthetic: ad.AnnData) -> dict:
    return scoring.privacy(
        synthetic,
        _embed(splits, synthetic),
        train=splits.train,
        train_embeddings=splits.train_embeddings,
        heldout=splits.test,
        heldout_embeddings=splits.test_embeddings,
        params=PRIVACY,
        label_key=KEY,
    )


def test_privacy_flags_copies_in_gene_space_and_f_space_alone(
    splits: Splits,
) -> None:
    copies = _privacy(splits, _gene_set(splits, [0, 1, 15, 16, 27, 28]))
    assert copies["gene_space"]["exact_copies"] == 6  # found across gene orders
    assert copies["guard"]["passes"] is False
    features = _privacy(splits, _feature_set(splits))
    assert features["gene_space"] is None
    assert features["f_space"]["exact_copies"] == 0  # class means copy no cell
    assert features["n_synthetic"] == 3


def _space(ratio: float, tpr: float, auc: float, exact: int, near: int) -> dict:
    return {
        "nearest_record_ratio": ratio,
        "attack_tpr_at_1fpr": tpr,
        "attack_auc": auc,
        "exact_copies": exact,
        "near_copies": near,
    }


def test_privacy_summary_wording() -> None:
    report = {
        "f_space": _space(1.234, 0.0125, 0.5, 0, 1),
        "gene_space": _space(0.9, 0.5, 0.875, 2, 0),
        "guard": {"passes": False, "judged": "ratio, attack, copies"},
    }
    assert scoring.privacy_summary(report) == (
        "f-space nearest-record ratio 1.23, attack TPR@1%FPR 0.013 (AUC 0.50), "
        "copies 0+1 near; gene-space nearest-record ratio 0.90, attack "
        "TPR@1%FPR 0.500 (AUC 0.88), copies 2+0 near -> FAILS the guard "
        "(judged: ratio, attack, copies)"
    )
    feature_only = {
        "f_space": _space(1.0, 0.0, 0.5, 0, 0),
        "gene_space": None,
        "guard": {"passes": True, "judged": "copies"},
    }
    line = scoring.privacy_summary(feature_only)
    assert "gene-space" not in line
    assert line.endswith("-> passes the guard (judged: copies)")


# ------------------------------------------------------------ metrics document


def _model_result(accuracy: float, retention: float | None) -> dict:
    return {
        "accuracy_mean": accuracy,
        "accuracy_std": 0.05,
        "balanced_accuracy_mean": 0.5,
        "balanced_accuracy_std": 0.0,
        "macro_f1_mean": 0.25,
        "macro_f1_std": 0.0,
        "per_init": [
            {
                "accuracy": accuracy,
                "balanced_accuracy": 0.5,
                "macro_f1": 0.25,
                "train_accuracy": 1.0,
            }
        ],
        "n_train": 6,
        "n_test": 37,
        "retention": retention,
        "full": None if retention is None else {"accuracy_mean": 0.8},
    }


FIDELITY = {
    "mean_correlation": {"mean": 0.9},
    "variance_correlation": None,
    "markers": {"overlap": {"mean": 0.5}},
    "mmd": {"mmd": 0.01234},
}
PRIVACY_REPORT = {
    "f_space": _space(1.0, 0.0, 0.5, 0, 0),
    "gene_space": None,
    "guard": {"passes": True, "judged": "copies"},
}


def _document(synthetic: ad.AnnData, model_metrics: dict) -> dict:
    return scoring.metrics_document(
        synthetic, model_metrics, FIDELITY, PRIVACY_REPORT, label_key=KEY
    )


def test_metrics_document_layout_and_log_lines(
    splits: Splits, caplog: pytest.LogCaptureFixture
) -> None:
    synthetic = _gene_set(splits, [0, 1, 2, 15, 16, 27])
    synthetic.obs["scdd_method"] = "herding"
    synthetic.uns["scdd"] = {"distill": {"params": {"method": "kmeans", "spc": 2}}}
    model_metrics = {
        "models": {"f_head": _model_result(0.6, 0.75), "gene_mlp": None},
        "skipped": {"gene_mlp": "no genes here"},
        "scored_on": "validation",
    }
    with caplog.at_level(logging.INFO, logger="scdd.evaluation.scoring"):
        doc = _document(synthetic, model_metrics)
    assert set(doc) == {
        "method",
        "spc",
        "label_key",
        "n_synthetic",
        "feature_only",
        "scored_on",
        "models",
        "skipped",
        "fidelity",
        "privacy",
    }
    assert doc["method"] == "herding"  # the cells' own column wins
    assert doc["spc"] == 2  # recorded, not inferred (3 cells of type_0)
    assert (doc["label_key"], doc["n_synthetic"]) == (KEY, 6)
    assert doc["feature_only"] is False and doc["scored_on"] == "validation"
    assert doc["skipped"] == {"gene_mlp": "no genes here"}
    assert doc["fidelity"] is FIDELITY and doc["privacy"] is PRIVACY_REPORT
    head = doc["models"]["f_head"]
    assert "per_init" not in head and head["accuracy_per_init"] == [0.6]
    assert doc["models"]["gene_mlp"] is None
    lines = [r.getMessage() for r in caplog.records]
    assert (
        "f_head: accuracy 0.600 ± 0.050 (full split 0.800, retention 0.750), "
        "balanced 0.500, macro-F1 0.250"
    ) in lines
    assert "gene_mlp: skipped (no genes here)" in lines
    (summary,) = [line for line in lines if line.startswith("fidelity:")]
    assert summary.startswith(
        "fidelity: mean corr 0.900, var corr n/a, marker overlap 0.500, MMD 0.0123; "
        "privacy: f-space nearest-record ratio 1.00"
    )


def test_metrics_document_falls_back_to_recorded_and_inferred_values(
    splits: Splits, caplog: pytest.LogCaptureFixture
) -> None:
    synthetic = _feature_set(splits)
    synthetic = ad.concat([synthetic, synthetic[:1]], index_unique="-")
    model_metrics = {
        "models": {"f_head": _model_result(0.5, None)},
        "skipped": {},
    }
    with caplog.at_level(logging.INFO, logger="scdd.evaluation.scoring"):
        doc = _document(synthetic, model_metrics)
    assert doc["method"] == "unknown" and doc["spc"] == 2  # 2 cells of type_0
    assert doc["feature_only"] is True and doc["scored_on"] == "test"
    assert any(
        "(full split n/a, retention n/a)" in r.getMessage() for r in caplog.records
    )
    synthetic.uns["scdd"] = {"distill": {"params": {"method": "featdistill"}}}
    assert _document(synthetic, model_metrics)["method"] == "featdistill"
