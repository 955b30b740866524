import json
from pathlib import Path

import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from scdd import generation
from scdd.datasets import TorchCheckpointDataset
from scdd.models.device import make_generator
from scdd.models.generator_config import GeneratorParams
from scdd.pipelines.generator import create_pipeline
from scdd.pipelines.generator.nodes import train_generator
from scdd.preprocessing_config import DataParams
from scdd.run_context import using_run
from tests.conftest import CPU_RUN
from tests.test_generation import MODEL, REPORT, TRAIN, make_embeddings_adata

DATA = DataParams(input="scanpy://pbmc68k_reduced", label_key="cell_type")
PARAMS = GeneratorParams(model=MODEL, train=TRAIN, conditions=None, report=REPORT)

# the nodes read seed, device and progress from the run context
pytestmark = pytest.mark.usefixtures("cpu_run")


def _catalog(tmp_path: Path, train=None) -> DataCatalog:
    catalog = DataCatalog(
        {
            "train_embeddings": MemoryDataset(train or make_embeddings_adata()),
            "test_embeddings": MemoryDataset(
                make_embeddings_adata((15, 10, 5), seed=1)
            ),
            "generator_checkpoint": TorchCheckpointDataset(
                filepath=str(tmp_path / "generator.pt")
            ),
            "generator_history": MemoryDataset(),
            "generator_report": MemoryDataset(),
        }
    )
    catalog["params:generator"] = PARAMS
    catalog["params:data"] = DATA
    return catalog


def test_train_node_outputs() -> None:
    checkpoint, history = train_generator(make_embeddings_adata(), PARAMS, DATA)
    assert checkpoint["condition_columns"] == ["cell_type"]
    assert checkpoint["config"]["latent_dim"] == 16
    assert history["step"].iloc[-1] == TRAIN.steps
    # the run's seed seeds the training
    with using_run(CPU_RUN.model_copy(update={"seed": 1})):
        other, _ = train_generator(make_embeddings_adata(), PARAMS, DATA)
    weights = checkpoint["state_dict"]
    assert any(
        not torch.equal(other["state_dict"][name], tensor)
        for name, tensor in weights.items()
    )


def test_sliced_runs_round_trip_checkpoint(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    pipe = create_pipeline()
    SequentialRunner().run(pipe.to_nodes("generator.train_scdg"), catalog)
    assert (tmp_path / "generator.pt").is_file()
    SequentialRunner().run(pipe.from_nodes("generator.report_quality"), catalog)
    report = catalog.load("generator_report")
    json.dumps(report, allow_nan=False)
    assert report["condition_columns"] == ["cell_type"]
    assert len(report["reconstruction"]) == len(REPORT.t_values)

    # The saved checkpoint equals a direct, identically seeded training run.
    saved = TorchCheckpointDataset(filepath=str(tmp_path / "generator.pt")).load()
    direct, _ = generation.train_generator(
        make_embeddings_adata(),
        ["cell_type"],
        model=MODEL,
        train=TRAIN,
        seed=0,
        progress=False,
    )
    assert saved.keys() == direct.keys()
    for name, tensor in direct["state_dict"].items():
        torch.testing.assert_close(saved["state_dict"][name], tensor)
    cond = torch.tensor([[0], [1], [2]])
    samples = [
        generation.load_generator(ckpt)[0].sample(
            cond, n_steps=5, guidance_scale=2.0, generator=make_generator(3)
        )
        for ckpt in (saved, direct)
    ]
    torch.testing.assert_close(samples[0], samples[1], rtol=0, atol=0)


def test_missing_label_column_writes_nothing(tmp_path: Path) -> None:
    train = make_embeddings_adata()
    train.obs = train.obs.rename(columns={"cell_type": "celltype"})
    with pytest.raises(ValueError, match="Available columns"):
        SequentialRunner().run(create_pipeline(), _catalog(tmp_path, train))
    assert list(tmp_path.iterdir()) == []
