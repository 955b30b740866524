"""Reading the foundation's validation sample: every block vs a few.

``train_foundation`` holds out ``val_max_cells`` seeded cells and reads them
once. Drawn from every row (before), they touch every row block of a lazy
split; :func:`validation_rows` draws them from 16 random blocks holding at
least twice as many cells. Both reads of the same split, side by side in
this process, with the blocks each touched, the seconds and the peak RSS.

    python scripts/benchmark_validation_sample.py \\
        --split /tmp/scale/human_kidney_1000000/data/05_model_input/train.h5ad \\
        [--cells 10000] [--threads 1]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

from scdd.cellstore import take_matrix_rows
from scdd.datasets import H5ADDataset
from scdd.models.foundation_training import validation_rows
from scdd.threads import apply_threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    apply_threads(args.threads)
    x = H5ADDataset(filepath=str(args.split), lazy=True).load().X
    n, bounds = x.shape[0], np.cumsum((0, *x.chunks[0]))
    draws = {
        "every block (before)": np.sort(
            np.random.default_rng(0).choice(n, args.cells, replace=False)
        ),
        "16 blocks (validation_rows)": validation_rows(
            x.chunks[0], args.cells, np.random.default_rng(0)
        ),
    }
    sys.stdout.write(f"{args.split}: {n} cells, {len(bounds) - 1} row blocks\n")
    for name, rows in draws.items():
        blocks = len(np.unique(np.searchsorted(bounds, rows, side="right")))
        start = time.perf_counter()
        take_matrix_rows(x, rows)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        sys.stdout.write(
            f"{name}: {blocks} blocks read, {seconds:.1f} s, peak RSS so far "
            f"{peak:.2f} GB\n"
        )


if __name__ == "__main__":
    main()
