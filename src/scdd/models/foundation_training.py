"""Training the foundation model F by reconstruction, streamed from disk,
through a Lightning ``Trainer``.

Row blocks of the training split are visited in a seeded random order, a few
blocks at a time with their rows shuffled together (a shuffle buffer), for a
budget of cells seen rather than epochs over every cell; a capped validation
sample is read once. Small splits keep their blocks in memory across passes.

The ``Trainer`` (``foundation.trainer``: accelerator, devices, strategy,
precision, num_nodes) runs the optimisation, so the same code trains on one
CPU, one GPU, or several processes, GPUs or nodes with DDP: each rank reads
its own share of the blocks (the same number of cells per pass on every rank)
and the validation rounds, early stopping and best weights are decided the
same way on every rank. Rank 0 writes the model in SCimilarity's layout.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import dask.array as da
import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pydantic import (
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    model_validator,
)
from scimilarity.nn_models import Decoder, Encoder
from scipy import sparse
from torch.utils.data import DataLoader, IterableDataset

from scdd.atomic import atomic_path
from scdd.cellstore import CHUNK_ROWS, lazy_matrix, take_matrix_rows
from scdd.models.device import fused_adam
from scdd.models.foundation import (
    MIN_GENE_OVERLAP,
    MODEL_FILES,
    FoundationArchitectureParams,
    FoundationEmbedParams,
    FoundationModel,
    build_autoencoder,
    load_model_dir,
    save_model_dir,
)
from scdd.param_group import ParamGroup
from scdd.threads import apply_threads, follow_cores

logger = logging.getLogger(__name__)


def batch_hard_triplet_loss(
    z: torch.Tensor, labels: torch.Tensor, margin: float
) -> torch.Tensor:
    """Batch-hard triplet loss on cosine distance of unit-norm latents ``[N, D]``.

    For each anchor: its farthest same-class cell and its nearest other-class
    cell. Anchors without either are skipped; returns 0 when none qualify.
    """
    dist = 1.0 - z @ z.T
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    pos = same & ~eye
    valid = pos.any(1) & (~same).any(1)
    if not valid.any():
        return z.sum() * 0.0
    hardest_pos = dist.masked_fill(~pos, -1.0).max(1).values
    hardest_neg = dist.masked_fill(same, 3.0).min(1).values
    return F.relu(hardest_pos - hardest_neg + margin)[valid].mean()


#: Cells per step that ``batch_size: auto`` takes on budget-bound data: a
#: step at 12k genes costs 1.3x that of 256 cells for twice the cells (1,024
#: gains nothing more on a 2-core CPU).
BUDGET_BATCH = 512


class TrainConfig(ParamGroup):
    """Training settings of the local foundation model (``foundation.train``)."""

    #: Passes over the training cells, at most (the budget usually ends first
    #: on large data).
    epochs: PositiveInt = 50
    #: Cells per optimiser step. ``auto``: 256 where ``epochs`` passes end
    #: training (small data, where steps are few), ``BUDGET_BATCH`` at ``lr``
    #: x sqrt(2) where the ``max_cells_seen`` budget ends it first (an atlas:
    #: steps are plentiful, and a step's fixed cost, the weight casts of bf16
    #: autocast and the AdamW update, is paid per step), see ``for_cells``.
    batch_size: Annotated[int, Field(ge=2)] | Literal["auto"] = "auto"
    #: AdamW's learning rate (at 256 cells per step under ``auto``).
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 1e-4
    val_fraction: float = Field(default=0.1, ge=0, lt=1)
    #: At most this many cells are held out for validation (a seeded random
    #: ``val_fraction`` of the cells, read once into memory).
    val_max_cells: PositiveInt = 10_000
    #: Validation loss is measured every this many cells trained on (once
    #: per pass when there are fewer training cells); ``patience`` counts
    #: these rounds.
    eval_every_cells: PositiveInt = 250_000
    patience: PositiveInt = 5
    triplet_weight: NonNegativeFloat = 0.0
    triplet_margin: NonNegativeFloat = 0.05
    #: Training stops once this many cells (with repeats) went through the
    #: optimiser, whatever ``epochs`` says: an atlas costs a budget, not
    #: ``epochs`` passes over millions of cells. ``None``: no budget.
    max_cells_seen: int | None = Field(default=3_000_000, ge=2)
    #: Row blocks read in a seeded random order, this many at a time, their
    #: rows shuffled together into mini-batches (the shuffle buffer).
    shuffle_blocks: PositiveInt = 4

    def for_cells(self, n_fit: int) -> TrainConfig:
        """These settings with ``batch_size: auto`` resolved for ``n_fit``
        training cells: the larger batch (and Adam's square-root learning-rate
        rule) only where the budget, not ``epochs``, bounds the cells seen."""
        if self.batch_size != "auto":
            return self
        budget = self.max_cells_seen
        if budget is None or n_fit * self.epochs <= budget:
            return self.model_copy(update={"batch_size": 256})
        scale = math.sqrt(BUDGET_BATCH / 256)
        return self.model_copy(
            update={"batch_size": BUDGET_BATCH, "lr": self.lr * scale}
        )


class TrainerConfig(ParamGroup):
    """How the Lightning ``Trainer`` runs the training (``foundation.trainer``)."""

    #: ``None`` follows the run's ``device`` parameter (``cuda:1`` trains on
    #: GPU 1); else Lightning's accelerator name.
    accelerator: Literal["cpu", "gpu", "cuda", "mps"] | None = None
    #: Processes (CPU) or GPUs per node.
    devices: PositiveInt = 1
    #: ``auto``: one process. ``ddp``: one process per device; started from
    #: this process (spawned) unless a launcher (torchrun, srun) started every
    #: rank. ``ddp_spawn`` / ``ddp_fork`` name the start method.
    strategy: Literal["auto", "ddp", "ddp_spawn", "ddp_fork"] = "auto"
    #: ``bf16-mixed`` / ``16-mixed`` (GPU) train in mixed precision; the
    #: weights written stay float32. ``auto``: ``bf16-mixed`` on a CPU that
    #: computes bf16 natively (AMX or AVX-512 BF16), else ``32-true``.
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed"] = "auto"
    num_nodes: PositiveInt = 1

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes


class FoundationParams(ParamGroup):
    """``params:foundation``: train F here (``local``) or load SCimilarity's."""

    source: Literal["local", "pretrained"] = "local"
    #: SCimilarity model directory (``source: pretrained``).
    pretrained_path: str | None = None
    min_gene_overlap: PositiveInt = MIN_GENE_OVERLAP
    model: FoundationArchitectureParams = FoundationArchitectureParams()
    train: TrainConfig = TrainConfig()
    trainer: TrainerConfig = TrainerConfig()
    embed: FoundationEmbedParams = FoundationEmbedParams()
    #: The report's linear probes train on a stratified sample of at most
    #: this many training cells and score as many test cells (gene rows read).
    probe_max_cells: PositiveInt = 20_000

    @model_validator(mode="after")
    def _pretrained_directory(self) -> FoundationParams:
        if self.source != "pretrained":
            return self
        path = self.pretrained_path
        if not path:
            raise ValueError(
                "foundation.source='pretrained' needs foundation.pretrained_path "
                "(a SCimilarity model directory); set it, or use source: local"
            )
        if not Path(path).is_dir():
            raise ValueError(
                f"foundation.pretrained_path={path!r} is not a directory "
                f"({Path(path).resolve()}); give a SCimilarity model directory"
            )
        missing = [name for name in MODEL_FILES if not (Path(path) / name).is_file()]
        if missing:
            raise ValueError(
                f"foundation.pretrained_path={path!r} is not a SCimilarity model "
                f"directory: missing {missing}"
            )
        return self


