"""Embedding throughput and peak memory of the foundation encoder.

Resamples real cells (``../shared/data/human_kidney.h5ad`` when present, else
the bundled PBMC data) to each size, embeds them with ``embed_cells`` and
reports cells/s and memory. Each size runs in its own process, and the peak
RSS is reset just before embedding, so "growth" is what embedding itself
added. Weights do not change the cost, so an untrained encoder of the default
architecture is used.

    python scripts/benchmark_embedding.py [--sizes 10000 100000] [--chunk-size 4096]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "human_kidney.h5ad"


def _status_mb(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def _worker(n_cells: int, chunk_size: int) -> dict[str, float]:
    import numpy as np
    import torch

    from scdd.datasets.h5ad_dataset import H5ADDataset, load_bundled
    from scdd.models.foundation import build_autoencoder, embed_cells
    from scdd.preprocessing import detect_input_kind, inspect_matrix, log_normalise
    from scdd.preprocessing_config import PreprocessParams

    adata = (
        H5ADDataset(filepath=str(SHARED)).load()
        if SHARED.is_file()
        else load_bundled("pbmc68k_reduced")
    )
    pre = PreprocessParams()
    stats = inspect_matrix(adata, min_counts=pre.min_counts)
    if detect_input_kind(stats, max_log_value=pre.max_log_value) == "counts":
        adata = log_normalise(
            adata, target_sum=pre.target_sum, keep_counts=pre.keep_counts
        )
    rows = np.random.default_rng(0).integers(0, adata.n_obs, n_cells)
    x = adata.X[rows]
    del adata
    torch.manual_seed(0)
    encoder, _ = build_autoencoder(x.shape[1])
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to now
    base = _status_mb("VmRSS")
    start = time.perf_counter()
    z = embed_cells(encoder, x, chunk_size=chunk_size, progress=False)
    seconds = time.perf_counter() - start
    peak = _status_mb("VmHWM")
    return {
        "cells": n_cells,
        "genes": x.shape[1],
        "seconds": seconds,
        "cells_per_s": n_cells / seconds,
        "rss_before_mb": base,
        "peak_rss_mb": peak,
        "growth_mb": peak - base,
        "embedding_mb": z.nbytes / 2**20,
        "input_csr_mb": (x.data.nbytes + x.indices.nbytes + x.indptr.nbytes) / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--chunk-size", type=int, default=4096)
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.stdout.write(json.dumps(_worker(args.worker, args.chunk_size)) + "\n")
        return
    source = SHARED if SHARED.is_file() else "scanpy://pbmc68k_reduced"
    rows = []
    for n in args.sizes:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--worker",
                str(n),
                "--chunk-size",
                str(args.chunk_size),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    header = (
        f"source: {source}, chunk_size {args.chunk_size}, torch threads default\n"
        f"{'cells':>8} {'genes':>6} {'s':>7} {'cells/s':>9} {'peak RSS MB':>12} "
        f"{'growth MB':>10} {'embedding MB':>13} {'input CSR MB':>13}"
    )
    lines = [header] + [
        f"{r['cells']:>8} {r['genes']:>6} {r['seconds']:>7.2f} "
        f"{r['cells_per_s']:>9.0f} "
        f"{r['peak_rss_mb']:>12.0f} {r['growth_mb']:>10.0f} {r['embedding_mb']:>13.1f} "
        f"{r['input_csr_mb']:>13.1f}"
        for r in rows
    ]
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
