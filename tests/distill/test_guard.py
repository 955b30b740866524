"""The privacy guard: flag, refuse with enforce, record in uns (h5ad-safe)."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

from scdd.distill.guard import PrivacyGuardError, apply_guard
from scdd.metrics.privacy import PrivacyParams


def _report(passes: bool, genes: bool = True) -> dict:
    figures = {
        "nearest_record_ratio": 1.0 if passes else 0.2,
        "attack_tpr_at_1fpr": 0.01 if passes else 0.3,
        "exact_copies": 0 if passes else 4,
        "near_copies": 0,
    }
    return {
        "n_synthetic": 4,
        "n_sample": 10,
        "f_space": figures,
        "gene_space": figures if genes else None,
        "guard": {
            "judged": "ratio, attack, copies",
            "passes": passes,
            "failures": [] if passes else ["gene_space: 4 exact copies", "ratio"],
            "min_ratio": 0.9,
        },
    }


def _synthetic(real_cells: bool) -> ad.AnnData:
    adata = ad.AnnData(np.ones((4, 3), dtype=np.float32))
    adata.uns["scdd"] = {"real_cells": real_cells}
    return adata


def test_a_failing_set_is_flagged_and_written(tmp_path: Path, caplog) -> None:
    synthetic = _synthetic(real_cells=False)
    with caplog.at_level(logging.WARNING):
        apply_guard(synthetic, _report(passes=False, genes=False), PrivacyParams())
    assert "FAILS the privacy guard" in caplog.text
    privacy = synthetic.uns["scdd"]["privacy"]
    assert privacy["guard"]["passes"] is False and privacy["guarded"] is True
    assert privacy["gene_space"] is None  # feature-only: no gene space
    synthetic.write_h5ad(tmp_path / "syn.h5ad")
    back = ad.read_h5ad(tmp_path / "syn.h5ad").uns["scdd"]["privacy"]
    assert list(back["guard"]["failures"]) == ["gene_space: 4 exact copies", "ratio"]


def test_enforce_refuses_a_failing_set_with_the_fix() -> None:
    with pytest.raises(PrivacyGuardError, match="enforce to false"):
        apply_guard(
            _synthetic(real_cells=False),
            _report(passes=False),
            PrivacyParams(enforce=True),
        )


def test_an_auc_failure_names_its_cause_and_the_fix(caplog) -> None:
    report = _report(passes=False)
    report["guard"]["failures"] = ["gene_space membership attack AUC 0.700 > 0.6"]
    with caplog.at_level(logging.WARNING):
        apply_guard(_synthetic(real_cells=False), report, PrivacyParams())
    assert "class means" in caplog.text and "distill.spc" in caplog.text
    with pytest.raises(PrivacyGuardError, match="smaller distill.spc"):
        apply_guard(_synthetic(False), report, PrivacyParams(enforce=True))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        apply_guard(_synthetic(False), _report(passes=False), PrivacyParams())
    assert "class means" not in caplog.text


def test_a_model_attack_failure_names_its_own_cause(caplog) -> None:
    report = _report(passes=False)
    report["guard"]["failures"] = ["model membership attack AUC 0.780 > 0.6"]
    with caplog.at_level(logging.WARNING):
        apply_guard(_synthetic(real_cells=False), report, PrivacyParams())
    assert "distill.gene_residual: 0" in caplog.text
    assert "smaller distill.spc" not in caplog.text


def test_real_cells_are_measured_but_not_guarded(caplog) -> None:
    synthetic = _synthetic(real_cells=True)
    with caplog.at_level(logging.INFO):
        apply_guard(synthetic, _report(passes=False), PrivacyParams(enforce=True))
    assert "not guarded" in caplog.text
    assert synthetic.uns["scdd"]["privacy"]["guarded"] is False


def test_a_passing_set_is_recorded() -> None:
    synthetic = _synthetic(real_cells=False)
    apply_guard(synthetic, _report(passes=True), PrivacyParams(enforce=True))
    assert synthetic.uns["scdd"]["privacy"]["guard"]["passes"] is True
