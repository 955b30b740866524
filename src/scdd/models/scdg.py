"""Training and checkpointing of SCDG, the single-step latent diffusion generator.

Training minimises the x0-prediction loss of :class:`LatentDiffusion` with AdamW
and a cosine learning-rate decay (to ``lr / 10``), keeping an exponential moving
average (EMA) of the weights; the EMA copy is what is returned and saved.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from scdd.models.denoiser import ConditionalDenoiser
from scdd.models.device import fused_adam, make_generator
from scdd.models.diffusion import LatentDiffusion

logger = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1


@dataclass
class SCDGConfig:
    """Architecture and diffusion hyper-parameters of SCDG.

    Fields mirror the constructors of :class:`ConditionalDenoiser` and
    :class:`LatentDiffusion`.
    """

    latent_dim: int = 128
    n_classes: list[int] = field(default_factory=list)
    width: int = 512
    depth: int = 3
    time_embed_dim: int = 128
    dropout: float = 0.0
    timesteps: int = 1000
    beta_min: float = 1e-4
    beta_max: float = 0.1
    schedule: str = "linear"
    p_uncond: float = 0.1
    normalise_output: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (safe for ``torch.load(weights_only=True)``)."""
        out = asdict(self)
        out["n_classes"] = [int(n) for n in self.n_classes]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SCDGConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown SCDGConfig keys: {sorted(unknown)}.")
        data = dict(data)
        if "n_classes" in data:
            data["n_classes"] = [int(n) for n in data["n_classes"]]
        return cls(**data)


def build_scdg(config: SCDGConfig) -> LatentDiffusion:
    """Untrained :class:`LatentDiffusion` (identity standardisation) for ``config``."""
    denoiser = ConditionalDenoiser(
        latent_dim=config.latent_dim,
        n_classes=config.n_classes,
        width=config.width,
        depth=config.depth,
        time_embed_dim=config.time_embed_dim,
        dropout=config.dropout,
    )
    return LatentDiffusion(
        denoiser,
        timesteps=config.timesteps,
        beta_min=config.beta_min,
        beta_max=config.beta_max,
        schedule=config.schedule,
        p_uncond=config.p_uncond,
        normalise_output=config.normalise_output,
    )


