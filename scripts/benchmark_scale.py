"""``distill`` then ``evaluate`` on atlas-sized inputs built from real data.

An input of N cells is drawn from a shared dataset: cells resampled with
replacement, each count binomially thinned (p = ``--keep``) so that no two
cells are copies and library sizes stay realistic. Each size gets a fresh
project; ``kedro run --pipelines distill`` and then ``--pipelines evaluate``
run as separate processes. Printed per (size, pipeline): wall time, peak RSS
of the run's largest process and of each of its processes (Dask workers
too, with ``--params dask.cluster=local``), and the slowest nodes (from the
per-node log lines). ``--format zarr`` writes the atlas as a zarr store.

    python scripts/benchmark_scale.py --workdir /tmp/scale \\
        [--dataset human_kidney] [--sizes 10000 100000] [--threads N]
        [--pipelines distill] [--format zarr] [--params dask.cluster=local]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import anndata as ad
import dask
import dask.array as da
import numpy as np
from scipy import sparse

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_busy import fresh_project, timed_run  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
NODE_LINE = re.compile(
    r"Node (\S+) finished in ([\d.]+) s \(peak RSS so far (\d+) MB\)"
)


def atlas(
    source: Path, n_cells: int, keep: float, seed: int = 0, chunk_rows: int = 20_000
) -> ad.AnnData:
    """``n_cells`` resampled, binomially thinned cells of ``source`` (counts),
    as a lazy AnnData: each block of ``chunk_rows`` cells is drawn when it is
    written, so a million-cell file never sits in memory."""
    real = ad.read_h5ad(source)
    x = sparse.csr_matrix(real.X, dtype=np.float32)
    rows = np.random.default_rng(seed).integers(0, real.n_obs, n_cells)

    def draw(start: int) -> sparse.csr_matrix:
        block = x[rows[start : start + chunk_rows]]
        rng = np.random.default_rng([seed, start])
        block.data = rng.binomial(block.data.astype(np.int64), keep).astype(np.float32)
        block.eliminate_zeros()
        return block

    meta = sparse.csr_matrix((0, 0), dtype=np.float32)
    blocks = [
        da.from_delayed(
            dask.delayed(draw)(start),
            shape=(min(chunk_rows, n_cells - start), x.shape[1]),
            dtype=np.float32,
            meta=meta,
        )
        for start in range(0, n_cells, chunk_rows)
    ]
    obs = real.obs.iloc[rows].reset_index(drop=True)
    obs.index = [f"cell_{i}" for i in range(n_cells)]
    return ad.AnnData(X=da.concatenate(blocks), obs=obs, var=real.var.copy())


def slowest(log: str, k: int = 3) -> str:
    nodes = sorted(
        ((float(t), name) for name, t, _ in NODE_LINE.findall(log)), reverse=True
    )
    return ", ".join(f"{name} {t:.0f} s" for t, name in nodes[:k])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--dataset", default="human_kidney")
    parser.add_argument("--label-key", default="cell_type")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--keep", type=float, default=0.8)
    parser.add_argument("--threads", type=int)
    parser.add_argument(
        "--pipelines", nargs="+", default=["distill", "evaluate"], help="run in order"
    )
    parser.add_argument("--format", choices=("h5ad", "zarr"), default="h5ad")
    parser.add_argument(
        "--params", help="more `kedro run --params` (dotted, comma-separated)"
    )
    args = parser.parse_args()
    source = SHARED / f"{args.dataset}.h5ad"
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.sizes:
        where = args.workdir / f"{args.dataset}_{n}"
        data = args.workdir / f"{args.dataset}_{n}.{args.format}"
        if not data.exists():
            cells = atlas(source, n, args.keep)
            if args.format == "zarr":
                cells.write_zarr(data)
            else:
                cells.write_h5ad(data, compression="gzip")
        project = fresh_project(where)
        params = f"data.input={data},data.label_key={args.label_key},progress=false"
        if args.threads:
            params += f",threads={args.threads}"
        if args.params:
            params += f",{args.params}"
        for pipeline in args.pipelines:
            seconds, peak, log, each = timed_run(project, pipeline, params)
            rows.append((n, pipeline, seconds, peak, each, slowest(log)))
            print(f"{n} cells, {pipeline}: {seconds:.0f} s, {peak:.0f} MB", flush=True)  # noqa: T201
    lines = [
        f"{args.dataset} resampled (binomial thinning p={args.keep}); "
        f"{len(os.sched_getaffinity(0))} cores, 1-min load {os.getloadavg()[0]:.2f}",
        "",
        "| cells | pipeline | wall time (s) | peak RSS (MB) | per process | "
        "slowest nodes |",
        "| --- | --- | --- | --- | --- | --- |",
        *(
            f"| {n} | {p} | {s:.0f} | {m:.0f} | {e} | {w} |"
            for n, p, s, m, e, w in rows
        ),
    ]
    print("\n".join(lines))  # noqa: T201


if __name__ == "__main__":
    main()
