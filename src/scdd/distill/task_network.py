"""The network whose gradients gradient matching compares (DC).

By default it is a linear head on the frozen F's embeddings, and
:func:`scdd.distill.losses.gradient_matching_loss` computes its gradients in
closed form. The paper's ablations need more: a deeper task head (Fig. 4) and
F itself trained during distillation (Table VII). :class:`TaskNetwork` covers
both with autograd. Its parameters are plain tensors passed to
``torch.func.functional_call``: an inner SGD step makes new tensors instead of
changing the ones an earlier step's graph still holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from scdd.distill.losses import gradient_distance


def random_linear(
    in_features: int, out_features: int, generator: torch.Generator, like: Tensor
) -> nn.Linear:
    """``nn.Linear`` with PyTorch's ``U(-1/sqrt(in), 1/sqrt(in))`` init drawn
    from ``generator`` (weight, then bias), without touching the global RNG."""
    layer = nn.utils.skip_init(
        nn.Linear, in_features, out_features, device=like.device, dtype=like.dtype
    )
    bound = 1 / math.sqrt(in_features)
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=generator)
        layer.bias.uniform_(-bound, bound, generator=generator)
    return layer


class TaskNetwork:
    """A classifier ``[encoder ->] head`` held as a module plus its parameters.

    Attributes:
        module: ``nn.Sequential(head layers)`` or ``nn.Sequential(encoder,
            head layers)``; its own parameters are not used.
        params: the tensors the forward pass uses, by parameter name.
        tunes_encoder: whether the encoder's parameters are in ``params``.
    """

    def __init__(self, module: nn.Sequential, params: dict[str, Tensor]) -> None:
        self.module = module
        self.params = params
        self.tunes_encoder = any(name.startswith("encoder.") for name in params)

    @classmethod
    def build(
        cls,
        in_features: int,
        hidden: Sequence[int],
        num_classes: int,
        *,
        generator: torch.Generator,
        like: Tensor,
        encoder: nn.Module | None = None,
        encoder_params: dict[str, Tensor] | None = None,
    ) -> TaskNetwork:
        """A fresh head ``in_features -> hidden... -> num_classes`` (ReLU
        between layers), after ``encoder`` when given, whose parameters are
        then ``encoder_params`` (the state F was tuned to so far)."""
        widths = [in_features, *hidden, num_classes]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [random_linear(a, b, generator, like), nn.ReLU()]
        head = nn.Sequential(*layers[:-1])
        parts = (
            {"head": head} if encoder is None else {"encoder": encoder, "head": head}
        )
        module = nn.Sequential()
        for name, part in parts.items():
            module.add_module(name, part)
        params = {
            f"head.{name}": p.detach().requires_grad_()
            for name, p in head.named_parameters()
        }
        if encoder is not None:
            params.update(encoder_params or _detached(encoder, "encoder."))
        return cls(module, params)

    def __call__(self, x: Tensor) -> Tensor:
        """Logits ``[n, C]``."""
        return functional_call(self.module, self.params, (x,))

    def features(self, x: Tensor) -> Tensor:
        """The tuned encoder's output (needs ``tunes_encoder``)."""
        encoder = {
            name.removeprefix("encoder."): p
            for name, p in self.params.items()
            if name.startswith("encoder.")
        }
        return functional_call(self.module.encoder, encoder, (x,))

    def encoder_params(self) -> dict[str, Tensor]:
        """The tuned encoder's parameters, to carry to the next step."""
        return {k: v for k, v in self.params.items() if k.startswith("encoder.")}

    def _matched(self) -> list[str]:
        """Weight matrices (biases are ignored, as in the DC reference code)."""
        return [name for name, p in self.params.items() if p.ndim > 1]

    def _gradients(
        self, x: Tensor, target: int, names: list[str], create_graph: bool
    ) -> tuple[Tensor, ...]:
        logits = self(x)
        labels = torch.full((x.shape[0],), target, dtype=torch.long, device=x.device)
        loss = F.cross_entropy(logits, labels)
        return torch.autograd.grad(
            loss, [self.params[n] for n in names], create_graph=create_graph
        )

    def gradient_matching_loss(
        self, syn: Tensor, syn_labels: Tensor, real_batches: Sequence[Tensor]
    ) -> Tensor:
        """Sum over classes and weight matrices of the gradient distance
        between real batches (constant) and synthetic inputs (differentiable)."""
        names = self._matched()
        loss = syn.new_zeros(())
        for c, real in enumerate(real_batches):
            mine = syn[syn_labels == c]
            if mine.shape[0] == 0:
                continue
            g_real = self._gradients(real.detach(), c, names, create_graph=False)
            g_syn = self._gradients(mine, c, names, create_graph=True)
            for gr, gs in zip(g_real, g_syn, strict=True):
                loss = loss + gradient_distance(gr.flatten(1), gs.flatten(1))
        return loss

    def sgd_step(self, x: Tensor, labels: Tensor, lr: float) -> None:
        """One cross-entropy SGD step on constant inputs; new tensors replace
        the parameters (the old ones stay as an earlier graph saw them)."""
        names = list(self.params)
        loss = F.cross_entropy(self(x.detach()), labels)
        grads = torch.autograd.grad(loss, [self.params[n] for n in names])
        self.params = {
            n: (self.params[n] - lr * g).detach().requires_grad_()
            for n, g in zip(names, grads, strict=True)
        }


def _detached(module: nn.Module, prefix: str) -> dict[str, Tensor]:
    return {
        f"{prefix}{name}": p.detach().clone().requires_grad_()
        for name, p in module.named_parameters()
    }
