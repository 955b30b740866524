"""The ``evaluate`` pipeline on tiny in-memory data and a tiny foundation model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.json import JSONDataset
from scipy import sparse

from scdd.cellstore import is_lazy
from scdd.datasets import H5ADDataset
from scdd.distill.real_cells import RealCellStats, summarise_real_cells
from scdd.evaluation import scoring
from scdd.models.foundation import (
    FoundationArchitectureParams,
    FoundationModel,
    embed_cells,
)
from scdd.models.foundation_training import TrainConfig, train_foundation
from scdd.params import DataParams, DistillParams, EvaluateParams, FoundationParams
from scdd.pipelines.evaluate import create_pipeline
from scdd.pipelines.evaluate.nodes import (
    assemble_metrics,
    embed_synthetic_set,
    evaluate_full_reference,
    evaluate_synthetic_models,
    measure_fidelity,
    measure_privacy,
)
from scdd.preprocessing import log_normalise
from scdd.run_context import using_run
from tests.conftest import CPU_RUN, make_counts_adata, make_log_splits
from tests.evaluation.lazy_helpers import BlockReads, no_whole_matrix, spied

KEY = "cell_type"
LATENT = 8
DATA = DataParams(input="scanpy://pbmc68k_reduced", label_key=KEY)
FOUNDATION = FoundationParams(min_gene_overlap=10, embed={"chunk_size": 16})
SETTINGS = {
    "models": [
        "f_head",
        "celltypist",
        "gene_mlp",
        "gene_transformer",
        "deepinsight_cnn",
    ],
    "f_head": {
        "n_inits": 2,
        "epochs": 100,
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "batch_size": None,
        "reference_batch_size": 32,
        "reference_epochs": 20,
        "reference_max_steps": 40,
    },
    "celltypist": {"n_inits": 1, "train_kwargs": {}},
    "gene_mlp": {
        "hidden": 16,
        "n_inits": 1,
        "steps": 60,
        "lr": 0.01,
        "weight_decay": 0.0,
        "batch_size": 32,
    },
    "gene_transformer": {
        "genes_per_token": 8,
        "d_model": 16,
        "heads": 2,
        "n_inits": 1,
        "steps": 100,
        "lr": 3e-3,
        "batch_size": 16,
    },
    "deepinsight_cnn": {
        "pixels": 8,
        "layout": "pca",
        "width": 4,
        "n_inits": 1,
        "steps": 100,
        "lr": 3e-3,
        "batch_size": 16,
    },
    "fidelity": {"top_k": 5, "marker_method": "mean_difference", "mmd_max_cells": 50},
}
PARAMS = EvaluateParams.model_validate(SETTINGS)
DISTILL = DistillParams.model_validate({"privacy": {"chunk_size": 16}})

# the nodes read seed, device and progress from the run context
pytestmark = pytest.mark.usefixtures("cpu_run")


@dataclass
class Tiny:
    train: ad.AnnData
    test: ad.AnnData
    train_embeddings: ad.AnnData
    test_embeddings: ad.AnnData
    foundation: FoundationModel


def _embeddings(foundation: FoundationModel, adata: ad.AnnData) -> ad.AnnData:
    z = embed_cells(foundation.encoder, adata.X, progress=False)
    return ad.AnnData(
        X=z,
        obs=adata.obs.copy(),
        var=pd.DataFrame(index=[f"latent_{i}" for i in range(LATENT)]),
    )


@pytest.fixture(scope="module")
def tiny() -> Tiny:
    """3 classes x 40 genes; F with one hidden layer of 32, latent 8, 3 epochs."""
    # as large as train: nearest-neighbour distances to both are comparable
    train, test = make_log_splits(40, (30, 20, 15))
    foundation, _ = train_foundation(
        train.X,
        gene_order=list(train.var_names),
        architecture=FoundationArchitectureParams(
            latent_dim=LATENT, hidden_dim=[32], dropout=0.1, input_dropout=0.1
        ),
        config=TrainConfig(epochs=3, batch_size=32, lr=3e-3),
        progress=False,
    )
    # as the build node sets foundation.min_gene_overlap (default 500 > 40 genes)
    foundation.min_gene_overlap = FOUNDATION.min_gene_overlap
    return Tiny(
        train,
        test,
        _embeddings(foundation, train),
        _embeddings(foundation, test),
        foundation,
    )


def _class_means(tiny: Tiny, spc: int = 2) -> ad.AnnData:
    """A gene-level synthetic set: ``spc`` jittered class means per class of
    fresh cells (same distribution, not the training cells), genes in the
    foundation order but stored reversed (evaluation aligns them)."""
    rng = np.random.default_rng(0)
    fresh = log_normalise(
        make_counts_adata((30, 20, 15), n_genes=40, seed=2),
        target_sum=1e4,
        keep_counts=False,
    )
    x = fresh.X.toarray()
    labels = fresh.obs[KEY].cat.codes.to_numpy()
    rows, names = [], []
    for c, name in enumerate(tiny.train.obs[KEY].cat.categories):
        for _ in range(spc):
            rows.append(x[labels == c].mean(0) * rng.uniform(0.9, 1.1, x.shape[1]))
            names.append(name)
    synthetic = ad.AnnData(
        X=sparse.csr_matrix(np.asarray(rows, dtype=np.float32)),
        obs=pd.DataFrame(
            {
                KEY: pd.Categorical(names, categories=["type_2", "type_1", "type_0"]),
                "scdd_method": "test_means",
            },
            index=[f"syn_{i}" for i in range(len(rows))],
        ),
        var=pd.DataFrame(index=tiny.train.var_names),
    )
    synthetic.uns["scdd"] = {"distill": {"params": {"spc": spc}}}
    return synthetic[:, ::-1].copy()


def _feature_only(tiny: Tiny) -> ad.AnnData:
    """A feature-level set: the class-mean embeddings, no genes."""
    z = np.asarray(tiny.train_embeddings.X)
    labels = tiny.train.obs[KEY]
    features = np.stack(
        [z[(labels == c).to_numpy()].mean(0) for c in labels.cat.categories]
    )
    synthetic = ad.AnnData(
        X=sparse.csr_matrix((3, 0), dtype=np.float32),
        obs=pd.DataFrame(
            {
                KEY: pd.Categorical(list(labels.cat.categories)),
                "scdd_method": "featdistill",
            },
            index=["f0", "f1", "f2"],
        ),
    )
    synthetic.obsm["X_foundation"] = features.astype(np.float32)
    return synthetic


def _full_reference(tiny: Tiny, params: EvaluateParams = PARAMS) -> dict:
    """The reference node on the tiny splits (on CPU, seed 0 in a test)."""
    return evaluate_full_reference(
        tiny.train,
        tiny.test,
        tiny.train_embeddings,
        tiny.test_embeddings,
        params,
        DATA,
    )


@pytest.fixture(scope="module")
def reference(tiny: Tiny) -> dict:
    with using_run(CPU_RUN):  # module scope: before the test's cpu_run
        return _full_reference(tiny)


def _stats(tiny: Tiny) -> dict:
    """The cached ``real_cell_stats`` of the tiny training split."""
    labels = tiny.train.obs[KEY]
    return summarise_real_cells(
        tiny.train.X,
        labels.cat.codes.to_numpy(),
        list(labels.cat.categories),
        gene_names=tiny.foundation.gene_order,
    ).to_checkpoint()


def _embed(tiny: Tiny, synthetic: ad.AnnData) -> ad.AnnData:
    """The ``embed_synthetic_set`` node (on CPU in a test)."""
    return embed_synthetic_set(
        synthetic, tiny.train_embeddings, tiny.foundation, DATA, FOUNDATION
    )


def test_fidelity_from_cached_class_moments_equals_a_pass_over_the_split(
    tiny: Tiny,
) -> None:
    synthetic = _class_means(tiny)
    z = _embed(tiny, synthetic)
    kwargs = {"label_key": KEY, "params": PARAMS.fidelity}
    cached = scoring.fidelity(
        synthetic,
        z,
        tiny.train,
        tiny.train_embeddings,
        **kwargs,
        real_stats=RealCellStats.from_checkpoint(_stats(tiny)),
    )
    read = scoring.fidelity(synthetic, z, tiny.train, tiny.train_embeddings, **kwargs)
    for key in ("mean_correlation", "variance_correlation"):
        assert cached[key]["per_class"] == pytest.approx(
            read[key]["per_class"], rel=1e-9
        )
    assert cached["zero_fraction"] == read["zero_fraction"]
    assert cached["markers"] == read["markers"]


def _evaluate(
    tiny: Tiny, synthetic: ad.AnnData, reference: dict, stats: dict | None = None
) -> dict:
    """Every node in order, as the pipeline wires them (``stats``: the cached
    ``real_cell_stats``, by default summarised from ``tiny.train``)."""
    z = _embed(tiny, synthetic)
    models = evaluate_synthetic_models(
        synthetic,
        z,
        tiny.test,
        tiny.test_embeddings,
        reference,
        PARAMS,
        DATA,
    )
    fidelity = measure_fidelity(
        synthetic,
        z,
        tiny.train,
        tiny.train_embeddings,
        _stats(tiny) if stats is None else stats,
        PARAMS,
        DATA,
    )
    privacy = measure_privacy(
        synthetic,
        z,
        tiny.train,
        tiny.train_embeddings,
        tiny.test,
        tiny.test_embeddings,
        DISTILL,
        DATA,
    )
    return assemble_metrics(synthetic, models, fidelity, privacy, DATA)


def test_reference_covers_every_model(reference: dict) -> None:
    assert set(reference["models"]) == set(PARAMS.models)
    assert reference["n_train"] == 65 and reference["n_test"] == 65
    assert reference["categories"] == ["type_0", "type_1", "type_2"]
    for name in ("gene_mlp", "gene_transformer", "deepinsight_cnn"):
        assert reference["models"][name]["accuracy_mean"] > 0.8, name
    json.dumps(reference)  # JSON-serialisable as it is


def test_gene_models_reference_is_a_capped_stratified_sample(tiny: Tiny) -> None:
    params = PARAMS.model_copy(
        update={
            "models": ["f_head", "celltypist", "gene_mlp"],
            "reference_max_cells": 30,
        }
    )
    capped = _full_reference(tiny, params)
    assert capped["reference_max_cells"] == 30
    assert capped["models"]["f_head"]["n_train"] == 65  # 128-d features: all cells
    for name in ("celltypist", "gene_mlp"):
        assert 30 <= capped["models"][name]["n_train"] <= 33, name
        assert capped["models"][name]["accuracy_mean"] > 0.8, name
    assert list(capped["models"]) == ["f_head", "celltypist", "gene_mlp"]


def test_reference_too_large_for_memory_is_refused_before_reading(
    tiny: Tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scdd import cellstore

    monkeypatch.setattr(cellstore, "free_memory_bytes", lambda: 1000)
    params = PARAMS.model_copy(
        update={"models": ["gene_mlp"], "reference_max_cells": None}
    )
    with pytest.raises(MemoryError, match="evaluate.reference_max_cells"):
        _full_reference(tiny, params)


def test_gene_level_set(tiny: Tiny, reference: dict) -> None:
    metrics = _evaluate(tiny, _class_means(tiny), reference)
    assert (metrics["method"], metrics["spc"], metrics["n_synthetic"]) == (
        "test_means",
        2,
        6,
    )
    assert metrics["skipped"] == {} and metrics["feature_only"] is False
    for name in PARAMS.models:
        result = metrics["models"][name]
        assert 0.0 <= result["accuracy_mean"] <= 1.0
        ref = reference["models"][name]["accuracy_mean"]
        assert result["retention"] == pytest.approx(result["accuracy_mean"] / ref)
        assert result["full"]["accuracy_mean"] == ref
    assert metrics["models"]["gene_mlp"]["accuracy_mean"] > 0.8
    fidelity = metrics["fidelity"]
    assert fidelity["mean_correlation"]["mean"] > 0.8
    assert fidelity["markers"]["overlap"]["mean"] > 0.5
    assert fidelity["zero_fraction"]["synthetic"] < fidelity["zero_fraction"]["real"]
    # class prototypes: no copies of training cells' genes
    genes = metrics["privacy"]["gene_space"]
    assert genes["exact_copies"] == genes["near_copies"] == 0
    assert genes["nearest_record_ratio"] > 0.5
    json.dumps(metrics)


def test_feature_only_set_skips_gene_models(tiny: Tiny, reference: dict) -> None:
    metrics = _evaluate(tiny, _feature_only(tiny), reference)
    assert metrics["feature_only"] is True
    for name in ("celltypist", "gene_mlp", "gene_transformer", "deepinsight_cnn"):
        assert metrics["models"][name] is None
    assert "feature-only" in metrics["skipped"]["celltypist"]
    assert metrics["models"]["f_head"]["n_train"] == 3
    assert metrics["spc"] == 1  # inferred from the class counts
    assert metrics["fidelity"]["mean_correlation"] is None
    assert metrics["fidelity"]["mmd"]["mmd"] >= 0.0


def test_copied_training_cells_are_flagged(tiny: Tiny, reference: dict) -> None:
    copies = tiny.train[[0, 1, 30, 31, 50, 51]].copy()  # random_real
    metrics = _evaluate(tiny, copies, reference)
    genes = metrics["privacy"]["gene_space"]
    assert genes["nearest_record_ratio"] < 1e-3
    assert genes["exact_copies"] == 6
    assert metrics["privacy"]["guard"]["passes"] is False


def test_missing_label_column_is_a_clear_error(tiny: Tiny) -> None:
    synthetic = _class_means(tiny)
    del synthetic.obs[KEY]
    with pytest.raises(
        ValueError, match=r"'cell_type' is not in the synthetic set.*scdd_method"
    ):
        _embed(tiny, synthetic)


def test_unknown_class_is_refused(tiny: Tiny, reference: dict) -> None:
    synthetic = _class_means(tiny)
    synthetic.obs[KEY] = synthetic.obs[KEY].cat.rename_categories({"type_0": "type_X"})
    with pytest.raises(ValueError, match=r"\['type_X'\].*re-run the distill"):
        _embed(tiny, synthetic)


def _catalog(tiny: Tiny, synthetic: ad.AnnData, tmp_path: Path) -> DataCatalog:
    catalog = DataCatalog(
        {
            "synthetic_adata": MemoryDataset(synthetic),
            "train_adata": MemoryDataset(tiny.train),
            "test_adata": MemoryDataset(tiny.test),
            "train_embeddings": MemoryDataset(tiny.train_embeddings),
            "test_embeddings": MemoryDataset(tiny.test_embeddings),
            # not scored (evaluate.split: test): must not be read
            "validation_adata": MemoryDataset(None),
            "validation_embeddings": MemoryDataset(None),
            "foundation_model": MemoryDataset(tiny.foundation, copy_mode="assign"),
            "real_cell_stats": MemoryDataset(_stats(tiny)),
            "full_reference_metrics": JSONDataset(
                filepath=str(tmp_path / "reference.json")
            ),
            "evaluation_metrics": JSONDataset(filepath=str(tmp_path / "metrics.json")),
        }
    )
    for key, value in {
        "evaluate": PARAMS,
        "distill": DISTILL,
        "data": DATA,
        "foundation": FOUNDATION,
    }.items():
        catalog[f"params:{key}"] = value
    return catalog


def test_pipeline_runs_and_reuses_the_cached_reference(
    tiny: Tiny, tmp_path: Path
) -> None:
    catalog = _catalog(tiny, _class_means(tiny), tmp_path)
    SequentialRunner().run(create_pipeline(), catalog)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert list(metrics) == [
        "method",
        "spc",
        "label_key",
        "n_synthetic",
        "feature_only",
        "scored_on",
        "models",
        "skipped",
        "fidelity",
        "privacy",
    ]
    assert metrics["scored_on"] == "test"
    assert metrics["models"]["f_head"]["n_inits"] == 2
    reference = json.loads((tmp_path / "reference.json").read_text())
    assert reference["models"]["f_head"]["n_train"] == 65
    assert reference["scored_on"] == "test"

    # Sliced run: the cached reference is read back, not recomputed.
    (tmp_path / "metrics.json").unlink()
    sliced = create_pipeline().from_inputs(
        "full_reference_metrics", "synthetic_adata", "test_adata"
    )
    sliced = sliced - create_pipeline().only_nodes("evaluate.train_full_reference")
    assert "evaluate.train_full_reference" not in {n.name for n in sliced.nodes}
    SequentialRunner().run(sliced, _catalog(tiny, _feature_only(tiny), tmp_path))
    again = json.loads((tmp_path / "metrics.json").read_text())
    assert again["feature_only"] is True
    assert again["models"]["f_head"]["full"] == metrics["models"]["f_head"]["full"]


def _lazy_tiny(tiny: Tiny) -> tuple[Tiny, BlockReads, BlockReads]:
    """``tiny`` with both splits read lazily by row blocks of 7 cells."""
    train, train_reads = spied(tiny.train)
    test, test_reads = spied(tiny.test)
    lazy = Tiny(
        train, test, tiny.train_embeddings, tiny.test_embeddings, tiny.foundation
    )
    return lazy, train_reads, test_reads


def test_lazy_splits_give_the_same_metrics(
    tiny: Tiny, reference: dict, monkeypatch
) -> None:
    """Splits read by row blocks of 7 cells score exactly as in-memory ones;
    no step computes a whole gene matrix."""
    lazy, train_reads, test_reads = _lazy_tiny(tiny)
    n_train_blocks = len(lazy.train.X.chunks[0])
    n_test_blocks = len(lazy.test.X.chunks[0])
    args = (PARAMS, DATA)
    splits = (lazy.train, lazy.test, lazy.train_embeddings, lazy.test_embeddings)
    with no_whole_matrix(monkeypatch):
        lazy_reference = evaluate_full_reference(*splits, *args)
    assert lazy_reference == reference
    # the gene models' training sample (here every cell) is read once; the
    # test split once per gene-level model (all its runs in one pass)
    assert sorted(train_reads.counts.values()) == [1] * n_train_blocks
    assert sorted(test_reads.counts.values()) == [4] * n_test_blocks

    capped = PARAMS.model_copy(
        update={"models": ["celltypist", "gene_mlp"], "reference_max_cells": 30}
    )
    train_reads.clear()
    with no_whole_matrix(monkeypatch):
        sampled = evaluate_full_reference(*splits, capped, *args[1:])
    assert sampled == evaluate_full_reference(
        tiny.train,
        tiny.test,
        tiny.train_embeddings,
        tiny.test_embeddings,
        capped,
        *args[1:],
    )
    assert sum(train_reads.counts.values()) <= n_train_blocks  # one read

    for synthetic in (_class_means(tiny), _feature_only(tiny)):
        train_reads.clear()
        with no_whole_matrix(monkeypatch):
            metrics = _evaluate(lazy, synthetic, reference, _stats(tiny))
        assert metrics == _evaluate(tiny, synthetic, reference)
        # fidelity reads the cached class moments; privacy only its sampled
        # training rows (a gene set: the sample, then the F-space neighbours)
        assert max(train_reads.counts.values(), default=0) <= 2, synthetic
        assert bool(train_reads.counts) != scoring.is_feature_only(synthetic)


def test_validation_split_is_scored_when_asked(tiny: Tiny, tmp_path: Path) -> None:
    """``evaluate.split: validation`` scores the validation cells and says so;
    the test split is then never read."""
    catalog = _catalog(tiny, _class_means(tiny), tmp_path)
    catalog["validation_adata"] = MemoryDataset(tiny.test)
    catalog["validation_embeddings"] = MemoryDataset(tiny.test_embeddings)
    catalog["test_adata"] = MemoryDataset(None)
    catalog["test_embeddings"] = MemoryDataset(None)
    catalog["params:evaluate"] = PARAMS.model_copy(update={"split": "validation"})
    SequentialRunner().run(create_pipeline(), catalog)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    reference = json.loads((tmp_path / "reference.json").read_text())
    assert metrics["scored_on"] == reference["scored_on"] == "validation"
    assert reference["n_test"] == tiny.test.n_obs


def test_pipeline_reads_lazy_h5ad_splits(
    tiny: Tiny, reference: dict, tmp_path: Path
) -> None:
    """The catalog's lazy splits (``H5ADDataset(lazy=True)``) give the metrics
    of the same splits in memory."""
    catalog = _catalog(tiny, _class_means(tiny), tmp_path / "memory")
    SequentialRunner().run(create_pipeline(), catalog)
    lazy_catalog = _catalog(tiny, _class_means(tiny), tmp_path / "lazy")
    for name, adata in (("train_adata", tiny.train), ("test_adata", tiny.test)):
        path = tmp_path / f"{name}.h5ad"
        adata.write_h5ad(path)
        lazy_catalog[name] = H5ADDataset(filepath=str(path), lazy=True, chunk_rows=7)
    assert is_lazy(lazy_catalog.load("train_adata"))
    SequentialRunner().run(create_pipeline(), lazy_catalog)
    for name in ("reference.json", "metrics.json"):
        expected = json.loads((tmp_path / "memory" / name).read_text())
        assert json.loads((tmp_path / "lazy" / name).read_text()) == expected, name
