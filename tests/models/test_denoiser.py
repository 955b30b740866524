"""Tests of the conditional denoiser."""

from __future__ import annotations

import pytest
import torch

from scdd.models.denoiser import ConditionalDenoiser, timestep_embedding


def _denoiser(**kwargs: object) -> ConditionalDenoiser:
    torch.manual_seed(0)
    defaults: dict[str, object] = {
        "latent_dim": 8,
        "n_classes": (3, 2),
        "width": 16,
        "depth": 2,
        "time_embed_dim": 10,
        "dropout": 0.0,
    }
    return ConditionalDenoiser(**{**defaults, **kwargs}).eval()


@pytest.mark.parametrize("dim", [8, 9])
def test_timestep_embedding_shape(dim: int) -> None:
    emb = timestep_embedding(torch.tensor([0, 1, 999]), dim)
    assert emb.shape == (3, dim)
    assert emb.dtype == torch.float32
    torch.testing.assert_close(emb[0, : dim // 2], torch.ones(dim // 2))


def test_forward_shape_and_condition_effect() -> None:
    model = _denoiser()
    z = torch.randn(5, 8)
    t = torch.randint(1, 1000, (5,))
    cond = torch.tensor([[0, 1], [1, 0], [2, 1], [0, 0], [1, 1]])
    out = model(z, t, cond)
    assert out.shape == (5, 8)
    other = cond.clone()
    other[:, 0] = (other[:, 0] + 1) % 3
    assert not torch.allclose(out, model(z, t, other))


def test_null_condition_is_default() -> None:
    model = _denoiser()
    null = model.null_condition(4, "cpu")
    assert null.dtype == torch.long
    assert null.tolist() == [[3, 2]] * 4
    z, t = torch.randn(4, 8), torch.full((4,), 10)
    torch.testing.assert_close(model(z, t, None), model(z, t, null))


def test_unconditional_model() -> None:
    model = _denoiser(n_classes=())
    assert model.null_condition(3, "cpu").shape == (3, 0)
    assert model(torch.randn(3, 8), torch.ones(3, dtype=torch.long)).shape == (3, 8)


def test_forward_validates_shapes() -> None:
    model = _denoiser()
    z, t = torch.randn(4, 8), torch.ones(4, dtype=torch.long)
    with pytest.raises(ValueError, match="cond"):
        model(z, t, torch.zeros(4, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="z_t"):
        model(torch.randn(4, 7), t)
    with pytest.raises(ValueError, match="t must"):
        model(z, t[:3])
