"""The benchmark table functions on hand-made runs."""

from __future__ import annotations

import pandas as pd
import pytest

from scdd.benchmark.table import (
    COLUMNS,
    benchmark_markdown,
    benchmark_table,
    summarise_runs,
)

REFERENCE = {
    "models": {
        "f_head": {
            "accuracy_mean": 0.8,
            "accuracy_std": 0.01,
            "balanced_accuracy_mean": 0.7,
            "macro_f1_mean": 0.6,
        }
    }
}


def _runs() -> pd.DataFrame:
    rows = []
    for method, spc, accs in (
        ("random_real", 1, (0.4, 0.6)),
        ("random_real", 10, (0.7, 0.7)),
        ("scdd", 1, (0.6, 0.8)),
    ):
        for draw, acc in enumerate(accs):
            rows.append(
                {
                    "label_key": "cell_type",
                    "model": "f_head",
                    "method": method,
                    "spc": spc,
                    "draw": draw,
                    "accuracy_mean": acc,
                    "accuracy_std": 0.02,
                    "balanced_accuracy_mean": acc - 0.1,
                    "macro_f1_mean": acc - 0.2,
                    "retention": acc / 0.8,
                    "seconds": 1.0 + draw,
                    "distill_loss": 0.5 + draw if method == "scdd" else float("nan"),
                    "count_depth": 4.0 if method == "scdd" and draw else None,
                    "ratio_gene": 0.0 if method == "random_real" else 1.0 - draw / 10,
                    "passes_guard": float(method == "scdd"),
                }
            )
    return pd.DataFrame(rows)


def test_summary_has_mean_and_population_std_over_draws() -> None:
    table = summarise_runs(_runs())
    assert list(table.columns) == list(COLUMNS)
    assert list(zip(table.method, table.spc, strict=True)) == [
        ("random_real", 1),
        ("random_real", 10),
        ("scdd", 1),
    ]
    row = table.iloc[0]
    assert row.n_draws == 2
    assert row.accuracy_mean == pytest.approx(0.5)
    assert row.accuracy_std == pytest.approx(0.1)  # ddof=0
    assert row.retention_mean == pytest.approx(0.625)
    assert row.retention_std == pytest.approx(0.125)
    assert row.head_std == pytest.approx(0.02)
    assert row.seconds_mean == pytest.approx(1.5)
    assert pd.isna(row.distill_loss_mean) and pd.isna(row.count_depth_mean)
    assert row.ratio_gene_mean == 0.0 and row.passes_guard_mean == 0.0
    assert pd.isna(row.ratio_f_mean)  # a figure the runs lack
    scdd = table.iloc[2]
    assert scdd.distill_loss_mean == pytest.approx(1.0)
    assert scdd.count_depth_mean == pytest.approx(4.0)  # the draw that kept one
    assert scdd.ratio_gene_mean == pytest.approx(0.95)
    assert scdd.passes_guard_mean == 1.0
    assert table.iloc[1].accuracy_std == pytest.approx(0.0)


def test_table_puts_the_full_row_first_and_renders_markdown() -> None:
    table = benchmark_table(_runs(), {"cell_type": REFERENCE}, ["f_head"])
    assert table.method.tolist() == ["full", "random_real", "random_real", "scdd"]
    full = table.iloc[0]
    assert pd.isna(full.spc) and full.accuracy_mean == 0.8
    assert full.retention_mean == 1.0
    md = benchmark_markdown(table, draws=2, scored_on="validation")
    assert "Scored on the real **validation** split." in md
    assert "## Label `cell_type`" in md
    assert "| Method | SPC 1 | SPC 10 |" in md
    assert "| full | 80.0 ± 0.0 | 80.0 ± 0.0 |" in md
    assert "| random_real | 50.0 ± 10.0 | 70.0 ± 0.0 |" in md  # accuracy
    assert "| random_real | 62.5 ± 12.5 | 87.5 ± 0.0 |" in md  # retention
    assert "| scdd | 70.0 ± 10.0 | – |" in md  # SPC 10 not run
    assert md.count("### f_head") == 2
    # one row per method in each of the two tables
    for method in ("full", "random_real", "scdd"):
        assert md.count(f"| {method} |") == 2


def test_no_runs_gives_the_full_rows_only() -> None:
    table = benchmark_table(pd.DataFrame(), {"x": REFERENCE}, ["f_head", "gene_mlp"])
    assert table.method.tolist() == ["full"]
    assert summarise_runs(pd.DataFrame()).empty
    assert "full" in benchmark_markdown(table)


def test_label_columns_get_their_own_sections() -> None:
    runs = pd.concat([_runs(), _runs().assign(label_key="donor", accuracy_mean=0.9)])
    references = {"cell_type": REFERENCE, "donor": REFERENCE}
    table = benchmark_table(runs, references, ["f_head"])
    assert table.label_key.tolist() == ["cell_type"] * 4 + ["donor"] * 4
    donor = table[(table.label_key == "donor") & (table.method == "scdd")]
    assert donor.accuracy_mean.item() == pytest.approx(0.9)
    md = benchmark_markdown(table)
    assert md.index("## Label `cell_type`") < md.index("## Label `donor`")
    assert "| scdd | 90.0 ± 0.0 | – |" in md
