"""Optimise latent codes so that the generated synthetic cells match real data.

The synthetic set is ``S = G(Z)``; ``Z`` is trained against distribution (DM)
and gradient (DC) matching losses computed on embeddings ``F(S)`` of a frozen
foundation encoder ``F`` and cached real embeddings. ``G`` may be a full
generator, a decoder, or :func:`identity_generator` (optimise genes directly).
With ``encoder=None`` the generator output is taken as the embedding itself,
which gives feature-level distillation of the 128-d latents (no ``F``, no ``G``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from scdd.distill.config import DistillOptimParams
from scdd.distill.losses import (
    RealEmbeddingBank,
    distribution_matching_loss,
    gradient_matching_loss,
    part_matching_loss,
    validate_labels,
)
from scdd.distill.task_network import TaskNetwork, random_linear
from scdd.models.device import make_generator

logger = logging.getLogger(__name__)

GeneratorFn = Callable[..., Tensor]
"""Frozen differentiable map ``(codes [n, d], labels [n]) -> samples [n, G]``."""

MatchingLoss = Callable[
    [Tensor, Tensor, torch.Generator], tuple[Tensor, dict[str, float]]
]
"""``(samples [n, G], labels [n], generator) -> (scalar loss, float parts)``."""


@dataclass
class DistillResult:
    """Output of :func:`distill`.

    Attributes:
        codes: ``[n, d]`` optimised codes, detached, on CPU.
        history: one dict per logged step with ``step``, ``loss``, ``dm``, ``dc``.
    """

    codes: Tensor
    history: list[dict[str, float]] = field(default_factory=list)


def identity_generator(codes: Tensor, labels: Tensor) -> Tensor:
    """``G(Z) = Z``: the codes are the samples (genes or features) themselves."""
    return codes


def _sgd_step(head: nn.Linear, embeddings: Tensor, labels: Tensor, lr: float) -> None:
    """One cross-entropy SGD step of ``head`` on constant ``embeddings`` ``[n, D]``."""
    loss = F.cross_entropy(head(embeddings.detach()), labels)
    grads = torch.autograd.grad(loss, [head.weight, head.bias])
    with torch.no_grad():
        head.weight.sub_(lr * grads[0])
        head.bias.sub_(lr * grads[1])


def make_matching_loss(
    encoder: nn.Module | None,
    bank: RealEmbeddingBank,
    config: DistillOptimParams,
    *,
    num_classes: int | None = None,
    part_means: Tensor | None = None,
    real_genes: RealEmbeddingBank | None = None,
) -> MatchingLoss:
    """Build the DM + DC (+ part) loss on synthetic samples used by :func:`distill`.

    Args:
        encoder: frozen ``F`` mapping samples ``[n, G]`` to ``[n, D]``; ``None``
            when the samples already are embeddings (feature-level).
        bank: cached real embeddings (real data enter only through it).
        config: loss weights and DC settings.
        num_classes: if given, must equal ``bank.num_classes``.
        part_means: ``[n, D]`` centre of each sample's part of its class;
            needed when ``config.lambda_part > 0``.
        real_genes: real gene rows per class, read when
            ``config.finetune_encoder`` (the cached embeddings no longer
            describe the tuned F).

    Returns:
        ``loss_fn(samples, labels, generator) -> (total, {"dm", "dc",
        "part"})``; a part is 0.0 when its weight is 0 (and it is not
        computed). The generator draws the DC head init and the real batches.
    """
    if config.lambda_part > 0 and part_means is None:
        raise ValueError("lambda_part > 0 needs the part means of the samples")
    if config.finetune_encoder and (encoder is None or real_genes is None):
        raise ValueError("finetune_encoder needs the encoder F and real gene batches")
    if num_classes is not None and num_classes != bank.num_classes:
        raise ValueError(
            f"num_classes={num_classes} but the bank holds {bank.num_classes} classes"
        )
    num_classes = bank.num_classes
    tuned: dict[str, dict[str, Tensor]] = {}  # F's state across steps

    def real_batches(source: RealEmbeddingBank, generator: torch.Generator) -> list:
        return [
            source.sample_batch(c, config.real_batch_size, generator)
            for c in range(num_classes)
        ]

    def dc_rounds(
        match: Callable[[list[Tensor]], Tensor],
        step: Callable[[], None],
        source: RealEmbeddingBank,
        generator: torch.Generator,
    ) -> Tensor:
        """``inner_steps`` rounds: match fresh real batches, then update the
        task network on the synthetic set (not after the last round)."""
        loss = match(real_batches(source, generator))
        for _ in range(config.inner_steps - 1):
            step()
            loss = loss + match(real_batches(source, generator))
        return loss

    def dc_loss(
        embeddings: Tensor, labels: Tensor, generator: torch.Generator
    ) -> Tensor:
        head = random_linear(bank.dim, num_classes, generator, like=embeddings)
        return dc_rounds(
            lambda real: gradient_matching_loss(embeddings, labels, real, head),
            lambda: _sgd_step(head, embeddings, labels, config.head_lr),
            bank,
            generator,
        )

    def network_dc_loss(
        network: TaskNetwork, inputs: Tensor, labels: Tensor, generator: torch.Generator
    ) -> Tensor:
        loss = dc_rounds(
            lambda real: network.gradient_matching_loss(inputs, labels, real),
            lambda: network.sgd_step(inputs, labels, config.head_lr),
            real_genes if network.tunes_encoder else bank,
            generator,
        )
        if network.tunes_encoder:
            tuned["encoder"] = network.encoder_params()
        return loss

    def loss_fn(
        samples: Tensor, labels: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, dict[str, float]]:
        network = None
        if config.finetune_encoder or config.head_hidden:
            network = TaskNetwork.build(
                bank.dim,
                config.head_hidden,
                num_classes,
                generator=generator,
                like=samples,
                encoder=encoder if config.finetune_encoder else None,
                encoder_params=tuned.get("encoder"),
            )
        if encoder is None:
            embeddings = samples
        elif config.finetune_encoder:
            embeddings = network.features(samples)
        else:
            embeddings = encoder(samples)
        total = embeddings.new_zeros(())
        parts = {"dm": 0.0, "dc": 0.0, "part": 0.0}
        if config.lambda_dm > 0:
            means = bank.class_means
            if config.finetune_encoder:  # the cache describes F before tuning
                with torch.no_grad():
                    means = torch.stack(
                        [
                            network.features(b).mean(0)
                            for b in real_batches(real_genes, generator)
                        ]
                    )
            dm = distribution_matching_loss(embeddings, labels, means)
            total = total + config.lambda_dm * dm
            parts["dm"] = dm.item()
        if config.lambda_dc > 0:
            if network is None:
                dc = dc_loss(embeddings, labels, generator)
            else:
                inputs = samples if config.finetune_encoder else embeddings
                dc = network_dc_loss(network, inputs, labels, generator)
            total = total + config.lambda_dc * dc
            parts["dc"] = dc.item()
        if config.lambda_part > 0:
            spc = embeddings.shape[0] / max(int(labels.unique().numel()), 1)
            part = part_matching_loss(embeddings, part_means, spc)
            total = total + config.lambda_part * part
            parts["part"] = part.item()
        return total, parts

    return loss_fn


def backward_through_generator(
    codes: Tensor,
    labels: Tensor,
    generator_fn: GeneratorFn,
    loss_on_samples: Callable[[Tensor], Tensor],
    chunk_size: int | None,
) -> float:
    """Accumulate ``d loss(G(codes)) / d codes`` into ``codes.grad``.

    With a chunk size (paper III-C4), ``S = G(codes)`` is built without a graph,
    ``dL/dS`` is taken on a detached leaf copy, and ``G`` is re-run chunk by
    chunk with ``S_chunk.backward(dL/dS_chunk)``, so ``G``'s graph is never held
    for the whole set. This equals a plain backward as long as ``G`` is
    deterministic and per-sample (eval mode: no dropout, running BatchNorm
    stats).

    Args:
        codes: ``[n, d]`` leaf tensor requiring grad.
        labels: ``[n]`` labels passed to ``generator_fn``.
        generator_fn: frozen ``(codes, labels) -> samples [n, G]``.
        loss_on_samples: scalar loss of the samples ``[n, G]``.
        chunk_size: codes per chunk; ``None`` or 0 for a plain full backward.

    Returns:
        The loss value.
    """

    def generate(rows: slice) -> Tensor:
        return generator_fn(codes[rows], labels[rows])

    everything = slice(None)
    if not chunk_size:
        loss = loss_on_samples(generate(everything))
        loss.backward()
        return loss.item()
    with torch.no_grad():
        samples = generate(everything)
    samples = samples.detach().requires_grad_()
    loss = loss_on_samples(samples)
    (sample_grad,) = torch.autograd.grad(loss, samples)
    for start in range(0, codes.shape[0], chunk_size):
        rows = slice(start, start + chunk_size)
        generate(rows).backward(sample_grad[rows])
    return loss.item()


def _freeze(module: nn.Module) -> None:
    """Put ``module`` in eval mode and stop gradients to its parameters, in place."""
    module.eval()
    module.requires_grad_(False)


def distill(  # noqa: PLR0917
    codes_init: Tensor,
    labels: Tensor,
    generator_fn: GeneratorFn,
    encoder: nn.Module | None,
    bank: RealEmbeddingBank,
    config: DistillOptimParams,
    *,
    seed: int = 0,
    progress: bool = True,
    loss_fn: MatchingLoss | None = None,
    part_means: Tensor | None = None,
    real_genes: RealEmbeddingBank | None = None,
) -> DistillResult:
    """Optimise synthetic-set codes against cached real embeddings.

    Each step generates ``S = G(Z)``, evaluates ``loss_fn`` on it and updates
    ``Z``; the cost is independent of the number of real cells. The encoder,
    and ``generator_fn`` when it is an ``nn.Module``, are frozen in place
    (eval mode, ``requires_grad=False``); freeze a non-module ``generator_fn``'s
    parameters yourself. Work happens on ``codes_init``'s device.

    Args:
        codes_init: ``[n, d]`` initial codes (SPC per class).
        labels: ``[n]`` int64 class of each code.
        generator_fn: frozen ``G``; :func:`identity_generator` to optimise the
            samples directly.
        encoder: frozen ``F``; ``None`` for feature-level distillation where the
            generator output is used as the embedding ``F(S)``.
        bank: cached real embeddings.
        config: optimisation settings.
        seed: seeds the explicit generator for DC heads and real batches.
        progress: show a tqdm bar with the current loss.
        loss_fn: custom loss on the samples; defaults to
            :func:`make_matching_loss` of ``encoder``, ``bank`` and ``config``.
        part_means: ``[n, D]`` part centre of each code's sample (see
            :func:`make_matching_loss`).
        real_genes: real gene rows per class (``config.finetune_encoder``).

    Returns:
        The optimised codes (detached, CPU) and the loss history.
    """
    if codes_init.ndim != 2:
        raise ValueError(f"codes_init must be [n, d], got {tuple(codes_init.shape)}")
    device = codes_init.device
    labels = labels.to(device)
    validate_labels(labels, bank.num_classes, codes_init.shape[0])
    bank = bank.to(device)
    for module in (encoder, generator_fn):
        if isinstance(module, nn.Module):
            _freeze(module)
    if loss_fn is None:
        loss_fn = make_matching_loss(
            encoder,
            bank,
            config,
            part_means=None if part_means is None else part_means.to(device),
            real_genes=None if real_genes is None else real_genes.to(device),
        )

    codes = codes_init.detach().clone().requires_grad_()
    if config.optimizer == "adam":
        optimizer = torch.optim.Adam([codes], lr=config.lr)
    else:
        optimizer = torch.optim.SGD([codes], lr=config.lr, momentum=config.momentum)
    generator = make_generator(seed, device)
    history: list[dict[str, float]] = []
    parts: dict[str, float] = {}

    def loss_on_samples(samples: Tensor) -> Tensor:
        total, step_parts = loss_fn(samples, labels, generator)
        parts.update(step_parts)
        return total

    logger.info(
        "Distilling %d codes of width %d (%d classes) for %d steps",
        codes.shape[0],
        codes.shape[1],
        bank.num_classes,
        config.steps,
    )
    start = time.perf_counter()
    bar = tqdm(range(config.steps), desc="distill", disable=not progress)
    for step in bar:
        optimizer.zero_grad(set_to_none=True)
        loss = backward_through_generator(
            codes,
            labels,
            generator_fn,
            loss_on_samples,
            config.chunk_size,
        )
        optimizer.step()
        bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
        if step % config.log_every == 0 or step == config.steps - 1:
            history.append({"step": step, "loss": loss, **parts})
            logger.debug("step %d: %s", step, history[-1])
    logger.info(
        "Distillation finished in %.1f s (final loss %s)",
        time.perf_counter() - start,
        f"{history[-1]['loss']:.4g}" if history else "n/a",
    )
    return DistillResult(codes=codes.detach().cpu(), history=history)
