"""Tests for the latent-code distillation loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scdd.distill.config import DistillOptimParams
from scdd.distill.losses import RealEmbeddingBank
from scdd.distill.optimise import (
    MatchingLoss,
    backward_through_generator,
    distill,
    identity_generator,
)

NUM_CLASSES, SPC, CODE_DIM, GENES, LATENT = 3, 4, 6, 20, 8


class ToyGenerator(nn.Module):
    """Conditional MLP ``(codes [n, d], labels [n]) -> genes [n, GENES]``."""

    def __init__(self) -> None:
        super().__init__()
        self.label_embedding = nn.Embedding(NUM_CLASSES, CODE_DIM)
        self.net = nn.Sequential(
            nn.Linear(CODE_DIM, 16), nn.BatchNorm1d(16), nn.GELU(), nn.Linear(16, GENES)
        )

    def forward(self, codes: Tensor, labels: Tensor) -> Tensor:
        return self.net(codes + self.label_embedding(labels))


class ToyEncoder(nn.Module):
    """MLP with BatchNorm and Dropout, ``[n, GENES] -> L2-normalised [n, LATENT]``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(GENES, 16),
            nn.BatchNorm1d(16),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(16, LATENT),
        )

    def forward(self, genes: Tensor) -> Tensor:
        return F.normalize(self.net(genes), dim=1)


def _setup() -> tuple[ToyGenerator, ToyEncoder, RealEmbeddingBank, Tensor, Tensor]:
    """Random frozen G and F, a bank of 'real' embeddings and initial codes."""
    torch.manual_seed(0)
    generator, encoder = ToyGenerator(), ToyEncoder()
    for module in (generator, encoder):
        for bn in module.modules():
            if isinstance(bn, nn.BatchNorm1d):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
        module.eval().requires_grad_(False)
    real_labels = torch.arange(NUM_CLASSES).repeat_interleave(30)
    real_genes = torch.randn(len(real_labels), GENES) + 2 * F.one_hot(
        real_labels, GENES
    )
    bank = RealEmbeddingBank(encoder(real_genes), real_labels)
    labels = torch.arange(NUM_CLASSES).repeat_interleave(SPC)
    codes = torch.randn(len(labels), CODE_DIM)
    generator.train()
    encoder.train()
    return generator, encoder, bank, codes, labels


def _config(**overrides: object) -> DistillOptimParams:
    """Small settings; DM + DC, no part or prototype loss, no chunks unless
    overridden."""
    settings = (
        dict(
            steps=30,
            lr=0.05,
            lambda_dc=1.0,
            lambda_part=0.0,
            lambda_proto=0.0,
            inner_steps=2,
            real_batch_size=8,
            chunk_size=None,
            log_every=5,
        )
        | overrides
    )
    return DistillOptimParams(**settings)


def _class_mean_gap(
    codes: Tensor, labels: Tensor, generator: nn.Module, encoder: nn.Module, bank
) -> float:
    with torch.no_grad():
        emb = encoder(generator(codes, labels))
    means = torch.stack([emb[labels == c].mean(0) for c in range(NUM_CLASSES)])
    return (means - bank.class_means).pow(2).sum().item()


def test_chunked_backward_matches_plain_backward() -> None:
    generator, encoder, bank, codes, labels = _setup()
    generator.eval()
    encoder.eval()
    loss_fn = MatchingLoss(encoder, bank, _config(), num_classes=NUM_CLASSES)

    def codes_grad(chunk_size: int | None) -> tuple[float, Tensor]:
        z = codes.clone().requires_grad_()
        rng = torch.Generator().manual_seed(3)
        loss = backward_through_generator(
            z, labels, generator, lambda s: loss_fn(s, labels, rng)[0], chunk_size
        )
        return loss, z.grad

    plain_loss, plain_grad = codes_grad(None)
    chunked_loss, chunked_grad = codes_grad(5)
    assert chunked_loss == pytest.approx(plain_loss, rel=1e-6)
    assert plain_grad.abs().sum() > 0
    torch.testing.assert_close(chunked_grad, plain_grad, rtol=0, atol=1e-5)


