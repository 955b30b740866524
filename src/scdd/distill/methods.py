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

Each method is one function of :data:`METHOD_REGISTRY` (methods that differ
only by data share one: ``dm``/``dc`` by their loss weights, the coresets by
their selection), which :func:`run_method` looks up; the steps they share
(seeds, frozen models, the cells as written, the optimisation call) are
:class:`SeededRun`'s. The optimisation itself, Algorithm 1, is
:func:`scdd.distill.optimise.distill`.
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
from torch import Tensor, nn

from scdd.cellstore import take_matrix_rows
from scdd.distill.config import DistillOptimParams, DistillParams
from scdd.distill.coresets import select_coreset
from scdd.distill.expression import as_log_normalised, sample_counts_like_real
from scdd.distill.losses import RealEmbeddingBank
from scdd.distill.names import (
    CORESET_METHODS,
    METHODS,
    NEEDS_GENERATOR,
    REAL_CELL_METHODS,  # noqa: F401 (re-exported: the table's real-cell rows)
    SCDD_METHODS,
    SEEDINGS,
)
from scdd.distill.optimise import GeneratorFn, SampleFinish, distill
from scdd.distill.parts import class_parts
from scdd.models.device import in_precision, make_generator
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
    ``lambda_part``, ``lambda_proto``, ``head_hidden`` and ``finetune_encoder``."""
    lambda_dm, lambda_dc = _LOSSES.get(method, (None, None))
    config = config.model_copy(
        update={
            "lambda_dm": config.lambda_dm if lambda_dm is None else lambda_dm,
            "lambda_dc": config.lambda_dc if lambda_dc is None else lambda_dc,
        }
    )
    if method not in SCDD_METHODS:
        config = config.model_copy(
            update={
                "lambda_part": 0.0,
                "lambda_proto": 0.0,
                "head_hidden": [],
                "finetune_encoder": False,
            }
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
        embeddings: cached ``F(genes)`` of the cells methods read ``[n, D]``:
            every training cell, or the per-class sample ``rows``.
        labels: class index of each of those cells ``[n]``.
        num_classes: ``C``.
        foundation: frozen E and D.
        generator: frozen SCDG (needed by ``scdd`` and ``generator_only``).
        conditions: how class indices become generator conditions.
        target_sum: per-cell ``expm1`` total of the real cells; when set,
            optimised genes pass through :func:`as_log_normalised` so the
            optimisation sees cells as they will be written.
        zero_fractions: real zero fraction per class ``[C]`` (the sparsity
            that ``sample_counts`` draws cells at).
        rows: the training row (of ``genes``) of each embedding, when they
            are a sample (``distill.max_cells_per_class``); ``None``: all.
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
    rows: np.ndarray | None = None

    def gene_rows(self, rows: np.ndarray) -> sparse.csr_matrix:
        """Genes of cells ``rows`` (positions in ``embeddings``), read only
        in the blocks that hold them."""
        rows = np.asarray(rows, dtype=np.int64)
        return take_matrix_rows(
            self.genes, rows if self.rows is None else self.rows[rows]
        )


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


def drawn_rows(labels: Tensor, fraction: float) -> Tensor:
    """Which rows are drawn as counts: ``fraction`` of each class's rows,
    spread over them in order (every other one at 0.5), so a class holds
    smooth prototypes and count-like examples side by side."""
    within = (labels[:, None] == labels[None, :]).tril(-1).sum(1)
    return torch.floor((within + 1) * fraction) > torch.floor(within * fraction)


@dataclass
class MethodRun:
    """One run of a method: what :func:`run_method` was given.

    Attributes:
        params: the ``distill`` group (method, spc, settings, ``optim``).
        inputs: training cells, their cached embeddings, frozen models.
        count_fraction: fraction of each class's cells drawn as counts.
        count_depth: library size of the drawn counts.
        seed: seeds, head initialisations and noise.
        device: where optimisation runs.
        progress: show progress bars.
    """

    params: DistillParams
    inputs: DistillInputs
    count_fraction: float
    count_depth: float
    seed: int
    device: torch.device
    progress: bool

    def real_rows(self) -> np.ndarray:
        """The rows of :func:`seed_rows` for this run's method."""
        return seed_rows(
            self.params.method,
            self.inputs,
            spc=self.params.spc,
            seeding=self.params.seeding,
            seed=self.seed,
        )


