import numpy as np
import pytest
import torch
from scimilarity import CellEmbedding
from scipy import sparse

from scdd import cellstore
from scdd.metrics.probe import linear_probe
from scdd.models import foundation_training
from scdd.models.foundation import embed_cells
from scdd.models.foundation_training import (
    FoundationParams,
    TrainConfig,
    TrainerConfig,
    batch_hard_triplet_loss,
    resolved_precision,
    train_foundation,
    validation_rows,
)
from tests.evaluation.lazy_helpers import no_whole_matrix, spied
from tests.models.conftest import ARCH


def test_training_history_and_frozen_model(trained) -> None:
    _, model, history = trained
    assert list(history.columns) == ["round", "cells_seen", "train_loss", "val_loss"]
    # 81 training cells < eval_every_cells: one round per pass over them
    assert history["cells_seen"].tolist() == [81 * (i + 1) for i in range(len(history))]
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert not model.encoder.training and not model.decoder.training
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert model.hyperparameters["label_blind"] is True


def test_a_budget_of_cells_seen_ends_training_before_the_epochs(
    trained, monkeypatch
) -> None:
    adata, calls = trained[0], []  # 90 cells: 81 trained on, 9 held out
    monkeypatch.setattr(foundation_training, "follow_cores", lambda: calls.append(1))
    _, history = train_foundation(
        adata.X,
        gene_order=list(adata.var_names),
        architecture=ARCH,
        config=TrainConfig(epochs=50, batch_size=32, patience=50, max_cells_seen=200),
        seed=0,
        progress=False,
    )
    assert history["cells_seen"].tolist() == [81, 162, 200]  # 81 + 81 + 38 cells
    assert len(calls) == 8  # each batch follows the free cores: 3 + 3 + 2


def test_auto_batch_grows_only_where_the_budget_ends_training() -> None:
    auto = TrainConfig(epochs=50, lr=1e-3, max_cells_seen=3_000_000)
    small = auto.for_cells(60_000)  # 50 passes = the budget: epochs end it
    assert (small.batch_size, small.lr) == (256, 1e-3)
    atlas = auto.for_cells(60_001)
    assert atlas.batch_size == foundation_training.BUDGET_BATCH == 512
    assert atlas.lr == pytest.approx(1e-3 * 2**0.5)
    assert TrainConfig(max_cells_seen=None).for_cells(10**7).batch_size == 256
    fixed = TrainConfig(batch_size=64, lr=3e-3)
    assert fixed.for_cells(10**7) == fixed


def test_the_model_records_the_batch_auto_chose(trained) -> None:
    adata = trained[0]  # 81 training cells x 8 passes > a budget of 300
    model, history = train_foundation(
        adata.X,
        gene_order=list(adata.var_names),
        architecture=ARCH,
        config=TrainConfig(epochs=8, max_cells_seen=300),
        seed=0,
        progress=False,
    )
    assert model.hyperparameters["train_batch_size"] == 512
    assert model.hyperparameters["train_lr"] == pytest.approx(1e-3 * 2**0.5)
    assert history["cells_seen"].tolist() == [81, 162, 243, 300]


def test_validation_every_so_many_cells_across_passes(trained) -> None:
    adata = trained[0]  # 81 training cells, batches of 32 (the pass's last 17)
    _, history = train_foundation(
        adata.X,
        gene_order=list(adata.var_names),
        architecture=ARCH,
        config=TrainConfig(
            epochs=50,
            batch_size=32,
            patience=50,
            max_cells_seen=200,
            eval_every_cells=50,
        ),
        seed=0,
        progress=False,
    )
    # rounds end at the first batch reaching 50, 100, 150 cells; then the budget
    assert history["cells_seen"].tolist() == [64, 113, 162, 200]
    assert history["round"].tolist() == [1, 2, 3, 4]


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


def _weights(model) -> list[torch.Tensor]:
    return [*model.encoder.state_dict().values(), *model.decoder.state_dict().values()]


