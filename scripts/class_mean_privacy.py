"""What the class means of the training cells leak: the floor of any summary.

A synthetic set that matches class statistics carries them; on classes of a
few dozen cells in thousands of genes the means alone let the guard's
membership attacks tell training from held-out cells. For each dataset of a
benchmark workdir (``scripts/benchmark_shared.py``), this scores two sets
with the guard's gene-space figures and its model attack against the scored
split, on the samples the benchmark's draws use: the training class means,
and the validation class means (no training cell in them: what chance
gives).

    python scripts/class_mean_privacy.py --workdir W --split test \\
        --datasets pbmc_10x human_kidney cbmc_citeseq paul15 baron_pancreas
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anndata as ad
import numpy as np

from scdd.metrics.fidelity import summarise_classes
from scdd.metrics.privacy import (
    PrivacyParams,
    attack_p_value,
    auc_p_value,
    class_matched_samples,
    gene_samples,
    model_report,
    sample_pairs,
    space_report,
)


def _class_means(
    adata: ad.AnnData, key: str, classes: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class mean rows of the log-normalised genes (one chunked pass,
    :func:`summarise_classes`) and their class names; classes without cells
    left out."""
    labels = adata.obs[key].cat.set_categories(classes).cat.codes.to_numpy()
    means = summarise_classes(adata.X, labels, num_classes=len(classes)).means
    kept = ~np.isnan(means).any(axis=1)
    return means[kept], np.asarray(classes)[kept]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--datasets", nargs="+", required=True)
    parser.add_argument("--split", default="test", choices=["test", "validation"])
    parser.add_argument("--label-key", default="cell_type")
    parser.add_argument("--draws", type=int, default=3)
    args = parser.parse_args()
    params, out = PrivacyParams(), sys.stdout
    out.write(
        "| dataset | set | draw | n | attack TPR (p) | attack AUC (p) | ratio "
        "| model attack AUC (p) |\n"
    )
    out.write("| --- | --- | ---: | ---: | --- | --- | ---: | --- |\n")
    for name in args.datasets:
        splits = args.workdir / name / "data" / "05_model_input"
        train = ad.read_h5ad(splits / "train.h5ad")
        scored = ad.read_h5ad(splits / f"{args.split}.h5ad")
        other = "validation" if args.split == "test" else "test"
        unseen = ad.read_h5ad(splits / f"{other}.h5ad")
        classes = list(train.obs[args.label_key].cat.categories)
        sets = {
            "training class means": _class_means(train, args.label_key, classes),
            f"{other} class means": _class_means(unseen, args.label_key, classes),
        }
        labels = tuple(
            a.obs[args.label_key].astype(str).to_numpy() for a in (train, scored)
        )
        for draw in range(args.draws):
            matched = class_matched_samples(
                *labels, max_cells=params.max_cells, seed=draw
            )
            pairs = sample_pairs(
                train.n_obs,
                scored.n_obs,
                max_cells=params.max_cells,
                seed=draw,
                count=params.ratio_samples,
            )
            n = len(pairs[0][0])
            for label, (means, means_classes) in sets.items():
                model_auc = model_report(
                    (means, train.X, scored.X), (means_classes, *labels), matched
                )["attack_auc"]
                model_p = auc_p_value(model_auc, len(matched[0]))
                figures = space_report(
                    means - means.mean(1, keepdims=True),
                    gene_samples(train.X, scored.X, pairs),
                    near_copy_factor=params.near_copy_factor,
                    chunk_size=params.chunk_size,
                )
                tpr, auc = figures["attack_tpr_at_1fpr"], figures["attack_auc"]
                out.write(
                    f"| {name} | {label} | {draw} | {n} | {tpr:.3f} "
                    f"({attack_p_value(tpr, n):.0e}) | {auc:.3f} "
                    f"({auc_p_value(auc, n):.0e}) | "
                    f"{figures['nearest_record_ratio']:.2f} | {model_auc:.3f} "
                    f"({model_p:.0e}) |\n"
                )
                out.flush()


if __name__ == "__main__":
    main()