@dataclass
class SeededRun:
    """A method started from its seed cells (:meth:`start`), with the frozen
    models on the device, and the steps the optimised methods share.

    Attributes:
        run: what the method was given.
        config: ``params.optim`` with the method's loss weights.
        seeds: the real rows the method starts from ``[n]``.
        labels: class of each seed ``[n]``; ``y`` on the device.
        z_seed: the seeds' cached embeddings ``[n, D]``, on the device.
        part_means: centre of each seed's k-means part (``lambda_part > 0``).
        encoder, decoder: the frozen F and D, on the device.
        generator: the frozen SCDG U, on the device (when given).
        noise: seeded generator of the diffusion noise.
        zero_fractions: per-class sparsity of the drawn counts, on the device
            (``None``: no counts drawn).
    """

    run: MethodRun
    config: DistillOptimParams
    seeds: np.ndarray
    labels: np.ndarray
    y: Tensor
    z_seed: Tensor
    part_means: Tensor | None
    encoder: nn.Module
    decoder: nn.Module
    generator: LatentDiffusion | None
    noise: torch.Generator
    zero_fractions: Tensor | None

    @classmethod
    def start(cls, run: MethodRun) -> SeededRun:
        """The seeds (:func:`_seeds_and_parts`), the frozen models on the
        device and the diffusion noise."""
        inputs, params, device = run.inputs, run.params, run.device
        config = loss_weights(params.method, params.optim)
        seeds, part_means = _seeds_and_parts(run, config)
        labels = inputs.labels[seeds]
        foundation = inputs.foundation.freeze()
        return cls(
            run=run,
            config=config,
            seeds=seeds,
            labels=labels,
            y=torch.as_tensor(labels, dtype=torch.long, device=device),
            z_seed=torch.as_tensor(inputs.embeddings[seeds], device=device),
            part_means=part_means,
            encoder=in_precision(foundation.encoder.to(device), config.precision),
            decoder=in_precision(foundation.decoder.to(device), config.precision),
            generator=(
                None if inputs.generator is None else inputs.generator.to(device).eval()
            ),
            noise=make_generator(run.seed + 1, device),
            zero_fractions=_count_sparsity(run),
        )

    def as_cells(self, genes: Tensor, _labels: Tensor) -> Tensor:
        """Genes as they will be written, before any count draw:
        non-negative (and log-normalised)."""
        run, target_sum = self.run, self.run.inputs.target_sum
        if target_sum is None:
            return F.relu(genes)
        return as_log_normalised(
            genes, target_sum=target_sum, zero_threshold=run.params.zero_threshold
        )

    def draw_counts(self, cells: Tensor, labels: Tensor) -> Tensor:
        """``count_fraction`` of each class's cells redrawn as counts
        (:func:`sample_counts_like_real`), the others as they are."""
        run = self.run
        drawn = sample_counts_like_real(
            cells,
            self.zero_fractions[labels],
            target_sum=run.inputs.target_sum,
            seed=run.seed + 2,
            depth=run.count_depth,
        )
        if run.count_fraction >= 1:
            return drawn
        rows = drawn_rows(labels, run.count_fraction)
        return torch.where(rows[:, None], drawn, cells)

    @property
    def finish(self) -> SampleFinish | None:
        """The straight-through map of the optimised cells: the count draw
        when this run draws counts."""
        return None if self.zero_fractions is None else self.draw_counts

    def optimise(
        self, codes: Tensor, generator_fn: GeneratorFn, encoder: nn.Module | None
    ) -> tuple[np.ndarray, MethodOutput]:
        """Algorithm 1 (:func:`distill`) on ``codes`` against the real
        embeddings, the cells passed through :attr:`finish`; the sample the
        optimised codes map to, and the output (labels, codes, history) it
        goes into."""
        run, config, finish = self.run, self.config, self.finish
        bank = _real_embeddings(run.inputs, run.device)
        real_genes = _real_genes(run, config) if config.finetune_encoder else None
        result = distill(
            codes,
            self.y,
            generator_fn,
            encoder,
            bank,
            config,
            seed=run.seed,
            progress=run.progress,
            part_means=self.part_means,
            real_genes=real_genes,
            finish=finish,
        )
        with torch.no_grad():
            sample = generator_fn(result.codes.to(run.device), self.y)
            if finish is not None:
                sample = finish(sample, self.y)
        sample = sample.cpu().numpy()
        output = MethodOutput(
            labels=self.labels, codes=result.codes.numpy(), history=result.history
        )
        return sample, output

    def optimise_decoded(self, codes: Tensor, decode: GeneratorFn) -> MethodOutput:
        """:meth:`optimise` of codes that ``decode`` maps to genes (plus a
        gene-level residual optimised with them with ``gene_residual``),
        written as :meth:`as_cells` (and :attr:`finish`)."""
        params, width = self.run.params, codes.shape[1]
        scale = params.gene_residual
        if scale:  # the residual rides on the codes, from zero
            n_genes = len(self.run.inputs.foundation.gene_order)
            codes = torch.cat([codes, codes.new_zeros(codes.shape[0], n_genes)], 1)

        def cells(c: Tensor, labels: Tensor) -> Tensor:
            genes = decode(c[:, :width], labels)
            if scale:
                genes = genes + scale * c[:, width:]
            return self.as_cells(genes, labels)

        genes, output = self.optimise(codes, cells, self.encoder)
        output.genes, output.codes = genes, output.codes[:, :width]
        return output


