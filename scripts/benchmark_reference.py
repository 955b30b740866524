"""The F-head retention reference: epochs over every cell vs a step cap.

Features are unit-norm 128-d points around 10 class axes (what F's latents
look like to the linear head). For each size the former protocol (1000
epochs of mini-batches of 64 over the split) and the same capped at
``evaluate.f_head.reference_max_steps`` (100k steps) train one head;
printed: wall time per head, SGD steps, test accuracy and peak RSS of the
process. Torch runs on one thread, as the head does in the pipeline.

    python scripts/benchmark_reference.py [--sizes 1000 10000 100000]
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
import torch

from scdd.evaluation.config import FHeadParams
from scdd.evaluation.linear_head import evaluate_linear_head
from scdd.threads import apply_threads


def clusters(n: int, seed: int, dim: int = 128, classes: int = 10):
    """Unit-norm points around one axis per class, and their labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    x = np.eye(dim, dtype=np.float32)[labels] + 0.15 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--max-steps", type=int, default=100_000)
    args = parser.parse_args()
    apply_threads(1)
    x_test, y_test = clusters(5000, seed=1)
    rows = []
    for n in args.sizes:
        x, y = clusters(n, seed=0)
        for name, kwargs in (
            ("1000 epochs", {}),
            (f"1000 epochs, <= {args.max_steps} steps", {"max_steps": args.max_steps}),
        ):
            start = time.perf_counter()
            result = evaluate_linear_head(
                x,
                y,
                x_test,
                y_test,
                num_classes=10,
                params=FHeadParams(n_inits=1, epochs=1000, batch_size=64, **kwargs),
            )
            seconds = time.perf_counter() - start
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            acc = result["accuracy_mean"]
            rows.append((n, name, result["steps"], seconds, acc, peak))
            print(f"{n} cells, {name}: {seconds:.1f} s", flush=True)  # noqa: T201
    lines = [
        f"torch threads {torch.get_num_threads()}, 1-min load {os.getloadavg()[0]:.2f}",
        "",
        "| cells | reference training | SGD steps | s per head | test accuracy "
        "| peak RSS (MB) |",
        "| --- | --- | --- | --- | --- | --- |",
        *(
            f"| {n} | {m} | {k} | {s:.1f} | {a:.3f} | {p:.0f} |"
            for n, m, k, s, a, p in rows
        ),
    ]
    print("\n".join(lines))  # noqa: T201


if __name__ == "__main__":
    main()
