"""The foundation model F: SCimilarity's encoder/decoder, trained or loaded.

A model lives in a directory laid out as SCimilarity publishes its weights
(``encoder.ckpt``, ``decoder.ckpt``, ``layer_sizes.json``, ``gene_order.tsv``,
``label_ints.csv``, ``hyperparameters.json``), so
``scimilarity.CellEmbedding(model_path)`` reads a model trained here
unchanged, and a published SCimilarity model can be used in its place.
"""

from __future__ import annotations

import copy
import json
import logging
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anndata as ad
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

logger = logging.getLogger(__name__)

MODEL_FILES = (
    "encoder.ckpt",
    "decoder.ckpt",
    "layer_sizes.json",
    "gene_order.tsv",
    "label_ints.csv",
    "hyperparameters.json",
)


@dataclass
class FoundationModel:
    """Encoder E, decoder D and the gene space they read and write.

    Attributes:
        encoder: genes ``[N, G]`` (log-normalised, ``gene_order``) to unit-norm
            latents ``[N, latent_dim]``.
        decoder: latents ``[N, latent_dim]`` to genes ``[N, G]``.
        gene_order: the ``G`` gene names, in input order.
        label_ints: class names, index = integer label (SCimilarity's
            ``label_ints.csv``).
        hyperparameters: architecture and training settings.
    """

    encoder: Encoder
    decoder: Decoder
    gene_order: list[str]
    label_ints: list[str] = field(default_factory=list)
    hyperparameters: dict[str, Any] = field(default_factory=dict)

    @property
    def latent_dim(self) -> int:
        return int(self.encoder.latent_dim)

    def freeze(self) -> FoundationModel:
        """Put E and D in eval mode (BatchNorm, Dropout) with no parameter grads."""
        for module in (self.encoder, self.decoder):
            module.eval().requires_grad_(False)
        return self


def build_autoencoder(
    n_genes: int,
    *,
    latent_dim: int = 128,
    hidden_dim: list[int] | tuple[int, ...] = (1024, 1024),
    dropout: float = 0.5,
    input_dropout: float = 0.4,
) -> tuple[Encoder, Decoder]:
    """SCimilarity's encoder and its mirror-image decoder."""
    hidden = [int(h) for h in hidden_dim]
    encoder = Encoder(
        n_genes,
        latent_dim=latent_dim,
        hidden_dim=hidden,
        dropout=dropout,
        input_dropout=input_dropout,
    )
    decoder = Decoder(
        n_genes, latent_dim=latent_dim, hidden_dim=hidden[::-1], dropout=dropout
    )
    return encoder, decoder


