import io
import json
import logging
from dataclasses import replace
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from scdd import generation
from scdd.cellstore import as_lazy
from scdd.datasets import H5ADDataset
from scdd.distill.expression import as_log_normalised
from scdd.distill.guard import PrivacyGuardError
from scdd.distill.real_cells import summarise_real_cells
from scdd.distill.synthetic import finalise_genes
from scdd.lineage import source_fingerprint
from scdd.models.foundation import embed_cells
from scdd.models.generator_config import GeneratorTrainParams
from scdd.params import DataParams, DistillParams, FoundationParams, GeneratorParams
from scdd.pipelines.latent_distillation import create_pipeline
from scdd.pipelines.latent_distillation.nodes import (
    distill_synthetic_set,
    summarise_training_cells,
)
from scdd.preprocessing import log_normalise
from scdd.provenance import (
    plain,
    record_provenance,
    recorded_params,
    weights_digest,
)
from tests.conftest import make_counts_adata
from tests.distill.test_methods import (
    LABEL_KEY,
    N_PER_CLASS,
    SCDG_MODEL,
    Tiny,
    make_tiny,
)
from tests.kedro_helpers import run_session

DATA = DataParams(input="scanpy://pbmc68k_reduced", label_key=LABEL_KEY)
FOUNDATION = FoundationParams(min_gene_overlap=10)
GENERATOR = GeneratorParams()
OPTIM = {
    "steps": 5,
    "lr": 0.05,
    "optimizer": "adam",
    "lambda_dm": 1.0,
    "lambda_dc": 1.0,
    "inner_steps": 2,
    "head_lr": 0.01,
    "real_batch_size": 16,
    "chunk_size": 4,
    "log_every": 1,
}
PARAMS = DistillParams(
    method="scdd",
    spc=2,
    t_gen=20,
    guidance_scale=1.0,
    sample_steps=2,
    zero_threshold=None,
    sample_counts_from_spc=None,  # smooth cells: X is a function of the codes
    gene_residual=0.0,  # ... of the codes alone (the residual: tests/distill)
    optim=OPTIM,
)

# the nodes read seed, device and progress from the run context
pytestmark = pytest.mark.usefixtures("cpu_run")


@pytest.fixture(scope="module")
def tiny() -> Tiny:
    return make_tiny()


def heldout_cells(tiny: Tiny) -> tuple[ad.AnnData, ad.AnnData]:
    """Cells drawn like ``tiny.train`` with another seed, and F of them: the
    privacy guard's held-out side."""
    cells = log_normalise(
        make_counts_adata(N_PER_CLASS, n_genes=60, seed=1),
        target_sum=1e4,
        keep_counts=False,
    )
    z = embed_cells(tiny.foundation.encoder, cells.X, progress=False)
    embeddings = ad.AnnData(X=z, obs=cells.obs.copy(), var=tiny.embeddings.var.copy())
    return cells, embeddings


def _distill(tiny: Tiny, params=PARAMS, **overrides):
    """The node as Kedro runs it: a lazy split (blocks of 7 cells) and its
    cached statistics."""
    train = as_lazy(overrides.pop("train", tiny.train), chunk_rows=7)
    validation, validation_embeddings = heldout_cells(tiny)
    args = {
        "train": train,
        "train_embeddings": tiny.embeddings,
        "validation": validation,
        "validation_embeddings": validation_embeddings,
        "real_cell_stats": summarise_training_cells(train, tiny.foundation, DATA),
        "foundation": tiny.foundation,
        "generator_checkpoint": tiny.checkpoint,
        "params": params,
        "data": DATA,
        "foundation_params": FOUNDATION,
        "generator_params": GENERATOR,
        **overrides,
    }
    return distill_synthetic_set(**args)


