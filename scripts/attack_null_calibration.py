"""How often the guard's attack test fails a set that carries nothing.

Members and held-out cells are drawn from one distribution (exchangeable
attack scores), so every failure is a false alarm. The attack flags the
members above the ``floor(0.01 n) + 1``-th highest held-out score (its
1%-FPR cut-off; :func:`scdd.metrics.privacy.attack_figures`). Compares the
guard's test (negative hypergeometric, :func:`attack_p_value`) with a
binomial test that takes the cut-off as fixed, and the AUC test
(:func:`auc_p_value`).

    python scripts/attack_null_calibration.py --trials 20000
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from scipy.stats import binom

from scdd.metrics.privacy import attack_figures, attack_p_value, auc_p_value


def _one_draw(n: int, rng: np.random.Generator) -> tuple[int, float]:
    """Members flagged at the 1%-FPR cut-off, and the AUC, of one null draw."""
    figures = attack_figures(rng.random(n), rng.random(n))
    return round(figures["attack_tpr_at_1fpr"] * n), figures["attack_auc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[105, 819, 2000])
    parser.add_argument("--trials", type=int, default=4000)
    parser.add_argument("--alpha", type=float, default=0.001)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    out = sys.stdout
    out.write("| cells per sample | binomial, cut-off fixed | rate test | AUC test |\n")
    out.write("| ---: | ---: | ---: | ---: |\n")
    for n in args.sizes:
        chance = (int(0.01 * n) + 1) / (n + 1)
        draws = [_one_draw(n, rng) for _ in range(args.trials)]
        binomial = np.mean(
            [k > 0 and binom.sf(k - 1, n, chance) < args.alpha for k, _ in draws]
        )
        rate = np.mean([attack_p_value(k / n, n) < args.alpha for k, _ in draws])
        auc = np.mean([auc_p_value(a, n) < args.alpha for _, a in draws])
        out.write(f"| {n} | {binomial:.2%} | {rate:.2%} | {auc:.2%} |\n")
    out.write(f"\nfalse alarms at alpha {args.alpha}, {args.trials} draws each\n")


if __name__ == "__main__":
    main()
