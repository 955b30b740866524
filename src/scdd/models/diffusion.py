"""Latent diffusion wrapper of SCDG: schedule, standardisation and sampling.

Diffusion runs on per-dimension standardised latents; the denoiser predicts the
clean latent ``Z0`` directly.  :meth:`LatentDiffusion.denoise` is the
differentiable single-step generator used by distillation.
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm import tqdm

from scdd.models.denoiser import ConditionalDenoiser
from scdd.models.schedule import get_beta_schedule
from scdd.threads import follow_cores

_MIN_STD = 1e-6


class LatentDiffusion(nn.Module):
    """Forward process, standardisation buffers and a :class:`ConditionalDenoiser`.

    Buffers (float32, computed in float64): ``betas [T]`` and, indexed by
    ``t = 0..T`` (``t = 0`` is "no noise"), ``alphas_cumprod``,
    ``sqrt_alphas_cumprod`` and ``sqrt_one_minus_alphas_cumprod`` ``[T+1]``.
    They are rebuilt from the constructor arguments and kept out of the state
    dict; ``latent_mean`` / ``latent_std`` ``[D]`` are saved with the weights.
    """

    def __init__(  # noqa: PLR0913
        self,
        denoiser: ConditionalDenoiser,
        timesteps: int,
        beta_min: float,
        beta_max: float,
        schedule: str,
        *,
        p_uncond: float,
        normalise_output: bool,
        latent_mean: torch.Tensor | None = None,
        latent_std: torch.Tensor | None = None,
    ) -> None:
        """Build the wrapper.

        Args:
            denoiser: Network predicting standardised ``Z0``.
            timesteps: Number of diffusion steps ``T``.
            beta_min: ``beta_1`` of the schedule.
            beta_max: ``beta_T`` of the schedule.
            schedule: Schedule name, see :func:`get_beta_schedule`.
            p_uncond: Per-column probability of replacing a condition by its
                null token during training (classifier-free guidance).
            normalise_output: Rescale generated raw latents to unit L2 norm, as
                the encoder's latents are unit-norm.
            latent_mean: Per-dimension mean ``[D]`` (default zeros).
            latent_std: Per-dimension std ``[D]`` (default ones).
        """
        super().__init__()
        if not 0.0 <= p_uncond <= 1.0:
            raise ValueError(f"p_uncond must be in [0, 1], got {p_uncond}.")
        self.denoiser = denoiser
        self.timesteps = int(timesteps)
        self.p_uncond = float(p_uncond)
        self.normalise_output = bool(normalise_output)

        betas = get_beta_schedule(schedule, self.timesteps, beta_min, beta_max)
        abar = torch.cat(
            [torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)]
        )
        for name, value in {
            "betas": betas,
            "alphas_cumprod": abar,
            "sqrt_alphas_cumprod": abar.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - abar).sqrt(),
        }.items():
            self.register_buffer(name, value.to(torch.float32), persistent=False)

        dim = denoiser.latent_dim
        self.register_buffer("latent_mean", torch.zeros(dim))
        self.register_buffer("latent_std", torch.ones(dim))
        if latent_mean is not None or latent_std is not None:
            self.set_standardisation(
                self.latent_mean if latent_mean is None else latent_mean,
                self.latent_std if latent_std is None else latent_std,
            )

    @property
    def latent_dim(self) -> int:
        """Latent width ``D``."""
        return self.denoiser.latent_dim

    def set_standardisation(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Set the per-dimension ``mean [D]`` and ``std [D]`` (std floored at 1e-6)."""
        mean = torch.as_tensor(mean, dtype=self.latent_mean.dtype)
        std = torch.as_tensor(std, dtype=self.latent_std.dtype)
        if mean.shape != self.latent_mean.shape or std.shape != self.latent_std.shape:
            raise ValueError(
                f"latent mean/std must be [{self.latent_dim}], got "
                f"{tuple(mean.shape)} and {tuple(std.shape)}."
            )
        self.latent_mean.copy_(mean)
        self.latent_std.copy_(std.clamp_min(_MIN_STD))

    def standardise(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latents ``[N, D]`` -> standardised latents ``[N, D]``."""
        return (z - self.latent_mean) / self.latent_std

    def unstandardise(self, z: torch.Tensor) -> torch.Tensor:
        """Standardised latents ``[N, D]`` -> raw latents ``[N, D]``."""
        return z * self.latent_std + self.latent_mean

    def q_sample(
        self, z0_std: torch.Tensor, t: torch.Tensor | int, noise: torch.Tensor
    ) -> torch.Tensor:
        """Draw ``Z_t = sqrt(abar_t) Z0 + sqrt(1 - abar_t) eps``.

        Args:
            z0_std: Standardised clean latents ``[N, D]``.
            t: Timesteps ``LongTensor [N]`` or one int, in ``0..T`` (0 = no noise).
            noise: ``eps`` ``[N, D]``.

        Returns:
            Noisy standardised latents ``[N, D]``.
        """
        t = self._timesteps_like(t, z0_std)
        return (
            self.sqrt_alphas_cumprod[t, None] * z0_std
            + self.sqrt_one_minus_alphas_cumprod[t, None] * noise
        )

    def training_losses(
        self,
        z0: torch.Tensor,
        cond: torch.Tensor | None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-sample x0-prediction loss ``mean_d (Z0 - U(Z_t, t, c))^2``.

        Draws ``t ~ U{1..T}``, ``eps ~ N(0, I)`` and drops each condition column
        to its null token with probability ``p_uncond``.

        Args:
            z0: Raw latents ``[N, D]``.
            cond: Class indices ``LongTensor [N, n_conditions]`` or ``None``.
            generator: Source of randomness (on ``z0``'s device).

        Returns:
            ``{"loss": [N], "t": [N]}``.
        """
        n, device = z0.shape[0], z0.device
        z0_std = self.standardise(z0)
        t = torch.randint(
            1, self.timesteps + 1, (n,), generator=generator, device=device
        )
        noise = torch.randn(
            z0_std.shape, generator=generator, device=device, dtype=z0_std.dtype
        )
        null = self.denoiser.null_condition(n, device)
        if cond is None:
            cond = null
        elif self.p_uncond > 0:
            drop = (
                torch.rand(cond.shape, generator=generator, device=device)
                < self.p_uncond
            )
            cond = torch.where(drop, null, cond)
        pred = self.denoiser(self.q_sample(z0_std, t, noise), t, cond)
        return {"loss": (pred - z0_std).pow(2).mean(dim=-1), "t": t}

    def predict_z0(
        self,
        z_t_std: torch.Tensor,
        t: torch.Tensor | int,
        cond: torch.Tensor | None,
        guidance_scale: float = 1.0,
    ) -> torch.Tensor:
        """Standardised ``Z0`` prediction with classifier-free guidance.

        ``uncond + scale * (cond - uncond)``; scale 1 (or ``cond=None``) is a
        single plain forward pass.

        Args:
            z_t_std: Noisy standardised latents ``[N, D]``.
            t: Timesteps ``LongTensor [N]`` or one int.
            cond: Class indices ``LongTensor [N, n_conditions]`` or ``None``.
            guidance_scale: Guidance scale ``s``.

        Returns:
            Predicted standardised ``Z0`` ``[N, D]``.
        """
        t = self._timesteps_like(t, z_t_std)
        if cond is None or guidance_scale == 1.0:
            return self.denoiser(z_t_std, t, cond)
        null = self.denoiser.null_condition(z_t_std.shape[0], z_t_std.device)
        pred_cond, pred_uncond = self.denoiser(
            torch.cat([z_t_std, z_t_std]), torch.cat([t, t]), torch.cat([cond, null])
        ).chunk(2)
        return pred_uncond + guidance_scale * (pred_cond - pred_uncond)

    def denoise(
        self,
        codes: torch.Tensor,
        t_gen: int,
        cond: torch.Tensor | None,
        guidance_scale: float = 1.0,
    ) -> torch.Tensor:
        """Single-step generator: codes -> raw latents, differentiable in ``codes``.

        Args:
            codes: Noisy standardised latents at step ``t_gen`` ``[N, D]``.
            t_gen: Generation timestep in ``0..T``.
            cond: Class indices ``LongTensor [N, n_conditions]`` or ``None``.
            guidance_scale: Classifier-free guidance scale.

        Returns:
            Raw latents ``[N, D]`` (unit-norm if ``normalise_output``).
        """
        pred = self.predict_z0(codes, t_gen, cond, guidance_scale)
        return self._finalise(pred)

    def encode_codes(
        self,
        z0: torch.Tensor,
        t_gen: int,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Initial distillation codes ``q_sample(standardise(z0), t_gen)``.

        Args:
            z0: Raw latents ``[N, D]``.
            t_gen: Generation timestep in ``0..T``.
            generator: Source of the noise (on ``z0``'s device).

        Returns:
            Codes ``[N, D]`` (standardised, noised to ``t_gen``).
        """
        z0_std = self.standardise(z0)
        noise = torch.randn(
            z0_std.shape, generator=generator, device=z0.device, dtype=z0_std.dtype
        )
        return self.q_sample(z0_std, t_gen, noise)

    @torch.inference_mode()
    def sample(
        self,
        cond: torch.Tensor | None,
        n_steps: int = 1,
        guidance_scale: float = 1.0,
        generator: torch.Generator | None = None,
        progress: bool = False,
        *,
        n_samples: int | None = None,
    ) -> torch.Tensor:
        """Generate raw latents from pure noise at ``t = T``.

        ``n_steps = 1`` predicts ``Z0`` straight from noise; otherwise deterministic
        DDIM steps run on ``n_steps`` evenly spaced timesteps from ``T`` to 1.
        Call :meth:`eval` first so dropout is off.

        Args:
            cond: Class indices ``LongTensor [N, n_conditions]``; ``None`` samples
                unconditionally and needs ``n_samples``.
            n_steps: Number of denoiser evaluations (1..T).
            guidance_scale: Classifier-free guidance scale.
            generator: Source of the initial noise (on the model's device).
            progress: Show a progress bar over the steps.
            n_samples: Number of samples when ``cond`` is ``None``.

        Returns:
            Raw latents ``[N, D]`` (unit-norm if ``normalise_output``).
        """
        if not 1 <= n_steps <= self.timesteps:
            raise ValueError(f"n_steps must be in 1..{self.timesteps}, got {n_steps}.")
        if cond is None and n_samples is None:
            raise ValueError("give n_samples when cond is None.")
        n = cond.shape[0] if cond is not None else n_samples
        device = self.latent_mean.device
        z = torch.randn(
            (n, self.latent_dim),
            generator=generator,
            device=device,
            dtype=self.latent_mean.dtype,
        )
        steps = torch.linspace(self.timesteps, 1, n_steps, dtype=torch.float64)
        steps = steps.round().long().tolist()
        z0 = z
        for i, t in enumerate(tqdm(steps, disable=not progress, desc="sampling")):
            follow_cores()
            z0 = self.predict_z0(z, t, cond, guidance_scale)
            if i + 1 < len(steps):
                eps = (z - self.sqrt_alphas_cumprod[t] * z0) / (
                    self.sqrt_one_minus_alphas_cumprod[t]
                )
                t_next = steps[i + 1]
                z = (
                    self.sqrt_alphas_cumprod[t_next] * z0
                    + self.sqrt_one_minus_alphas_cumprod[t_next] * eps
                )
        return self._finalise(z0)

    def _finalise(self, z0_std: torch.Tensor) -> torch.Tensor:
        """Standardised ``Z0 [N, D]`` -> raw latents, unit-norm if requested."""
        z = self.unstandardise(z0_std)
        return nn.functional.normalize(z, dim=-1) if self.normalise_output else z

    def _timesteps_like(self, t: torch.Tensor | int, z: torch.Tensor) -> torch.Tensor:
        """Turn ``t`` (int or ``[N]``) into a ``LongTensor [N]`` on ``z``'s device."""
        if not isinstance(t, torch.Tensor):
            t = int(t)
            if not 0 <= t <= self.timesteps:
                raise ValueError(f"t must be in 0..{self.timesteps}, got {t}.")
            return torch.full((z.shape[0],), t, dtype=torch.long, device=z.device)
        if t.shape != (z.shape[0],):
            raise ValueError(f"t must be [{z.shape[0]}], got {tuple(t.shape)}.")
        return t.to(device=z.device, dtype=torch.long)
