"""The ``benchmark`` pipeline on the labelled datasets in ``../shared/data``.

For each dataset a throw-away copy of the project (current ``conf/``) is made
under ``--workdir/<dataset>``, then three Kedro runs happen there, exactly as
a user would type them with ``--params data.input=...``:

1. ``distill`` and ``evaluate`` (only missing outputs: trained models and the
   full-split reference are reused by a second call);
2. ``benchmark`` with the methods, SPCs, draws and models given here.

Each dataset's ``benchmark.md`` is printed and kept as
``<workdir>/<dataset>/<name>.md`` (and ``.csv``); all tables are joined into
``<workdir>/<name>.csv`` (a ``dataset`` column added) and ``<name>.md``: per
SPC, (model, dataset) × methods, mean accuracy (%) over the draws, ± the
std over draws; then scdd minus the best coreset control per (model, dataset,
SPC), and the privacy figures per (dataset, method, SPC).

    python scripts/benchmark_shared.py --workdir /tmp/bench_shared \\
        [--datasets pbmc_10x human_kidney] [--spcs 1 10] [--draws 3] \\
        [--models f_head celltypist ...] [--stage prepare|all] [--threads 1] \\
        [--name NAME] [--params '{"distill": {"zero_threshold": 0.0}}'] \\
        [--split validation] [--per-class 50]

``--per-class N`` benchmarks a small-data proxy of each dataset instead: N
seeded random cells of each class with at least N (the others dropped),
written once to ``<workdir>/<dataset>_per<N>.h5ad`` and named so in the
tables; a small training set is where a synthetic set can memorise cells.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from scdd.benchmark.table import privacy_cell
from scdd.distill.names import CORESET_METHODS

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
#: Tuning datasets (their validation splits); baron_pancreas is the check,
#: never tuned on (``--datasets baron_pancreas``).
DATASETS = ["pbmc_10x", "human_kidney", "cbmc_citeseq", "paul15"]
CORESETS = list(CORESET_METHODS)
METHODS = ["random_real", *CORESETS, "dm", "featdistill", "scdd"]


def project_copy(where: Path) -> Path:
    """A minimal copy of the project (current conf, data kept between calls)."""
    where.mkdir(parents=True, exist_ok=True)
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(ROOT / name, where / name)
    shutil.rmtree(where / "conf", ignore_errors=True)
    shutil.copytree(
        ROOT / "conf", where / "conf", ignore=shutil.ignore_patterns("local")
    )
    (where / "conf" / "local").mkdir(exist_ok=True)
    (where / "src").mkdir(exist_ok=True)
    return where


def run(project: Path, pipelines: list[str], params: dict[str, Any], **kwargs) -> None:
    """One ``kedro run`` in ``project``."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    with KedroSession.create(project_path=project, runtime_params=params) as session:
        session.run(pipeline_names=pipelines, **kwargs)


