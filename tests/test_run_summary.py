import anndata as ad
import numpy as np
import pandas as pd

from scdd.run_summary import (
    describe_synthetic,
    model_table,
    privacy_table,
    privacy_verdict,
    summary_text,
)

SPACE = {
    "nearest_record_ratio": 0.98,
    "attack_tpr_at_1fpr": 0.012,
    "attack_auc": 0.51,
    "exact_copies": 0,
    "near_copies": 1,
}
METRICS = {
    "scored_on": "validation",
    "models": {
        "f_head": {
            "accuracy_mean": 0.85,
            "accuracy_std": 0.01,
            "retention": 0.94,
            "full": {"accuracy_mean": 0.9},
        },
        "gene_mlp": {"accuracy_mean": 0.8, "accuracy_std": 0.0, "retention": 0.9},
    },
    "privacy": {
        "f_space": SPACE,
        "gene_space": {**SPACE, "near_copies": 0},
        "guard": {"passes": False, "judged": "copies", "failures": ["1 near copy"]},
    },
}


def _synthetic(real: bool = False) -> ad.AnnData:
    synthetic = ad.AnnData(
        np.zeros((5, 3), dtype=np.float32),
        obs=pd.DataFrame({"cell_type": pd.Categorical(list("aabbb"))}),
    )
    synthetic.uns["scdd"] = {"real_cells": real}
    return synthetic


def test_model_table_gives_accuracy_full_split_and_retention() -> None:
    table = model_table(METRICS)
    assert list(table.columns) == ["accuracy", "± std", "full split", "retention"]
    assert table.loc["f_head"].tolist() == [85.0, 1.0, 90.0, 0.94]
    assert np.isnan(table.loc["gene_mlp", "full split"])  # no full-split figure


def test_privacy_table_and_verdict() -> None:
    table = privacy_table(METRICS)
    assert list(table.index) == ["f space", "gene space"]
    assert table.loc["f space", "copies"] == 1
    assert privacy_verdict(METRICS) == "FAILS the guard (judged: copies): 1 near copy"
    assert privacy_verdict({}) == "not measured"


def test_describe_synthetic_counts_classes_and_says_if_real() -> None:
    assert describe_synthetic(_synthetic(), "cell_type", "scdd") == (
        "5 cells, 2 classes x 2-3 per class (scdd), real cells: no"
    )
    assert describe_synthetic(_synthetic(True), "cell_type", "herding").endswith(
        "(herding), real cells: yes"
    )


def test_summary_text_lists_what_the_run_made() -> None:
    text = summary_text(
        data={"input": "in.h5ad", "label_key": "cell_type"},
        method="scdd",
        synthetic=(_synthetic(), "out/synthetic.h5ad"),
        metrics=METRICS,
        files={"umap_plot": "data/08_reporting/umap.png"},
    )
    lines = text.splitlines()
    assert lines[0] == "Input: in.h5ad (label: cell_type)"
    assert lines[1].startswith("Synthetic set: out/synthetic.h5ad: 5 cells")
    assert "Scored on the validation split" in lines[2]
    assert any(line.startswith("f_head") for line in lines)
    assert "Privacy: FAILS the guard" in text
    assert lines[-1] == "umap_plot: data/08_reporting/umap.png"
    # a distill-only run: the guard's verdict recorded with the set
    distilled = _synthetic()
    distilled.uns["scdd"]["privacy"] = {"guard": {"passes": True, "judged": "copies"}}
    lines = summary_text(
        data={"input": "in.h5ad", "label_key": "cell_type"},
        method="scdd",
        synthetic=(distilled, "out/synthetic.h5ad"),
        metrics=None,
        files={},
    ).splitlines()
    assert lines[-1] == (
        "Privacy (against the validation split): passes the guard (judged: copies)"
    )
    # a run that made no synthetic set and scored nothing
    short = summary_text(
        data={"input": "in.h5ad", "label_key": "cell_type"},
        method="scdd",
        synthetic=None,
        metrics=None,
        files={},
    )
    assert short == "Input: in.h5ad (label: cell_type)"
