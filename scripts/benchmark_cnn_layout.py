"""The DeepInsight CNN's reference over layout seeds: its t-SNE now against
scikit-learn's Barnes-Hut t-SNE of the raw gene profiles (the layout before).

For each dataset the split is made by ``kedro run --pipelines preprocess``
in a project copy under ``--workdir``; the CNN is trained on the whole
training split with the reference settings and scored on the validation
split (``--split test`` for the check set). Printed per (dataset, layout,
seed): the layout's seconds, accuracy and balanced accuracy (mean of the
CNN's initialisations); then each layout's mean over the seeds.

    python scripts/benchmark_cnn_layout.py --workdir /tmp/layout \\
        [--datasets pbmc_10x human_kidney cbmc_citeseq paul15] \\
        [--seeds 0 1 2] [--split validation] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch
from benchmark_shared import DATASETS, SHARED, project_copy, run
from sklearn.manifold import TSNE

from scdd.evaluation import deepinsight_cnn
from scdd.evaluation.config import EvaluateParams
from scdd.threads import apply_threads

CURRENT = deepinsight_cnn._tsne


def sklearn_tsne(genes: np.ndarray, seed: int) -> np.ndarray:
    """The layout before: scikit-learn's Barnes-Hut, 1,000 steps, raw profiles."""
    return TSNE(
        n_components=2,
        perplexity=min(30.0, (genes.shape[0] - 1) / 3),
        init="pca",
        random_state=seed,
        n_jobs=torch.get_num_threads(),
    ).fit_transform(genes)


def timed(tsne: Callable, clock: list[float]) -> Callable:
    """``tsne`` that appends its seconds to ``clock``."""

    def run_timed(genes: np.ndarray, seed: int) -> np.ndarray:
        start = time.perf_counter()
        points = tsne(genes, seed)
        clock.append(time.perf_counter() - start)
        return points

    return run_timed


def splits(project: Path, source: Path, split: str, threads: int):
    """Training and scored split of ``source`` (log-normalised), int labels."""
    params = {"data": {"input": str(source), "label_key": "cell_type"}}
    run(project, ["preprocess"], {**params, "progress": False, "threads": threads})
    folder = project / "data" / "05_model_input"
    train = ad.read_h5ad(folder / "train.h5ad")
    scored = ad.read_h5ad(folder / f"{split}.h5ad")[:, train.var_names]
    categories = sorted(train.obs["cell_type"].astype(str).unique())
    scored = scored[scored.obs["cell_type"].astype(str).isin(categories)]
    codes = {name: i for i, name in enumerate(categories)}

    def labels(a: ad.AnnData) -> np.ndarray:
        return a.obs["cell_type"].astype(str).map(codes).to_numpy()

    return train, labels(train), scored.copy(), labels(scored), len(categories)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--split", default="validation")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    apply_threads(args.threads)
    params = EvaluateParams().for_reference().deepinsight_cnn
    rows = []
    for name in args.datasets:
        project = project_copy(args.workdir / name)
        train, y_train, scored, y_scored, classes = splits(
            project, SHARED / f"{name}.h5ad", args.split, args.threads
        )
        for layout, tsne in (("now", CURRENT), ("scikit-learn", sklearn_tsne)):
            for seed in args.seeds:
                deepinsight_cnn._tsne = timed(tsne, clock := [])
                result = deepinsight_cnn.evaluate_deepinsight_cnn(
                    train.X, y_train, scored.X, y_scored,
                    num_classes=classes, params=params, seed=seed,
                )  # fmt: skip
                deepinsight_cnn._tsne = CURRENT
                row = {
                    "dataset": name,
                    "genes": train.n_vars,
                    "layout": layout,
                    "seed": seed,
                    "layout_s": round(clock[0], 1),
                    "accuracy": round(100 * result["accuracy_mean"], 1),
                    "balanced": round(100 * result["balanced_accuracy_mean"], 1),
                }
                print(row, flush=True)  # noqa: T201
                rows.append(row)
    table = pd.DataFrame(rows)
    means = table.groupby(["dataset", "layout"])[["accuracy", "balanced"]].mean()
    print(means.round(1))  # noqa: T201


if __name__ == "__main__":
    main()
