"""Conditional residual-MLP denoiser ``U(Z_t, t, tau(c))`` of SCDG.

The network predicts the clean latent ``Z0`` (in standardised space) from a noisy
latent, its timestep and the summed embeddings of the condition columns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def timestep_embedding(
    t: torch.Tensor, dim: int, max_period: float = 10000.0
) -> torch.Tensor:
    """Sinusoidal embedding of (integer) timesteps, as in DDPM / Transformers.

    Args:
        t: Timesteps ``[N]``.
        dim: Embedding width.
        max_period: Longest wavelength; sets the lowest frequency.

    Returns:
        Float32 tensor ``[N, dim]`` (``[cos | sin]``, zero-padded if ``dim`` is odd).
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period)
        * torch.arange(half, dtype=torch.float32, device=t.device)
        / max(half, 1)
    )
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class ResidualBlock(nn.Module):
    """Pre-norm MLP block conditioned additively on the time+condition embedding.

    ``h + Linear(Dropout(SiLU(LN(Linear(SiLU(LN(h))) + proj(emb)))))``.
    """

    def __init__(self, width: int, dropout: float) -> None:
        """Build a block of hidden width ``width``."""
        super().__init__()
        self.in_layers = nn.Sequential(
            nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, width)
        )
        self.emb_proj = nn.Sequential(nn.SiLU(), nn.Linear(width, width))
        self.out_layers = nn.Sequential(
            nn.LayerNorm(width),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(width, width),
        )

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Map hidden ``h [N, width]`` given ``emb [N, width]`` to ``[N, width]``."""
        x = self.in_layers(h) + self.emb_proj(emb)
        return h + self.out_layers(x)


class ConditionalDenoiser(nn.Module):
    """Residual MLP predicting ``Z0`` from ``(Z_t, t, c)``.

    Each condition column ``i`` has an ``nn.Embedding(n_classes[i] + 1, width)``;
    index ``n_classes[i]`` is the null token used for classifier-free guidance.
    Column embeddings are summed and added to the time embedding.
    """

    def __init__(
        self,
        latent_dim: int,
        n_classes: Sequence[int],
        width: int,
        depth: int,
        time_embed_dim: int,
        *,
        dropout: float,
    ) -> None:
        """Build the network.

        Args:
            latent_dim: Latent width ``D``.
            n_classes: Number of classes of each condition column (may be empty).
            width: Hidden width of the MLP.
            depth: Number of residual blocks.
            time_embed_dim: Width of the sinusoidal time features.
            dropout: Dropout probability inside the residual blocks.
        """
        super().__init__()
        if latent_dim < 1 or width < 1 or depth < 0 or time_embed_dim < 1:
            raise ValueError(
                "latent_dim, width and time_embed_dim must be >= 1 and depth >= 0."
            )
        if any(int(n) < 1 for n in n_classes):
            raise ValueError(f"every n_classes entry must be >= 1, got {n_classes}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        self.latent_dim = latent_dim
        self.n_classes = tuple(int(n) for n in n_classes)
        self.time_embed_dim = time_embed_dim
        self.time_mlp = nn.Sequential(
            nn.Linear(time_embed_dim, width), nn.SiLU(), nn.Linear(width, width)
        )
        self.cond_embeddings = nn.ModuleList(
            nn.Embedding(n + 1, width) for n in self.n_classes
        )
        self.input_proj = nn.Linear(latent_dim, width)
        self.blocks = nn.ModuleList(ResidualBlock(width, dropout) for _ in range(depth))
        self.output = nn.Sequential(
            nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, latent_dim)
        )

    @property
    def n_conditions(self) -> int:
        """Number of condition columns."""
        return len(self.n_classes)

    def null_condition(self, n: int, device: torch.device | str) -> torch.Tensor:
        """All-null condition ``LongTensor [n, n_conditions]`` (unconditional)."""
        null = torch.tensor(self.n_classes, dtype=torch.long, device=device)
        return null.expand(n, self.n_conditions).clone()

    def forward(
        self, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Predict ``Z0``.

        Args:
            z_t: Noisy standardised latents ``[N, D]``.
            t: Timesteps ``LongTensor [N]`` (0..T).
            cond: Class indices ``LongTensor [N, n_conditions]``; ``None`` means all
                null tokens.

        Returns:
            Predicted standardised ``Z0`` ``[N, D]``.
        """
        n = z_t.shape[0]
        if z_t.ndim != 2 or z_t.shape[1] != self.latent_dim:
            raise ValueError(
                f"z_t must be [N, {self.latent_dim}], got {tuple(z_t.shape)}."
            )
        if t.shape != (n,):
            raise ValueError(f"t must be [{n}], got {tuple(t.shape)}.")
        if cond is None:
            cond = self.null_condition(n, z_t.device)
        elif cond.shape != (n, self.n_conditions):
            raise ValueError(
                f"cond must be [{n}, {self.n_conditions}], got {tuple(cond.shape)}."
            )
        emb = self.time_mlp(timestep_embedding(t, self.time_embed_dim).to(z_t.dtype))
        for i, table in enumerate(self.cond_embeddings):
            emb = emb + table(cond[:, i])
        h0 = self.input_proj(z_t)
        h = h0
        for block in self.blocks:
            h = block(h, emb)
        return self.output(h + h0)
