"""Time and peak memory of the foundation report's gene-level linear probe.

Reads a seeded stratified sample of ``--max-cells`` training and as many test
cells from a project's preprocessed splits (``data/05_model_input``), as
``foundation.report_foundation`` does, and fits and scores the probe on
their genes. Printed: seconds to read the rows, seconds to probe, the
accuracy, and the process's peak RSS before and after the probe (the read
sample is in memory for both).

    python scripts/benchmark_probe.py --project /tmp/scale/baron_pancreas_1000000 \\
        [--label-key cell_type] [--max-cells 20000] [--threads 2]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

from scdd.cellstore import take_rows
from scdd.datasets import H5ADDataset
from scdd.metrics.probe import linear_probe
from scdd.sampling import stratified_rows
from scdd.threads import apply_threads


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--label-key", default="cell_type")
    parser.add_argument("--max-cells", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    apply_threads(args.threads)
    splits = args.project / "data" / "05_model_input"
    start = time.perf_counter()
    samples = []
    for name in ("train", "test"):
        split = H5ADDataset(filepath=str(splits / f"{name}.h5ad"), lazy=True).load()
        labels = split.obs[args.label_key].astype(str).to_numpy()
        rows = stratified_rows(labels, args.max_cells, 0)
        samples.append((take_rows(split, rows).X, labels[rows]))
    read = time.perf_counter() - start
    before = _peak_mb()
    start = time.perf_counter()
    (train_x, train_y), (test_x, test_y) = samples
    scores = linear_probe(
        train_x, train_y, test_x, test_y, max_train_cells=args.max_cells
    )
    sys.stdout.write(
        f"{train_x.shape[0]:,} + {test_x.shape[0]:,} cells x {train_x.shape[1]:,} "
        f"genes: read {read:.1f} s, probe {time.perf_counter() - start:.1f} s, "
        f"accuracy {scores['accuracy']:.4f}; peak RSS {before:.0f} MB before the "
        f"probe, {_peak_mb():.0f} MB after ({args.threads} threads)\n"
    )


if __name__ == "__main__":
    main()
