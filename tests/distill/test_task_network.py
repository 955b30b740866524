"""Tests for the task network of the DC ablations (deeper heads, tuned F)."""

from __future__ import annotations

import pytest
import torch

from scdd.distill.losses import RealEmbeddingBank, gradient_matching_loss
from scdd.distill.optimise import MatchingLoss, distill
from scdd.distill.task_network import TaskNetwork, random_linear
from tests.distill.test_optimise import NUM_CLASSES, _config, _setup


def test_a_linear_network_matches_the_closed_form_gradients() -> None:
    """The autograd path with the paper's linear head gives the closed-form
    DC loss and the same gradient on the synthetic embeddings."""
    torch.manual_seed(0)
    syn = torch.randn(6, 5, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    real = [torch.randn(4, 5) + c for c in range(3)]
    network = TaskNetwork.build(
        5, [], 3, generator=torch.Generator().manual_seed(1), like=syn
    )
    head = random_linear(5, 3, torch.Generator().manual_seed(1), like=syn)
    ours = network.gradient_matching_loss(syn, labels, real)
    (g_ours,) = torch.autograd.grad(ours, syn)
    closed = gradient_matching_loss(syn, labels, real, head)
    (g_closed,) = torch.autograd.grad(closed, syn)
    torch.testing.assert_close(ours, closed)
    torch.testing.assert_close(g_ours, g_closed)


def test_an_sgd_step_keeps_earlier_graphs_usable() -> None:
    syn = torch.randn(4, 5, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    real = [torch.randn(3, 5), torch.randn(3, 5)]
    network = TaskNetwork.build(
        5, [7], 2, generator=torch.Generator().manual_seed(0), like=syn
    )
    before = dict(network.params)
    loss = network.gradient_matching_loss(syn, labels, real)
    network.sgd_step(syn, labels, lr=0.5)
    loss = loss + network.gradient_matching_loss(syn, labels, real)
    loss.backward()  # no "modified by an inplace operation"
    assert syn.grad.abs().sum() > 0
    assert all(not torch.equal(before[k], network.params[k]) for k in before)


def test_a_deeper_head_distils() -> None:
    generator, encoder, bank, codes, labels = _setup()
    config = _config(steps=6, lambda_dm=0, head_hidden=(8, 8))
    result = distill(codes, labels, generator, encoder, bank, config, progress=False)
    assert all(entry["dc"] > 0 for entry in result.history)
    assert not torch.allclose(result.codes, codes)
    with pytest.raises(ValueError, match="head_hidden"):
        _config(head_hidden=(0,))


def test_a_tuned_encoder_distils_from_real_genes_and_f_stays_frozen() -> None:
    """``finetune_encoder``: a copy of F is trained, the real side is
    re-embedded from real genes, and the module F itself is untouched."""
    generator, encoder, bank, codes, labels = _setup()
    encoder.eval()
    genes = torch.randn(NUM_CLASSES * 10, 20)
    real_genes = RealEmbeddingBank(
        genes, torch.arange(NUM_CLASSES).repeat_interleave(10)
    )
    original = {k: v.clone() for k, v in encoder.state_dict().items()}
    config = _config(steps=4, lambda_dc=1.0, finetune_encoder=True)
    with pytest.raises(ValueError, match="real gene batches"):
        MatchingLoss(encoder, bank, config)
    result = distill(
        codes,
        labels,
        generator,
        encoder,
        bank,
        config,
        progress=False,
        real_genes=real_genes,
    )
    assert all(entry["dc"] > 0 and entry["dm"] > 0 for entry in result.history)
    for key, value in encoder.state_dict().items():
        torch.testing.assert_close(value, original[key])
