from pathlib import Path

import pytest
from kedro.io import DatasetError

from scdd.datasets import FoundationModelDataset
from scdd.models.foundation import (
    FoundationArchitectureParams,
    FoundationModel,
    build_autoencoder,
)


def _model(n_genes: int = 12) -> FoundationModel:
    enc, dec = build_autoencoder(
        n_genes, FoundationArchitectureParams(latent_dim=4, hidden_dim=[8])
    )
    return FoundationModel(
        enc, dec, [f"g{i}" for i in range(n_genes)], ["a", "b"]
    ).freeze()


def test_save_load_exists(tmp_path: Path) -> None:
    ds = FoundationModelDataset(path=str(tmp_path / "fm"))
    assert not ds.exists()
    ds.save(_model())
    assert ds.exists()
    back = ds.load()
    assert back.gene_order[0] == "g0" and back.latent_dim == 4
    assert not back.encoder.training
    assert back.min_gene_overlap == 500  # the default, stored with the model


def test_gene_floor_round_trips(tmp_path: Path) -> None:
    ds = FoundationModelDataset(path=str(tmp_path / "fm"))
    model = _model()
    model.min_gene_overlap = 10
    ds.save(model)
    assert ds.load().min_gene_overlap == 10


def test_failed_save_keeps_previous_model(tmp_path: Path, monkeypatch) -> None:
    ds = FoundationModelDataset(path=str(tmp_path / "fm"))
    ds.save(_model())

    def crash(model, path):
        (path / "encoder.ckpt").write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr("scdd.datasets.foundation_model_dataset.save_model_dir", crash)
    with pytest.raises(DatasetError, match="disk full"):
        ds.save(_model(20))
    assert ds.load().gene_order == [f"g{i}" for i in range(12)]
    assert [p.name for p in tmp_path.iterdir()] == ["fm"]


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="No foundation model directory"):
        FoundationModelDataset(path=str(tmp_path / "none")).load()