@pytest.mark.parametrize("method", ["scdd", "random_real"])
def test_node_writes_a_valid_synthetic_set(tiny: Tiny, method: str) -> None:
    # genes in another order than the foundation model's: the node aligns them
    shuffled = tiny.train[:, np.random.default_rng(0).permutation(60)].copy()
    shuffled.uns["scdd"] = {"preprocess": {"params": {}, "source": "cells.h5ad"}}
    synthetic, history = _distill(
        tiny, PARAMS.model_copy(update={"method": method}), train=shuffled
    )
    assert list(synthetic.var_names) == tiny.foundation.gene_order
    categories = list(tiny.train.obs[LABEL_KEY].cat.categories)
    assert list(synthetic.obs[LABEL_KEY].cat.categories) == categories
    np.testing.assert_array_equal(
        synthetic.obs[LABEL_KEY].value_counts().sort_index(), [2, 2, 2]
    )
    scdd = synthetic.uns["scdd"]
    assert scdd["distill"]["params"]["method"] == method
    assert scdd["distill"]["label_key"] == LABEL_KEY
    assert scdd["preprocess"]["source"] == "cells.h5ad"
    assert scdd["foundation"]["params"]["min_gene_overlap"] == 10
    assert scdd["foundation"]["weights_digest"] == weights_digest(
        [tiny.foundation.encoder, tiny.foundation.decoder]
    )
    if method == "scdd":
        assert scdd["generator"]["params"]["model"]["width"] == GENERATOR.model.width
        assert scdd["generator"]["weights_digest"] == weights_digest(tiny.checkpoint)
    else:  # made without the generator
        assert "generator" not in scdd
    assert synthetic.uns["log1p"] == {"base": None}
    assert synthetic.X.min() >= 0 and np.isfinite(synthetic.X.data).all()
    assert list(history.columns) == ["step", "loss", "dm", "dc", "part", "proto"]
    if method == "scdd":
        assert synthetic.obsm["X_optimised_codes"].shape == (6, 8)
        assert len(history) == OPTIM["steps"]
        totals = np.expm1(synthetic.X.toarray().astype(np.float64)).sum(1)
        np.testing.assert_allclose(totals, 1e4, rtol=1e-4)
    else:  # real cells, as they are, in the foundation gene order
        assert history.empty and "X_optimised_codes" not in synthetic.obsm
        real, syn = tiny.train.X.toarray(), synthetic.X.toarray()
        assert (syn[:, None, :] == real[None]).all(-1).any(1).all()


def _catalog(
    tiny: Tiny, tmp_path: Path, params: DistillParams, train: ad.AnnData | None = None
) -> DataCatalog:
    """The pipeline's catalog in memory (``train``: ``tiny.train`` unless
    given), the synthetic set written to disk."""
    validation, validation_embeddings = heldout_cells(tiny)
    catalog = DataCatalog(
        {
            "train_adata": MemoryDataset(tiny.train if train is None else train),
            "train_embeddings": MemoryDataset(tiny.embeddings),
            "validation_adata": MemoryDataset(validation),
            "validation_embeddings": MemoryDataset(validation_embeddings),
            "real_cell_stats": MemoryDataset(),
            "foundation_model": MemoryDataset(tiny.foundation, copy_mode="assign"),
            "generator_checkpoint": MemoryDataset(tiny.checkpoint, copy_mode="assign"),
            "synthetic_adata": H5ADDataset(filepath=str(tmp_path / "syn.h5ad")),
            "distill_history": MemoryDataset(),
        }
    )
    for key, value in {
        "distill": params,
        "data": DATA,
        "foundation": FOUNDATION,
        "generator": GENERATOR,
    }.items():
        catalog[f"params:{key}"] = value
    return catalog


def test_a_set_failing_the_enforced_privacy_guard_is_not_written(
    tiny: Tiny, tmp_path: Path
) -> None:
    """dm with no step writes its seed cells: copies of training cells."""
    params = PARAMS.model_copy(
        update={
            "method": "dm",
            "optim": PARAMS.optim.model_copy(update={"steps": 0}),
            "privacy": PARAMS.privacy.model_copy(update={"enforce": True}),
        }
    )
    with pytest.raises(PrivacyGuardError, match="copies"):
        SequentialRunner().run(create_pipeline(), _catalog(tiny, tmp_path, params))
    assert not (tmp_path / "syn.h5ad").exists()


