"""Tests for the distillation matching losses and the real-embedding bank."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from scdd.distill.losses import (
    RealEmbeddingBank,
    distribution_matching_loss,
    gradient_distance,
    gradient_matching_loss,
    prototype_loss,
)


def _bank(num_classes: int = 3, per_class: int = 20, dim: int = 8) -> RealEmbeddingBank:
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    embeddings = torch.randn(len(labels), dim, generator=gen) + labels[:, None]
    return RealEmbeddingBank(embeddings, labels)


def test_bank_class_means_and_sampling_stay_in_class() -> None:
    bank = _bank()
    for c in range(bank.num_classes):
        rows = bank.embeddings[bank.labels == c]
        torch.testing.assert_close(bank.class_means[c], rows.mean(0))
        batch = bank.sample_batch(c, 50, torch.Generator().manual_seed(c))
        assert batch.shape == (50, bank.dim)
        assert (batch[:, None, :] == rows[None]).all(-1).any(-1).all()


def test_bank_rejects_empty_class_and_bad_labels() -> None:
    with pytest.raises(ValueError, match="class 1"):
        RealEmbeddingBank(torch.randn(4, 2), torch.tensor([0, 0, 2, 2]))
    with pytest.raises(ValueError, match="labels must lie"):
        RealEmbeddingBank(torch.randn(2, 2), torch.tensor([0, 5]), num_classes=3)
    with pytest.raises(ValueError, match="class_index"):
        _bank().sample_batch(7, 4, torch.Generator())


def test_dm_loss_matches_definition_and_vanishes_at_class_means() -> None:
    bank = _bank()
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    syn = torch.randn(6, bank.dim)
    expected = sum(
        (bank.class_means[c] - syn[labels == c].mean(0)).pow(2).sum() for c in range(3)
    )
    loss = distribution_matching_loss(syn, labels, bank.class_means)
    torch.testing.assert_close(loss, expected)
    at_means = distribution_matching_loss(
        bank.class_means[labels], labels, bank.class_means
    )
    assert at_means.item() == pytest.approx(0.0, abs=1e-10)
    with pytest.raises(ValueError, match="labels must lie"):
        distribution_matching_loss(syn, labels + 1, bank.class_means)


def test_gradient_distance_zero_iff_aligned() -> None:
    g = torch.randn(4, 8)
    assert gradient_distance(g, g).item() == pytest.approx(0.0, abs=1e-6)
    assert gradient_distance(g, 3 * g).item() == pytest.approx(0.0, abs=1e-6)
    assert gradient_distance(g, torch.randn(4, 8)).item() > 0.1
    assert gradient_distance(g, -g).item() == pytest.approx(8.0, abs=1e-5)


def test_gradient_matching_zero_for_identical_embeddings() -> None:
    bank = _bank()
    gen = torch.Generator().manual_seed(1)
    head = nn.Linear(bank.dim, bank.num_classes)
    real = [bank.sample_batch(c, 5, gen) for c in range(bank.num_classes)]
    syn_labels = torch.arange(bank.num_classes).repeat_interleave(5)
    same = gradient_matching_loss(torch.cat(real), syn_labels, real, head)
    assert same.item() == pytest.approx(0.0, abs=1e-5)
    other = torch.randn(15, bank.dim, requires_grad=True)
    loss = gradient_matching_loss(other, syn_labels, real, head)
    assert loss.item() > 0.1
    loss.backward()
    assert other.grad is not None and other.grad.abs().sum() > 0
    assert head.weight.grad is None


def test_weight_gradient_matches_autograd() -> None:
    """The closed-form head gradient equals autograd's, including its derivative."""
    head = nn.Linear(6, 3).double()
    real = [torch.randn(4, 6, dtype=torch.float64) for _ in range(3)]
    syn = torch.randn(9, 6, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([2, 0, 1, 1, 0, 2, 2, 0, 1])

    expected = syn.new_zeros(())
    for c in range(3):
        (g_real,) = torch.autograd.grad(
            F.cross_entropy(head(real[c]), torch.full((4,), c)), head.weight
        )
        x = syn[labels == c]
        (g_syn,) = torch.autograd.grad(
            F.cross_entropy(head(x), torch.full((len(x),), c)),
            head.weight,
            create_graph=True,
        )
        expected = expected + gradient_distance(g_real, g_syn)
    (expected_grad,) = torch.autograd.grad(expected, syn)
    got = gradient_matching_loss(syn, labels, real, head)
    (got_grad,) = torch.autograd.grad(got, syn)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got_grad, expected_grad)


def test_prototype_loss_is_the_cross_entropy_of_the_centred_mean_rule() -> None:
    bank = _bank(dim=4)
    labels = torch.tensor([0, 0, 1, 2])
    syn = torch.randn(4, bank.dim, generator=torch.Generator().manual_seed(1))
    means = torch.stack([syn[labels == c].mean(0) for c in range(3)])
    logits = 5.0 * bank.embeddings @ (means - means.mean(0)).T
    expected = F.cross_entropy(logits, bank.labels)
    loss = prototype_loss(
        syn, labels, bank.embeddings, bank.labels, num_classes=3, temperature=5.0
    )
    torch.testing.assert_close(loss, expected)
    # prototypes that point at their class score lower than swapped ones
    right = prototype_loss(
        bank.class_means,
        torch.arange(3),
        bank.embeddings,
        bank.labels,
        num_classes=3,
        temperature=5.0,
    )
    swapped = prototype_loss(
        bank.class_means.flip(0),
        torch.arange(3),
        bank.embeddings,
        bank.labels,
        num_classes=3,
        temperature=5.0,
    )
    assert right < swapped
    with pytest.raises(ValueError, match="labels must lie"):
        prototype_loss(
            syn,
            labels + 1,
            bank.embeddings,
            bank.labels,
            num_classes=3,
            temperature=5.0,
        )
