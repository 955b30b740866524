"""Is the F-head reference fitted? Plain vs standardised head vs logistic regression.

Reads a project's cached embeddings (``train_embeddings`` and the held-out
split's) and trains on the training split: the linear head with the paper's
SGD settings on raw features (the former reference), the same on standardised
features (the reference now), and a standardised lbfgs logistic regression
(the foundation report's probe). Prints each one's held-out and training
accuracy and time. The reference is fitted when it is within about a point of
the logistic regression.

    python scripts/reference_fit.py --project /tmp/bench/pbmc_10x \\
        [--split validation] [--inits 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import anndata as ad
import numpy as np

from scdd.evaluation.config import FHeadParams
from scdd.evaluation.linear_head import evaluate_linear_head
from scdd.metrics.latent import fit_latent_classifier
from scdd.threads import apply_threads


def _split(project: Path, name: str) -> ad.AnnData:
    return ad.read_h5ad(project / "data" / "04_feature" / f"{name}_embeddings.h5ad")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--split", choices=["test", "validation"], default="test")
    parser.add_argument("--label-key", default="cell_type")
    parser.add_argument("--inits", type=int, default=2)
    args = parser.parse_args()
    apply_threads(1)
    train, held = _split(args.project, "train"), _split(args.project, args.split)
    categories = sorted(set(train.obs[args.label_key].astype(str)))

    def codes(adata: ad.AnnData) -> np.ndarray:
        return np.searchsorted(categories, adata.obs[args.label_key].astype(str))

    x, y, x_held, y_held = (
        np.asarray(train.X),
        codes(train),
        np.asarray(held.X),
        codes(held),
    )
    print(  # noqa: T201
        f"{args.project.name}: {len(y)} training cells, {len(y_held)} {args.split}"
    )
    start = time.perf_counter()
    probe = fit_latent_classifier(x, y)
    print(  # noqa: T201
        f"logistic regression: {100 * (probe.predict(x_held) == y_held).mean():.1f} % "
        f"(train {100 * (probe.predict(x) == y).mean():.1f} %), "
        f"{time.perf_counter() - start:.1f} s"
    )
    for standardise in (False, True):
        start = time.perf_counter()
        result = evaluate_linear_head(
            x,
            y,
            x_held,
            y_held,
            num_classes=len(categories),
            params=FHeadParams(
                n_inits=args.inits,
                batch_size=64,
                max_steps=100_000,
                standardise=standardise,
            ),
        )
        train_acc = np.mean([row["train_accuracy"] for row in result["per_init"]])
        print(  # noqa: T201
            f"linear head, {'standardised' if standardise else 'raw'} features: "
            f"{100 * result['accuracy_mean']:.1f} % (train {100 * train_acc:.1f} %), "
            f"{time.perf_counter() - start:.1f} s"
        )


if __name__ == "__main__":
    main()