#: Columns of the training history: one row per validation round.
HISTORY_COLUMNS = ["round", "cells_seen", "train_loss", "val_loss"]


#: Up to this many bytes of a lazy matrix's training blocks stay in memory
#: across passes (all of a small matrix: no re-reading the file every pass).
CACHE_MAX_BYTES = 1 << 30


def validation_size(n_cells: int, config: TrainConfig) -> int:
    """Cells ``train_foundation`` holds out of ``n_cells`` for validation."""
    return min(int(round(config.val_fraction * n_cells)), config.val_max_cells)


#: The validation cells come from at least this many row blocks (all of them
#: when there are fewer): enough to stand for a file sorted by donor or
#: tissue, without reading every block of an atlas for them.
VALIDATION_BLOCKS = 16


def validation_rows(
    block_rows: tuple[int, ...], n_val: int, rng: np.random.Generator
) -> np.ndarray:
    """Sorted rows of ``n_val`` seeded validation cells.

    On data of more than :data:`VALIDATION_BLOCKS` row blocks they are drawn
    from a seeded random subset of the blocks (at least that many, holding at
    least twice ``n_val`` rows), so reading them touches those blocks only;
    otherwise from every row.
    """
    bounds = np.cumsum((0, *block_rows))
    if len(block_rows) <= VALIDATION_BLOCKS:
        return np.sort(rng.choice(bounds[-1], n_val, replace=False))
    order = rng.permutation(len(block_rows))
    held = np.cumsum(np.asarray(block_rows)[order])
    k = max(VALIDATION_BLOCKS, int(np.searchsorted(held, 2 * n_val)) + 1)
    pool = np.concatenate([np.arange(bounds[b], bounds[b + 1]) for b in order[:k]])
    return np.sort(rng.choice(pool, n_val, replace=False))