def save_model_dir(model: FoundationModel, path: Path) -> None:
    """Write ``model`` into the (existing, empty) directory ``path``."""
    torch.save({"state_dict": model.encoder.state_dict()}, path / "encoder.ckpt")
    torch.save({"state_dict": model.decoder.state_dict()}, path / "decoder.ckpt")
    sizes = {k: list(v.shape) for k, v in model.encoder.state_dict().items()}
    (path / "layer_sizes.json").write_text(json.dumps(sizes, indent=1))
    (path / "gene_order.tsv").write_text("\n".join(model.gene_order) + "\n")
    pd.DataFrame({"0": model.label_ints}).to_csv(path / "label_ints.csv")
    (path / "hyperparameters.json").write_text(
        json.dumps(model.hyperparameters, indent=2, default=str)
    )


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    """Read ``{"state_dict": ...}`` with ``weights_only=True`` (no pickled code)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise ValueError(
            f"Refusing to load '{path}': it is not a plain tensor checkpoint "
            f"(torch.load(weights_only=True) failed: {str(exc).splitlines()[0]}). "
            "Only load model files you trust, saved as {'state_dict': ...}."
        ) from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"'{path}' holds no 'state_dict' entry.")
    return ckpt["state_dict"]


def _hidden_dims(layer_sizes: dict[str, list[int]]) -> tuple[list[int], int]:
    """Hidden sizes and latent size from ``layer_sizes.json`` (as SCimilarity does)."""
    weights = [
        layer_sizes[k]
        for k in sorted(layer_sizes)
        if "weight" in k and len(layer_sizes[k]) > 1
    ]
    return [w[0] for w in weights[:-1]], weights[-1][0]


def load_model_dir(path: Path) -> FoundationModel:
    """Read a SCimilarity-format model directory; E and D come back frozen."""
    missing = [name for name in MODEL_FILES if not (path / name).is_file()]
    if missing:
        raise ValueError(
            f"'{path}' is not a SCimilarity model directory: missing {missing}."
        )
    gene_order = [g for g in (path / "gene_order.tsv").read_text().splitlines() if g]
    hidden, latent = _hidden_dims(json.loads((path / "layer_sizes.json").read_text()))
    hyper = json.loads((path / "hyperparameters.json").read_text())
    encoder, decoder = build_autoencoder(
        len(gene_order), latent_dim=latent, hidden_dim=hidden
    )
    encoder.load_state_dict(_load_state(path / "encoder.ckpt"))
    decoder.load_state_dict(_load_state(path / "decoder.ckpt"))
    labels = pd.read_csv(path / "label_ints.csv", index_col=0)["0"].astype(str).tolist()
    return FoundationModel(encoder, decoder, gene_order, labels, hyper).freeze()


def align_genes(
    adata: ad.AnnData, *, gene_order: list[str], min_overlap: int
) -> ad.AnnData:
    """Reorder ``adata``'s genes to ``gene_order``; absent genes become zeros.

    Raises when fewer than ``min_overlap`` genes are shared, naming both gene
    counts: a model fed mostly zeros embeds noise.
    """
    if list(adata.var_names) == list(gene_order):
        return adata
    position = pd.Index(gene_order).get_indexer(adata.var_names)
    overlap = int((position >= 0).sum())
    if overlap < min_overlap:
        raise ValueError(
            f"Only {overlap} of the data's {adata.n_vars} genes are in the "
            f"foundation model's gene order ({len(gene_order)} genes); at least "
            f"{min_overlap} are needed (foundation.min_gene_overlap). Check that "
            "var_names use the same identifiers (symbols vs Ensembl IDs)."
        )
    keep = np.flatnonzero(position >= 0)
    x = sparse.csr_matrix(adata.X)[:, keep].tocoo()
    aligned = sparse.csr_matrix(
        (x.data, (x.row, position[keep][x.col])),
        shape=(adata.n_obs, len(gene_order)),
        dtype=np.float32,
    )
    logger.info(
        "Aligned %d genes to the model's %d (%d shared, rest zero-filled)",
        adata.n_vars,
        len(gene_order),
        overlap,
    )
    return ad.AnnData(
        X=aligned, obs=adata.obs.copy(), var=pd.DataFrame(index=gene_order)
    )


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

    epochs: PositiveInt = 50
    batch_size: PositiveInt = 256
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 1e-4
    val_fraction: float = Field(default=0.1, ge=0, lt=1)
    patience: PositiveInt = 5
    triplet_weight: NonNegativeFloat = 0.0
    triplet_margin: NonNegativeFloat = 0.05
    #: Training stops once this many cells (with repeats) went through the
    #: optimiser, whatever ``epochs`` says: an atlas costs a budget, not
    #: ``epochs`` passes over millions of cells. ``None``: no budget.
    max_cells_seen: PositiveInt | None = 5_000_000


def _batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Index batches of ``order``; a trailing batch of one (BatchNorm) is merged."""
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if len(chunks) > 1 and len(chunks[-1]) == 1:
        chunks[-2] = np.concatenate(chunks[-2:])
        chunks.pop()
    return chunks


def _epoch_loss(
    encoder: Encoder,
    decoder: Decoder,
    x: sparse.csr_matrix,
    labels: torch.Tensor | None,
    idx: np.ndarray,
    *,
    config: TrainConfig,
    device: torch.device,
    optimiser: torch.optim.Optimizer | None = None,
) -> float:
    """One pass over rows ``idx``; trains when ``optimiser`` is given."""
    total, seen = 0.0, 0
    for batch in _batches(idx, config.batch_size):
        xb = torch.from_numpy(x[batch].toarray()).to(device)
        z = encoder(xb)
        loss = F.mse_loss(decoder(z), xb)
        if config.triplet_weight > 0 and labels is not None:
            lb = labels[torch.from_numpy(batch)].to(device)
            loss = loss + config.triplet_weight * batch_hard_triplet_loss(
                z, lb, config.triplet_margin
            )
        if optimiser is not None:
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        total += float(loss.detach()) * len(batch)
        seen += len(batch)
    return total / max(seen, 1)