def test_latent_codes_round_trip_through_the_pipeline(
    tiny: Tiny, tmp_path: Path
) -> None:
    SequentialRunner().run(create_pipeline(), _catalog(tiny, tmp_path, PARAMS))
    synthetic = ad.read_h5ad(tmp_path / "syn.h5ad")
    privacy = synthetic.uns["scdd"]["privacy"]
    assert privacy["guarded"] and privacy["n_sample"] == tiny.train.n_obs
    assert privacy["gene_space"]["exact_copies"] == 0
    # X is finalise(G(codes)) of the stored codes D(U(codes)), log-normalised
    # inside the optimisation, then sparsified
    generator, _ = generation.load_generator(tiny.checkpoint)
    stats = summarise_real_cells(
        tiny.train.X,
        tiny.train.obs[LABEL_KEY].cat.codes.to_numpy(),
        list(tiny.train.obs[LABEL_KEY].cat.categories),
        gene_names=list(tiny.train.var_names),
    )
    labels = synthetic.obs[LABEL_KEY].cat.codes.to_numpy().astype(np.int64)
    cond = torch.as_tensor(labels)[:, None]
    with torch.no_grad():
        genes = as_log_normalised(
            tiny.foundation.decoder(
                generator.denoise(
                    torch.as_tensor(synthetic.obsm["X_optimised_codes"]),
                    PARAMS.t_gen,
                    cond,
                )
            ),
            target_sum=stats.target_sum,
        ).numpy()
    expected = finalise_genes(
        genes, labels, zero_fractions=stats.zero_fractions, target_sum=stats.target_sum
    )
    np.testing.assert_allclose(
        synthetic.X.toarray(), expected.toarray(), rtol=1e-4, atol=1e-4
    )


def _annotated_train(tiny: Tiny) -> ad.AnnData:
    """``tiny.train`` as the preprocess pipeline writes it: gene ids and HVG
    flags of the input in ``var``, provenance and scanpy's log1p marker."""
    train = tiny.train.copy()
    train.var["gene_ids"] = [f"ENSG{i:05d}" for i in range(train.n_vars)]
    train.var["highly_variable"] = np.arange(train.n_vars) % 3 == 0
    record_provenance(
        train, stage="preprocess", params=DATA, source=DATA.input, log1p=True
    )
    return train


def test_written_set_reads_in_scanpy_and_celltypist(tiny: Tiny, tmp_path: Path) -> None:
    """The written set (SPC 2) as scanpy and CellTypist read real cells, with
    no conversion; its provenance is plain JSON once read back."""
    import celltypist
    import scanpy as sc

    train = _annotated_train(tiny)
    catalog = _catalog(tiny, tmp_path, PARAMS, train=train)
    SequentialRunner().run(create_pipeline(), catalog)
    adata = sc.read_h5ad(tmp_path / "syn.h5ad")
    carried = adata.var[["gene_ids", "highly_variable"]]
    pd.testing.assert_frame_equal(carried, train.var.loc[adata.var_names])
    scdd = plain(adata.uns["scdd"])
    assert json.loads(json.dumps(scdd)) == scdd
    assert {"preprocess", "foundation", "generator", "distill"} <= set(scdd)
    assert scdd["distill"]["params"]["optim"]["head_hidden"] == []
    assert scdd["distill"]["versions"]["anndata"] == ad.__version__
    assert scdd["distill"]["input_digest"] == source_fingerprint(DATA.input)
    assert scdd["generator"]["params"]["conditions"] is None
    assert adata.uns["log1p"] == {"base": None}
    stderr, sc.settings.logfile = sc.settings.logfile, io.StringIO()
    try:
        sc.pp.log1p(adata.copy())
        assert "already log-transformed" in sc.settings.logfile.getvalue()
    finally:
        sc.settings.logfile = stderr
    sc.pp.highly_variable_genes(adata, n_top_genes=10)
    assert adata.var["highly_variable"].sum() >= 10  # ties at the cut may add genes
    sc.tl.rank_genes_groups(adata, groupby=LABEL_KEY)
    assert len(adata.uns["rank_genes_groups"]["names"][0]) == 3  # one per class
    # use_SGD: celltypist 1.7.1's default solver fails on this scikit-learn
    model = celltypist.train(
        adata, labels=LABEL_KEY, use_SGD=True, max_iter=20, n_jobs=1
    )
    predicted = celltypist.annotate(adata, model=model, majority_voting=False)
    labels = predicted.predicted_labels["predicted_labels"]
    assert set(labels) <= set(adata.obs[LABEL_KEY].cat.categories)