def train_scdg(  # noqa: PLR0913
    embeddings: np.ndarray,
    conditions: np.ndarray | None,
    config: SCDGConfig,
    *,
    steps: int = 4000,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    ema_decay: float = 0.999,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> tuple[LatentDiffusion, list[dict[str, float]]]:
    """Fit SCDG on encoder latents.

    The standardisation is fitted on ``embeddings``. Weight initialisation, batch
    order, timesteps, noise and condition dropout all come from ``seed``, so a run
    is reproducible on CPU without touching the global RNG. The EMA decay is
    warmed up as ``min(ema_decay, (1 + step) / (10 + step))`` so short runs are
    not dominated by the initial weights.

    Args:
        embeddings: Latents ``[N, D]`` (float32).
        conditions: Class indices ``[N, n_conditions]`` (int64) in
            ``0..n_classes[i]-1``; ``None`` if ``config.n_classes`` is empty.
        config: Architecture and diffusion hyper-parameters.
        steps: Optimiser steps.
        batch_size: Cells per step (capped at ``N``).
        lr: Peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        ema_decay: Final EMA decay.
        seed: Seed of all randomness in the run.
        device: Device to train on.
        progress: Show a tqdm bar with the running loss.

    Returns:
        The EMA model (eval mode, on CPU, parameters frozen) and the loss history,
        a list of ``{"step", "loss"}`` with the mean loss over each ~``steps/100``
        step interval.
    """
    z_all, c_all = _check_training_data(embeddings, conditions, config)
    device = torch.device(device)
    if steps < 1 or batch_size < 1:
        raise ValueError(
            f"steps and batch_size must be >= 1, got {steps}, {batch_size}."
        )
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}.")
    n = z_all.shape[0]
    logger.info(
        "Training SCDG on %d cells (dim %d, %d condition columns) for %d steps on %s.",
        n,
        config.latent_dim,
        len(config.n_classes),
        steps,
        device,
    )
    start = time.perf_counter()

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_scdg(config)
    model.set_standardisation(z_all.mean(0), z_all.std(0))
    model.to(device).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    z_all, c_all = z_all.to(device), c_all.to(device)

    optimiser = torch.optim.AdamW(
        model.parameters(), lr=lr, weight_decay=weight_decay, **fused_adam(device)
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimiser, T_max=steps, eta_min=lr / 10
    )
    generator = make_generator(seed, device)
    batch_size = min(batch_size, n)
    log_every = max(1, steps // 100)
    history: list[dict[str, float]] = []
    running = torch.zeros((), device=device)
    order = torch.empty(0, dtype=torch.long, device=device)

    bar = tqdm(range(1, steps + 1), disable=not progress, desc="SCDG")
    for step in bar:
        if order.numel() < batch_size:
            order = torch.randperm(n, generator=generator, device=device)
        idx, order = order[:batch_size], order[batch_size:]
        loss = model.training_losses(z_all[idx], c_all[idx], generator)["loss"].mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        scheduler.step()
        _update_ema(ema, model, min(ema_decay, (1 + step) / (10 + step)))
        running += loss.detach()
        if step % log_every == 0 or step == steps:
            interval = log_every if step % log_every == 0 else step % log_every
            mean_loss = running.item() / interval
            running.zero_()
            history.append({"step": step, "loss": mean_loss})
            bar.set_postfix(loss=f"{mean_loss:.4f}", refresh=False)

    logger.info(
        "Trained SCDG in %.1f s; final loss %.4f.",
        time.perf_counter() - start,
        history[-1]["loss"],
    )
    return ema.cpu(), history


def scdg_checkpoint(model: LatentDiffusion, config: SCDGConfig) -> dict[str, Any]:
    """Checkpoint dict of tensors and primitives, loadable with ``weights_only=True``.

    Returns:
        ``{"config": dict, "state_dict": {name: cpu tensor}, "version": 1}``.
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {
        "config": config.to_dict(),
        "state_dict": state,
        "version": CHECKPOINT_VERSION,
    }


def load_scdg(checkpoint: dict[str, Any]) -> LatentDiffusion:
    """Rebuild a model from :func:`scdg_checkpoint` output (eval mode, frozen, CPU)."""
    version = checkpoint.get("version")
    if version != CHECKPOINT_VERSION:
        raise ValueError(
            f"unsupported SCDG checkpoint version {version!r}; "
            f"expected {CHECKPOINT_VERSION}."
        )
    model = build_scdg(SCDGConfig.from_dict(checkpoint["config"]))
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval().requires_grad_(False)


@torch.no_grad()
def _update_ema(ema: LatentDiffusion, model: LatentDiffusion, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model`` for every parameter."""
    for ema_param, param in zip(ema.parameters(), model.parameters(), strict=True):
        ema_param.lerp_(param, 1.0 - decay)


def _check_training_data(
    embeddings: np.ndarray, conditions: np.ndarray | None, config: SCDGConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate and convert to ``(float32 [N, D], int64 [N, n_conditions])``."""
    z = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
    if z.ndim != 2 or z.shape[1] != config.latent_dim or z.shape[0] < 2:
        raise ValueError(
            f"embeddings must be [N >= 2, {config.latent_dim}], got {tuple(z.shape)}."
        )
    n_cond = len(config.n_classes)
    if conditions is None:
        if n_cond:
            raise ValueError(f"config has {n_cond} condition columns; give conditions.")
        conditions = np.zeros((z.shape[0], 0), dtype=np.int64)
    c = torch.as_tensor(np.asarray(conditions, dtype=np.int64))
    if c.shape != (z.shape[0], n_cond):
        raise ValueError(
            f"conditions must be [{z.shape[0]}, {n_cond}], got {tuple(c.shape)}."
        )
    limits = torch.tensor(config.n_classes, dtype=torch.long)
    if c.numel() and ((c < 0).any() or (c >= limits).any()):
        raise ValueError("conditions must lie in 0..n_classes[i]-1 for column i.")
    return z, c
