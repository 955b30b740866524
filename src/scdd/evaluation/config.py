"""The ``evaluate`` parameter group: what :mod:`scdd.evaluation` takes.

:class:`EvaluateParams` (``params:evaluate``) names the evaluation models,
the held-out split they are scored on and the full-split reference's sample;
one sub-group per model holds that model's settings and is what its module
takes (:class:`FHeadParams`: :func:`scdd.evaluation.linear_head.evaluate_linear_head`,
:class:`CelltypistParams`: :func:`scdd.evaluation.celltypist_eval.evaluate_celltypist`,
:class:`GeneMLPParams`, :class:`GeneTransformerParams` and
:class:`DeepInsightCNNParams`: the torch gene models, trained by
:func:`scdd.evaluation.gene_classifier.evaluate_gene_classifier` with the
settings of :class:`GeneModelParams`); :class:`FidelityParams` those of
:func:`scdd.evaluation.scoring.fidelity`. Defaults are those of
``conf/base/parameters_evaluate.yml``.

This module imports nothing of :mod:`scdd.evaluation`: the model modules
import it, and so does :mod:`scdd.params`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from scdd.param_group import (
    NonNegativeFloat,
    ParamGroup,
    PositiveFloat,
    PositiveInt,
    Rate,
    refuse_repeats,
)

__all__ = [
    "GENE_MODELS",
    "LAYOUTS",
    "MARKER_METHODS",
    "MODELS",
    "TORCH_GENE_MODELS",
    "CelltypistParams",
    "DeepInsightCNNParams",
    "EvaluateParams",
    "FHeadParams",
    "FidelityParams",
    "GeneMLPParams",
    "GeneModelParams",
    "GeneTransformerParams",
]

#: Torch models on genes (:mod:`scdd.evaluation.gene_classifier`);
#: ``evaluate.<name>`` holds each one's settings.
TORCH_GENE_MODELS = ("gene_mlp", "gene_transformer", "deepinsight_cnn")
#: The evaluation models (:mod:`scdd.evaluation.suite`): ``f_head`` reads
#: F-space features, the others genes.
MODELS = ("f_head", "celltypist", *TORCH_GENE_MODELS)
#: Models that read genes: skipped for a feature-only synthetic set.
GENE_MODELS = ("celltypist", *TORCH_GENE_MODELS)
#: How DeepInsight lays the genes out: a t-SNE (DeepInsight's) or a PCA of them.
LAYOUTS = ("tsne", "pca")
#: ``rank_genes_groups`` methods of scanpy, or the class mean difference
#: (:func:`scdd.metrics.fidelity.find_markers`).
MARKER_METHODS = (
    "mean_difference",
    "t-test",
    "t-test_overestim_var",
    "wilcoxon",
    "logreg",
)


class FHeadParams(ParamGroup):
    """``evaluate.f_head``: frozen F + linear head (the paper protocol),
    :func:`scdd.evaluation.linear_head.evaluate_linear_head`."""

    #: Random head initialisations (init ``i`` seeded ``seed + i``).
    n_inits: PositiveInt = 10
    #: Passes over the training set per init.
    epochs: PositiveInt = 1000
    #: SGD learning rate.
    lr: PositiveFloat = 0.01
    #: SGD momentum.
    momentum: NonNegativeFloat = 0.9
    #: SGD weight decay (on the weight and the bias).
    weight_decay: NonNegativeFloat = 5e-4
    #: ``None``: full batch (a synthetic set).
    batch_size: PositiveInt | None = None
    #: Cap on the SGD steps per init; ``None``: ``epochs`` passes.
    max_steps: PositiveInt | None = None
    #: Standardise the features (training mean and std) before the head.
    #: The synthetic sets keep the paper's protocol (``False``).
    standardise: bool = False
    #: Mini-batch size on the full training split (the retention reference):
    #: full-batch SGD at this lr underfits real splits (PBMC: 0.74 test
    #: accuracy vs 0.82 with batches of 64).
    reference_batch_size: PositiveInt | None = 64
    #: ``None``: ``epochs``.
    reference_epochs: PositiveInt | None = None
    #: The reference's epochs stop at this many SGD steps per init, so an
    #: atlas costs what a ~6k-cell split does.
    reference_max_steps: PositiveInt = 100_000
    #: The reference standardises F's features: unit-norm latents under weight
    #: decay underfit a real split (see ``linear_head``).
    reference_standardise: bool = True
    #: The reference trains on a stratified sample of at most this many
    #: training cells' features (``None``: all), so an atlas's latents are
    #: never all in memory; 100,000 steps of 64 see 6.4M cells at most.
    reference_max_cells: PositiveInt | None = 1_000_000


class CelltypistParams(ParamGroup):
    """``evaluate.celltypist``: ``celltypist.train(use_SGD=True)``, annotated
    without voting (:func:`scdd.evaluation.celltypist_eval.evaluate_celltypist`)."""

    #: Training runs; SGD ``random_state = seed + i``.
    n_inits: PositiveInt = 3
    #: More training cells than this use CellTypist's mini-batch SGD (its
    #: advice for large data); ``None``: never.
    mini_batch_above: PositiveInt | None = 20_000
    #: Extra ``celltypist.train`` arguments (``alpha``, ``mini_batch``,
    #: ``feature_selection``, SGDClassifier's ``tol``...); they override the
    #: defaults above.
    train_kwargs: dict[str, Any] = {}


class GeneModelParams(ParamGroup):
    """Training settings shared by the torch gene models
    (:func:`scdd.evaluation.gene_classifier.evaluate_gene_classifier`): Adam
    for ``steps`` steps, full batch on a set of at most ``batch_size`` cells
    (any synthetic set), mini-batches on the full split."""

    #: Training runs from seeds ``seed``, ``seed + 1``, ...
    n_inits: PositiveInt = 3
    #: Adam steps per run.
    steps: PositiveInt = 300
    #: Adam learning rate.
    lr: PositiveFloat = 1e-3
    #: Adam weight decay.
    weight_decay: NonNegativeFloat = 0.0
    #: Rows per optimiser step.
    batch_size: PositiveInt = 256
    #: Rows per prediction forward pass.
    chunk_size: PositiveInt = 4096


class GeneMLPParams(GeneModelParams):
    """``evaluate.gene_mlp``: genes -> hidden -> classes, no F
    (:func:`scdd.evaluation.gene_mlp.evaluate_gene_mlp`)."""

    #: Hidden units.
    hidden: PositiveInt = 256


class GeneTransformerParams(GeneModelParams):
    """``evaluate.gene_transformer``: TOSICA-like, gene-group tokens + a class
    token -> encoder (:mod:`scdd.evaluation.gene_transformer`)."""

    #: Genes per token; the genes are split into groups by a seeded
    #: permutation, ``ceil(G / genes_per_token)`` tokens.
    genes_per_token: PositiveInt = 32
    #: Token width (TOSICA uses 48).
    d_model: PositiveInt = 48
    #: Attention heads (must divide ``d_model``).
    heads: PositiveInt = 4
    #: Encoder layers.
    depth: PositiveInt = 1
    #: Dropout in the encoder.
    dropout: Rate = 0.1

    @model_validator(mode="after")
    def _heads_divide_d_model(self) -> GeneTransformerParams:
        if self.d_model % self.heads:
            raise ValueError(
                f"d_model={self.d_model} is not divisible by heads={self.heads}"
            )
        return self


class DeepInsightCNNParams(GeneModelParams):
    """``evaluate.deepinsight_cnn``: scDeepInsight-like, genes laid out on an
    image, a CNN (:mod:`scdd.evaluation.deepinsight_cnn`)."""

    #: The image is ``pixels x pixels``; genes sharing a pixel are averaged.
    pixels: int = Field(default=32, ge=4)
    #: ``tsne`` (DeepInsight) or ``pca`` of the genes.
    layout: Literal[LAYOUTS] = "tsne"
    #: Training cells read to lay out the genes.
    layout_max_cells: int = Field(default=5000, ge=3)
    #: Channels of the first conv block (the second has twice as many).
    width: PositiveInt = 16


class FidelityParams(ParamGroup):
    """``evaluate.fidelity``: :func:`scdd.evaluation.scoring.fidelity`."""

    #: Marker genes per class.
    top_k: PositiveInt = 50
    #: ``mean_difference`` (class mean minus the mean of the other class
    #: means; any SPC) or a scanpy ``rank_genes_groups`` method; ``t-test`` /
    #: ``wilcoxon`` fall back to ``mean_difference`` below 2 synthetic cells
    #: per class.
    marker_method: Literal[MARKER_METHODS] = "mean_difference"
    #: Real cells a scanpy ``marker_method`` reads (stratified sample);
    #: ``None``: all. ``mean_difference`` reads every cell, block by block.
    marker_max_cells: PositiveInt | None = 50_000
    #: Real cells in the F-space MMD kernel matrix; ``None``: every one.
    mmd_max_cells: PositiveInt | None = 2000


class EvaluateParams(ParamGroup):
    """``params:evaluate``: the evaluation models and the metrics' settings
    (:mod:`scdd.evaluation.scoring`, :func:`scdd.evaluation.suite.run_models`)."""

    #: Models trained on the synthetic set and scored on the held-out split;
    #: each is also trained on the full training split for retention.
    models: list[Literal[MODELS]] = Field(default=list(MODELS), min_length=1)
    #: The held-out cells scored: ``validation`` to tune, ``test`` to report.
    split: Literal["test", "validation"] = "test"
    #: Gene-level models train their full-split reference on a stratified
    #: sample of at most this many cells (``None``: all of them); the F-head
    #: reference reads every cell's features.
    reference_max_cells: PositiveInt | None = 50_000
    f_head: FHeadParams = FHeadParams()
    celltypist: CelltypistParams = CelltypistParams()
    gene_mlp: GeneMLPParams = GeneMLPParams()
    gene_transformer: GeneTransformerParams = GeneTransformerParams()
    deepinsight_cnn: DeepInsightCNNParams = DeepInsightCNNParams()
    fidelity: FidelityParams = FidelityParams()

    @field_validator("models")
    @classmethod
    def _modelsrefuse_repeats(cls, value: list[str]) -> list[str]:
        refuse_repeats(value, "evaluate.models")
        return value

    def for_reference(self) -> EvaluateParams:
        """Settings for the full training split (the retention reference).

        Full-batch SGD at the paper's lr underfits a real training split (on
        the bundled PBMC data: train accuracy 0.76, test 0.74; mini-batches
        of 64: 0.86 / 0.82), so the linear head uses
        ``f_head.reference_batch_size`` for ``reference_epochs`` (``None``:
        ``epochs``), at most ``reference_max_steps`` SGD steps (epochs over an
        atlas would take hours). The torch gene models
        need nothing: they train for a number of steps, full batch on a
        synthetic set and on mini-batches on a real split.
        """
        head = self.f_head
        return self.model_copy(
            update={
                "f_head": head.model_copy(
                    update={
                        "batch_size": head.reference_batch_size,
                        "epochs": head.reference_epochs or head.epochs,
                        "max_steps": head.reference_max_steps,
                        "standardise": head.reference_standardise,
                    }
                )
            }
        )

    def with_models(self, models: list[str]) -> EvaluateParams:
        """This group scoring ``models`` (the benchmark's ``benchmark.models``)."""
        return self.model_copy(update={"models": list(models)})
