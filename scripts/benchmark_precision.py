"""Foundation training settings side by side: time and latent quality.

For each dataset, F is trained on the training split of a
``benchmark_shared.py`` workdir, once per ``foundation.trainer.precision``,
``--train`` variant and seed, in this process, side by side; several
``--seeds`` show how far F's own seed moves the same figures, the yardstick
for a setting's effect. A ``--train`` variant is ``name=JSON`` of
``foundation.train`` settings (``default={}`` is the defaults). Printed per
dataset, precision, variant and seed: the training seconds and cells/s, the
best validation MSE, and a linear probe of the latents (trained on the
training split's latents, scored on the validation split's), next to the
same probe on the genes. The weights stay float32 either way.

    python scripts/benchmark_precision.py --workdir /tmp/bench/val \\
        [--datasets pbmc_10x ...] [--precisions 32-true bf16-mixed] \\
        [--train default={} 'b512={"batch_size": 512}'] \\
        [--seeds 0 1 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from itertools import product
from pathlib import Path

from scdd.datasets import H5ADDataset
from scdd.metrics.probe import linear_probe
from scdd.models.foundation import embed_cells
from scdd.models.foundation_training import (
    TrainConfig,
    TrainerConfig,
    train_foundation,
)
from scdd.threads import apply_threads

DATASETS = ["pbmc_10x", "human_kidney", "cbmc_citeseq", "paul15"]
PROBE_CELLS = 20_000


def _write(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _split(project: Path, name: str):
    path = project / "data" / "05_model_input" / f"{name}.h5ad"
    return H5ADDataset(filepath=str(path)).load()


def _probe(train_x, train_y, val_x, val_y) -> float:
    scores = linear_probe(
        train_x, train_y, val_x, val_y, max_train_cells=PROBE_CELLS, seed=0
    )
    return 100 * scores["accuracy"]


def _variant(text: str) -> tuple[str, TrainConfig]:
    """``name=JSON`` as a name and its ``foundation.train`` settings."""
    name, _, settings = text.partition("=")
    return name, TrainConfig(**json.loads(settings or "{}"))


def one_dataset(  # noqa: PLR0913
    project: Path, name: str, label_key: str, precisions, variants, seeds
) -> None:
    """Train F once per precision, variant and seed on one workdir's split."""
    train, validation = _split(project, "train"), _split(project, "validation")
    y_train = train.obs[label_key].astype(str).to_numpy()
    y_val = validation.obs[label_key].astype(str).to_numpy()
    genes = _probe(train.X, y_train, validation.X, y_val)
    for precision, (variant, config), seed in product(precisions, variants, seeds):
        start = time.perf_counter()
        model, history = train_foundation(
            train.X,
            gene_order=list(train.var_names),
            config=config,
            trainer=TrainerConfig(precision=precision),
            seed=seed,
            progress=False,
        )
        seconds = time.perf_counter() - start
        seen = int(history["cells_seen"].iloc[-1])
        latent = _probe(
            embed_cells(model.encoder, train.X, progress=False),
            y_train,
            embed_cells(model.encoder, validation.X, progress=False),
            y_val,
        )
        _write(
            f"| {name} | {train.n_vars:,} | {precision} | {variant} | {seed} | "
            f"{seconds:.0f} | "
            f"{seen / seconds:,.0f} | {history['val_loss'].min():.5f} | "
            f"{latent:.1f} | {genes:.1f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--label-key", default="cell_type")
    parser.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"])
    parser.add_argument(
        "--train", type=_variant, nargs="+", default=[("default", TrainConfig())]
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    apply_threads(args.threads)
    _write(
        "| dataset | genes | precision | train | seed | train s | cells/s | "
        "best val MSE | "
        "probe on latents (%) | probe on genes (%) |"
    )
    _write("|---|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for name in args.datasets:
        one_dataset(
            args.workdir / name,
            name,
            args.label_key,
            args.precisions,
            args.train,
            args.seeds,
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    _write(f"\npeak RSS {peak:.0f} MB, {args.threads} thread(s)")


if __name__ == "__main__":
    main()