def test_training_genes_under_the_models_floor_are_refused(tiny: Tiny) -> None:
    """F's own ``min_gene_overlap`` decides whether the split is read."""
    shuffled = tiny.train[:, np.random.default_rng(0).permutation(60)].copy()
    strict = replace(tiny.foundation, min_gene_overlap=61)
    match = r"Only 60 of the data's 60 genes.*at least 61.*min_gene_overlap"
    with pytest.raises(ValueError, match=match):
        summarise_training_cells(shuffled, strict, DATA)
    with pytest.raises(ValueError, match=match):
        _distill(tiny, train=shuffled, foundation=strict)


def test_mismatching_embeddings_are_refused(tiny: Tiny) -> None:
    other = tiny.embeddings[::-1].copy()
    with pytest.raises(ValueError, match="re-run the\\s+foundation pipeline"):
        _distill(tiny, train_embeddings=other)


def test_generator_of_another_label_set_is_refused(tiny: Tiny) -> None:
    renamed = tiny.embeddings.copy()
    renamed.obs[LABEL_KEY] = renamed.obs[LABEL_KEY].cat.rename_categories(
        {"type_2": "type_X"}
    )
    renamed.obs["tissue"] = pd.Categorical(["kidney"] * renamed.n_obs)
    train = GeneratorTrainParams(steps=5, batch_size=32)
    checkpoint, _ = generation.train_generator(
        renamed, [LABEL_KEY], model=SCDG_MODEL, train=train, progress=False
    )
    with pytest.raises(ValueError, match=r"\['type_2'\] are unknown.*re-run the"):
        _distill(tiny, generator_checkpoint=checkpoint)
    other_column, _ = generation.train_generator(
        renamed, ["tissue"], model=SCDG_MODEL, train=train, progress=False
    )
    with pytest.raises(ValueError, match="re-run the generator pipeline"):
        _distill(tiny, generator_checkpoint=other_column)
    # methods without a generator ignore the checkpoint
    synthetic, _ = _distill(
        tiny,
        PARAMS.model_copy(update={"method": "dm"}),
        generator_checkpoint=checkpoint,
    )
    assert synthetic.n_obs == 6


def test_distill_pipeline_end_to_end(project_copy: Path, caplog) -> None:
    params = {
        "progress": False,
        "foundation": {"model": {"hidden_dim": [128]}, "train": {"epochs": 3}},
        "generator": {
            "model": {"width": 64, "depth": 1},
            "train": {"steps": 50},
            "report": {
                "samples_per_class": 20,
                "sample_steps": [1],
                "t_values": [10],
                "min_cells_frechet": 10_000,  # no per-class sqrtm: fast
            },
        },
        "distill": {"optim": {"steps": 10}},
    }
    with caplog.at_level(logging.INFO, logger="scdd.hooks"):
        run_session(project_copy, "distill", params)
    synthetic = ad.read_h5ad(project_copy / "data/07_model_output/synthetic_cells.h5ad")
    assert synthetic.n_obs == 10  # SPC 1 x 10 bulk_labels classes
    (summary,) = [r.getMessage() for r in caplog.records if "Run summary" in r.msg]
    assert "synthetic_cells.h5ad: 10 cells, 10 classes x 1 per class (scdd)" in summary
    assert "label: bulk_labels" in summary
    assert synthetic.obs["bulk_labels"].value_counts().eq(1).all()
    assert synthetic.obsm["X_optimised_codes"].shape == (10, 128)
    history = pd.read_csv(project_copy / "data/08_reporting/distill_history.csv")
    # the runtime override reached distill.optim (default 300 steps -> 30 rows);
    # the rest of distill.optim kept its defaults (log_every 10)
    assert history["step"].tolist() == [0, 9]
    report = json.loads(
        (project_copy / "data/08_reporting/foundation_report.json").read_text()
    )
    assert report["epochs"] == 3
    generator_history = pd.read_csv(
        project_copy / "data/08_reporting/generator_history.csv"
    )
    assert generator_history["step"].iloc[-1] == 50
    recorded = recorded_params(synthetic, "distill")
    assert recorded["optim"]["steps"] == 10 and recorded["optim"]["chunk_size"] == 256