def test_lazy_and_in_memory_input_train_the_same_weights(trained, monkeypatch) -> None:
    adata = trained[0]
    config = TrainConfig(epochs=3, batch_size=16, shuffle_blocks=2)
    kwargs = {"gene_order": list(adata.var_names), "architecture": ARCH, "seed": 3}
    in_memory, h1 = train_foundation(
        adata.X, config=config, chunk_rows=7, progress=False, **kwargs
    )
    lazy, reads = spied(adata, chunk_rows=7)  # 13 blocks of 7 rows
    with no_whole_matrix(monkeypatch):
        streamed, h2 = train_foundation(lazy.X, config=config, progress=False, **kwargs)
    for a, b in zip(_weights(in_memory), _weights(streamed), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert h1.equals(h2)
    # a small lazy matrix is cached: each block read once for training (and
    # once more where it holds validation cells), whatever the passes
    assert set(reads.counts) == set(range(13)) and max(reads.counts.values()) <= 2
    assert reads.max_rows == 7


def test_validation_rows_are_never_trained_on(trained, monkeypatch) -> None:
    adata = trained[0]
    held_out, batches = [], []
    take = foundation_training.take_matrix_rows
    shuffled = foundation_training._epoch_batches

    def take_spy(x, rows):
        held_out.append(np.asarray(rows))
        return take(x, rows)

    def batches_spy(*args, **kwargs):
        for rows, x in shuffled(*args, **kwargs):
            assert x.shape[0] == len(rows) >= 2
            batches.append(rows)
            yield rows, x

    monkeypatch.setattr(foundation_training, "take_matrix_rows", take_spy)
    monkeypatch.setattr(foundation_training, "_epoch_batches", batches_spy)
    _, history = train_foundation(
        adata.X,
        gene_order=list(adata.var_names),
        architecture=ARCH,
        config=TrainConfig(epochs=2, batch_size=8, val_fraction=0.3, val_max_cells=20),
        chunk_rows=7,
        seed=1,
        progress=False,
    )
    (val,) = held_out
    assert len(val) == 20  # 30% of 90 cells, capped at val_max_cells
    trained_rows = np.concatenate(batches)
    assert not np.isin(trained_rows, val).any()
    # two passes: every other cell exactly twice
    rows, counts = np.unique(trained_rows, return_counts=True)
    np.testing.assert_array_equal(rows, np.setdiff1d(np.arange(90), val))
    assert (counts == 2).all() and history["cells_seen"].tolist() == [70, 140]


def test_validation_cells_of_an_atlas_come_from_a_few_blocks() -> None:
    """Reading the validation cells touches 16 of 200 row blocks, not all;
    data of 16 blocks or fewer keeps the draw over every row (the models
    trained before stay the same)."""
    blocks = (50,) * 200
    rows = validation_rows(blocks, 100, np.random.default_rng(0))
    assert len(np.unique(rows)) == 100 and (np.diff(rows) > 0).all()
    assert len(np.unique(rows // 50)) <= 16
    many = validation_rows(blocks, 1000, np.random.default_rng(0))
    assert 16 < len(np.unique(many // 50)) < 200  # at least twice n_val rows
    small = validation_rows((50,) * 16, 100, np.random.default_rng(3))
    expected = np.sort(np.random.default_rng(3).choice(800, 100, replace=False))
    np.testing.assert_array_equal(small, expected)


def test_a_pass_covers_each_row_once_never_a_batch_of_one() -> None:
    x = sparse.random(
        50, 6, density=0.5, format="csr", dtype=np.float32, random_state=0
    )
    held_out = np.zeros(50, dtype=bool)
    held_out[[3, 17, 48]] = True
    read = foundation_training._TrainingBlocks(
        cellstore.lazy_matrix(x, chunk_rows=7), held_out, cache=False
    )
    rng = np.random.default_rng(0)
    for batch_size in (2, 5, 46):
        got = list(
            foundation_training._epoch_batches(
                read,
                rng.permutation(len(read)),
                rng,
                quota=47,
                batch_size=batch_size,
                shuffle_blocks=3,
            )
        )
        rows = np.concatenate([r for r, _ in got])
        np.testing.assert_array_equal(np.sort(rows), np.flatnonzero(~held_out))
        assert all(2 <= len(r) <= batch_size + 1 for r, _ in got)
        for r, xb in got:
            np.testing.assert_array_equal(xb.toarray(), x[r].toarray())


def test_ranks_train_on_equal_shares_of_the_blocks() -> None:
    x = sparse.random(
        60, 4, density=0.5, format="csr", dtype=np.float32, random_state=1
    )
    read = foundation_training._TrainingBlocks(
        cellstore.lazy_matrix(x, chunk_rows=7), np.zeros(60, dtype=bool), cache=True
    )  # 9 blocks: 8 of 7 rows, 1 of 4
    config = TrainConfig(batch_size=8, shuffle_blocks=2)
    ranks = []
    for rank in (0, 1):
        batches = foundation_training._CellBatches(
            read, None, n_fit=60, config=config, seed=5, rng=np.random.default_rng(0)
        )
        batches.place(rank, 2)
        ranks.append([[len(xb) for xb, _ in batches] for _ in range(3)])  # 3 passes
    # the same batch sizes on both ranks, pass after pass (DDP steps in lockstep)
    assert ranks[0] == ranks[1]
    assert all(sum(sizes) == 30 for sizes in ranks[0])
    order = np.random.default_rng(5).permutation(9)
    shares = foundation_training.rank_block_order(order, 1, 2)
    np.testing.assert_array_equal(shares[:4], order[1::2])  # its own blocks first
    np.testing.assert_array_equal(np.sort(shares), np.arange(9))


def test_ddp_on_two_cpu_processes_writes_a_model_scimilarity_loads(
    trained, tmp_path
) -> None:
    adata = trained[0]
    kwargs = {
        "gene_order": list(adata.var_names),
        "architecture": ARCH,
        "seed": 0,
        "progress": False,
    }
    single, single_history = train_foundation(
        adata.X, config=TrainConfig(epochs=20, batch_size=16), **kwargs
    )
    ddp, history = train_foundation(  # the same global batch: 2 ranks x 8 cells
        adata.X,
        config=TrainConfig(epochs=20, batch_size=8, max_cells_seen=1500),
        trainer=TrainerConfig(accelerator="cpu", devices=2, strategy="ddp"),
        out_dir=tmp_path,
        **kwargs,
    )
    assert ddp.hyperparameters["trainer_devices"] == 2
    # both ranks' cells count: a pass is 2 x 40 of the 81 training cells
    assert history["cells_seen"].tolist()[:3] == [80, 160, 240]  # round per pass
    # the budget ends inside a step: 6 of 8 cells on each rank, not one
    assert history["cells_seen"].iloc[-1] == 1500
    assert history["val_loss"].min() < history["val_loss"].iloc[0]
    assert history["val_loss"].min() < 1.2 * single_history["val_loss"].min()
    loaded = CellEmbedding(model_path=str(tmp_path))
    z = loaded.get_embeddings(adata.X)
    np.testing.assert_allclose(
        z, embed_cells(ddp.encoder, adata.X, progress=False), atol=1e-5
    )
    labels = adata.obs["cell_type"].to_numpy()
    train, test = np.arange(0, 90, 2), np.arange(1, 90, 2)
    accuracy = {
        name: linear_probe(
            z[train], labels[train], z[test], labels[test], max_train_cells=20_000
        )["accuracy"]
        for name, z in (
            ("ddp", z),
            ("single", embed_cells(single.encoder, adata.X, progress=False)),
        )
    }
    assert accuracy["ddp"] >= accuracy["single"] - 0.1, accuracy


def test_the_architecture_is_recorded_with_the_model(trained) -> None:
    _, model, _ = trained
    assert {k: model.hyperparameters[k] for k in type(ARCH).model_fields} == (
        ARCH.model_dump()
    )


def test_a_pretrained_source_needs_a_model_directory() -> None:
    assert FoundationParams().source == "local"
    with pytest.raises(ValueError, match="needs foundation.pretrained_path"):
        FoundationParams(source="pretrained")


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_on_a_cpu_that_computes_it(
    monkeypatch, native
) -> None:
    monkeypatch.setattr(foundation_training, "native_cpu_bf16", lambda: native)
    expected = "bf16-mixed" if native else "32-true"
    assert resolved_precision("auto", "cpu") == expected
    assert resolved_precision("auto", "gpu") == "32-true"
    assert resolved_precision("32-true", "cpu") == "32-true"
    assert resolved_precision("bf16-mixed", "gpu") == "bf16-mixed"
