"""Seconds, peak memory and final loss of one distilled set, per precision.

Times ``run_method`` (the whole set: seeds, optimisation, the written cells)
for each ``--precisions`` value of ``distill.optim.precision``, round-robin
over ``--seeds`` so that drift in machine load hits every precision alike,
on the artefacts of ``benchmark_shared.py`` workdirs (nothing is retrained).
Peak RSS is the process's, printed after each run (it only grows: the
first run of each size shows its own cost).

``--widen G`` first builds the wide proxy this project measures the 20k-gene
goal on: ``baron_pancreas`` with genes added up to G (copies of randomly
chosen genes, their cells shuffled within each class of ``--label-key``),
prepared under ``--workdir/baron_pancreas_G`` by a ``distill`` run.

    python scripts/benchmark_distill_set.py --workdir /tmp/bench/val \\
        [--datasets baron_pancreas] [--label-key cluster] [--spc 10] \\
        [--seeds 0 1] [--precisions 32-true bf16-true] [--threads 2] \\
        [--widen 20474]
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_count_depth import _final_loss, _inputs, _write  # noqa: E402
from benchmark_shared import SHARED, project_copy, run  # noqa: E402

from scdd.distill.config import DistillParams  # noqa: E402
from scdd.threads import apply_threads  # noqa: E402


def widened(genes: int, workdir: Path, label_key: str) -> str:
    """``baron_pancreas`` widened to ``genes`` genes, prepared by ``distill``
    under ``workdir``; its dataset name there."""
    name = f"baron_pancreas_{genes}"
    if (workdir / name / "data" / "04_feature" / "real_cell_stats.pt").exists():
        return name
    source = ad.read_h5ad(SHARED / "baron_pancreas.h5ad")
    rng = np.random.default_rng(0)
    extra = rng.choice(source.n_vars, genes - source.n_vars, replace=True)
    order = np.arange(source.n_obs)
    for rows in source.obs.groupby(label_key, observed=True).indices.values():
        order[rows] = rng.permutation(rows)
    x = sp.csr_matrix(source.X)
    copies = [f"{source.var_names[g]}_copy{i}" for i, g in enumerate(extra)]
    wide = ad.AnnData(
        sp.hstack([x, x[order][:, extra]]).tocsr(),
        obs=source.obs,
        var=pd.DataFrame(index=[*source.var_names, *copies]),
    )
    wide.obs_names_make_unique()
    path = workdir / f"{name}.h5ad"
    workdir.mkdir(parents=True, exist_ok=True)
    wide.write_h5ad(path)
    project = project_copy(workdir / name)
    run(project, ["distill"], {"data": {"input": str(path), "label_key": label_key}})
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--datasets", nargs="*", default=[])
    parser.add_argument("--label-key", default="cell_type")
    parser.add_argument("--spc", type=int, default=10)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--precisions", nargs="+", default=["32-true", "bf16-true"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--widen", type=int, help="genes of a widened baron_pancreas")
    args = parser.parse_args()
    apply_threads(args.threads)
    datasets = list(args.datasets)
    if args.widen:
        datasets.append(widened(args.widen, args.workdir, args.label_key))
    _write("| dataset | genes | set size | precision | seed | s | peak RSS GB | loss |")
    _write("|---|---:|---:|---|---:|---:|---:|---:|")
    for name in datasets:
        inputs = _inputs(args.workdir / name, args.label_key)[0]
        for seed in args.seeds:
            for precision in args.precisions:
                params = DistillParams(spc=args.spc)
                optim = params.optim.model_copy(update={"precision": precision})
                params = params.model_copy(update={"optim": optim})
                loss, seconds = _final_loss(params, inputs, params.count_depth, seed)
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
                _write(
                    f"| {name} | {inputs.genes.shape[1]} | "
                    f"{args.spc * inputs.num_classes} | {precision} | {seed} | "
                    f"{seconds:.1f} | {peak:.2f} | {loss:.4f} |"
                )


if __name__ == "__main__":
    main()
