import numpy as np
import pandas as pd
import pytest

from scdd.sampling import (
    capped_class_rows,
    class_index,
    label_strings,
    stratified_rows,
)

LABELS = np.repeat(["a", "b", "c"], [700, 290, 10])


def test_small_inputs_come_back_whole() -> None:
    np.testing.assert_array_equal(stratified_rows(LABELS, None), np.arange(1000))
    np.testing.assert_array_equal(stratified_rows(LABELS, 1000), np.arange(1000))


def test_a_cap_keeps_every_class_in_proportion() -> None:
    rows = stratified_rows(LABELS, 100, seed=3)
    assert 100 <= len(rows) <= 103
    assert np.all(np.diff(rows) > 0) and len(set(rows)) == len(rows)
    kept = dict(zip(*np.unique(LABELS[rows], return_counts=True), strict=True))
    assert kept == {"a": 70, "b": 29, "c": 1}
    tiny = stratified_rows(LABELS, 2, seed=3)
    assert set(LABELS[tiny]) == {"a", "b", "c"}


def test_the_sample_is_seeded() -> None:
    np.testing.assert_array_equal(
        stratified_rows(LABELS, 50, seed=1), stratified_rows(LABELS, 50, seed=1)
    )
    assert not np.array_equal(
        stratified_rows(LABELS, 50, seed=1), stratified_rows(LABELS, 50, seed=2)
    )
    with pytest.raises(ValueError, match="max_cells"):
        stratified_rows(LABELS, 0)


def test_capped_class_rows_samples_only_classes_above_the_cap() -> None:
    labels = np.repeat(["a", "b", "c"], [5, 30, 12])
    assert capped_class_rows(labels, 30) is None
    rows = capped_class_rows(labels, 10, seed=1)
    assert np.all(np.diff(rows) > 0)
    kept = pd.Series(labels[rows]).value_counts()
    assert kept.to_dict() == {"a": 5, "b": 10, "c": 10}
    assert np.array_equal(rows, capped_class_rows(labels, 10, seed=1))
    assert not np.array_equal(rows, capped_class_rows(labels, 10, seed=2))


def test_class_index_is_numpys_unique() -> None:
    labels = np.array(["b", "a", "c", "a", "b", "b"], dtype=object)
    for got, expected in zip(
        class_index(labels),
        np.unique(labels, return_inverse=True, return_counts=True),
        strict=True,
    ):
        np.testing.assert_array_equal(got, expected)


def test_label_strings_share_one_string_per_class() -> None:
    column = pd.Series(pd.Categorical(["t", None, "b", "t"], categories=["t", "b"]))
    got = label_strings(column)
    assert got.tolist() == ["t", "nan", "b", "t"]
    assert got[0] is got[3]  # one object per class, not one per cell
    assert got.tolist() == column.astype(str).tolist()
    numbers = pd.Series([3, 1, 3])
    assert label_strings(numbers).tolist() == ["3", "1", "3"]