def test_the_finish_is_scored_and_passes_the_gradient_straight_through() -> None:
    """With a finish (here rounding, whose own gradient is zero), the loss is
    that of the finished samples and the gradient that of the straight-through
    estimate ``S + (finish(S) - S).detach()``, in one piece and in chunks; the
    chunks do not run the finish again."""
    generator, encoder, bank, codes, labels = _setup()
    generator.eval()
    encoder.eval()
    loss_fn = MatchingLoss(encoder, bank, _config(), num_classes=NUM_CLASSES)
    finished = []

    def finish(samples: Tensor, _labels: Tensor) -> Tensor:
        finished.append(len(samples))
        return torch.round(samples * 2) / 2

    def loss_of(samples: Tensor) -> Tensor:
        return loss_fn(samples, labels, torch.Generator().manual_seed(3))[0]

    z = codes.clone().requires_grad_()
    samples = generator(z, labels)
    expected = loss_of(samples + (finish(samples, labels) - samples).detach())
    expected.backward()
    for chunk_size in (None, 5):
        finished.clear()
        y = codes.clone().requires_grad_()
        loss = backward_through_generator(
            y, labels, generator, loss_of, chunk_size, finish
        )
        assert finished == [len(codes)]
        assert loss == pytest.approx(expected.item(), rel=1e-6)
        torch.testing.assert_close(y.grad, z.grad, rtol=0, atol=1e-5)


def test_dm_distillation_reduces_loss_and_class_mean_gap() -> None:
    generator, encoder, bank, codes, labels = _setup()
    result = distill(
        codes, labels, generator, encoder, bank, _config(lambda_dc=0), progress=False
    )
    history = result.history
    assert history[-1]["dm"] < 0.5 * history[0]["dm"]
    assert all(entry["dc"] == 0.0 for entry in history)
    gap_before = _class_mean_gap(codes, labels, generator, encoder, bank)
    gap_after = _class_mean_gap(result.codes, labels, generator, encoder, bank)
    assert gap_after < 0.5 * gap_before


def test_the_prototype_loss_is_recorded_and_lowered() -> None:
    generator, encoder, bank, codes, labels = _setup()
    config = _config(lambda_dc=0, lambda_proto=1.0, proto_temperature=5.0)
    result = distill(codes, labels, generator, encoder, bank, config, progress=False)
    history = result.history
    assert history[-1]["proto"] < history[0]["proto"]
    plain = distill(
        codes, labels, generator, encoder, bank, _config(lambda_dc=0), progress=False
    )
    assert all(entry["proto"] == 0.0 for entry in plain.history)
    assert not torch.equal(result.codes, plain.codes)


def test_dc_only_with_chunks_and_sgd_changes_codes() -> None:
    generator, encoder, bank, codes, labels = _setup()
    config = _config(steps=5, lambda_dm=0, chunk_size=5, optimizer="sgd")
    result = distill(codes, labels, generator, encoder, bank, config, progress=False)
    assert not torch.allclose(result.codes, codes)
    assert all(entry["dm"] == 0.0 and entry["dc"] > 0 for entry in result.history)


def test_frozen_modules_stay_in_eval_without_grads() -> None:
    generator, encoder, bank, codes, labels = _setup()
    distill(codes, labels, generator, encoder, bank, _config(steps=3), progress=False)
    for module in (generator, encoder):
        assert not module.training
        assert all(p.grad is None and not p.requires_grad for p in module.parameters())


def test_same_seed_same_result() -> None:
    generator, encoder, bank, codes, labels = _setup()
    config = _config(steps=5)
    runs = [
        distill(codes, labels, generator, encoder, bank, config, seed=s, progress=False)
        for s in (7, 7, 8)
    ]
    assert torch.equal(runs[0].codes, runs[1].codes)
    assert runs[0].history == runs[1].history
    assert not torch.equal(runs[0].codes, runs[2].codes)


def test_feature_level_distillation_without_encoder() -> None:
    _, _, bank, _, labels = _setup()
    features = torch.randn(len(labels), LATENT)
    result = distill(
        features, labels, identity_generator, None, bank, _config(), progress=False
    )
    assert result.codes.shape == features.shape
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_bad_inputs_raise() -> None:
    generator, encoder, bank, codes, labels = _setup()
    with pytest.raises(ValueError, match="labels must lie"):
        distill(codes, labels + 1, generator, encoder, bank, _config(), progress=False)


def test_each_step_follows_the_free_cores(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr("scdd.distill.optimise.follow_cores", lambda: calls.append(1))
    generator, encoder, bank, codes, labels = _setup()
    distill(codes, labels, generator, encoder, bank, _config(steps=4), progress=False)
    assert len(calls) == 4