def train_foundation(
    x: sparse.csr_matrix,
    *,
    gene_order: list[str],
    labels: np.ndarray | None = None,
    label_names: list[str] | None = None,
    architecture: dict[str, Any] | None = None,
    config: TrainConfig | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> tuple[FoundationModel, pd.DataFrame]:
    """Train E and D on log-normalised cells ``x`` ``[N, G]`` by reconstruction.

    Label-blind unless ``config.triplet_weight > 0`` (then ``labels`` — ints
    ``[N]`` — add a batch-hard triplet term). A seeded ``val_fraction`` of
    the cells is held out; training stops after ``patience`` epochs without
    validation improvement and the best weights are kept.

    Returns:
        The frozen model (on CPU) and the per-epoch loss history.
    """
    config = config or TrainConfig()
    architecture = {
        "latent_dim": 128,
        "hidden_dim": [1024, 1024],
        **(architecture or {}),
    }
    device = torch.device(device)
    x = sparse.csr_matrix(x, dtype=np.float32)
    if config.triplet_weight > 0 and labels is None:
        raise ValueError("foundation.train.triplet_weight > 0 needs labels.")
    rng = np.random.default_rng(seed)
    order = rng.permutation(x.shape[0])
    n_val = int(round(config.val_fraction * len(order)))
    if n_val and len(order) - n_val < 2:
        raise ValueError(f"Too few cells ({len(order)}) to hold out a validation set.")
    val_idx, fit_idx = np.sort(order[:n_val]), order[n_val:]
    y = None if labels is None else torch.tensor(np.asarray(labels), dtype=torch.long)

    start = time.perf_counter()
    logger.info(
        "Training foundation model on %d cells x %d genes (%d held out), %s, device %s",
        len(fit_idx),
        x.shape[1],
        n_val,
        architecture,
        device,
    )
    history: list[dict[str, float]] = []
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        encoder, decoder = build_autoencoder(x.shape[1], **architecture)
        encoder.to(device)
        decoder.to(device)
        params = [*encoder.parameters(), *decoder.parameters()]
        optimiser = torch.optim.AdamW(
            params, lr=config.lr, weight_decay=config.weight_decay
        )
        best, best_state, stale = float("inf"), None, 0
        budget = config.max_cells_seen or config.epochs * len(fit_idx)
        bar = tqdm(range(config.epochs), desc="foundation", disable=not progress)
        for epoch in bar:
            if budget < 2:  # BatchNorm needs two cells
                logger.info("Budget of %d cells seen reached", config.max_cells_seen)
                break
            seen = rng.permutation(fit_idx)[:budget]
            budget -= len(seen)
            encoder.train()
            decoder.train()
            train_loss = _epoch_loss(
                encoder,
                decoder,
                x,
                y,
                seen,
                config=config,
                device=device,
                optimiser=optimiser,
            )
            encoder.eval()
            decoder.eval()
            with torch.no_grad():
                val_loss = (
                    _epoch_loss(
                        encoder, decoder, x, y, val_idx, config=config, device=device
                    )
                    if n_val
                    else train_loss
                )
            history.append(
                {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss}
            )
            bar.set_postfix(train=f"{train_loss:.4f}", val=f"{val_loss:.4f}")
            logger.debug(
                "epoch %d train %.5f val %.5f", epoch + 1, train_loss, val_loss
            )
            if val_loss < best - 1e-6:
                best, stale = val_loss, 0
                best_state = copy.deepcopy((encoder.state_dict(), decoder.state_dict()))
            else:
                stale += 1
                if stale >= config.patience:
                    logger.info("Early stop after epoch %d", epoch + 1)
                    break
    encoder.load_state_dict(best_state[0])
    decoder.load_state_dict(best_state[1])
    logger.info(
        "Foundation model trained in %.1f s (%d epochs, best val MSE %.5f)",
        time.perf_counter() - start,
        len(history),
        best,
    )
    hyper = {
        **architecture,
        "source": "local",
        "label_blind": config.triplet_weight == 0,
        "seed": seed,
        **{f"train_{k}": v for k, v in config.model_dump().items()},
        "best_val_mse": best,
    }
    model = FoundationModel(
        encoder.cpu(), decoder.cpu(), list(gene_order), list(label_names or []), hyper
    )
    return model.freeze(), pd.DataFrame(history)


def embed_cells(
    encoder: Encoder,
    x: sparse.spmatrix | np.ndarray,
    *,
    chunk_size: int = 4096,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> np.ndarray:
    """Latents ``[N, latent_dim]`` of log-normalised cells ``x`` ``[N, G]``.

    Works through ``chunk_size`` rows at a time with E in eval mode, so memory
    beyond the output stays bounded by one dense chunk.
    """
    encoder = encoder.to(device).eval()
    n = x.shape[0]
    out = np.empty((n, encoder.latent_dim), dtype=np.float32)
    starts = range(0, n, chunk_size)
    with torch.inference_mode():
        for i in tqdm(starts, desc="embed", disable=not progress, total=len(starts)):
            chunk = x[i : i + chunk_size]
            dense = chunk.toarray() if sparse.issparse(chunk) else np.asarray(chunk)
            batch = torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32))
            out[i : i + chunk_size] = encoder(batch.to(device)).cpu().numpy()
    return out
