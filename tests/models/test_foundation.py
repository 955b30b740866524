from pathlib import Path

import numpy as np
import pytest
import torch
from scimilarity import CellEmbedding

from scdd.models.foundation import (
    TrainConfig,
    align_genes,
    batch_hard_triplet_loss,
    embed_cells,
    load_model_dir,
    save_model_dir,
    train_foundation,
)
from scdd.preprocessing import log_normalise

ARCH = {"hidden_dim": [64, 32], "latent_dim": 16}


@pytest.fixture(scope="module")
def trained():
    from tests.conftest import make_counts_adata

    adata = log_normalise(make_counts_adata())
    labels = adata.obs["cell_type"].cat.codes.to_numpy()
    model, history = train_foundation(
        adata.X,
        gene_order=list(adata.var_names),
        labels=labels,
        label_names=list(adata.obs["cell_type"].cat.categories),
        architecture=ARCH,
        config=TrainConfig(epochs=8, batch_size=32),
        seed=0,
        progress=False,
    )
    return adata, model, history


def test_training_history_and_frozen_model(trained) -> None:
    _, model, history = trained
    assert list(history.columns) == ["epoch", "train_loss", "val_loss"]
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert not model.encoder.training and not model.decoder.training
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert model.hyperparameters["label_blind"] is True


def test_a_budget_of_cells_seen_ends_training_before_the_epochs(trained) -> None:
    adata = trained[0]  # 90 cells: 81 trained on, 9 held out
    _, history = train_foundation(
        adata.X,
        gene_order=list(adata.var_names),
        architecture=ARCH,
        config=TrainConfig(epochs=50, batch_size=32, patience=50, max_cells_seen=200),
        seed=0,
        progress=False,
    )
    assert len(history) == 3  # 81 + 81 + 38 cells


def test_training_is_seeded(trained) -> None:
    adata, model, _ = trained
    again, _ = train_foundation(
        adata.X,
        gene_order=list(adata.var_names),
        architecture=ARCH,
        config=TrainConfig(epochs=8, batch_size=32),
        seed=0,
        progress=False,
    )
    for a, b in zip(
        model.encoder.state_dict().values(),
        again.encoder.state_dict().values(),
        strict=True,
    ):
        torch.testing.assert_close(a, b)


def test_embeddings_are_unit_norm_and_chunk_independent(trained) -> None:
    adata, model, _ = trained
    whole = embed_cells(model.encoder, adata.X, chunk_size=10_000, progress=False)
    chunked = embed_cells(model.encoder, adata.X, chunk_size=7, progress=False)
    assert whole.shape == (adata.n_obs, 16)
    np.testing.assert_allclose(np.linalg.norm(whole, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(whole, chunked, atol=1e-6)


def test_scimilarity_reads_our_directory(trained, tmp_path: Path) -> None:
    adata, model, _ = trained
    save_model_dir(model, tmp_path)
    ce = CellEmbedding(model_path=str(tmp_path))
    assert ce.gene_order == list(adata.var_names)
    theirs = ce.get_embeddings(adata.X)
    ours = embed_cells(model.encoder, adata.X, progress=False)
    np.testing.assert_allclose(theirs, ours, atol=1e-5)
    assert ce.int2label[0] == "type_0"


def test_directory_round_trip(trained, tmp_path: Path) -> None:
    adata, model, _ = trained
    save_model_dir(model, tmp_path)
    back = load_model_dir(tmp_path)
    assert back.gene_order == model.gene_order
    assert back.label_ints == model.label_ints
    x = torch.from_numpy(adata.X[:5].toarray())
    torch.testing.assert_close(
        back.decoder(back.encoder(x)), model.decoder(model.encoder(x))
    )


class _Payload:
    pass


def test_non_tensor_pickle_refused(trained, tmp_path: Path) -> None:
    _, model, _ = trained
    save_model_dir(model, tmp_path)
    evil = {"state_dict": model.encoder.state_dict(), "payload": _Payload()}
    torch.save(evil, tmp_path / "encoder.ckpt")
    with pytest.raises(ValueError, match="Refusing to load .*encoder.ckpt"):
        load_model_dir(tmp_path)


def test_missing_files_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="encoder.ckpt"):
        load_model_dir(tmp_path)


def test_align_genes_zero_fills_in_model_order(trained) -> None:
    adata, _, _ = trained
    order = ["absent_gene", *reversed(adata.var_names[:10].tolist())]
    aligned = align_genes(adata, gene_order=order, min_overlap=5)
    assert list(aligned.var_names) == order
    x = aligned.X.toarray()
    assert (x[:, 0] == 0).all()
    np.testing.assert_array_equal(
        x[:, 1], adata[:, adata.var_names[9]].X.toarray().ravel()
    )


def test_align_genes_low_overlap_names_counts(trained) -> None:
    adata, _, _ = trained
    order = [f"other_{i}" for i in range(1000)] + list(adata.var_names[:3])
    with pytest.raises(
        ValueError, match=r"Only 3 of the data's 60 genes .*\(1003 genes\)"
    ):
        align_genes(adata, gene_order=order, min_overlap=50)


def test_triplet_loss_zero_when_separated() -> None:
    z = torch.nn.functional.normalize(
        torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.01, 1.0]])
    )
    labels = torch.tensor([0, 0, 1, 1])
    assert float(batch_hard_triplet_loss(z, labels, margin=0.05)) == 0.0
    assert (
        float(batch_hard_triplet_loss(z, torch.tensor([0, 1, 0, 1]), margin=0.05)) > 0.5
    )


def test_triplet_needs_labels(trained) -> None:
    adata, _, _ = trained
    with pytest.raises(ValueError, match="needs labels"):
        train_foundation(
            adata.X,
            gene_order=list(adata.var_names),
            config=TrainConfig(triplet_weight=0.1),
            progress=False,
        )
