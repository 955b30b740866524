"""The ``distill`` parameter group: what :mod:`scdd.distill` takes.

:class:`DistillOptimParams` (``distill.optim``) holds the hyper-parameters of
the optimisation (:func:`scdd.distill.optimise.distill`,
:func:`scdd.distill.methods.run_method`); :class:`DistillParams`
(``params:distill``) the method and its settings
(:func:`scdd.distill.inputs.distill_synthetic`). Defaults are those of
``conf/base/parameters_latent_distillation.yml``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from scdd.distill.names import METHODS, SEEDINGS
from scdd.metrics.privacy import PrivacyParams
from scdd.param_group import (
    NonNegativeFloat,
    NonNegativeInt,
    ParamGroup,
    PositiveFloat,
    PositiveInt,
)

__all__ = ["DistillOptimParams", "DistillParams"]


class DistillOptimParams(ParamGroup):
    """``distill.optim``: hyper-parameters of :func:`scdd.distill.optimise.distill`."""

    #: Outer optimisation steps ``K``. 0: the seeds as the method maps them
    #: (scdd: decoded, unoptimised).
    steps: NonNegativeInt = 300
    #: Learning rate of the codes.
    lr: PositiveFloat = 0.03
    #: ``sgd`` uses ``momentum``.
    optimizer: Literal["adam", "sgd"] = "adam"
    #: SGD momentum (0.5 as in the DC/DM reference code).
    momentum: NonNegativeFloat = 0.5
    #: Arithmetic of the frozen F and D while distilling and decoding the
    #: written cells: ``32-true``, or ``bf16-true`` (their weights and matrix
    #: products in bfloat16, the cells and losses around them in float32).
    precision: Literal["32-true", "bf16-true"] = "32-true"
    #: Weight of the DM loss; 0 skips it.
    lambda_dm: NonNegativeFloat = 1.0
    #: Weight of the DC loss; 0 skips it.
    lambda_dc: NonNegativeFloat = 0.0
    #: Match each cell to its k-means part of the class (scdd, scdd_decoder;
    #: :mod:`scdd.distill.parts`); 0 skips it.
    lambda_part: NonNegativeFloat = 1.0
    #: Fewest training cells in a part (a synthetic cell's own target): a
    #: class of fewer than SPC x this has fewer parts, shared by its cells, so
    #: no cell is matched to the mean of a handful of training cells.
    part_min_cells: PositiveInt = 20
    #: Weight of the prototype loss (scdd, scdd_decoder): real embeddings
    #: classified by the set's centred class means, cross-entropy
    #: (:func:`scdd.distill.losses.prototype_loss`); 0 skips it.
    lambda_proto: NonNegativeFloat = 3.0
    #: Inverse temperature of the prototype loss's logits (F's embeddings
    #: have unit norm, so class-mean dot products differ by tenths).
    proto_temperature: PositiveFloat = 30.0
    #: Ablation (scdd, with DC): hidden widths of DC's task head, a ReLU MLP
    #: on F; empty: the paper's linear head (ablation of its Fig. 4).
    head_hidden: list[PositiveInt] = []
    #: Ablation (scdd, with DC): train F with the task head during
    #: distillation, the real side re-embedded by the tuned F from real gene
    #: batches (the paper's Table VII).
    finetune_encoder: bool = False
    #: Head updates ``N`` per outer step for DC.
    inner_steps: PositiveInt = 5
    #: SGD learning rate of the DC head.
    head_lr: PositiveFloat = 0.01
    #: Real embeddings sampled per class for DC and the prototype loss.
    real_batch_size: PositiveInt = 256
    #: Codes per chunk when backpropagating through G; 0 or ``None`` = all at
    #: once. A set within one chunk builds G once, a larger one twice.
    chunk_size: NonNegativeInt | None = 256
    #: Record history (and log at DEBUG) every this many steps.
    log_every: PositiveInt = 10

    @model_validator(mode="after")
    def _some_loss(self) -> DistillOptimParams:
        if self.lambda_dm == 0 and self.lambda_dc == 0:
            raise ValueError(
                "lambda_dm and lambda_dc are both 0: nothing to optimise; make "
                "at least one of them > 0"
            )
        if self.finetune_encoder and self.precision != "32-true":
            raise ValueError(
                "finetune_encoder trains F, which bfloat16 weights cannot take "
                "small steps of; set distill.optim.precision: 32-true"
            )
        return self


class DistillParams(ParamGroup):
    """``params:distill``: the distillation method and its settings."""

    method: Literal[METHODS] = "scdd"
    #: Synthetic cells per class.
    spc: PositiveInt = 1
    #: Diffusion step of the ``scdd`` codes (0 = no noise).
    t_gen: NonNegativeInt = 50
    guidance_scale: NonNegativeFloat = 1.0
    #: Denoising steps of ``generator_only``.
    sample_steps: PositiveInt = 50
    #: Log1p values at or below it become 0; ``None`` = per-class quantile.
    zero_threshold: NonNegativeFloat | None = 0.2
    #: From this SPC up, redraw scdd's cells as counts as sparse as the real
    #: class (inside the optimisation, straight-through); ``None``: never.
    sample_counts_from_spc: PositiveInt | None = 5
    #: Of each class's cells from that SPC up, the fraction drawn as counts
    #: (the others stay smooth).
    count_fraction: Annotated[float, Field(gt=0, le=1)] = 1.0
    #: Library size of the drawn counts, in multiples of the one that makes
    #: them as sparse as the real class (deeper: less noisy).
    count_depth: Annotated[float, Field(ge=1)] = 4.0
    #: Step scale of a per-cell residual in gene space (log1p units per unit
    #: of code), optimised with scdd's codes from zero, so F-space matching
    #: can correct what D does not reconstruct; 0: off.
    gene_residual: NonNegativeFloat = 0.1
    #: The real cells every optimised method starts from: ``medoid`` (the
    #: cells nearest the centres of SPC equal-size k-means parts per class)
    #: or ``random``.
    seeding: Literal[tuple(SEEDINGS)] = "medoid"
    #: Real cells of a class a method reads at most: a larger class is a
    #: seeded sample of this many (its cached embeddings are the only ones
    #: held), so an atlas costs no more memory than a class this size.
    max_cells_per_class: PositiveInt = 20_000
    optim: DistillOptimParams = DistillOptimParams()
    privacy: PrivacyParams = PrivacyParams()

    def for_cell(
        self, method: str, spc: int, steps: int | None = None
    ) -> DistillParams:
        """This group for one benchmark cell: ``method``, ``spc`` and, when
        given, ``steps`` optimisation steps."""
        optim = self.optim
        if steps is not None:
            optim = optim.model_copy(update={"steps": steps})
        return self.model_copy(update={"method": method, "spc": spc, "optim": optim})
