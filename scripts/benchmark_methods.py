"""scDD against the paper's baselines on real datasets: frozen F + linear head.

For each dataset the project's own pipelines (preprocess, foundation,
generator; parameters from conf/base) run in a throw-away copy of the
project, then every method builds its synthetic set with the same settings
as ``kedro run --pipeline distill``, and a linear head on F (10 random
initialisations, SGD) is trained on it and scored on the real test split.
Retention = accuracy / accuracy of the same head trained on the whole
training split.

    python scripts/benchmark_methods.py [--datasets pbmc_10x human_kidney ...]
        [--methods random_real dm scdd ...] [--spc 1] [--draws 1]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DEFAULT_DATASETS = ["pbmc_10x", "human_kidney", "cbmc_citeseq", "paul15"]
DEFAULT_METHODS = [
    "full",
    "random_real",
    "dm",
    "featdistill",
    "generator_only",
    "scdd_decoder",
    "scdd",
]


def _project_copy(tmp: Path) -> Path:
    """A minimal copy of the project (current conf, kept data layers)."""
    tmp.mkdir(parents=True, exist_ok=True)
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(ROOT / name, tmp / name)
    shutil.rmtree(tmp / "conf", ignore_errors=True)
    shutil.copytree(ROOT / "conf", tmp / "conf", ignore=shutil.ignore_patterns("local"))
    (tmp / "conf" / "local").mkdir(exist_ok=True)
    (tmp / "src").mkdir(exist_ok=True)
    return tmp


def _prepare(dataset: str, project: Path, overrides: dict) -> dict:
    """Run preprocess, foundation and generator; return the catalog artefacts."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    params = {
        "data": {"input": str(SHARED / f"{dataset}.h5ad"), "label_key": "cell_type"},
        "progress": False,
        **overrides,
    }
    bootstrap_project(project)
    with KedroSession.create(project_path=project, runtime_params=params) as session:
        session.run(
            pipeline_names=["preprocess", "foundation", "generator"],
            only_missing_outputs=True,
        )
        context = session.load_context()
        catalog = context.catalog
        names = [
            "train_adata",
            "test_adata",
            "train_embeddings",
            "test_embeddings",
            "foundation_model",
            "generator_checkpoint",
        ]
        out = {name: catalog.load(name) for name in names}
        out["params"] = context.params
    return out


def _evaluate(artefacts: dict, methods: list[str], spc: int, draws: int) -> list[dict]:
    from scdd.distill.inputs import distill_synthetic, prepare_inputs
    from scdd.evaluation.linear_head import evaluate_linear_head
    from scdd.models.device import resolve_device
    from scdd.models.foundation import embed_cells

    params = artefacts["params"]
    dparams = params["distill"]
    key = params["data"]["label_key"]
    train, test = artefacts["train_adata"], artefacts["test_adata"]
    inputs, categories, aligned = prepare_inputs(
        train,
        artefacts["train_embeddings"],
        artefacts["foundation_model"],
        artefacts["generator_checkpoint"],
        label_key=key,
        min_gene_overlap=params["foundation"]["min_gene_overlap"],
    )
    test_y = pd.Categorical(test.obs[key].astype(str), categories=categories).codes
    test_z = np.asarray(artefacts["test_embeddings"].X)
    rows = []
    for method in methods:
        for draw in range(1 if method == "full" else draws):
            start = time.perf_counter()
            syn, out = distill_synthetic(
                inputs,
                categories,
                aligned,
                method=method,
                params={**dparams, "spc": spc},
                label_key=key,
                seed=params["seed"] + draw,
                device=resolve_device(params["device"]),
                progress=False,
            )
            seconds = time.perf_counter() - start
            if method == "full":
                features = inputs.embeddings
            elif syn.n_vars == 0:
                features = syn.obsm["X_features"]
            else:
                features = embed_cells(inputs.foundation.encoder, syn.X, progress=False)
            scores = evaluate_linear_head(
                features,
                out.labels,
                test_z,
                test_y,
                num_classes=len(categories),
                batch_size=256 if method == "full" else None,
                seed=draw,
            )
            rows.append({"method": method, "draw": draw, "seconds": seconds, **scores})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=DEFAULT_DATASETS)
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS)
    parser.add_argument("--spc", type=int, default=1)
    parser.add_argument("--draws", type=int, default=1)
    parser.add_argument("--csv", type=Path, help="also write the per-run rows here")
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep each dataset's project copy here and reuse its trained models",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    results = []
    for dataset in args.datasets:
        with tempfile.TemporaryDirectory() as tmp:
            where = args.workdir / dataset if args.workdir else Path(tmp)
            start = time.perf_counter()
            artefacts = _prepare(dataset, _project_copy(where), {})
            prep = time.perf_counter() - start
            rows = _evaluate(artefacts, args.methods, args.spc, args.draws)
        for row in rows:
            row.update(dataset=dataset, prepare_s=prep)
        results += rows
        frame = pd.DataFrame(rows)
        full = frame.loc[frame.method == "full", "accuracy_mean"]
        ref = float(full.iloc[0]) if len(full) else float("nan")
        summary = frame.groupby("method", sort=False).agg(
            acc=("accuracy_mean", "mean"),
            head_std=("accuracy_std", "mean"),
            draw_std=("accuracy_mean", "std"),
            bal_acc=("balanced_accuracy_mean", "mean"),
            f1=("macro_f1_mean", "mean"),
            seconds=("seconds", "mean"),
        )
        summary["retention"] = summary["acc"] / ref
        sys.stdout.write(
            f"\n## {dataset} (SPC {args.spc}, {args.draws} draw(s), "
            f"pipelines {prep:.0f} s)\n"
            + (summary * [100, 100, 100, 100, 100, 1, 1]).round(2).to_string()
            + "\n"
        )
        sys.stdout.flush()
    if args.csv:
        pd.DataFrame(results).to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
