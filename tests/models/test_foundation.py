import json
from dataclasses import replace
from pathlib import Path

import anndata as ad
import dask
import numpy as np
import pandas as pd
import pytest
import torch
from scimilarity import CellEmbedding
from scipy import sparse

from scdd import cellstore
from scdd.models.foundation import (
    MIN_GENE_OVERLAP,
    FoundationArchitectureParams,
    align_genes,
    build_autoencoder,
    embed_cells,
    encode_sparse,
    lazy_embeddings,
    load_model_dir,
    save_model_dir,
)
from tests.evaluation.lazy_helpers import no_whole_matrix, spied


def test_embeddings_are_unit_norm_and_chunk_independent(trained) -> None:
    adata, model, _ = trained
    whole = embed_cells(model.encoder, adata.X, chunk_size=10_000, progress=False)
    chunked = embed_cells(model.encoder, adata.X, chunk_size=7, progress=False)
    assert whole.shape == (adata.n_obs, 16)
    np.testing.assert_allclose(np.linalg.norm(whole, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(whole, chunked, atol=1e-6)


@pytest.mark.parametrize("scheduler", ["synchronous", "threads"])
def test_lazy_embeddings_are_the_in_memory_ones_written_block_by_block(
    trained, tmp_path: Path, scheduler: str
) -> None:
    adata, model, _ = trained
    lazy, reads = spied(adata, chunk_rows=9)
    z = lazy_embeddings(model.encoder, lazy.X, chunk_size=4)
    assert not reads.counts  # nothing read until written
    assert z.shape == (adata.n_obs, 16) and z.chunks[0][0] == 9
    out = ad.AnnData(X=z, obs=adata.obs.copy())
    with dask.config.set(scheduler=scheduler, num_workers=2):
        out.write_h5ad(tmp_path / "z.h5ad")
    written = ad.read_h5ad(tmp_path / "z.h5ad").X
    expected = embed_cells(model.encoder, adata.X, progress=False)
    np.testing.assert_allclose(written, expected, atol=1e-6)


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


def test_gene_floor_is_stored_with_the_model(trained, tmp_path: Path) -> None:
    """``min_gene_overlap`` round-trips through the directory (in
    hyperparameters.json, not among the training settings once read back);
    ``load_model_dir(..., min_gene_overlap=N)`` sets another."""
    _, model, _ = trained
    assert model.min_gene_overlap == MIN_GENE_OVERLAP == 500  # the default
    stored = replace(model, min_gene_overlap=25)
    save_model_dir(stored, tmp_path)
    written = json.loads((tmp_path / "hyperparameters.json").read_text())
    assert written["min_gene_overlap"] == 25
    back = load_model_dir(tmp_path)
    assert back.min_gene_overlap == 25
    assert "min_gene_overlap" not in back.hyperparameters
    assert back.hyperparameters.keys() == model.hyperparameters.keys()
    assert load_model_dir(tmp_path, min_gene_overlap=7).min_gene_overlap == 7
    # a directory written without one (a published SCimilarity model)
    del written["min_gene_overlap"]
    (tmp_path / "hyperparameters.json").write_text(json.dumps(written))
    assert load_model_dir(tmp_path).min_gene_overlap == MIN_GENE_OVERLAP


def test_align_and_check_genes_refuse_data_under_the_models_floor(trained) -> None:
    """40 of F's 60 genes (shuffled, two foreign ones added): read at a floor
    of 40, refused at 41, by names alone for a lazy matrix."""
    adata, model, _ = trained
    rng = np.random.default_rng(0)
    names = [*rng.permutation(adata.var_names)[:40], "foreign_1", "foreign_2"]
    data = adata[:, names[:40]].copy()
    data = ad.AnnData(
        X=sparse.hstack([data.X, sparse.csr_matrix((data.n_obs, 2))]).tocsr(),
        obs=data.obs,
        var=pd.DataFrame(index=names),
    )
    at_floor = replace(model, min_gene_overlap=40)
    positions = at_floor.check_genes(data.var_names)
    assert (positions >= 0).sum() == 40 and list(positions[-2:]) == [-1, -1]
    aligned = at_floor.align(data)
    assert list(aligned.var_names) == model.gene_order
    np.testing.assert_array_equal(
        aligned[:, names[:40]].X.toarray(), adata[:, names[:40]].X.toarray()
    )
    above = replace(model, min_gene_overlap=41)
    match = r"Only 40 of the data's 42 genes .*\(60 genes\); at least 41"
    with pytest.raises(ValueError, match=match):
        above.check_genes(data.var_names)
    with pytest.raises(ValueError, match=match):
        above.align(data)
    lazy, reads = spied(data, chunk_rows=7)
    with pytest.raises(ValueError, match=match):
        above.align(lazy)
    assert not reads.counts  # refused on the gene names


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


def test_embedding_a_lazy_matrix_block_by_block(trained, monkeypatch) -> None:
    adata, model, _ = trained
    lazy, reads = spied(adata, chunk_rows=7)
    expected = embed_cells(model.encoder, adata.X, progress=False)
    with no_whole_matrix(monkeypatch):
        got = embed_cells(model.encoder, lazy.X, chunk_size=5, progress=False)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert reads.max_rows == 7 and set(reads.counts.values()) == {1}


def test_sparse_first_layer_equals_dense(trained) -> None:
    adata, model, _ = trained
    x = adata.X[:40]
    dense = model.encoder(torch.from_numpy(x.toarray()))
    with torch.no_grad():
        torch.testing.assert_close(
            encode_sparse(model.encoder, x), dense, rtol=0, atol=1e-5
        )
    both = [
        embed_cells(model.encoder, adata.X, sparse_input=s, progress=False)
        for s in (True, False)
    ]
    np.testing.assert_allclose(*both, atol=1e-5)
    model.encoder.train()
    try:
        with pytest.raises(ValueError, match="eval mode"):
            encode_sparse(model.encoder, x)
    finally:
        model.encoder.eval()


def test_align_genes_on_a_lazy_matrix(trained, monkeypatch) -> None:
    adata = trained[0]
    rng = np.random.default_rng(0)
    order = [*rng.permutation(adata.var_names)[:40], "absent_1", "absent_2"]
    lazy, reads = spied(adata, chunk_rows=7)
    with no_whole_matrix(monkeypatch):
        aligned = align_genes(lazy, gene_order=order, min_overlap=20)
        assert cellstore.is_lazy(aligned) and not reads.counts  # nothing read
        got = cellstore.take_rows(aligned).X
    expected = align_genes(adata, gene_order=order, min_overlap=20)
    assert list(aligned.var_names) == order == list(expected.var_names)
    np.testing.assert_array_equal(got.toarray(), expected.X.toarray())
    assert aligned.obs.equals(adata.obs)
    assert align_genes(lazy, gene_order=list(adata.var_names), min_overlap=1) is lazy
    with pytest.raises(ValueError, match="Only 40 of the data's 60 genes"):
        align_genes(lazy, gene_order=order, min_overlap=41)


def test_the_default_autoencoder_is_the_default_architecture() -> None:
    """``foundation.model``'s defaults are the one definition of F's sizes."""
    arch = FoundationArchitectureParams()

    def widths(module: torch.nn.Module) -> list[int]:
        return [m.out_features for m in module.modules() if hasattr(m, "out_features")]

    encoder, decoder = build_autoencoder(12)
    assert widths(encoder) == [*arch.hidden_dim, arch.latent_dim]
    assert widths(decoder) == [*arch.hidden_dim[::-1], 12]
    assert encoder.latent_dim == arch.latent_dim
    with pytest.raises(ValueError, match="hidden_dim"):
        FoundationArchitectureParams(hidden_dim=[])
