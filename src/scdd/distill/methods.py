"""scDD and the paper's baselines behind one name.

Every method that starts from real cells starts from the same seeds (SPC
training cells per class, chosen by ``seeding``: the k-means part medoids or
random cells), so a table compares optimisation, not seeding. The coreset
controls (:mod:`scdd.distill.coresets`) and ``random_real`` write real cells,
marked as such (:data:`REAL_CELL_METHODS`); the others differ in what is
optimised and what maps it to cells:

============================  ================================  ==========
method                        optimised -> sample               output
============================  ================================  ==========
``random_real``               nothing: random real cells        genes
``herding`` / ``kcenter`` /   nothing: a coreset of real cells  genes
``kmeans_medoid`` /           in F-space
``geosketch``
``dm`` / ``dc``               gene values, F frozen             genes
``featdistill(+dcdm)``        128-d features                    features
``textdistill(+dcdm)``        features, decoded once by D       genes
``generator_only``            nothing: SCDG samples from noise  genes
``scdd_decoder``              latent codes -> D                 genes
``scdd``                      latent codes -> U -> D            genes
``full``                      nothing: the whole training split genes
============================  ================================  ==========
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import dask.array as da
import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse
from torch import Tensor

from scdd.cellstore import take_matrix_rows
from scdd.distill.config import DistillOptimParams
from scdd.distill.coresets import select_coreset
from scdd.distill.decoder_bias import class_decoder_bias
from scdd.distill.expression import as_log_normalised, sample_counts_like_real
from scdd.distill.losses import RealEmbeddingBank
from scdd.distill.names import (
    CORESET_METHODS,
    METHODS,
    NEEDS_GENERATOR,
    REAL_CELL_METHODS,
    SCDD_METHODS,
    SEEDINGS,
)
from scdd.distill.optimise import distill
from scdd.distill.parts import class_parts
from scdd.models.device import make_generator
from scdd.models.diffusion import LatentDiffusion
from scdd.models.foundation import FoundationModel

logger = logging.getLogger(__name__)

#: Loss weights (DM, DC) each baseline is defined by; ``None`` keeps the
#: configured weight. The ``+dcdm`` variants are defined by using both losses
#: (:func:`loss_weights`), whatever scdd's default says.
_LOSSES: dict[str, tuple[float | None, float | None]] = {
    "dm": (1.0, 0.0),
    "dc": (0.0, 1.0),
    "featdistill": (1.0, 0.0),
    "featdistill+dcdm": (None, None),
    "textdistill": (1.0, 0.0),
    "textdistill+dcdm": (None, None),
    "scdd_decoder": (None, None),
    "scdd": (None, None),
}


def loss_weights(method: str, config: DistillOptimParams) -> DistillOptimParams:
    """``config`` with the DM and DC weights ``method`` is defined by: fixed
    for the single-loss baselines, the configured ones for scdd, and for the
    ``+dcdm`` variants the configured ones with a weight of 1 for a loss the
    configuration switches off (scdd's default ``lambda_dc: 0`` would make
    them DM-only copies of their base method). Only :data:`SCDD_METHODS` keep
    ``lambda_part``, ``head_hidden`` and ``finetune_encoder``."""
    lambda_dm, lambda_dc = _LOSSES.get(method, (None, None))
    config = config.model_copy(
        update={
            "lambda_dm": config.lambda_dm if lambda_dm is None else lambda_dm,
            "lambda_dc": config.lambda_dc if lambda_dc is None else lambda_dc,
        }
    )
    if method not in SCDD_METHODS:
        config = config.model_copy(
            update={"lambda_part": 0.0, "head_hidden": [], "finetune_encoder": False}
        )
    if method.endswith("+dcdm"):
        config = config.model_copy(
            update={
                "lambda_dm": config.lambda_dm or 1.0,
                "lambda_dc": config.lambda_dc or 1.0,
            }
        )
    return config


@dataclass
class MethodOutput:
    """What a method produced.

    Attributes:
        labels: class index of each synthetic sample ``[n]``.
        genes: synthetic expression ``[n, G]`` before post-processing (``None``
            for feature-level methods).
        features: F-space features ``[n, D]`` for feature-level methods.
        codes: the optimised variables ``[n, d]`` (``None`` when nothing was
            optimised).
        history: loss history of the optimisation.
        real_cells: the rows are real training cells, written as they are.
    """

    labels: np.ndarray
    genes: np.ndarray | sparse.csr_matrix | da.Array | None = None
    features: np.ndarray | None = None
    codes: np.ndarray | None = None
    history: list[dict[str, float]] | None = None
    real_cells: bool = False


def seed_rows(
    method: str, inputs: DistillInputs, *, spc: int, seeding: str, seed: int
) -> np.ndarray:
    """The real rows ``method`` starts from (or writes, for the real-cell
    methods): its own coreset, random cells for ``random_real``, else the
    ``seeding`` coreset, so every optimised method starts alike."""
    if method == "random_real":
        name = "random"
    elif method in CORESET_METHODS:
        name = method
    elif seeding in SEEDINGS:
        name = SEEDINGS[seeding]
    else:
        raise ValueError(
            f"distill.seeding={seeding!r}; choose one of {list(SEEDINGS)}."
        )
    return select_coreset(
        name,
        inputs.embeddings,
        inputs.labels,
        spc=spc,
        num_classes=inputs.num_classes,
        seed=seed,
    )


@dataclass
class DistillInputs:
    """Everything a method may read; real cells enter through ``bank`` only
    during optimisation.

    Attributes:
        genes: training cells in the foundation gene order ``[N, G]`` (CSR, or
            lazy row blocks of which only the seed rows are read).
        embeddings: cached ``F(genes)`` ``[N, D]``.
        labels: class index per training cell ``[N]``.
        num_classes: ``C``.
        foundation: frozen E and D.
        generator: frozen SCDG (needed by ``scdd`` and ``generator_only``).
        conditions: how class indices become generator conditions.
        target_sum: per-cell ``expm1`` total of the real cells; when set,
            optimised genes pass through :func:`as_log_normalised` so the
            optimisation sees cells as they will be written.
        zero_fractions: real zero fraction per class ``[C]`` (the sparsity
            that ``sample_counts`` draws cells at).
        class_means: real per-class gene means ``[C, G]`` (what
            ``decoder_bias`` corrects D's output towards).
    """

    genes: sparse.csr_matrix | da.Array
    embeddings: np.ndarray
    labels: np.ndarray
    num_classes: int
    foundation: FoundationModel
    generator: LatentDiffusion | None = None
    conditions: ConditionSpec | None = None
    target_sum: float | None = None
    zero_fractions: np.ndarray | None = None
    class_means: np.ndarray | None = None


@dataclass
class ConditionSpec:
    """Generator conditions for a class index.

    Attributes:
        null: the all-null condition row, one token per condition column.
        position: index of the label column among the condition columns.
        label_map: generator category index of each class index ``[C]``.
    """

    null: list[int]
    position: int
    label_map: list[int]

    def __call__(self, labels: Tensor) -> Tensor:
        """``[n, n_conditions]``: the mapped label, null tokens elsewhere."""
        cond = torch.tensor(self.null, dtype=torch.long, device=labels.device)
        cond = cond.repeat(len(labels), 1)
        mapping = torch.tensor(self.label_map, dtype=torch.long, device=labels.device)
        cond[:, self.position] = mapping[labels]
        return cond


def _decoder_bias(inputs: DistillInputs, decoder: torch.nn.Module, seed: int) -> Tensor:
    if inputs.class_means is None:
        raise ValueError("decoder_bias needs the real cells' class means")
    return class_decoder_bias(
        decoder,
        inputs.embeddings,
        inputs.labels,
        inputs.class_means,
        num_classes=inputs.num_classes,
        seed=seed + 4,
    )


def drawn_rows(labels: Tensor, fraction: float) -> Tensor:
    """Which rows are drawn as counts: ``fraction`` of each class's rows,
    spread over them in order (every other one at 0.5), so a class holds
    smooth prototypes and count-like examples side by side."""
    within = (labels[:, None] == labels[None, :]).tril(-1).sum(1)
    return torch.floor((within + 1) * fraction) > torch.floor(within * fraction)


def run_method(
    method: str,
    inputs: DistillInputs,
    *,
    spc: int,
    config: DistillOptimParams,
    t_gen: int = 50,
    guidance_scale: float = 1.0,
    sample_steps: int = 50,
    zero_threshold: float | None = None,
    count_fraction: float = 0.0,
    count_depth: float = 1.0,
    decoder_bias: bool = False,
    seeding: str = "medoid",
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> MethodOutput:
    """Build the synthetic set of ``method`` (see the module table).

    Args:
        method: one of :data:`METHODS`.
        inputs: training cells, their cached embeddings, frozen models.
        spc: synthetic samples per class.
        config: optimisation settings; baselines override the loss weights
            that define them (``dm``: DM only, ``dc``: DC only, ...).
        t_gen: diffusion step of the scdd codes.
        guidance_scale: classifier-free guidance of the generator.
        sample_steps: denoising steps of ``generator_only``.
        zero_threshold: sparsity cut-off applied inside the optimisation (see
            :func:`as_log_normalised`).
        count_fraction: this fraction of each class's cells of
            :data:`SCDD_METHODS` methods is redrawn as counts as sparse as the
            real class, inside the optimisation (:func:`sample_counts_like_real`,
            rows chosen by :func:`drawn_rows`); the others stay smooth. Above 0
            it needs ``inputs.target_sum`` and ``inputs.zero_fractions``.
        count_depth: the counts' library size in multiples of the one that
            makes them as sparse as the real class.
        decoder_bias: add each class's :func:`class_decoder_bias` to the
            decoded cells of :data:`SCDD_METHODS` methods (needs
            ``inputs.class_means``).
        seeding: the real cells the optimised methods start from
            (:data:`SEEDINGS`: ``medoid``, the k-means part medoids, or
            ``random``).
        seed: seeds, head initialisations and noise.
        device: where optimisation runs.
        progress: show progress bars.
    """
    if method not in METHODS:
        raise ValueError(f"distill.method={method!r}; choose one of {list(METHODS)}.")
    if method in NEEDS_GENERATOR and (
        inputs.generator is None or inputs.conditions is None
    ):
        raise ValueError(
            f"distill.method={method!r} needs the SCDG generator checkpoint and "
            "its conditions; run the generator pipeline first "
            "(kedro run --pipeline generator)."
        )
    device = torch.device(device)
    if method == "full":
        return MethodOutput(
            labels=inputs.labels.copy(), genes=inputs.genes, real_cells=True
        )
    if method in REAL_CELL_METHODS:
        seeds = seed_rows(method, inputs, spc=spc, seeding=seeding, seed=seed)
        return MethodOutput(
            labels=inputs.labels[seeds],
            genes=take_matrix_rows(inputs.genes, seeds),
            real_cells=True,
        )
    config = loss_weights(method, config)
    part_means = None
    if config.lambda_part > 0:
        parts = class_parts(
            inputs.embeddings,
            inputs.labels,
            spc=spc,
            num_classes=inputs.num_classes,
            seed=seed,
        )
        part_means = torch.as_tensor(parts.means)
    if part_means is not None and seeding == "medoid":
        seeds = parts.seeds  # the medoid coreset: the same k-means, run once
    else:
        seeds = seed_rows(method, inputs, spc=spc, seeding=seeding, seed=seed)
    labels = inputs.labels[seeds]

    foundation = inputs.foundation.freeze()
    encoder = foundation.encoder.to(device)
    decoder = foundation.decoder.to(device)
    generator = (
        inputs.generator.to(device).eval() if inputs.generator is not None else None
    )
    y = torch.as_tensor(labels, dtype=torch.long, device=device)
    z_seed = torch.as_tensor(inputs.embeddings[seeds], device=device)
    noise = make_generator(seed + 1, device)

    if method == "generator_only":
        latents = generator.sample(
            inputs.conditions(y),
            n_steps=sample_steps,
            guidance_scale=guidance_scale,
            generator=noise,
        )
        with torch.no_grad():
            genes = decoder(latents)
        return MethodOutput(labels=labels, genes=genes.cpu().numpy())

    fn: Callable[[Tensor, Tensor], Tensor]

    counts = count_fraction > 0 and method in SCDD_METHODS
    if counts and (inputs.target_sum is None or inputs.zero_fractions is None):
        raise ValueError("count_fraction needs the real cells' target_sum and sparsity")
    zero_fractions = (
        torch.as_tensor(inputs.zero_fractions, dtype=torch.float32, device=device)
        if counts
        else None
    )

    def as_cells(genes: Tensor, lab: Tensor) -> Tensor:
        """Genes as they will be written: non-negative (and log-normalised,
        some redrawn as counts with ``count_fraction``)."""
        if inputs.target_sum is None:
            return F.relu(genes)
        cells = as_log_normalised(
            genes, target_sum=inputs.target_sum, zero_threshold=zero_threshold
        )
        if not counts:
            return cells
        drawn = sample_counts_like_real(
            cells,
            zero_fractions[lab],
            target_sum=inputs.target_sum,
            seed=seed + 2,
            depth=count_depth,
        )
        if count_fraction >= 1:
            return drawn
        return torch.where(drawn_rows(lab, count_fraction)[:, None], drawn, cells)

    if method in ("dm", "dc"):
        codes = torch.as_tensor(
            take_matrix_rows(inputs.genes, seeds).toarray(), device=device
        )
        enc = encoder

        def fn(c: Tensor, lab: Tensor) -> Tensor:
            return as_cells(c, lab)
    elif method.startswith(("featdistill", "textdistill")):
        codes, enc = z_seed.clone(), None

        def fn(c: Tensor, _: Tensor) -> Tensor:
            return F.normalize(c, dim=1)
    elif method == "scdd_decoder":
        codes, enc = z_seed.clone(), encoder

        def decode(c: Tensor, _: Tensor) -> Tensor:
            return decoder(F.normalize(c, dim=1))
    else:  # scdd
        codes, enc = generator.encode_codes(z_seed, t_gen, generator=noise), encoder

        def decode(c: Tensor, lab: Tensor) -> Tensor:
            return decoder(
                generator.denoise(c, t_gen, inputs.conditions(lab), guidance_scale)
            )

    if method in SCDD_METHODS:
        bias = _decoder_bias(inputs, decoder, seed) if decoder_bias else None

        def fn(c: Tensor, lab: Tensor) -> Tensor:
            genes = decode(c, lab)
            return as_cells(genes if bias is None else genes + bias[lab], lab)

    bank = RealEmbeddingBank(
        torch.as_tensor(inputs.embeddings),
        torch.as_tensor(inputs.labels, dtype=torch.long),
        inputs.num_classes,
    ).to(device)
    real_genes = None
    if config.finetune_encoder:  # a tuned F needs real genes, not the cache
        rows = select_coreset(
            "random",
            inputs.embeddings,
            inputs.labels,
            spc=config.real_batch_size,
            num_classes=inputs.num_classes,
            seed=seed + 3,
        )
        real_genes = RealEmbeddingBank(
            torch.as_tensor(take_matrix_rows(inputs.genes, rows).toarray()),
            torch.as_tensor(inputs.labels[rows], dtype=torch.long),
            inputs.num_classes,
        ).to(device)
    result = distill(
        codes,
        y,
        fn,
        enc,
        bank,
        config,
        seed=seed,
        progress=progress,
        part_means=part_means,
        real_genes=real_genes,
    )
    with torch.no_grad():
        sample = fn(result.codes.to(device), y).cpu().numpy()
    out = MethodOutput(
        labels=labels, codes=result.codes.numpy(), history=result.history
    )
    if method.startswith("featdistill"):
        out.features = sample
    elif method.startswith("textdistill"):
        with torch.no_grad():
            out.genes = decoder(torch.as_tensor(sample, device=device)).cpu().numpy()
        out.features = sample
    else:
        out.genes = sample
    return out