def summary_markdown(table: pd.DataFrame) -> str:
    """Per (label, SPC): rows model × dataset, columns methods, accuracy (%):
    "mean ± std over draws", or the mean alone for one draw and ``full``."""
    full = table[table["method"] == "full"]
    runs = table[table["method"] != "full"]
    lines = []
    for (label, spc), rows in runs.groupby(["label_key", "spc"], sort=False):
        methods = ["full", *dict.fromkeys(rows["method"])]
        lines += [
            f"#### Label `{label}`, SPC {int(spc)}: accuracy (%)",
            "",
            "| model | dataset | " + " | ".join(methods) + " |",
            "|---|---|" + "---:|" * len(methods),
        ]
        pairs = zip(rows["model"], rows["dataset"], strict=True)
        for model, dataset in dict.fromkeys(pairs):
            cells = []
            for method in methods:
                source = full if method == "full" else rows
                hit = source[
                    (source["dataset"] == dataset)
                    & (source["method"] == method)
                    & (source["model"] == model)
                    & (source["label_key"] == label)
                ]
                if hit.empty:
                    cells.append("–")
                    continue
                cell = f"{100 * hit['accuracy_mean'].iloc[0]:.1f}"
                if hit["n_draws"].iloc[0] > 1 and method != "full":
                    cell += f" ± {100 * hit['accuracy_std'].iloc[0]:.1f}"
                cells.append(cell)
            lines.append(f"| {model} | {dataset} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def versus_coresets(table: pd.DataFrame, method: str = "scdd") -> str:
    """``method``'s accuracy minus the best coreset control's, in points, per
    (model, dataset) × SPC (the best coreset picked per cell)."""
    runs = table[table["method"] != "full"]
    if method not in set(runs["method"]) or not set(CORESETS) & set(runs["method"]):
        return ""
    lines = [
        f"#### {method} minus the best coreset control (points of accuracy)",
        "",
    ]
    spcs = sorted(int(s) for s in runs["spc"].dropna().unique())
    lines += [
        "| model | dataset | " + " | ".join(f"SPC {k}" for k in spcs) + " |",
        "|---|---|" + "---:|" * len(spcs),
    ]
    pairs = dict.fromkeys(zip(runs["model"], runs["dataset"], strict=True))
    for model, dataset in pairs:
        mine = runs[(runs["model"] == model) & (runs["dataset"] == dataset)]
        cells = []
        for k in spcs:
            at = mine[mine["spc"] == k].set_index("method")["accuracy_mean"]
            controls = at.reindex(CORESETS).dropna()
            if method not in at or controls.empty:
                cells.append("–")
                continue
            best = controls.idxmax()
            cells.append(f"{100 * (at[method] - controls[best]):+.1f} ({best})")
        lines.append(f"| {model} | {dataset} | " + " | ".join(cells) + " |")
    return "\n".join([*lines, ""])


def privacy_markdown(table: pd.DataFrame) -> str:
    """Per (dataset, method) × SPC: the privacy figures of
    :func:`scdd.benchmark.table.privacy_cell`."""
    if "ratio_gene_mean" not in table:
        return ""
    runs = table[table["method"] != "full"]
    runs = runs[runs["model"] == runs["model"].iloc[0]]
    spcs = sorted(int(s) for s in runs["spc"].dropna().unique())
    lines = [
        "#### Privacy: nearest-record ratio gene / F · attack TPR at 1% FPR "
        "gene / F · copies",
        "",
        "| dataset | method | " + " | ".join(f"SPC {k}" for k in spcs) + " |",
        "|---|---|" + "---:|" * len(spcs),
    ]
    for dataset, method in dict.fromkeys(
        zip(runs["dataset"], runs["method"], strict=True)
    ):
        mine = runs[(runs["dataset"] == dataset) & (runs["method"] == method)]
        cells = []
        for k in spcs:
            hit = mine[mine["spc"] == k]
            if hit.empty:
                cells.append("–")
                continue
            cells.append(privacy_cell(hit.iloc[0]))
        lines.append(f"| {dataset} | {method} | " + " | ".join(cells) + " |")
    return "\n".join([*lines, ""])


def per_class_proxy(source: Path, n: int, workdir: Path, label_key: str) -> Path:
    """``n`` seeded random cells of each class of ``source`` with at least
    ``n`` (the others dropped), written once under ``workdir``."""
    target = workdir / f"{source.stem}_per{n}.h5ad"
    if target.exists():
        return target
    adata = ad.read_h5ad(source)
    rng = np.random.default_rng(0)
    groups = adata.obs.groupby(label_key, observed=True).indices.values()
    keep = [rng.choice(rows, n, replace=False) for rows in groups if len(rows) >= n]
    proxy = adata[np.sort(np.concatenate(keep))].copy()
    proxy.obs[label_key] = proxy.obs[label_key].cat.remove_unused_categories()
    workdir.mkdir(parents=True, exist_ok=True)
    proxy.write_h5ad(target, compression="gzip")
    return target


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def parse_args() -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--label-key", default="cell_type")
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--spcs", nargs="+", type=int, default=[1, 10])
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument(
        "--models", nargs="+", help="default: benchmark.models (the F-head)"
    )
    parser.add_argument(
        "--stage",
        choices=["prepare", "all", "summary"],
        default="all",
        help="prepare: distill + evaluate only; summary: join the tables "
        "already written under this --name",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads of every run (the `threads` parameter; default: the "
        "cores not busy when each run starts)",
    )
    parser.add_argument(
        "--split",
        choices=["test", "validation"],
        default="test",
        help="the held-out cells scored (evaluate.split): validation to tune",
    )
    parser.add_argument(
        "--per-class",
        type=int,
        help="N cells of each class (seeded; smaller classes dropped): a "
        "small-data proxy of each dataset",
    )
    parser.add_argument("--name", default="benchmark_shared", help="output name")
    parser.add_argument(
        "--params",
        type=json.loads,
        default={},
        help="JSON parameter overrides for the benchmark run (nested dicts)",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    tables = []
    for shared_name in args.datasets:
        source = SHARED / f"{shared_name}.h5ad"
        suffix = f"_per{args.per_class}" if args.per_class else ""
        dataset = shared_name + suffix
        kept = args.workdir / dataset / f"{args.name}.csv"
        if args.stage == "summary":
            if kept.exists():
                tables.append(pd.read_csv(kept))
            continue
        if not source.exists():
            sys.exit(f"{source} does not exist; see ../shared/data/README.md")
        if args.per_class:
            source = per_class_proxy(
                source, args.per_class, args.workdir, args.label_key
            )
        project = project_copy(args.workdir / dataset)
        params: dict[str, Any] = {
            "data": {"input": str(source), "label_key": args.label_key},
            "progress": False,
            "threads": args.threads,
        }
        start = time.perf_counter()
        params = {**args.params, **params}
        params["evaluate"] = {**params.get("evaluate", {}), "split": args.split}
        # Only missing or stale outputs: artefacts made with other parameters
        # (an earlier --params) are rebuilt, never mixed into this benchmark.
        run(project, ["distill", "evaluate"], params, only_missing_outputs=True)
        prepared = time.perf_counter() - start
        if args.stage == "prepare":
            _say(f"{dataset}: prepared in {prepared:.0f} s")
            continue
        bench = {"methods": args.methods, "spcs": args.spcs, "draws": args.draws}
        if args.models:
            bench["models"] = args.models
        start = time.perf_counter()
        run(
            project,
            ["benchmark"],
            {**params, "benchmark": bench},
        )
        seconds = time.perf_counter() - start
        reporting = project / "data" / "08_reporting"
        _say(f"## {dataset} (prepare {prepared:.0f} s, benchmark {seconds:.0f} s)\n")
        markdown = (reporting / "benchmark.md").read_text()
        _say(markdown)
        (project / f"{args.name}.md").write_text(markdown)
        table = pd.read_csv(reporting / "benchmark.csv").assign(dataset=dataset)
        table.to_csv(kept, index=False)
        tables.append(table)
    if tables:
        table = pd.concat(tables, ignore_index=True)
        table.to_csv(args.workdir / f"{args.name}.csv", index=False)
        summary = "\n".join(
            [summary_markdown(table), versus_coresets(table), privacy_markdown(table)]
        )
        (args.workdir / f"{args.name}.md").write_text(summary)
        _say(summary)
        _say(f"Written to {args.workdir}/{args.name}.{{csv,md}}")


if __name__ == "__main__":
    main()