def _seeds_and_parts(
    run: MethodRun, config: DistillOptimParams
) -> tuple[np.ndarray, Tensor | None]:
    """The seed rows, and each seed's part centre when the part loss is on
    (then the ``medoid`` seeds are the parts' own: the same k-means, run once)."""
    if config.lambda_part <= 0:
        return run.real_rows(), None
    inputs = run.inputs
    parts = class_parts(
        inputs.embeddings,
        inputs.labels,
        spc=run.params.spc,
        num_classes=inputs.num_classes,
        seed=run.seed,
        min_cells=config.part_min_cells,
    )
    seeds = parts.seeds if run.params.seeding == "medoid" else run.real_rows()
    return seeds, torch.as_tensor(parts.means)


def _count_sparsity(run: MethodRun) -> Tensor | None:
    """The real per-class zero fractions the counts are drawn at, on the
    device; ``None`` when this run draws none (only :data:`SCDD_METHODS` do)."""
    if run.count_fraction <= 0 or run.params.method not in SCDD_METHODS:
        return None
    inputs = run.inputs
    if inputs.target_sum is None or inputs.zero_fractions is None:
        raise ValueError("count_fraction needs the real cells' target_sum and sparsity")
    return torch.as_tensor(
        inputs.zero_fractions, dtype=torch.float32, device=run.device
    )


def _real_embeddings(inputs: DistillInputs, device: torch.device) -> RealEmbeddingBank:
    """The cached real embeddings, by class (the real side of Algorithm 1)."""
    return RealEmbeddingBank(
        torch.as_tensor(inputs.embeddings),
        torch.as_tensor(inputs.labels, dtype=torch.long),
        inputs.num_classes,
    ).to(device)


def _real_genes(run: MethodRun, config: DistillOptimParams) -> RealEmbeddingBank:
    """``real_batch_size`` random real gene rows per class: a tuned F
    (``finetune_encoder``) needs real genes, not the cache."""
    inputs = run.inputs
    rows = select_coreset(
        "random",
        inputs.embeddings,
        inputs.labels,
        spc=config.real_batch_size,
        num_classes=inputs.num_classes,
        seed=run.seed + 3,
    )
    return RealEmbeddingBank(
        torch.as_tensor(inputs.gene_rows(rows).toarray()),
        torch.as_tensor(inputs.labels[rows], dtype=torch.long),
        inputs.num_classes,
    ).to(run.device)


def _normalised(codes: Tensor, _labels: Tensor) -> Tensor:
    """Unit-norm features, as F's embeddings are."""
    return F.normalize(codes, dim=1)


# --- the methods: one function each (or per family sharing one body) ---


def full_split(run: MethodRun) -> MethodOutput:
    """``full``: the whole training split."""
    inputs = run.inputs
    genes = inputs.genes
    if inputs.rows is not None:  # a class above distill.max_cells_per_class
        genes = inputs.gene_rows(np.arange(len(inputs.labels)))
    return MethodOutput(labels=inputs.labels.copy(), genes=genes, real_cells=True)


def real_cells(run: MethodRun) -> MethodOutput:
    """``random_real`` and the coresets: their real rows, written as they are."""
    rows = run.real_rows()
    return MethodOutput(
        labels=run.inputs.labels[rows],
        genes=run.inputs.gene_rows(rows),
        real_cells=True,
    )


def gene_matching(run: MethodRun) -> MethodOutput:
    """``dm`` / ``dc``: the seed cells' gene values, optimised through F."""
    start = SeededRun.start(run)
    seed_genes = run.inputs.gene_rows(start.seeds).toarray()
    codes = torch.as_tensor(seed_genes, device=run.device)
    genes, output = start.optimise(codes, start.as_cells, start.encoder)
    output.genes = genes
    return output


def feature_distill(run: MethodRun) -> MethodOutput:
    """``featdistill(+dcdm)``: the seeds' F-space features, optimised."""
    start = SeededRun.start(run)
    features, output = start.optimise(start.z_seed.clone(), _normalised, None)
    output.features = features
    return output


