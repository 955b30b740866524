"""Tests of SCDG training and checkpointing on a toy two-cluster problem."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from scdd.models.diffusion import LatentDiffusion
from scdd.models.generator_config import GeneratorModelParams, GeneratorTrainParams
from scdd.models.scdg import (
    SCDGConfig,
    build_scdg,
    load_scdg,
    scdg_checkpoint,
    train_scdg,
)

DIM = 16
CONFIG = SCDGConfig(
    model=GeneratorModelParams(width=32, depth=2, time_embed_dim=32),
    latent_dim=DIM,
    n_classes=[2],
)


def _toy_data(n: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two Gaussian clusters on the unit sphere: latents, labels [n, 1], centres."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, 2, size=n)
    z = centres[labels] + 0.1 * rng.normal(size=(n, DIM))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    return z.astype(np.float32), labels[:, None].astype(np.int64), centres


@pytest.fixture(scope="module")
def trained() -> tuple[LatentDiffusion, list[dict[str, float]], np.ndarray]:
    z, labels, centres = _toy_data()
    train = GeneratorTrainParams(steps=300, batch_size=64, ema_decay=0.99)
    model, history = train_scdg(z, labels, CONFIG, train=train, progress=False)
    return model, history, centres


def test_config_round_trip() -> None:
    data = CONFIG.to_dict()
    # the keys (and their order) every saved generator.pt holds
    assert list(data) == [
        "latent_dim",
        "n_classes",
        "width",
        "depth",
        "time_embed_dim",
        "dropout",
        "timesteps",
        "beta_min",
        "beta_max",
        "schedule",
        "p_uncond",
        "normalise_output",
    ]
    assert SCDGConfig.from_dict(data) == CONFIG
    with pytest.raises(ValueError, match="unknown"):
        SCDGConfig.from_dict({**data, "colour": "red"})


def test_training_loss_falls(trained: tuple) -> None:
    model, history, _ = trained
    assert len(history) == 100
    assert history[-1]["step"] == 300
    first = np.mean([h["loss"] for h in history[:5]])
    last = np.mean([h["loss"] for h in history[-5:]])
    assert last < 0.75 * first
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())


def test_standardisation_is_fitted(trained: tuple) -> None:
    model = trained[0]
    z, _, _ = _toy_data()
    torch.testing.assert_close(model.latent_mean, torch.from_numpy(z.mean(0)))
    torch.testing.assert_close(
        model.latent_std, torch.from_numpy(z.std(0, ddof=1)), rtol=1e-4, atol=1e-6
    )


@pytest.mark.parametrize("n_steps", [1, 20])
def test_conditional_samples_land_in_their_cluster(
    trained: tuple, n_steps: int
) -> None:
    model, _, centres = trained
    for c in (0, 1):
        cond = torch.full((200, 1), c, dtype=torch.long)
        samples = model.sample(
            cond, n_steps=n_steps, generator=torch.Generator().manual_seed(c)
        ).numpy()
        nearest = np.argmin(
            np.linalg.norm(samples[:, None] - centres[None], axis=-1), axis=1
        )
        assert np.mean(nearest == c) >= 0.8


def test_denoise_is_differentiable_in_codes(trained: tuple) -> None:
    model = copy.deepcopy(trained[0]).double()
    z, labels, _ = _toy_data(4)
    codes = model.encode_codes(
        torch.from_numpy(z).double(), 200, torch.Generator().manual_seed(0)
    ).requires_grad_(True)
    cond = torch.from_numpy(labels)
    assert torch.autograd.gradcheck(lambda x: model.denoise(x, 200, cond), (codes,))
    assert torch.autograd.gradcheck(
        lambda x: model.denoise(x, 200, cond, guidance_scale=2.0), (codes,)
    )


def test_checkpoint_round_trip(trained: tuple, tmp_path: Path) -> None:
    model = trained[0]
    path = tmp_path / "scdg.pt"
    torch.save(scdg_checkpoint(model, CONFIG), path)
    loaded = load_scdg(torch.load(path, weights_only=True))
    assert not loaded.training
    cond = torch.tensor([[0], [1], [1]])
    codes = torch.randn(3, DIM, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        loaded.denoise(codes, 100, cond),
        model.denoise(codes, 100, cond),
        rtol=0,
        atol=0,
    )
    with pytest.raises(ValueError, match="version"):
        load_scdg({**scdg_checkpoint(model, CONFIG), "version": 2})


def test_training_is_deterministic() -> None:
    z, labels, _ = _toy_data(64)
    train = GeneratorTrainParams(steps=5, batch_size=16)
    a, hist_a = train_scdg(z, labels, CONFIG, train=train, progress=False)
    b, hist_b = train_scdg(z, labels, CONFIG, train=train, progress=False)
    c, _ = train_scdg(z, labels, CONFIG, train=train, seed=1, progress=False)
    assert hist_a == hist_b
    for (name, pa), pb in zip(
        a.state_dict().items(), b.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0, msg=name)
    assert not torch.equal(a.denoiser.input_proj.weight, c.denoiser.input_proj.weight)


def test_dropout_follows_the_seed_not_the_global_stream() -> None:
    """Dropout draws from torch's global generator: the run seeds it, so two
    runs agree whatever the caller drew before, and the caller's stream is
    left as it was."""
    z, labels, _ = _toy_data(64)
    config = SCDGConfig(
        model=CONFIG.model.model_copy(update={"dropout": 0.3}),
        latent_dim=DIM,
        n_classes=[2],
    )
    train = GeneratorTrainParams(steps=5, batch_size=16)
    torch.manual_seed(123)
    a, hist_a = train_scdg(z, labels, config, train=train, progress=False)
    after = torch.rand(3)
    torch.manual_seed(456)
    b, hist_b = train_scdg(z, labels, config, train=train, progress=False)
    assert hist_a == hist_b
    for (name, pa), pb in zip(
        a.state_dict().items(), b.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0, msg=name)
    torch.manual_seed(123)
    torch.testing.assert_close(torch.rand(3), after)  # training drew nothing


def test_train_validates_inputs() -> None:
    z, labels, _ = _toy_data(8)
    train = GeneratorTrainParams(steps=1)
    with pytest.raises(ValueError, match="embeddings"):
        train_scdg(z[:, :4], labels, CONFIG, train=train, progress=False)
    with pytest.raises(ValueError, match="conditions must be"):
        train_scdg(z, labels[:4], CONFIG, train=train, progress=False)
    with pytest.raises(ValueError, match="lie in"):
        train_scdg(z, labels + 2, CONFIG, train=train, progress=False)
    with pytest.raises(ValueError, match="give conditions"):
        train_scdg(z, None, CONFIG, train=train, progress=False)


def test_unconditional_build_and_training() -> None:
    config = SCDGConfig(
        model=GeneratorModelParams(width=16, depth=1, time_embed_dim=8),
        latent_dim=DIM,
    )
    assert isinstance(build_scdg(config), LatentDiffusion)
    z, _, _ = _toy_data(32)
    train = GeneratorTrainParams(steps=3, batch_size=8)
    model, history = train_scdg(z, None, config, train=train, progress=False)
    assert len(history) == 3
    assert model.sample(None, n_samples=2).shape == (2, DIM)


def test_each_step_follows_the_free_cores(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr("scdd.models.scdg.follow_cores", lambda: calls.append(1))
    z, labels, _ = _toy_data(64)
    train = GeneratorTrainParams(steps=5, batch_size=16)
    train_scdg(z, labels, CONFIG, train=train, progress=False)
    assert len(calls) == 5
