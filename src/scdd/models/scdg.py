"""Training and checkpointing of SCDG, the single-step latent diffusion generator.

Training minimises the x0-prediction loss of :class:`LatentDiffusion` with AdamW
and a cosine learning-rate decay (to ``lr / 10``), keeping an exponential moving
average (EMA) of the weights; the EMA copy is what is returned and saved.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from scdd.models.denoiser import ConditionalDenoiser
from scdd.models.device import fused_adam, make_generator
from scdd.models.diffusion import LatentDiffusion
from scdd.models.generator_config import GeneratorModelParams, GeneratorTrainParams
from scdd.threads import follow_cores

logger = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1


@dataclass(kw_only=True)
class SCDGConfig:
    """What SCDG is built from: ``generator.model`` and the sizes the data fix.

    Attributes:
        model: Architecture and diffusion hyper-parameters (``generator.model``).
        latent_dim: Latent width ``D`` of the embeddings.
        n_classes: Number of classes of each condition column (may be empty).
    """

    model: GeneratorModelParams
    latent_dim: int
    n_classes: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (safe for ``torch.load(weights_only=True)``):
        ``latent_dim``, ``n_classes`` and the fields of ``model``."""
        return {
            "latent_dim": int(self.latent_dim),
            "n_classes": [int(n) for n in self.n_classes],
            **self.model.model_dump(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SCDGConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        data = dict(data)
        if "latent_dim" not in data:
            raise ValueError("SCDG config has no latent_dim.")
        latent_dim = int(data.pop("latent_dim"))
        n_classes = [int(n) for n in data.pop("n_classes", [])]
        model = GeneratorModelParams.model_validate(data)
        return cls(model=model, latent_dim=latent_dim, n_classes=n_classes)


def build_scdg(config: SCDGConfig) -> LatentDiffusion:
    """Untrained :class:`LatentDiffusion` (identity standardisation) for ``config``."""
    model = config.model
    denoiser = ConditionalDenoiser(
        latent_dim=config.latent_dim,
        n_classes=config.n_classes,
        width=model.width,
        depth=model.depth,
        time_embed_dim=model.time_embed_dim,
        dropout=model.dropout,
    )
    return LatentDiffusion(
        denoiser,
        timesteps=model.timesteps,
        beta_min=model.beta_min,
        beta_max=model.beta_max,
        schedule=model.schedule,
        p_uncond=model.p_uncond,
        normalise_output=model.normalise_output,
    )


def train_scdg(
    embeddings: np.ndarray,
    conditions: np.ndarray | None,
    config: SCDGConfig,
    *,
    train: GeneratorTrainParams,
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
        train: ``generator.train``: optimiser ``steps``, cells per step
            ``batch_size`` (capped at ``N``), peak AdamW ``lr``, AdamW
            ``weight_decay`` and the final ``ema_decay``.
        seed: Seed of all randomness in the run.
        device: Device to train on.
        progress: Show a tqdm bar with the running loss.

    Returns:
        The EMA model (eval mode, on CPU, parameters frozen) and the loss history,
        a list of ``{"step", "loss"}`` with the mean loss over each
        ~``train.steps/100`` step interval.
    """
    z_all, c_all = _check_training_data(embeddings, conditions, config)
    device = torch.device(device)
    steps, lr, ema_decay = train.steps, train.lr, train.ema_decay
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
        model.parameters(),
        lr=lr,
        weight_decay=train.weight_decay,
        **fused_adam(device),
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimiser, T_max=steps, eta_min=lr / 10
    )
    generator = make_generator(seed, device)
    batch_size = min(train.batch_size, n)
    log_every = max(1, steps // 100)
    history: list[dict[str, float]] = []
    running = torch.zeros((), device=device)
    order = torch.empty(0, dtype=torch.long, device=device)

    bar = tqdm(range(1, steps + 1), disable=not progress, desc="SCDG")
    # dropout inside the denoiser draws from torch's global generator: seed it
    # for the loop (and leave the caller's stream as it was)
    where = torch.device(device)
    devices = [where.index or 0] if where.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed + 1)
        for step in bar:
            follow_cores()
            if order.numel() < batch_size:
                order = torch.randperm(n, generator=generator, device=device)
            idx, order = order[:batch_size], order[batch_size:]
            losses = model.training_losses(z_all[idx], c_all[idx], generator)
            loss = losses["loss"].mean()
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