def _batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Index batches of ``order``; a trailing batch of one (BatchNorm) is merged."""
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if len(chunks) > 1 and len(chunks[-1]) == 1:
        chunks[-2] = np.concatenate(chunks[-2:])
        chunks.pop()
    return chunks


class _TrainingBlocks:
    """The training rows of each row block of ``x`` (held-out rows removed),
    read one block at a time; with ``cache``, kept in memory up to
    :data:`CACHE_MAX_BYTES` so later passes do not read the file again."""

    def __init__(self, x: da.Array, held_out: np.ndarray, *, cache: bool) -> None:
        self.x = x
        self.bounds = np.cumsum((0, *x.chunks[0]))
        self.held_out = held_out
        self.cache: dict[int, tuple[np.ndarray, sparse.csr_matrix]] | None = (
            {} if cache else None
        )
        self.cached_bytes = 0

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def __call__(self, i: int) -> tuple[np.ndarray, sparse.csr_matrix]:
        if self.cache is not None and i in self.cache:
            return self.cache[i]
        start, stop = self.bounds[i], self.bounds[i + 1]
        block = self.x.blocks[i].compute(scheduler="synchronous")
        block = sparse.csr_matrix(block, dtype=np.float32)
        keep = ~self.held_out[start:stop]
        if not keep.all():
            block = block[keep]
        item = (start + np.flatnonzero(keep), block)
        if self.cache is not None:
            size = block.data.nbytes + block.indices.nbytes + block.indptr.nbytes
            if self.cached_bytes + size <= CACHE_MAX_BYTES:
                self.cache[i] = item
                self.cached_bytes += size
        return item


def _epoch_batches(
    read: _TrainingBlocks,
    order: np.ndarray,
    rng: np.random.Generator,
    *,
    quota: int,
    batch_size: int,
    shuffle_blocks: int,
) -> Iterator[tuple[np.ndarray, sparse.csr_matrix]]:
    """One pass of one rank: ``(rows, csr)`` mini-batches of ``quota`` rows.

    Blocks are read in ``order``, ``shuffle_blocks`` at a time; their rows
    (with the previous group's leftover) are shuffled together and cut into
    full batches. The group that completes the quota ends the pass: its last
    batch may be shorter, never one row. With ``order`` every block and
    ``quota`` every training row (one process), each row comes once.
    """
    left_rows = np.empty(0, dtype=np.int64)
    left_x = sparse.csr_matrix((0, read.x.shape[1]), dtype=np.float32)
    remaining = quota
    for g in range(0, len(order), shuffle_blocks):
        parts = [(left_rows, left_x)] + [
            read(int(i)) for i in order[g : g + shuffle_blocks]
        ]
        rows = np.concatenate([p[0] for p in parts])
        buffer = sparse.vstack([p[1] for p in parts], format="csr", dtype=np.float32)
        del parts
        perm = rng.permutation(len(rows))
        if len(perm) >= remaining:  # the pass's last group
            for batch in _batches(perm[:remaining], batch_size):
                if len(batch) >= 2:  # BatchNorm needs two cells
                    yield rows[batch], buffer[batch]
            return
        n_full = len(perm) // batch_size * batch_size
        for i in range(0, n_full, batch_size):
            batch = perm[i : i + batch_size]
            yield rows[batch], buffer[batch]
        remaining -= n_full
        left_rows, left_x = rows[perm[n_full:]], buffer[perm[n_full:]]


def rank_block_order(order: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Every block of ``order``, rank ``rank``'s share (every ``world_size``-th
    block from ``rank``) first, then the other ranks' shares: a rank whose
    share holds fewer cells than a pass's quota tops up from its neighbours."""
    return np.concatenate(
        [order[(rank + k) % world_size :: world_size] for k in range(world_size)]
    )


class _CellBatches(IterableDataset):
    """The training batches of one rank, pass after pass (one pass per
    ``iter``): dense float32 cells and their integer labels (empty when
    label-blind). Blocks come in the same seeded order on every rank.

    One process draws block orders and row shuffles from ``rng`` (the stream
    that drew the validation cells); several ranks draw block orders from
    ``seed`` (the same on every rank) and row shuffles from ``(seed, rank)``.
    """

    def __init__(
        self,
        read: _TrainingBlocks,
        labels: torch.Tensor | None,
        *,
        n_fit: int,
        config: TrainConfig,
        seed: int,
        rng: np.random.Generator,
    ) -> None:
        self.read, self.labels = read, labels
        self.n_fit, self.config, self.seed = n_fit, config, seed
        self.rank, self.world_size = 0, 1
        self._block_rng = self._row_rng = rng

    def place(self, rank: int, world_size: int) -> None:
        """Read as rank ``rank`` of ``world_size``."""
        self.rank, self.world_size = rank, world_size
        if world_size > 1:
            self._block_rng = np.random.default_rng(self.seed)
            self._row_rng = np.random.default_rng([self.seed, rank])

    @property
    def quota(self) -> int:
        """Cells each rank trains on per pass (the same on every rank)."""
        return self.n_fit // self.world_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = rank_block_order(
            self._block_rng.permutation(len(self.read)), self.rank, self.world_size
        )
        for rows, x in _epoch_batches(
            self.read,
            order,
            self._row_rng,
            quota=self.quota,
            batch_size=self.config.batch_size,
            shuffle_blocks=self.config.shuffle_blocks,
        ):
            y = _labels_of(self.labels, rows)
            yield torch.from_numpy(x.toarray()), y


