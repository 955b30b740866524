"""``params:benchmark``: the grid it picks from and its own rules."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from scdd import params
from scdd.benchmark import runs
from scdd.benchmark.config import BENCHMARK_METHODS, BENCHMARK_SPCS, BenchmarkParams
from scdd.distill.names import METHODS

BENCHMARK = {
    "methods": ["random_real", "dm"],
    "spcs": [2],
    "draws": 2,
    "models": ["f_head"],
    "steps": 3,
}


def test_grid_is_every_method_but_full() -> None:
    assert BENCHMARK_METHODS == tuple(m for m in METHODS if m != "full")
    assert BENCHMARK_SPCS == (1, 2, 5, 10)
    # the runs module and scdd.params see the same grid and group
    assert runs.BENCHMARK_METHODS is BENCHMARK_METHODS
    assert runs.BENCHMARK_SPCS is BENCHMARK_SPCS
    assert params.GROUPS["benchmark"] is params.BenchmarkParams is BenchmarkParams


def test_defaults_pick_from_the_grid() -> None:
    bench = BenchmarkParams()
    assert set(bench.methods) <= set(BENCHMARK_METHODS)
    assert bench.spcs == list(BENCHMARK_SPCS)
    assert (bench.draws, bench.models, bench.steps) == (2, ["f_head"], None)
    assert bench.label_keys is None


def test_unknown_method_or_spc_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"methods\.0\n.*'scdd' \[.*'full'"):
        BenchmarkParams(**{**BENCHMARK, "methods": ["full"]})
    with pytest.raises(ValidationError, match=r"spcs\.0\n.*1, 2, 5 or 10 \[.*=3,"):
        BenchmarkParams(**{**BENCHMARK, "spcs": [3]})
    with pytest.raises(ValidationError, match="draws"):
        BenchmarkParams(**{**BENCHMARK, "draws": 0})
    with pytest.raises(ValidationError, match="models"):
        BenchmarkParams(**{**BENCHMARK, "models": []})
    with pytest.raises(ValidationError, match=r"methods lists \['dm'\] twice"):
        BenchmarkParams(**{**BENCHMARK, "methods": ["dm", "dm"]})


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("spcs", [2, 2], r"benchmark\.spcs lists \[2\] twice"),
        ("models", ["f_head", "f_head"], r"benchmark\.models lists \['f_head'\] twice"),
        ("models", ["svm"], r"models\.0\n.*'f_head'"),
        ("spcs", [], r"spcs\n.*at least 1 item"),
        ("steps", 0, r"steps\n.*greater than or equal to 1"),
        ("label_keys", [""], r"label_keys\.0\n.*at least 1 character"),
        ("draw", 3, r"\['draw'\] \(did you mean 'draws'\?\)"),
    ],
)
def test_bad_value_is_refused(key: str, value: object, expected: str) -> None:
    with pytest.raises(ValidationError, match=expected):
        BenchmarkParams(**{**BENCHMARK, key: value})


def test_label_columns_default_to_the_main_label() -> None:
    assert BenchmarkParams(label_keys=None).label_columns("cell_type") == ["cell_type"]
    assert BenchmarkParams(label_keys="coarse").label_columns("x") == ["coarse"]
    with pytest.raises(ValidationError, match="twice"):
        BenchmarkParams(label_keys=["a", "a"])
    both = BenchmarkParams(label_keys=["coarse", "cell_type"])
    assert both.label_columns("cell_type") == ["coarse", "cell_type"]


def test_group_is_immutable() -> None:
    bench = BenchmarkParams()
    with pytest.raises(ValidationError, match="frozen"):
        bench.draws = 3
