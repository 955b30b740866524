"""Noise (beta) schedules for the latent diffusion forward process."""

from __future__ import annotations

import math

import torch


def linear_beta_schedule(
    timesteps: int, beta_min: float, beta_max: float
) -> torch.Tensor:
    """Linear schedule ``beta_t = beta_min + (t-1)/(T-1) (beta_max - beta_min)``.

    Args:
        timesteps: Number of diffusion steps ``T`` (>= 1).
        beta_min: ``beta_1``.
        beta_max: ``beta_T``.

    Returns:
        Float64 tensor ``[T]``; entry ``t-1`` holds ``beta_t`` for ``t = 1..T``.
    """
    _check_timesteps(timesteps)
    if not 0.0 < beta_min <= beta_max < 1.0:
        raise ValueError(
            f"need 0 < beta_min <= beta_max < 1, got beta_min={beta_min}, "
            f"beta_max={beta_max}."
        )
    return torch.linspace(beta_min, beta_max, timesteps, dtype=torch.float64)


def cosine_beta_schedule(
    timesteps: int, s: float = 0.008, max_beta: float = 0.999
) -> torch.Tensor:
    """Cosine schedule of Nichol & Dhariwal (2021), ``abar_t ~ cos^2``.

    Args:
        timesteps: Number of diffusion steps ``T`` (>= 1).
        s: Small offset that keeps ``beta_1`` away from zero.
        max_beta: Upper clip on each ``beta_t`` (avoids a singular last step).

    Returns:
        Float64 tensor ``[T]`` of ``beta_t`` for ``t = 1..T``.
    """
    _check_timesteps(timesteps)
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + s) / (1.0 + s) * math.pi / 2.0) ** 2
    betas = 1.0 - f[1:] / f[:-1]
    return betas.clamp(max=max_beta)


def get_beta_schedule(
    name: str, timesteps: int, beta_min: float, beta_max: float
) -> torch.Tensor:
    """Beta schedule chosen by name.

    Args:
        name: ``"linear"`` or ``"cosine"``; ``"cosine"`` ignores ``beta_min`` and
            ``beta_max`` (its shape is fixed by the cosine formula).
        timesteps: Number of diffusion steps ``T``.
        beta_min: ``beta_1`` of the linear schedule.
        beta_max: ``beta_T`` of the linear schedule.

    Returns:
        Float64 tensor ``[T]`` of ``beta_t`` for ``t = 1..T``.
    """
    if name == "linear":
        return linear_beta_schedule(timesteps, beta_min, beta_max)
    if name == "cosine":
        return cosine_beta_schedule(timesteps)
    raise ValueError(f"unknown beta schedule {name!r}; use 'linear' or 'cosine'.")


def _check_timesteps(timesteps: int) -> None:
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}.")