def _labels_of(labels: torch.Tensor | None, rows: np.ndarray) -> torch.Tensor:
    """The labels of ``rows``; empty when training is label-blind."""
    if labels is None:
        return torch.empty(0, dtype=torch.long)
    return labels[torch.from_numpy(rows)]


def _loss(
    encoder: Encoder,
    decoder: Decoder,
    xb: torch.Tensor,
    labels: torch.Tensor,
    config: TrainConfig,
) -> torch.Tensor:
    """Reconstruction MSE of a batch (+ the triplet term when configured)."""
    z = encoder(xb)
    loss = F.mse_loss(decoder(z), xb)
    if config.triplet_weight > 0 and len(labels):
        loss = loss + config.triplet_weight * batch_hard_triplet_loss(
            z, labels, config.triplet_margin
        )
    return loss


class FoundationModule(pl.LightningModule):
    """E and D trained by reconstruction, in validation rounds.

    Every ``eval_every_cells`` cells (counted over all ranks; once per pass on
    smaller data), when the budget is spent and at the end, a round measures
    the held-out loss (every rank scores all held-out cells, so each takes the
    same decision), records it, keeps the best weights and stops after
    ``patience`` rounds without gain. At the end the best weights are loaded
    and rank 0 writes the model directory and the history to ``out_dir``.
    """

    def __init__(  # noqa: PLR0913
        self,
        encoder: Encoder,
        decoder: Decoder,
        *,
        config: TrainConfig,
        x_val: sparse.csr_matrix | None,
        y_val: torch.Tensor | None,
        n_fit: int,
        seed: int,
        threads: int,
        out_dir: str,
        describe: dict[str, Any],
    ) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.config, self.x_val, self.y_val = config, x_val, y_val
        self.n_fit, self.seed, self.threads = n_fit, seed, threads
        self.out_dir, self.describe = out_dir, describe
        self.budget = config.max_cells_seen or np.inf
        self.interval = 0  # cells between rounds, once the ranks are known
        self.history: list[dict[str, float]] = []
        self.best, self.best_state, self.stale = float("inf"), None, 0
        self.cells_seen, self.next_eval = 0, 0
        self.round_loss, self.round_cells = 0.0, 0
        self.started = 0.0

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            self.parameters(),
            lr=self.config.lr,
            weight_decay=self.config.weight_decay,
            **fused_adam(self.device),
        )

    def on_fit_start(self) -> None:
        trainer = self.trainer
        if self.device.type == "cpu":  # share the run's CPU threads among ranks
            local = max(1, trainer.world_size // max(trainer.num_nodes, 1))
            apply_threads(max(1, self.threads // local))
        if trainer.world_size > 1:  # each rank its own dropout masks
            torch.manual_seed(self.seed + trainer.global_rank)
        trainer.datamodule.train.place(trainer.global_rank, trainer.world_size)
        per_pass = self.n_fit // trainer.world_size * trainer.world_size
        self.interval = min(per_pass, self.config.eval_every_cells)
        self.next_eval = self.interval
        self.started = time.perf_counter()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int):
        xb, yb = batch
        world = self.trainer.world_size
        room = int(min(len(xb), -(-(self.budget - self.cells_seen) // world)))
        if room < len(xb):  # the budget ends inside this batch
            xb, yb = xb[:room], yb[:room]
        loss = _loss(self.encoder, self.decoder, xb, yb, self.config)
        n = len(xb)
        self.round_loss += float(loss.detach()) * n
        self.round_cells += n
        self.cells_seen += n * world
        return loss

    def on_train_batch_end(self, *_: Any) -> None:
        # one rank per machine: ranks sharing one would count each other busy
        if self.trainer.world_size == self.trainer.num_nodes:
            follow_cores()
        # no batch of two cells per rank left (BatchNorm needs two)
        spent = self.budget - self.cells_seen < 2 * self.trainer.world_size
        if self.cells_seen >= self.next_eval or spent:
            while self.next_eval <= self.cells_seen:
                self.next_eval += self.interval
            if self._end_round():
                self.trainer.should_stop = True
        if spent:
            logger.info("Budget of %d cells seen reached", self.cells_seen)
            self.trainer.should_stop = True

    def on_train_end(self) -> None:
        if self.round_cells:
            self._end_round()
        self.encoder.load_state_dict(self.best_state[0])
        self.decoder.load_state_dict(self.best_state[1])
        if self.trainer.global_rank == 0:
            self._write()

    def _validation_loss(self) -> float:
        """Mean per-cell loss of the held-out cells, E and D in eval mode."""
        self.encoder.eval()
        self.decoder.eval()
        total = 0.0
        with torch.no_grad():
            for batch in _batches(
                np.arange(self.x_val.shape[0]), self.config.batch_size
            ):
                xb = torch.from_numpy(self.x_val[batch].toarray()).to(self.device)
                yb = _labels_of(self.y_val, batch).to(self.device)
                loss = _loss(self.encoder, self.decoder, xb, yb, self.config)
                total += float(loss) * len(batch)
        self.encoder.train()
        self.decoder.train()
        return total / self.x_val.shape[0]

    def _end_round(self) -> bool:
        """Validate, record the round, keep the best weights; True: stop."""
        strategy = self.trainer.strategy
        totals = strategy.reduce(
            torch.tensor(
                [self.round_loss, float(self.round_cells)], device=self.device
            ),
            reduce_op="sum",
        )
        train_loss = float(totals[0] / totals[1])
        val_loss = self._validation_loss() if self.x_val is not None else train_loss
        self.history.append(
            {
                "round": len(self.history) + 1,
                "cells_seen": self.cells_seen,
                "train_loss": train_loss,
                "val_loss": val_loss,
            }
        )
        logger.log(  # atlas-sized rounds take minutes: say how far it is
            logging.INFO if float(totals[1]) >= 100_000 else logging.DEBUG,
            "Round %d: %d cells seen (%.0f cells/s), train MSE %.5f, val %.5f",
            len(self.history),
            self.cells_seen,
            self.cells_seen / max(time.perf_counter() - self.started, 1e-9),
            train_loss,
            val_loss,
        )
        self.round_loss, self.round_cells = 0.0, 0
        if val_loss < self.best - 1e-6:
            self.best, self.stale = val_loss, 0
            self.best_state = copy.deepcopy(
                (self.encoder.state_dict(), self.decoder.state_dict())
            )
            return False
        self.stale += 1
        if self.stale >= self.config.patience:
            logger.info("Early stop after round %d", len(self.history))
            return True
        return False

    def _write(self) -> None:
        """Rank 0: the model directory (SCimilarity's layout) and the history."""
        hyper = {
            **self.describe,
            "cells_seen": self.cells_seen,
            "rounds": len(self.history),
            "best_val_mse": self.best,
        }
        genes, labels = hyper.pop("gene_order"), hyper.pop("label_names")
        overlap = hyper.pop("min_gene_overlap")
        model = FoundationModel(
            copy.deepcopy(self.encoder).float().cpu(),
            copy.deepcopy(self.decoder).float().cpu(),
            genes,
            labels,
            hyper,
            overlap,
        )
        with atomic_path(Path(self.out_dir), directory=True) as out:
            save_model_dir(model, out)
            pd.DataFrame(self.history, columns=HISTORY_COLUMNS).to_csv(
                out / "history.csv", index=False
            )
        logger.info(
            "Foundation model trained in %.1f s (%d cells seen, %.2f passes, %d "
            "rounds, best val MSE %.5f)",
            time.perf_counter() - self.started,
            self.cells_seen,
            self.cells_seen / self.n_fit,
            len(self.history),
            self.best,
        )


class _CellData(pl.LightningDataModule):
    """The training split's batches for whichever rank this process is."""

    def __init__(self, train: _CellBatches) -> None:
        super().__init__()
        self.train = train

    def train_dataloader(self) -> DataLoader:
        # its own generator: drawing the loader's base seed from torch's global
        # one would shift every dropout mask (one process trains exactly as
        # the loop this trainer replaced did)
        return DataLoader(self.train, batch_size=None, generator=torch.Generator())


def launched_externally() -> bool:
    """Whether a launcher (torchrun, srun) started this process as one rank of
    several: then DDP joins them rather than starting processes itself."""
    from lightning_fabric.plugins.environments import (
        SLURMEnvironment,
        TorchElasticEnvironment,
    )

    return (
        TorchElasticEnvironment.detect()
        or SLURMEnvironment.detect()
        or "LOCAL_RANK" in os.environ
    )


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX tiles or AVX-512 BF16);
    elsewhere bf16 is emulated and slower than float32."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolved_precision(precision: str, accelerator: str) -> str:
    """``precision`` with ``auto`` resolved: ``bf16-mixed`` on a CPU with
    native bf16 (training 1.3-1.5x faster there), ``32-true`` elsewhere
    (emulated bf16 is slower; on a GPU it gained nothing at 2,000 genes)."""
    if precision != "auto":
        return precision
    return "bf16-mixed" if accelerator == "cpu" and native_cpu_bf16() else "32-true"


def trainer_arguments(trainer: TrainerConfig, device: torch.device) -> dict[str, Any]:
    """``pl.Trainer`` keyword arguments for ``trainer`` on the run's ``device``.

    With no launcher around, ``ddp`` starts its processes by spawning them:
    Lightning's own way for ``ddp`` re-executes the command line, which in a
    Kedro run would run the whole pipeline again in every process.
    """
    accelerator, devices = trainer.accelerator, trainer.devices
    if accelerator is None:
        accelerator = {"cuda": "gpu"}.get(device.type, device.type)
        if device.type == "cuda" and device.index is not None and devices == 1:
            devices = [device.index]
    strategy = trainer.strategy
    if trainer.world_size > 1 and strategy in ("auto", "ddp"):
        strategy = "ddp" if launched_externally() else "ddp_spawn"
    return {
        "accelerator": accelerator,
        "devices": devices,
        "strategy": strategy,
        "precision": resolved_precision(trainer.precision, accelerator),
        "num_nodes": trainer.num_nodes,
    }


def train_foundation(  # noqa: PLR0913
    x: Any,
    *,
    gene_order: list[str],
    labels: np.ndarray | None = None,
    label_names: list[str] | None = None,
    architecture: FoundationArchitectureParams | None = None,
    config: TrainConfig | None = None,
    trainer: TrainerConfig | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
    chunk_rows: int = CHUNK_ROWS,
    out_dir: Path | str | None = None,
    min_gene_overlap: int = MIN_GENE_OVERLAP,
) -> tuple[FoundationModel, pd.DataFrame]:
    """Train E and D on log-normalised cells ``x`` ``[N, G]`` by reconstruction.

    ``x`` is lazy (a dask array of row blocks, read one block at a time) or
    in memory (wrapped as ``chunk_rows``-row blocks); the same blocks give the
    same weights. Batches stream from the blocks in a seeded random order
    through a shuffle buffer of ``config.shuffle_blocks`` blocks. A seeded
    random ``val_fraction`` of the cells (at most ``val_max_cells``; from a
    subset of the row blocks on large data, :func:`validation_rows`) is read
    once and never trained on. Training runs until ``max_cells_seen`` cells
    were trained on or ``epochs`` passes are done; the validation loss is
    measured every ``eval_every_cells`` cells (once per pass on smaller data),
    training stops after ``patience`` such rounds without improvement, and
    the best weights are kept.

    ``architecture`` (``foundation.model``; default: its defaults) sizes E
    and D. ``trainer`` (default: one process on ``device``) says how
    Lightning runs it; with several ranks each reads its share of the
    blocks. The model is written in SCimilarity's layout to ``out_dir`` (a
    temporary directory when ``None``) by rank 0 and read back from there,
    with ``min_gene_overlap``, the floor of genes data must share with it.

    Label-blind unless ``config.triplet_weight > 0`` (then ``labels`` — ints
    ``[N]`` — add a batch-hard triplet term).

    Returns:
        The frozen model (on CPU) and the per-round history: ``round``,
        ``cells_seen``, ``train_loss`` (mean over the round's cells) and
        ``val_loss``.
    """
    architecture = architecture or FoundationArchitectureParams()
    config = config or TrainConfig()
    trainer = trainer or TrainerConfig()
    device = torch.device(device)
    if config.triplet_weight > 0 and labels is None:
        raise ValueError("foundation.train.triplet_weight > 0 needs labels.")
    lazy_input = isinstance(x, da.Array)
    x = lazy_matrix(x, chunk_rows=chunk_rows)
    n, n_genes = x.shape
    rng = np.random.default_rng(seed)
    n_val = validation_size(n, config)
    n_fit = n - n_val
    config = config.for_cells(n_fit)
    if n_fit < 2 * trainer.world_size:
        raise ValueError(
            f"Too few cells ({n}) to train on with {n_val} held out for validation "
            f"and {trainer.world_size} rank(s)."
        )
    val_rows = validation_rows(x.chunks[0], n_val, rng) if n_val else None
    held_out = np.zeros(n, dtype=bool)
    if val_rows is not None:
        held_out[val_rows] = True
    x_val = None if val_rows is None else take_matrix_rows(x, val_rows)
    y = None if labels is None else torch.tensor(np.asarray(labels), dtype=torch.long)
    y_val = None if y is None or val_rows is None else y[torch.from_numpy(val_rows)]
    read = _TrainingBlocks(x, held_out, cache=lazy_input)
    arguments = trainer_arguments(trainer, device)
    logger.info(
        "Training foundation model on %d cells x %d genes (%d held out, %d row "
        "blocks), budget %s cells, %d cells per step at lr %g, validation every %d "
        "cells, %s, trainer %s",
        n_fit,
        n_genes,
        n_val,
        len(read),
        config.max_cells_seen,
        config.batch_size,
        config.lr,
        min(n_fit // trainer.world_size * trainer.world_size, config.eval_every_cells),
        architecture.model_dump(),
        arguments,
    )
    describe = {
        **architecture.model_dump(),
        "source": "local",
        "label_blind": config.triplet_weight == 0,
        "seed": seed,
        **{f"train_{k}": v for k, v in config.model_dump().items()},
        **{f"trainer_{k}": v for k, v in trainer.model_dump().items()},
        "n_train_cells": n_fit,
        "n_val_cells": n_val,
        "gene_order": list(gene_order),
        "label_names": list(label_names or []),
        "min_gene_overlap": min_gene_overlap,
    }
    devices = [device] if device.type == "cuda" else []
    with (
        tempfile.TemporaryDirectory(prefix="scdd-foundation-") as scratch,
        torch.random.fork_rng(devices=devices),
    ):
        torch.manual_seed(seed)
        out = Path(out_dir or Path(scratch) / "model")
        encoder, decoder = build_autoencoder(n_genes, architecture)
        module = FoundationModule(
            encoder,
            decoder,
            config=config,
            x_val=x_val,
            y_val=y_val,
            n_fit=n_fit,
            seed=seed,
            threads=torch.get_num_threads(),
            out_dir=str(out),
            describe=describe,
        )
        batches = _CellBatches(read, y, n_fit=n_fit, config=config, seed=seed, rng=rng)
        data = _CellData(batches)
        # "GPU available: ..." and tips: the log line above says what runs
        logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(
            logging.WARNING
        )
        fit = pl.Trainer(
            **arguments,
            max_epochs=config.epochs,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=progress,
        )
        with warnings.catch_warnings():
            # batches are cut from blocks in this process, not by loader workers
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            fit.fit(module, datamodule=data)
        if fit.global_rank != 0:  # a rank started by torchrun / srun
            return None, None
        model = load_model_dir(out)
        history = pd.read_csv(out / "history.csv")
    return model, history
