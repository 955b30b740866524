"""Wall time of one distillation step (Algorithm 1) against the real-set size.

Because F is frozen, the real side of the DM and DC losses only reads cached
embeddings (class means and per-class batches of a ``RealEmbeddingBank``), so
one outer step should cost the same for 1k or 100k real cells. This script
measures it: for each size it resamples rows of a real embedding matrix
(``data/04_feature/train_embeddings.h5ad`` when present, else random unit-norm
vectors with 10 classes), builds the bank once (a one-off O(N) cost, outside
the timed region), and times the exact body of ``distill``'s loop: zero the
gradient, ``backward_through_generator`` (G = decoder(SCDG.denoise(Z, t_gen,
labels)), loss = DM + DC through the frozen encoder, chunked backward) and the
optimiser step. Sizes are timed round-robin, one step each per round, so drift
in machine load hits all sizes alike. Weights do not change the cost, so an
untrained foundation autoencoder of the default architecture and an untrained
SCDG are used.

    python scripts/benchmark_distill_step.py [--sizes 1000 10000 100000]
        [--spc 10] [--steps 5] [--warmup 2] [--threads N] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from scdd.distill.config import DistillOptimParams
from scdd.distill.losses import RealEmbeddingBank
from scdd.distill.optimise import (
    GeneratorFn,
    MatchingLoss,
    backward_through_generator,
)
from scdd.models.device import make_generator
from scdd.models.foundation import FoundationArchitectureParams, build_autoencoder
from scdd.models.generator_config import GeneratorModelParams
from scdd.models.scdg import SCDGConfig, build_scdg

PROJECT = Path(__file__).resolve().parents[1]
EMBEDDINGS = PROJECT / "data" / "04_feature" / "train_embeddings.h5ad"
GENE_ORDER = PROJECT / "data" / "06_models" / "foundation" / "gene_order.tsv"
DEFAULT_GENES = 2000
LATENT_DIM = 128
T_GEN = 50


@dataclass
class _Run:
    """Per-size state of one distillation run: its bank, codes and optimiser."""

    n_real: int
    bank: RealEmbeddingBank
    bank_seconds: float
    codes: Tensor
    optimizer: torch.optim.Optimizer
    loss_fn: MatchingLoss
    generator: torch.Generator
    times: list[float]


def _source_embeddings() -> tuple[np.ndarray, np.ndarray, str]:
    """Real embeddings ``[N, 128]``, int labels ``[N]`` and a description.

    Labels are the codes of the first categorical ``obs`` column.
    """
    if EMBEDDINGS.is_file():
        import anndata as ad

        adata = ad.read_h5ad(EMBEDDINGS)
        column = next(
            c for c in adata.obs.columns if adata.obs[c].dtype.name == "category"
        )
        labels = adata.obs[column].cat.codes.to_numpy().astype(np.int64)
        x = np.asarray(adata.X, dtype=np.float32)
        return x, labels, f"{EMBEDDINGS.relative_to(PROJECT)} (labels: {column})"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10_000, LATENT_DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, rng.integers(0, 10, len(x)), "random unit-norm vectors, 10 classes"


def _n_genes() -> int:
    """The trained foundation model's gene count, else the default of 2000."""
    if GENE_ORDER.is_file():
        return sum(1 for g in GENE_ORDER.read_text().splitlines() if g)
    return DEFAULT_GENES


def _time_step(
    run: _Run, labels: Tensor, generator_fn: GeneratorFn, chunk_size: int
) -> float:
    """One outer step of Algorithm 1 (the body of ``distill``'s loop), in seconds."""
    device = run.codes.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    run.optimizer.zero_grad(set_to_none=True)
    backward_through_generator(
        run.codes,
        labels,
        generator_fn,
        lambda samples: run.loss_fn(samples, labels, run.generator)[0],
        chunk_size,
    )
    run.optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    """Parse arguments, time the steps round-robin and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--spc", type=int, default=10, help="synthetic cells per class")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per size")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per size")
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    x_all, y_all, source = _source_embeddings()
    num_classes = int(y_all.max()) + 1
    n_genes = _n_genes()
    torch.manual_seed(args.seed)
    encoder, decoder = build_autoencoder(
        n_genes,
        FoundationArchitectureParams(hidden_dim=[1024, 1024], latent_dim=LATENT_DIM),
    )
    scdg = build_scdg(
        SCDGConfig(
            model=GeneratorModelParams(),
            latent_dim=LATENT_DIM,
            n_classes=[num_classes],
        )
    )
    for module in (encoder, decoder, scdg):
        module.to(device).eval().requires_grad_(False)

    def generator_fn(codes: Tensor, labels: Tensor) -> Tensor:
        return decoder(scdg.denoise(codes, T_GEN, labels[:, None]))

    # DM + DC (Algorithm 1) at the step size this benchmark has always timed
    config = DistillOptimParams(
        lr=0.01, lambda_dc=1.0, lambda_part=0.0, chunk_size=args.chunk_size
    )
    labels = torch.arange(num_classes, device=device).repeat_interleave(args.spc)
    codes_init = torch.randn(
        len(labels),
        LATENT_DIM,
        generator=make_generator(args.seed),
        dtype=torch.float32,
    ).to(device)

    rng = np.random.default_rng(args.seed)
    runs = []
    for n_real in args.sizes:
        rows = rng.integers(0, len(x_all), n_real)
        emb = torch.from_numpy(x_all[rows]).to(device)
        lab = torch.from_numpy(y_all[rows]).to(device)
        start = time.perf_counter()
        bank = RealEmbeddingBank(emb, lab, num_classes)
        bank_seconds = time.perf_counter() - start
        codes = codes_init.clone().requires_grad_()
        runs.append(
            _Run(
                n_real=n_real,
                bank=bank,
                bank_seconds=bank_seconds,
                codes=codes,
                optimizer=torch.optim.Adam([codes], lr=config.lr),
                loss_fn=MatchingLoss(encoder, bank, config),
                generator=make_generator(args.seed, device),
                times=[],
            )
        )

    for _ in range(args.warmup):
        for run in runs:
            _time_step(run, labels, generator_fn, args.chunk_size)
    for _ in range(args.steps):
        for run in runs:
            run.times.append(_time_step(run, labels, generator_fn, args.chunk_size))

    base = statistics.mean(runs[0].times)
    out = [
        f"real embeddings: {source}; device {device}; torch threads "
        f"{torch.get_num_threads()}",
        f"{num_classes} classes x SPC {args.spc} = {len(labels)} synthetic cells, "
        f"{n_genes} genes; DM x{config.lambda_dm} + DC x{config.lambda_dc} "
        f"(inner_steps {config.inner_steps}, real_batch_size "
        f"{config.real_batch_size}); chunk_size {args.chunk_size}; t_gen {T_GEN}",
        f"{args.warmup} warm-up + {args.steps} timed steps per size, round-robin. "
        "Bank construction is a one-off O(N) cost, not timed in s/step.",
        "",
        f"{'real cells':>10} {'s/step mean':>12} {'median':>8} {'min':>8} "
        f"{'ratio to ' + str(args.sizes[0]):>14} {'bank build s':>13}",
    ]
    for run in runs:
        mean = statistics.mean(run.times)
        out.append(
            f"{run.n_real:>10} {mean:>12.4f} {statistics.median(run.times):>8.4f} "
            f"{min(run.times):>8.4f} {mean / base:>14.2f} {run.bank_seconds:>13.4f}"
        )
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
