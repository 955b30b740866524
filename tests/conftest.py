"""Shared fixtures: tiny AnnData objects and an isolated copy of the project."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import sparse

from scdd.models.generator_config import GeneratorModelParams
from scdd.preprocessing import log_normalise
from scdd.run_context import RunParams, using_run

# The tests run tiny models: one intra-op thread avoids torch's worker threads
# spinning against each other on a busy 2-core machine (measured 50x slower with
# two). It must be set before the first torch op starts the thread pool.
torch.set_num_threads(1)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


#: The run-wide group tests call nodes under: seed 0, on the CPU, no bars
#: (nodes read it from :func:`scdd.run_context.current_run`).
CPU_RUN = RunParams(seed=0, device="cpu", progress=False)


@pytest.fixture
def cpu_run() -> Iterator[RunParams]:
    """:data:`CPU_RUN` as the current run for the test, the previous one after."""
    with using_run(CPU_RUN) as run:
        yield run


#: A small SCDG architecture for fast tests.
TINY_SCDG_MODEL = GeneratorModelParams(
    width=32,
    depth=1,
    time_embed_dim=16,
    dropout=0.0,
    timesteps=100,
    beta_min=1e-4,
    beta_max=0.1,
    schedule="linear",
    p_uncond=0.1,
)


def make_log_splits(
    n_genes: int,
    train_sizes: tuple[int, ...] = (20, 15, 10),
    test_sizes: tuple[int, ...] | None = None,
) -> tuple[ad.AnnData, ad.AnnData]:
    """Log-normalised training (seed 0) and test (seed 1) cells of
    :func:`make_counts_adata`; the test cells are named ``test_i`` so the two
    splits never share a cell name."""
    train, test = (
        log_normalise(
            make_counts_adata(sizes, n_genes=n_genes, seed=seed),
            target_sum=1e4,
            keep_counts=False,
        )
        for sizes, seed in ((train_sizes, 0), (test_sizes or train_sizes, 1))
    )
    test.obs_names = [f"test_{i}" for i in range(test.n_obs)]
    return train, test


def make_counts_adata(
    n_per_class: tuple[int, ...] = (40, 30, 20), n_genes: int = 60, seed: int = 0
) -> ad.AnnData:
    """Poisson counts with class-specific marker genes and string labels."""
    rng = np.random.default_rng(seed)
    blocks, labels = [], []
    for c, n in enumerate(n_per_class):
        rate = np.full(n_genes, 0.5)
        rate[c * 5 : c * 5 + 5] = 8.0
        blocks.append(rng.poisson(rate, size=(n, n_genes)))
        labels += [f"type_{c}"] * n
    x = sparse.csr_matrix(np.vstack(blocks).astype(np.float32))
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical(labels), "batch": "b0"},
        index=[f"cell_{i}" for i in range(x.shape[0])],
    )
    var = pd.DataFrame(index=[f"gene_{j}" for j in range(n_genes)])
    return ad.AnnData(X=x, obs=obs, var=var)


@pytest.fixture
def counts_adata() -> ad.AnnData:
    return make_counts_adata()


@pytest.fixture
def lognorm_adata() -> ad.AnnData:
    adata = make_counts_adata()
    x = adata.X.toarray()
    x = np.log1p(x / np.maximum(x.sum(1, keepdims=True), 1) * 1e4)
    adata.X = sparse.csr_matrix(x.astype(np.float32))
    return adata


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """A throw-away copy of the Kedro project (conf + empty data layers)."""
    dst = tmp_path / "project"
    dst.mkdir()
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(PROJECT_ROOT / name, dst / name)
    shutil.copytree(
        PROJECT_ROOT / "conf", dst / "conf", ignore=shutil.ignore_patterns("local")
    )
    (dst / "conf" / "local").mkdir()
    (dst / "src").mkdir()  # the package itself is installed (editable)
    for layer in (PROJECT_ROOT / "data").iterdir():
        if layer.is_dir():
            (dst / "data" / layer.name).mkdir(parents=True)
    return dst


def shared_dataset(name: str) -> Path:
    """Path of a dataset in ../shared/data, skipping the test when absent."""
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``slow`` every test that runs Kedro sessions on a project copy
    (the ``project_copy`` fixture) or executes the notebook:
    ``pytest -m "not slow"`` is the quick loop."""
    for item in items:
        if "project_copy" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