def text_distill(run: MethodRun) -> MethodOutput:
    """``textdistill(+dcdm)``: :func:`feature_distill`, then decoded once by D."""
    start = SeededRun.start(run)
    features, output = start.optimise(start.z_seed.clone(), _normalised, None)
    with torch.no_grad():
        genes = start.decoder(torch.as_tensor(features, device=run.device))
    output.genes, output.features = genes.cpu().numpy(), features
    return output


def generator_only(run: MethodRun) -> MethodOutput:
    """``generator_only``: SCDG samples from noise, decoded by D."""
    start, params = SeededRun.start(run), run.params
    latents = start.generator.sample(
        run.inputs.conditions(start.y),
        n_steps=params.sample_steps,
        guidance_scale=params.guidance_scale,
        generator=start.noise,
    )
    with torch.no_grad():
        genes = start.decoder(latents)
    return MethodOutput(labels=start.labels, genes=genes.cpu().numpy())


def scdd_decoder(run: MethodRun) -> MethodOutput:
    """``scdd_decoder``: the seeds' latent codes, decoded by D."""
    start = SeededRun.start(run)

    def decode(codes: Tensor, _labels: Tensor) -> Tensor:
        return start.decoder(F.normalize(codes, dim=1))

    return start.optimise_decoded(start.z_seed.clone(), decode)


def scdd(run: MethodRun) -> MethodOutput:
    """``scdd``: the seeds' latent codes noised to ``t_gen``, denoised by the
    SCDG U under their class condition and decoded by D."""
    start, params = SeededRun.start(run), run.params
    generator, t_gen = start.generator, params.t_gen
    codes = generator.encode_codes(start.z_seed, t_gen, generator=start.noise)

    def decode(codes: Tensor, labels: Tensor) -> Tensor:
        conditions = run.inputs.conditions(labels)
        return start.decoder(
            generator.denoise(codes, t_gen, conditions, params.guidance_scale)
        )

    return start.optimise_decoded(codes, decode)


MethodFn = Callable[[MethodRun], MethodOutput]

#: The function that builds each method's synthetic set. Adding a method is
#: adding its name to :data:`METHODS`, a function and an entry here.
METHOD_REGISTRY: dict[str, MethodFn] = {
    "random_real": real_cells,
    **dict.fromkeys(CORESET_METHODS, real_cells),
    "dm": gene_matching,
    "dc": gene_matching,
    "featdistill": feature_distill,
    "featdistill+dcdm": feature_distill,
    "textdistill": text_distill,
    "textdistill+dcdm": text_distill,
    "generator_only": generator_only,
    "scdd_decoder": scdd_decoder,
    "scdd": scdd,
    "full": full_split,
}


def run_method(
    params: DistillParams,
    inputs: DistillInputs,
    *,
    count_fraction: float = 0.0,
    count_depth: float = 1.0,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> MethodOutput:
    """Build the synthetic set of ``params.method`` (see the module table)
    with its :data:`METHOD_REGISTRY` function.

    Args:
        params: the ``distill`` group: ``method`` (one of :data:`METHODS`),
            ``spc``, ``optim`` (baselines override the loss weights that
            define them: ``dm``: DM only, ``dc``: DC only, ...), ``t_gen``,
            ``guidance_scale``, ``sample_steps`` (of ``generator_only``),
            ``zero_threshold`` (applied inside the optimisation, see
            :func:`as_log_normalised`) and ``seeding`` (:data:`SEEDINGS`: the
            real cells the optimised methods start from). Its count settings are read by
            :func:`scdd.distill.inputs.distill_synthetic`, which picks
            ``count_fraction`` and ``count_depth``.
        inputs: training cells, their cached embeddings, frozen models.
        count_fraction: this fraction of each class's cells of
            :data:`SCDD_METHODS` methods is redrawn as counts as sparse as the
            real class, inside the optimisation (:func:`sample_counts_like_real`,
            rows chosen by :func:`drawn_rows`); the others stay smooth. Above 0
            it needs ``inputs.target_sum`` and ``inputs.zero_fractions``.
        count_depth: the counts' library size in multiples of the one that
            makes them as sparse as the real class.
        seed: seeds, head initialisations and noise.
        device: where optimisation runs.
        progress: show progress bars.
    """
    method = params.method
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
    run = MethodRun(
        params,
        inputs,
        count_fraction=count_fraction,
        count_depth=count_depth,
        seed=seed,
        device=torch.device(device),
        progress=progress,
    )
    return METHOD_REGISTRY[method](run)
