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
    prototype_loss,
    validate_labels,
)
from scdd.distill.names import LOSS_TERMS
from scdd.distill.task_network import TaskNetwork, random_linear
from scdd.models.device import make_generator
from scdd.threads import follow_cores

logger = logging.getLogger(__name__)

GeneratorFn = Callable[..., Tensor]
"""Frozen differentiable map ``(codes [n, d], labels [n]) -> samples [n, G]``."""

SampleLoss = Callable[
    [Tensor, Tensor, torch.Generator], tuple[Tensor, dict[str, float]]
]
"""``(samples [n, G], labels [n], generator) -> (scalar loss, float parts)``:
what :func:`distill` minimises (:class:`MatchingLoss` unless given)."""

SampleFinish = Callable[[Tensor, Tensor], Tensor]
"""``(samples [n, G], labels [n]) -> samples [n, G]``: a map of the generated
samples taken without a gradient (a seeded count draw), whose gradient is
taken as the identity (straight-through)."""


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


class MatchingLoss:
    """The DM + DC (+ part, + prototype) loss on synthetic samples that
    :func:`distill` minimises (Algorithm 1's objective).

    ``loss(samples, labels, generator) -> (total, {"dm", "dc", "part",
    "proto"})``; a term is 0.0 when its weight is 0 (and it is not
    computed). The generator draws the DC task network's init and the real
    batches.

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
    """

    def __init__(
        self,
        encoder: nn.Module | None,
        bank: RealEmbeddingBank,
        config: DistillOptimParams,
        *,
        num_classes: int | None = None,
        part_means: Tensor | None = None,
        real_genes: RealEmbeddingBank | None = None,
    ) -> None:
        if config.lambda_part > 0 and part_means is None:
            raise ValueError("lambda_part > 0 needs the part means of the samples")
        if config.finetune_encoder and (encoder is None or real_genes is None):
            raise ValueError(
                "finetune_encoder needs the encoder F and real gene batches"
            )
        if num_classes is not None and num_classes != bank.num_classes:
            raise ValueError(
                f"num_classes={num_classes} but the bank holds "
                f"{bank.num_classes} classes"
            )
        self.encoder = encoder
        self.bank = bank
        self.config = config
        self.part_means = part_means
        self.real_genes = real_genes
        #: F's state across steps (``finetune_encoder``).
        self.tuned_encoder: dict[str, Tensor] | None = None

    def __call__(
        self, samples: Tensor, labels: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, dict[str, float]]:
        """``lambda_dm * DM + lambda_dc * DC + lambda_part * part +
        lambda_proto * proto`` of ``samples`` ``[n, G]`` of class ``labels``
        ``[n]``, and each term."""
        config = self.config
        network = self.task_network(samples, generator)
        embeddings = self.embed(samples, network)
        total = embeddings.new_zeros(())
        parts = dict.fromkeys(LOSS_TERMS, 0.0)
        if config.lambda_dm > 0:
            dm = self.dm_loss(embeddings, labels, network, generator)
            total = total + config.lambda_dm * dm
            parts["dm"] = dm.item()
        if config.lambda_dc > 0:
            dc = self.dc_loss(samples, embeddings, labels, network, generator)
            total = total + config.lambda_dc * dc
            parts["dc"] = dc.item()
        if config.lambda_part > 0:
            part = self.part_loss(embeddings, labels)
            total = total + config.lambda_part * part
            parts["part"] = part.item()
        if config.lambda_proto > 0:
            proto = self.proto_loss(embeddings, labels, generator)
            total = total + config.lambda_proto * proto
            parts["proto"] = proto.item()
        return total, parts

    def task_network(
        self, samples: Tensor, generator: torch.Generator
    ) -> TaskNetwork | None:
        """A fresh DC task network for the ablations (a deeper head, F tuned
        from its state so far); ``None`` for the paper's linear head."""
        config = self.config
        if not (config.finetune_encoder or config.head_hidden):
            return None
        return TaskNetwork.build(
            self.bank.dim,
            config.head_hidden,
            self.bank.num_classes,
            generator=generator,
            like=samples,
            encoder=self.encoder if config.finetune_encoder else None,
            encoder_params=self.tuned_encoder,
        )

    def embed(self, samples: Tensor, network: TaskNetwork | None) -> Tensor:
        """``F(samples)``: by the tuned F, the frozen F, or the samples
        themselves (feature-level)."""
        if self.encoder is None:
            return samples
        if self.config.finetune_encoder:
            return network.features(samples)
        return self.encoder(samples)

    def dm_loss(
        self,
        embeddings: Tensor,
        labels: Tensor,
        network: TaskNetwork | None,
        generator: torch.Generator,
    ) -> Tensor:
        """DM: each class's mean embedding against the real class mean."""
        means = self.bank.class_means
        if self.config.finetune_encoder:  # the cache describes F before tuning
            with torch.no_grad():
                means = torch.stack(
                    [
                        network.features(b).mean(0)
                        for b in self._real_batches(self.real_genes, generator)
                    ]
                )
        return distribution_matching_loss(embeddings, labels, means)

    def dc_loss(
        self,
        samples: Tensor,
        embeddings: Tensor,
        labels: Tensor,
        network: TaskNetwork | None,
        generator: torch.Generator,
    ) -> Tensor:
        """DC: the task network's gradients on the synthetic set against
        those on real batches, over ``inner_steps`` rounds."""
        lr = self.config.head_lr
        if network is None:  # the paper's linear head, gradients in closed form
            head = random_linear(
                self.bank.dim, self.bank.num_classes, generator, like=embeddings
            )
            return self._dc_rounds(
                lambda real: gradient_matching_loss(embeddings, labels, real, head),
                lambda: _sgd_step(head, embeddings, labels, lr),
                self.bank,
                generator,
            )
        inputs = samples if self.config.finetune_encoder else embeddings
        loss = self._dc_rounds(
            lambda real: network.gradient_matching_loss(inputs, labels, real),
            lambda: network.sgd_step(inputs, labels, lr),
            self.real_genes if network.tunes_encoder else self.bank,
            generator,
        )
        if network.tunes_encoder:
            self.tuned_encoder = network.encoder_params()
        return loss

    def proto_loss(
        self, embeddings: Tensor, labels: Tensor, generator: torch.Generator
    ) -> Tensor:
        """A real batch of ``real_batch_size`` cells per class, classified by
        the set's class means (:func:`prototype_loss`)."""
        batches = self._real_batches(self.bank, generator)
        real_labels = torch.arange(len(batches), device=embeddings.device)
        return prototype_loss(
            embeddings,
            labels,
            torch.cat(batches),
            real_labels.repeat_interleave(self.config.real_batch_size),
            num_classes=self.bank.num_classes,
            temperature=self.config.proto_temperature,
        )

    def part_loss(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Each sample against the centre of its k-means part of its class."""
        spc = embeddings.shape[0] / max(int(labels.unique().numel()), 1)
        return part_matching_loss(embeddings, self.part_means, spc)

    def _dc_rounds(
        self,
        match: Callable[[list[Tensor]], Tensor],
        step: Callable[[], None],
        source: RealEmbeddingBank,
        generator: torch.Generator,
    ) -> Tensor:
        """``inner_steps`` rounds: match fresh real batches, then update the
        task network on the synthetic set (not after the last round)."""
        loss = match(self._real_batches(source, generator))
        for _ in range(self.config.inner_steps - 1):
            step()
            loss = loss + match(self._real_batches(source, generator))
        return loss

    def _real_batches(
        self, source: RealEmbeddingBank, generator: torch.Generator
    ) -> list[Tensor]:
        """One batch of ``real_batch_size`` rows of each class."""
        return [
            source.sample_batch(c, self.config.real_batch_size, generator)
            for c in range(self.bank.num_classes)
        ]


def backward_through_generator(  # noqa: PLR0913
    codes: Tensor,
    labels: Tensor,
    generator_fn: GeneratorFn,
    loss_on_samples: Callable[[Tensor], Tensor],
    chunk_size: int | None,
    finish: SampleFinish | None = None,
) -> float:
    """Accumulate ``d loss(finish(G(codes))) / d codes`` into ``codes.grad``.

    ``S = G(codes)`` is built once; ``dL/dS`` is taken on a detached leaf
    copy of ``finish(S)`` (the gradient passes straight through ``finish``).
    With more codes than ``chunk_size`` (paper III-C4), ``S`` is built
    without a graph and ``G`` is re-run chunk by chunk with
    ``S_chunk.backward(dL/dS_chunk)``, so ``G``'s graph is never held for
    the whole set; ``finish`` is not re-run, as only the values need it.
    This equals a plain backward as long as ``G`` is deterministic and
    per-sample (eval mode: no dropout, running BatchNorm stats).

    Args:
        codes: ``[n, d]`` leaf tensor requiring grad.
        labels: ``[n]`` labels passed to ``generator_fn``.
        generator_fn: frozen ``(codes, labels) -> samples [n, G]``.
        loss_on_samples: scalar loss of the samples ``[n, G]``.
        chunk_size: codes per chunk; ``None`` or 0 for a plain full backward.
        finish: straight-through map of the samples (a count draw); ``None``
            for none.

    Returns:
        The loss value.
    """
    n = codes.shape[0]
    chunked = bool(chunk_size) and n > chunk_size
    with torch.set_grad_enabled(not chunked):
        samples = generator_fn(codes, labels)
    with torch.no_grad():
        values = samples if finish is None else finish(samples, labels)
    values = values.detach().requires_grad_()
    loss = loss_on_samples(values)
    (sample_grad,) = torch.autograd.grad(loss, values)
    if not chunked:
        samples.backward(sample_grad)
        return loss.item()
    for start in range(0, n, chunk_size):
        rows = slice(start, start + chunk_size)
        generator_fn(codes[rows], labels[rows]).backward(sample_grad[rows])
    return loss.item()


def _freeze(module: nn.Module) -> None:
    """Put ``module`` in eval mode and stop gradients to its parameters, in place."""
    module.eval()
    module.requires_grad_(False)


def distill(  # noqa: PLR0913, PLR0917
    codes_init: Tensor,
    labels: Tensor,
    generator_fn: GeneratorFn,
    encoder: nn.Module | None,
    bank: RealEmbeddingBank,
    config: DistillOptimParams,
    *,
    seed: int = 0,
    progress: bool = True,
    loss_fn: SampleLoss | None = None,
    part_means: Tensor | None = None,
    real_genes: RealEmbeddingBank | None = None,
    finish: SampleFinish | None = None,
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
        loss_fn: custom loss on the samples; defaults to the
            :class:`MatchingLoss` of ``encoder``, ``bank`` and ``config``.
        part_means: ``[n, D]`` part centre of each code's sample (see
            :class:`MatchingLoss`).
        real_genes: real gene rows per class (``config.finetune_encoder``).
        finish: straight-through map of the generated samples before the
            loss (see :func:`backward_through_generator`).

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
        loss_fn = MatchingLoss(
            encoder,
            bank,
            config,
            part_means=None if part_means is None else part_means.to(device),
            real_genes=None if real_genes is None else real_genes.to(device),
        )
    codes = codes_init.detach().clone().requires_grad_()
    logger.info(
        "Distilling %d codes of width %d (%d classes) for %d steps",
        codes.shape[0],
        codes.shape[1],
        bank.num_classes,
        config.steps,
    )
    start = time.perf_counter()
    history = _optimise(
        codes,
        labels,
        generator_fn,
        loss_fn,
        config,
        seed=seed,
        progress=progress,
        finish=finish,
    )
    logger.info(
        "Distillation finished in %.1f s (final loss %s)",
        time.perf_counter() - start,
        f"{history[-1]['loss']:.4g}" if history else "n/a",
    )
    return DistillResult(codes=codes.detach().cpu(), history=history)


def _optimiser(codes: Tensor, config: DistillOptimParams) -> torch.optim.Optimizer:
    """Adam, or SGD with momentum, on the codes."""
    if config.optimizer == "adam":
        return torch.optim.Adam([codes], lr=config.lr)
    return torch.optim.SGD([codes], lr=config.lr, momentum=config.momentum)


def _optimise(
    codes: Tensor,
    labels: Tensor,
    generator_fn: GeneratorFn,
    loss_fn: SampleLoss,
    config: DistillOptimParams,
    *,
    seed: int,
    progress: bool,
    finish: SampleFinish | None,
) -> list[dict[str, float]]:
    """The loop of Algorithm 1: ``config.steps`` updates of ``codes`` in
    place; returns the loss history (every ``log_every`` steps and the last)."""
    optimizer = _optimiser(codes, config)
    generator = make_generator(seed, codes.device)
    history: list[dict[str, float]] = []
    parts: dict[str, float] = {}

    def loss_on_samples(samples: Tensor) -> Tensor:
        total, step_parts = loss_fn(samples, labels, generator)
        parts.update(step_parts)
        return total

    bar = tqdm(range(config.steps), desc="distill", disable=not progress)
    for step in bar:
        follow_cores()
        optimizer.zero_grad(set_to_none=True)
        loss = backward_through_generator(
            codes, labels, generator_fn, loss_on_samples, config.chunk_size, finish
        )
        optimizer.step()
        bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
        if step % config.log_every == 0 or step == config.steps - 1:
            history.append({"step": step, "loss": loss, **parts})
            logger.debug("step %d: %s", step, history[-1])
    return history
