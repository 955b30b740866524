"""The cell-parallel passes on 1 and 2 Dask workers, side by side.

A store of ``--cells`` cells (default 1M) is drawn once from a shared dataset
as ``benchmark_scale.py`` does (cells resampled, counts binomially thinned,
log-normalised) and written as a row-block ``.h5ad``. Each configuration then
runs in a fresh process over that file: the embedding pass (SCimilarity's
encoder at its default size, 1024-1024-128; timing does not depend on the
weights) and the real-cell statistics pass (class sums, nonzeros and library
sizes, the distillation's cached statistics). Configurations: Dask's local
scheduler in this process with torch on 1 and 2 threads (what a plain
``kedro run`` does), and a ``LocalCluster`` of 1 and 2 worker processes with
one thread each (``--params dask.cluster=local,dask.n_workers=N``).

Printed per configuration: seconds and cells/s of each pass, each over the
1-worker cluster's, the driver's peak RSS and the largest worker's.

    python scripts/benchmark_dask.py --workdir /tmp/dask_bench [--cells 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_scale import SHARED, atlas  # noqa: E402

#: name -> (Dask workers or 0 for this process, threads per worker / torch).
CONFIGS = {
    "in-process, 1 thread": (0, 1),
    "in-process, 2 threads": (0, 2),
    "1 worker": (1, 1),
    "2 workers": (2, 1),
}


def build_store(source: Path, path: Path, n_cells: int, keep: float) -> None:
    """``n_cells`` thinned cells of ``source``, log-normalised, as ``path``."""
    from scdd.cellstore import CHUNK_ROWS
    from scdd.preprocessing import log_normalise
    from scdd.preprocessing_config import PreprocessParams

    pre = PreprocessParams()
    adata = log_normalise(
        atlas(source, n_cells, keep, chunk_rows=CHUNK_ROWS),
        target_sum=pre.target_sum,
        keep_counts=pre.keep_counts,
    )
    tmp = path.with_suffix(".tmp.h5ad")
    adata.write_h5ad(tmp, compression="lzf")
    tmp.rename(path)


def run_one(store: Path, label_key: str, workers: int, threads: int) -> dict:
    """Both passes under one configuration; seconds and peak memory."""
    import torch

    from scdd.cellstore import read_lazy
    from scdd.dask_engine import DaskParams, dask_client
    from scdd.distill.real_cells import summarise_real_cells
    from scdd.models.foundation import build_autoencoder, embed_cells
    from scdd.threads import apply_threads

    apply_threads(threads)
    adata = read_lazy(store)
    labels = adata.obs[label_key].astype("category")
    torch.manual_seed(0)
    encoder, _ = build_autoencoder(adata.n_vars)
    encoder.eval()
    cluster = {"cluster": "local", "n_workers": workers} if workers else {}
    with dask_client(DaskParams(**cluster, threads_per_worker=threads)) as client:
        start = time.perf_counter()
        z = embed_cells(encoder, adata.X, progress=False)
        embed_s = time.perf_counter() - start
        start = time.perf_counter()
        summarise_real_cells(
            adata.X,
            labels.cat.codes.to_numpy(),
            list(labels.cat.categories),
            list(adata.var_names),
        )
        stats_s = time.perf_counter() - start
        worker_mb = (
            max(
                client.run(
                    lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                ).values()
            )
            / 1024
            if client
            else 0.0
        )
    return {
        "cells": int(z.shape[0]),
        "embed_s": embed_s,
        "stats_s": stats_s,
        "driver_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_mb": worker_mb,
        "checksum": float(np.abs(z).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--dataset", default="human_kidney")
    parser.add_argument("--label-key", default="cell_type")
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--keep", type=float, default=0.8)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one config
    args = parser.parse_args()
    store = args.workdir / f"{args.dataset}_{args.cells}.h5ad"
    if args.one:
        print(json.dumps(run_one(store, args.label_key, *CONFIGS[args.one])))  # noqa: T201
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    if not store.exists():
        start = time.perf_counter()
        build_store(SHARED / f"{args.dataset}.h5ad", store, args.cells, args.keep)
        print(f"store written in {time.perf_counter() - start:.0f} s", flush=True)  # noqa: T201
    load = os.getloadavg()[0]
    results = {}
    for name in args.configs:
        out = subprocess.run(
            [sys.executable, __file__, "--workdir", str(args.workdir), "--one", name,
             "--dataset", args.dataset, "--cells", str(args.cells),
             "--label-key", args.label_key],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if out.returncode:
            sys.exit(f"{name} failed:\n{out.stderr[-3000:]}")
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name}: {results[name]}", flush=True)  # noqa: T201
    base = results.get("1 worker")
    lines = [
        f"{args.cells:,} cells x 2000 genes ({args.dataset} resampled), "
        f"{len(os.sched_getaffinity(0))} cores, 1-min load {load:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end",
        "",
        "| configuration | embedding (s) | cells/s | statistics (s) | "
        "speed-up over 1 worker (embed / stats) | driver peak RSS (MB) | "
        "largest worker peak RSS (MB) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        ratio = "-"
        if base:
            ratio = (
                f"{base['embed_s'] / r['embed_s']:.2f} / "
                f"{base['stats_s'] / r['stats_s']:.2f}"
            )
        lines.append(
            f"| {name} | {r['embed_s']:.1f} | {r['cells'] / r['embed_s']:,.0f} | "
            f"{r['stats_s']:.1f} | {ratio} | {r['driver_mb']:.0f} | "
            f"{r['worker_mb']:.0f} |"
        )
    sums = [r["checksum"] for r in results.values()]
    spread = (max(sums) - min(sums)) / max(min(sums), 1e-12)
    lines.append(f"\nsum |z| over configurations agrees to {spread:.1e} (relative)")
    print("\n".join(lines))  # noqa: T201


if __name__ == "__main__":
    main()
