"""Tests of the latent diffusion wrapper."""

from __future__ import annotations

import pytest
import torch

from scdd.models.denoiser import ConditionalDenoiser
from scdd.models.diffusion import LatentDiffusion
from scdd.models.schedule import linear_beta_schedule


def _diffusion(**kwargs: object) -> LatentDiffusion:
    torch.manual_seed(0)
    denoiser = ConditionalDenoiser(
        latent_dim=6, n_classes=(3,), width=16, depth=1, time_embed_dim=8, dropout=0.0
    )
    settings: dict[str, object] = {
        "timesteps": 50,
        "beta_min": 1e-4,
        "beta_max": 0.1,
        "schedule": "linear",
        "p_uncond": 0.1,
        "normalise_output": True,
    }
    return LatentDiffusion(denoiser, **{**settings, **kwargs}).eval()


def test_schedule_buffers() -> None:
    model = _diffusion(beta_min=1e-3, beta_max=0.2)
    betas = linear_beta_schedule(50, 1e-3, 0.2)
    abar = torch.cumprod(1 - betas, 0)
    assert model.alphas_cumprod.dtype == torch.float32
    assert model.alphas_cumprod.shape == (51,)
    assert model.alphas_cumprod[0].item() == 1.0
    torch.testing.assert_close(model.alphas_cumprod[1:], abar.float())
    torch.testing.assert_close(model.sqrt_alphas_cumprod[1:], abar.sqrt().float())
    torch.testing.assert_close(
        model.sqrt_one_minus_alphas_cumprod[1:], (1 - abar).sqrt().float()
    )
    assert set(model.state_dict()) >= {"latent_mean", "latent_std"}
    assert "betas" not in model.state_dict()


def test_q_sample() -> None:
    model = _diffusion()
    z0, noise = torch.randn(4, 6), torch.randn(4, 6)
    torch.testing.assert_close(model.q_sample(z0, 0, noise), z0, rtol=0, atol=0)
    t = torch.tensor([0, 1, 25, 50])
    out = model.q_sample(z0, t, noise)
    abar = model.alphas_cumprod[t, None]
    torch.testing.assert_close(out, abar.sqrt() * z0 + (1 - abar).sqrt() * noise)
    with pytest.raises(ValueError):
        model.q_sample(z0, 51, noise)


def test_standardisation_round_trip() -> None:
    mean, std = torch.linspace(-1, 1, 6), torch.linspace(0.5, 2, 6)
    model = _diffusion(latent_mean=mean, latent_std=std)
    z = torch.randn(5, 6)
    torch.testing.assert_close(model.standardise(z), (z - mean) / std)
    torch.testing.assert_close(model.unstandardise(model.standardise(z)), z)


def test_training_losses_shapes_and_reproducibility() -> None:
    model = _diffusion(p_uncond=0.5)
    z0, cond = torch.randn(7, 6), torch.randint(0, 3, (7, 1))
    out = model.training_losses(z0, cond, torch.Generator().manual_seed(1))
    again = model.training_losses(z0, cond, torch.Generator().manual_seed(1))
    assert out["loss"].shape == (7,)
    assert out["t"].shape == (7,)
    assert bool(((out["t"] >= 1) & (out["t"] <= 50)).all())
    torch.testing.assert_close(out["loss"], again["loss"])
    assert model.training_losses(z0, None)["loss"].shape == (7,)


def test_guidance_scale_one_equals_conditional() -> None:
    model = _diffusion()
    z, cond = torch.randn(4, 6), torch.randint(0, 3, (4, 1))
    cond_pred = model.predict_z0(z, 10, cond)
    uncond_pred = model.predict_z0(z, 10, None)
    guided = model.predict_z0(z, 10, cond, guidance_scale=3.0)
    torch.testing.assert_close(guided, uncond_pred + 3.0 * (cond_pred - uncond_pred))


def test_denoise_and_encode_codes() -> None:
    model = _diffusion()
    z0 = torch.nn.functional.normalize(torch.randn(5, 6), dim=-1)
    cond = torch.randint(0, 3, (5, 1))
    torch.testing.assert_close(model.encode_codes(z0, 0), model.standardise(z0))
    codes = model.encode_codes(z0, 20, torch.Generator().manual_seed(0))
    out = model.denoise(codes, 20, cond)
    assert out.shape == (5, 6)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(5))
    raw = _diffusion(normalise_output=False).denoise(codes, 20, cond)
    expected = model.unstandardise(model.predict_z0(codes, 20, cond))
    torch.testing.assert_close(raw, expected)


@pytest.mark.parametrize("n_steps", [1, 5, 50])
def test_sample_shapes(n_steps: int) -> None:
    model = _diffusion()
    cond = torch.randint(0, 3, (4, 1))
    out = model.sample(
        cond, n_steps=n_steps, generator=torch.Generator().manual_seed(0)
    )
    assert out.shape == (4, 6)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(4))
    again = model.sample(
        cond, n_steps=n_steps, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(out, again)


def test_sample_validates_arguments() -> None:
    model = _diffusion()
    assert model.sample(None, n_samples=3, guidance_scale=2.0).shape == (3, 6)
    with pytest.raises(ValueError, match="n_samples"):
        model.sample(None)
    with pytest.raises(ValueError, match="n_steps"):
        model.sample(torch.zeros(2, 1, dtype=torch.long), n_steps=51)
