"""Which ``count_depth`` ends closest to the real cells in F-space?

From SPC ``distill.sample_counts_from_spc`` up, scdd's cells are drawn as
counts at ``distill.count_depth`` times the library size that makes them as
sparse as their real class. This script optimises the default set once per
``--depths`` value, in full, and prints per (dataset, SPC, seed) each
depth's final F-space loss (lower: the drawn cells sit closer to the real
ones for F) and the seconds each run took: the evidence for the default
depth, and a way to check it on new data.

It reads the artefacts a ``benchmark_shared.py`` workdir holds per dataset
(the training split, its embeddings and real-cell statistics, the
foundation and the generator), so nothing is retrained.

    python scripts/benchmark_count_depth.py --workdir /tmp/bench/val \\
        [--datasets pbmc_10x ...] [--spcs 5 10] [--seeds 0 1 2] \\
        [--depths 1 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from scdd.datasets import FoundationModelDataset, H5ADDataset, TorchCheckpointDataset
from scdd.distill.config import DistillParams
from scdd.distill.inputs import final_loss, prepare_inputs
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


def _final_loss(params: DistillParams, inputs, depth: float, seed: int):
    """Final loss of one full run at ``depth``, and its seconds."""
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
    return final_loss(output), time.perf_counter() - start


def depth_losses(setting, name: str, spc: int, seeds: list[int], depths) -> None:
    """Per seed, each depth's final loss and seconds, and the lowest."""
    params = DistillParams(spc=spc)
    for seed in seeds:
        runs = {d: _final_loss(params, setting[0], d, seed) for d in depths}
        best = min(runs, key=lambda d: runs[d][0])
        shown = " | ".join(f"{loss:.4f}" for loss, _ in runs.values())
        seconds = ", ".join(f"{s:.0f}" for _, s in runs.values())
        _write(f"| {name} | {spc} | {seed} | {shown} | {best} | {seconds} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--label-key", default="cell_type")
    parser.add_argument("--spcs", nargs="+", type=int, default=[5, 10])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--depths", nargs="+", type=float, default=[1.0, 4.0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    apply_threads(args.threads)
    losses = " | ".join(f"loss at {d:g}" for d in args.depths)
    _write(f"| dataset | SPC | seed | {losses} | lowest | s per run |")
    _write("|---|---:|---:|" + "---:|" * len(args.depths) + "---|---|")
    for name in args.datasets:
        setting = _inputs(args.workdir / name, args.label_key)
        for spc in args.spcs:
            depth_losses(setting, name, spc, args.seeds, args.depths)


if __name__ == "__main__":
    main()
