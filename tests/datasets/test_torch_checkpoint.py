import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from kedro.io import DatasetError, Version

from scdd.datasets import TorchCheckpointDataset


def _checkpoint() -> dict:
    return {
        "state_dict": {"w": torch.arange(6.0).reshape(2, 3)},
        "config": {"width": 8, "schedule": "linear", "n_classes": [3, 2]},
        "categories": {"cell_type": ["a", "b", "c"]},
        "version": 1,
        "note": None,
    }


def test_round_trip(tmp_path: Path) -> None:
    ds = TorchCheckpointDataset(filepath=str(tmp_path / "m.pt"))
    assert not ds.exists()
    ds.save(_checkpoint())
    assert ds.exists()
    back = ds.load()
    torch.testing.assert_close(
        back["state_dict"]["w"], _checkpoint()["state_dict"]["w"]
    )
    assert back["config"] == _checkpoint()["config"]
    assert back["categories"] == _checkpoint()["categories"]


def test_versioned_saves_keep_both(tmp_path: Path) -> None:
    path = str(tmp_path / "v.pt")
    first, second = "2026-01-01T00.00.00.000Z", "2026-01-02T00.00.00.000Z"
    TorchCheckpointDataset(filepath=path, version=Version(None, first)).save(
        {"step": 1}
    )
    TorchCheckpointDataset(filepath=path, version=Version(None, second)).save(
        {"step": 2}
    )
    latest = TorchCheckpointDataset(filepath=path, version=Version(None, None))
    assert latest.load() == {"step": 2}
    old = TorchCheckpointDataset(filepath=path, version=Version(first, None))
    assert old.load() == {"step": 1}


class _Payload:
    """Any class: unpickling it could run arbitrary code."""


def test_pickled_object_is_refused_on_load(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": _Payload()}, path)
    with pytest.raises(DatasetError, match=r"evil\.pt.*not a safe checkpoint"):
        TorchCheckpointDataset(filepath=str(path)).load()


def test_pickle_file_is_refused_on_load(tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    path.write_bytes(pickle.dumps(_Payload(), protocol=2))
    with pytest.raises(DatasetError, match=r"plain\.pt.*not a safe checkpoint"):
        TorchCheckpointDataset(filepath=str(path)).load()


@pytest.mark.parametrize(
    "bad", [np.arange(3), np.float64(1.0), _Payload(), {("a", 1): 1}]
)
def test_unsafe_values_are_refused_before_writing(tmp_path: Path, bad) -> None:
    ds = TorchCheckpointDataset(filepath=str(tmp_path / "m.pt"))
    with pytest.raises(DatasetError, match="checkpoint"):
        ds.save({"config": {"x": [bad]}})
    assert list(tmp_path.iterdir()) == []


def test_failed_save_leaves_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.pt"
    ds = TorchCheckpointDataset(filepath=str(path))
    ds.save({"step": 1})
    before = path.read_bytes()

    def crash(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(DatasetError, match="disk full"):
        ds.save({"step": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="No such checkpoint"):
        TorchCheckpointDataset(filepath=str(tmp_path / "none.pt")).load()
