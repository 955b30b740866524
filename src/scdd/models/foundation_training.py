"""Training the foundation model F by reconstruction, streamed from disk.

Row blocks of the training split are visited in a seeded random order, a few
blocks at a time with their rows shuffled together (a shuffle buffer), for a
budget of cells seen rather than epochs over every cell; a capped validation
sample is read once. Small splits keep their blocks in memory across passes.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterator
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
)
from scimilarity.nn_models import Decoder, Encoder
from scipy import sparse
from tqdm.auto import tqdm

from scdd.cellstore import CHUNK_ROWS, lazy_matrix, take_matrix_rows
from scdd.models.device import fused_adam
from scdd.models.foundation import FoundationModel, build_autoencoder

logger = logging.getLogger(__name__)


def batch_hard_triplet_loss(
    z: torch.Tensor, labels: torch.Tensor, margin: float = 0.05
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


class TrainConfig(BaseModel):
    """Training settings of the local foundation model (``foundation.train``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Passes over the training cells, at most (the budget usually ends first
    #: on large data).
    epochs: PositiveInt = 50
    batch_size: PositiveInt = Field(default=256, ge=2)
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


#: Up to this many bytes of a lazy matrix's training blocks stay in memory
#: across passes (all of a small matrix: no re-reading the file every pass).
CACHE_MAX_BYTES = 1 << 30


def validation_size(n_cells: int, config: TrainConfig) -> int:
    """Cells ``train_foundation`` holds out of ``n_cells`` for validation."""
    return min(int(round(config.val_fraction * n_cells)), config.val_max_cells)


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


def _shuffled_batches(
    read: _TrainingBlocks,
    rng: np.random.Generator,
    *,
    batch_size: int,
    shuffle_blocks: int,
) -> Iterator[tuple[np.ndarray, sparse.csr_matrix]]:
    """One pass: ``(rows, csr)`` mini-batches of every training row once.

    Blocks come in a seeded random order, ``shuffle_blocks`` at a time; their
    rows (with the previous group's leftover) are shuffled together and cut
    into full batches; the pass's last batch may be shorter, never one row.
    """
    order = rng.permutation(len(read))
    left_rows = np.empty(0, dtype=np.int64)
    left_x = sparse.csr_matrix((0, read.x.shape[1]), dtype=np.float32)
    for g in range(0, len(order), shuffle_blocks):
        parts = [(left_rows, left_x)] + [
            read(int(i)) for i in order[g : g + shuffle_blocks]
        ]
        rows = np.concatenate([p[0] for p in parts])
        buffer = sparse.vstack([p[1] for p in parts], format="csr", dtype=np.float32)
        del parts
        perm = rng.permutation(len(rows))
        if g + shuffle_blocks >= len(order):  # the pass's last group
            batches = _batches(perm, batch_size)
        else:
            n_full = len(perm) // batch_size * batch_size
            batches = [perm[i : i + batch_size] for i in range(0, n_full, batch_size)]
            left_rows, left_x = rows[perm[n_full:]], buffer[perm[n_full:]]
        for batch in batches:
            if len(batch) >= 2:  # BatchNorm needs two cells
                yield rows[batch], buffer[batch]


def _loss(
    encoder: Encoder,
    decoder: Decoder,
    x: sparse.csr_matrix,
    labels: torch.Tensor | None,
    *,
    config: TrainConfig,
    device: torch.device,
) -> torch.Tensor:
    """Reconstruction MSE of a batch (+ the triplet term when configured)."""
    xb = torch.from_numpy(x.toarray()).to(device)
    z = encoder(xb)
    loss = F.mse_loss(decoder(z), xb)
    if config.triplet_weight > 0 and labels is not None:
        loss = loss + config.triplet_weight * batch_hard_triplet_loss(
            z, labels.to(device), config.triplet_margin
        )
    return loss


def _validation_loss(
    encoder: Encoder,
    decoder: Decoder,
    x: sparse.csr_matrix,
    labels: torch.Tensor | None,
    *,
    config: TrainConfig,
    device: torch.device,
) -> float:
    """Mean per-cell loss of the held-out cells, E and D in eval mode."""
    encoder.eval()
    decoder.eval()
    total = 0.0
    with torch.no_grad():
        for batch in _batches(np.arange(x.shape[0]), config.batch_size):
            lb = None if labels is None else labels[torch.from_numpy(batch)]
            loss = _loss(encoder, decoder, x[batch], lb, config=config, device=device)
            total += float(loss) * len(batch)
    return total / x.shape[0]


def train_foundation(
    x: Any,
    *,
    gene_order: list[str],
    labels: np.ndarray | None = None,
    label_names: list[str] | None = None,
    architecture: dict[str, Any] | None = None,
    config: TrainConfig | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
    chunk_rows: int = CHUNK_ROWS,
) -> tuple[FoundationModel, pd.DataFrame]:
    """Train E and D on log-normalised cells ``x`` ``[N, G]`` by reconstruction.

    ``x`` is lazy (a dask array of row blocks, read one block at a time) or
    in memory (wrapped as ``chunk_rows``-row blocks); the same blocks give the
    same weights. Batches stream from the blocks in a seeded random order
    through a shuffle buffer of ``config.shuffle_blocks`` blocks. A seeded
    random ``val_fraction`` of the cells (at most ``val_max_cells``) is read
    once and never trained on. Training runs until ``max_cells_seen`` cells
    were trained on or ``epochs`` passes are done; the validation loss is
    measured every ``eval_every_cells`` cells (once per pass on smaller data),
    training stops after ``patience`` such rounds without improvement, and
    the best weights are kept.

    Label-blind unless ``config.triplet_weight > 0`` (then ``labels`` — ints
    ``[N]`` — add a batch-hard triplet term).

    Returns:
        The frozen model (on CPU) and the per-round history: ``round``,
        ``cells_seen``, ``train_loss`` (mean over the round's cells) and
        ``val_loss``.
    """
    config = config or TrainConfig()
    architecture = {
        "latent_dim": 128,
        "hidden_dim": [1024, 1024],
        **(architecture or {}),
    }
    device = torch.device(device)
    if config.triplet_weight > 0 and labels is None:
        raise ValueError("foundation.train.triplet_weight > 0 needs labels.")
    lazy_input = isinstance(x, da.Array)
    x = lazy_matrix(x, chunk_rows=chunk_rows)
    n, n_genes = x.shape
    rng = np.random.default_rng(seed)
    n_val = validation_size(n, config)
    n_fit = n - n_val
    if n_fit < 2:
        raise ValueError(
            f"Too few cells ({n}) to train on with {n_val} held out for validation."
        )
    val_rows = np.sort(rng.choice(n, n_val, replace=False)) if n_val else None
    held_out = np.zeros(n, dtype=bool)
    if val_rows is not None:
        held_out[val_rows] = True
    x_val = None if val_rows is None else take_matrix_rows(x, val_rows)
    y = None if labels is None else torch.tensor(np.asarray(labels), dtype=torch.long)
    y_val = None if y is None or val_rows is None else y[torch.from_numpy(val_rows)]
    read = _TrainingBlocks(x, held_out, cache=lazy_input)
    budget = config.max_cells_seen or np.inf
    interval = min(n_fit, config.eval_every_cells)

    start = time.perf_counter()
    logger.info(
        "Training foundation model on %d cells x %d genes (%d held out, %d row "
        "blocks), budget %s cells, validation every %d cells, %s, device %s",
        n_fit,
        n_genes,
        n_val,
        len(read),
        config.max_cells_seen,
        interval,
        architecture,
        device,
    )
    history: list[dict[str, float]] = []
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        encoder, decoder = build_autoencoder(n_genes, **architecture)
        encoder.to(device)
        decoder.to(device)
        params = [*encoder.parameters(), *decoder.parameters()]
        optimiser = torch.optim.AdamW(
            params, lr=config.lr, weight_decay=config.weight_decay, **fused_adam(device)
        )
        best, best_state, stale = float("inf"), None, 0
        cells_seen, next_eval = 0, interval
        round_loss, round_cells = 0.0, 0
        bar = tqdm(
            total=int(min(budget, config.epochs * n_fit)),
            desc="foundation",
            unit="cells",
            disable=not progress,
        )

        def end_round() -> bool:
            """Validate, record the round, keep the best weights; True: stop."""
            nonlocal best, best_state, stale, round_loss, round_cells
            train_loss = round_loss / round_cells
            val_loss = (
                _validation_loss(
                    encoder, decoder, x_val, y_val, config=config, device=device
                )
                if x_val is not None
                else train_loss
            )
            history.append(
                {
                    "round": len(history) + 1,
                    "cells_seen": cells_seen,
                    "train_loss": train_loss,
                    "val_loss": val_loss,
                }
            )
            logger.log(  # atlas-sized rounds take minutes: say how far it is
                logging.INFO if round_cells >= 100_000 else logging.DEBUG,
                "Round %d: %d cells seen (%.0f cells/s), train MSE %.5f, val %.5f",
                len(history),
                cells_seen,
                cells_seen / max(time.perf_counter() - start, 1e-9),
                train_loss,
                val_loss,
            )
            round_loss, round_cells = 0.0, 0
            bar.set_postfix(train=f"{train_loss:.4f}", val=f"{val_loss:.4f}")
            if val_loss < best - 1e-6:
                best, stale = val_loss, 0
                best_state = copy.deepcopy((encoder.state_dict(), decoder.state_dict()))
                return False
            stale += 1
            if stale >= config.patience:
                logger.info("Early stop after round %d", len(history))
                return True
            return False

        stop = False
        for _ in range(config.epochs):
            for batch_rows, batch_x in _shuffled_batches(
                read,
                rng,
                batch_size=config.batch_size,
                shuffle_blocks=config.shuffle_blocks,
            ):
                room = int(min(budget - cells_seen, len(batch_rows)))
                rows, xb = batch_rows[:room], batch_x[:room]
                encoder.train()
                decoder.train()
                lb = None if y is None else y[torch.from_numpy(rows)]
                loss = _loss(encoder, decoder, xb, lb, config=config, device=device)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                round_loss += float(loss.detach()) * room
                round_cells += room
                cells_seen += room
                bar.update(room)
                if cells_seen >= next_eval:
                    while next_eval <= cells_seen:
                        next_eval += interval
                    stop = end_round()
                if budget - cells_seen < 2:  # no batch of two cells left
                    logger.info("Budget of %d cells seen reached", cells_seen)
                    stop = True
                if stop:
                    break
            if stop:
                break
        if round_cells:
            end_round()
        bar.close()
    encoder.load_state_dict(best_state[0])
    decoder.load_state_dict(best_state[1])
    logger.info(
        "Foundation model trained in %.1f s (%d cells seen, %.2f passes, %d "
        "rounds, best val MSE %.5f)",
        time.perf_counter() - start,
        cells_seen,
        cells_seen / n_fit,
        len(history),
        best,
    )
    hyper = {
        **architecture,
        "source": "local",
        "label_blind": config.triplet_weight == 0,
        "seed": seed,
        **{f"train_{k}": v for k, v in config.model_dump().items()},
        "n_train_cells": n_fit,
        "n_val_cells": n_val,
        "cells_seen": cells_seen,
        "rounds": len(history),
        "best_val_mse": best,
    }
    model = FoundationModel(
        encoder.cpu(), decoder.cpu(), list(gene_order), list(label_names or []), hyper
    )
    columns = ["round", "cells_seen", "train_loss", "val_loss"]
    return model.freeze(), pd.DataFrame(history, columns=columns)
