"""Does a short pilot pick the same ``count_depth`` as full optimisations?

From SPC ``distill.sample_counts_from_spc`` up, scdd is optimised once per
``distill.count_depth`` candidate and the set with the lowest final F-space
loss is kept. The loop has no learning-rate schedule and draws each step's
noise from a seeded stream, so the first ``k`` steps of a full run are a
``k``-step run: this script runs every candidate in full, once, records the
loss at every step, and reports per (dataset, SPC, seed) which depth the
full runs keep and which a pilot of ``k`` steps would have kept, with the
seconds each full candidate took. With ``--time``, it instead times one
whole synthetic set (:func:`distill_synthetic`) per (dataset, SPC, seed)
with every depth optimised in full and with the default pilot, side by
side, and says whether the two sets are the same.

It reads the artefacts a ``benchmark_shared.py`` workdir holds per dataset
(the training split, its embeddings and real-cell statistics, the
foundation and the generator), so nothing is retrained.

    python scripts/benchmark_count_depth.py --workdir /tmp/bench/val \\
        [--datasets pbmc_10x ...] [--spcs 5 10] [--seeds 0 1 2] \\
        [--pilots 1 10 30 60] [--threads 1] [--time]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from scdd.datasets import FoundationModelDataset, H5ADDataset, TorchCheckpointDataset
from scdd.distill.config import DistillParams
from scdd.distill.inputs import distill_synthetic, prepare_inputs
from scdd.distill.methods import run_method
from scdd.distill.real_cells import RealCellStats
from scdd.threads import apply_threads

DATASETS = ["pbmc_10x", "human_kidney", "cbmc_citeseq", "paul15"]


def _inputs(project: Path, label_key: str):
    """The distillation inputs, classes and statistics of one workdir's
    artefacts."""
    data = project / "data"
    generator = sorted((data / "06_models" / "generator.pt").glob("*/generator.pt"))
    train = H5ADDataset(filepath=str(data / "05_model_input/train.h5ad"), lazy=True)
    return prepare_inputs(
        train.load(),
        H5ADDataset(filepath=str(data / "04_feature/train_embeddings.h5ad")).load(),
        FoundationModelDataset(path=str(data / "06_models/foundation")).load(),
        TorchCheckpointDataset(filepath=str(generator[-1])).load(),
        label_key=label_key,
        stats=RealCellStats.from_checkpoint(
            TorchCheckpointDataset(
                filepath=str(data / "04_feature/real_cell_stats.pt")
            ).load()
        ),
    )


def _write(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _timed_set(setting, params: DistillParams, seed: int):
    """One synthetic set as the pipeline makes it, and its seconds."""
    start = time.perf_counter()
    synthetic, _ = distill_synthetic(
        *setting, params=params, label_key="label", seed=seed, progress=False
    )
    return synthetic, time.perf_counter() - start


def time_sets(setting, name: str, spc: int, seed: int) -> None:
    """Seconds of one set with every depth in full and with the pilot."""
    pilot = DistillParams(spc=spc)
    full = pilot.model_copy(update={"count_depth_pilot_steps": None})
    every, every_s = _timed_set(setting, full, seed)
    piloted, pilot_s = _timed_set(setting, pilot, seed)
    same = np.array_equal(every.X.toarray(), piloted.X.toarray())
    _write(
        f"| {name} | {spc} | {seed} | {len(setting[0].foundation.gene_order):,} "
        f"| {every_s:.0f} | {pilot_s:.0f} | {every_s / pilot_s:.2f}x | {same} |"
    )


def _losses(params: DistillParams, inputs, depth: float, seed: int):
    """Loss at every step of one full candidate run, and its seconds."""
    start = time.perf_counter()
    output = run_method(
        params,
        inputs,
        count_fraction=params.count_fraction,
        count_depth=depth,
        seed=seed,
        device=torch.device("cpu"),
        progress=False,
    )
    return [row["loss"] for row in output.history], time.perf_counter() - start


def pilot_choices(setting, name: str, spc: int, seeds: list[int], pilots):
    """Per seed, the depth full runs keep and the one each pilot would keep."""
    inputs = setting[0]
    base = DistillParams(spc=spc)
    params = base.model_copy(
        update={"optim": base.optim.model_copy(update={"log_every": 1})}
    )
    for seed in seeds:
        runs = {d: _losses(params, inputs, d, seed) for d in base.count_depth}
        final = {d: losses[-1] for d, (losses, _) in runs.items()}
        kept = min(final, key=final.get)
        picks = [min(runs, key=lambda d, k=k: runs[d][0][k - 1]) for k in pilots]
        shown = ", ".join(f"{d}: {v:.3f}" for d, v in final.items())
        seconds = ", ".join(f"{s:.0f}" for _, s in runs.values())
        marks = " | ".join(f"{p}" + ("" if p == kept else " ✗") for p in picks)
        _write(f"| {name} | {spc} | {seed} | {kept} ({shown}) | {marks} | {seconds} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--label-key", default="cell_type")
    parser.add_argument("--spcs", nargs="+", type=int, default=[5, 10])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--pilots", nargs="+", type=int, default=[1, 10, 30, 60])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--time", action="store_true")
    args = parser.parse_args()
    apply_threads(args.threads)
    if args.time:
        _write(
            "| dataset | SPC | seed | genes | all depths in full (s) | pilot (s) | "
            "speed-up | same set |"
        )
        _write("|---|---:|---:|---:|---:|---:|---:|---|")
    else:
        pilots = " | ".join(f"pilot {k}" for k in args.pilots)
        _write(f"| dataset | SPC | seed | full: kept (losses) | {pilots} | s per run |")
        _write("|---|---:|---:|---|" + "---|" * (len(args.pilots) + 1))
    for name in args.datasets:
        setting = _inputs(args.workdir / name, args.label_key)
        for spc in args.spcs:
            if args.time:
                for seed in args.seeds:
                    time_sets(setting, name, spc, seed)
            else:
                pilot_choices(setting, name, spc, args.seeds, args.pilots)


if __name__ == "__main__":
    main()
