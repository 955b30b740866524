"""Wall time of one training step of the foundation autoencoder, by dropout
and cells per step.

Times the body of F's training step (forward, reconstruction loss, backward,
fused AdamW) on one batch of random non-negative cells, with F's dropout
drawn by torch's ``nn.Dropout`` (``bernoulli_``) and by
:class:`scdd.models.dropout.UniformDropout` (random bits), alternated round
by round in this process so drift in machine load hits both alike. Weights
do not change the cost, so untrained autoencoders of the default
architecture are used. ``--profile`` prints torch's per-operator table of
the current code's step.

    python scripts/benchmark_foundation_step.py [--genes 2000 12474]
        [--batch-sizes 256 512] [--precision 32-true|bf16-mixed] [--steps 60]
        [--rounds 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from itertools import product

import torch
from torch.profiler import ProfilerActivity, profile

from scdd.models.foundation import build_autoencoder
from scdd.models.foundation_training import TrainConfig, _loss, resolved_precision
from scdd.threads import apply_threads


def _with_torch_dropout(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` with its dropout layers back to torch's own."""
    for layer in module.modules():
        if isinstance(layer, torch.nn.Dropout):
            layer.__class__ = torch.nn.Dropout
    return module


def _step_fn(n_genes: int, dropout: str, precision: str, batch_size: int):
    """One training step of a fresh autoencoder on one fixed batch."""
    torch.manual_seed(0)
    encoder, decoder = build_autoencoder(n_genes)
    if dropout == "torch":
        _with_torch_dropout(encoder), _with_torch_dropout(decoder)
    params = [*encoder.parameters(), *decoder.parameters()]
    optimiser = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4, fused=True)
    batch = torch.relu(torch.randn(batch_size, n_genes))
    labels = torch.empty(0, dtype=torch.long)
    bf16 = precision == "bf16-mixed"

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = _loss(encoder, decoder, batch, labels, TrainConfig())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    return step


def _write(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _ms_per_step(step, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genes", type=int, nargs="+", default=[2000, 12474])
    parser.add_argument(
        "--precision",
        choices=["32-true", "bf16-mixed"],
        default=resolved_precision("auto", "cpu"),
        help="default: what F's `precision: auto` takes on this CPU (bf16 is "
        "emulated, and ~40x slower, without AVX-512 BF16 or AMX)",
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    apply_threads(args.threads)
    _write(
        "| genes | cells per step | torch dropout (ms/step) | random bits (ms/step) "
        "| speed-up | random bits (cells/s) |"
    )
    _write("|---:|---:|---:|---:|---:|---:|")
    for n_genes, size in product(args.genes, args.batch_sizes):
        steps = {
            d: _step_fn(n_genes, d, args.precision, size) for d in ("torch", "bits")
        }
        times: dict[str, list[float]] = {d: [] for d in steps}
        for step in steps.values():  # warm-up
            _ms_per_step(step, 5)
        for _ in range(args.rounds):
            for d, step in steps.items():
                times[d].append(_ms_per_step(step, args.steps))
        old, new = (statistics.median(times[d]) for d in ("torch", "bits"))
        _write(
            f"| {n_genes:,} | {size} | {old:.1f} | {new:.1f} | {old / new:.2f}x | "
            f"{size / new * 1e3:,.0f} |"
        )
        if args.profile:
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                _ms_per_step(steps["bits"], 20)
            _write(
                prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
            )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    _write(f"\n{args.precision}, {args.threads} thread(s), peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
