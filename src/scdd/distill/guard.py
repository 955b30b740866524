"""The privacy guard: a synthetic set that carries training cells is flagged,
and refused with ``distill.privacy.enforce``.

Real-cell methods (``random_real``, the coresets, ``full``) are real cells by
definition: their figures are recorded (they show what sharing real cells
leaks) but they are not guarded.
"""

from __future__ import annotations

import logging
from typing import Any

import anndata as ad

from scdd.metrics.privacy import AUC_FAILURE, MODEL_ATTACK, PrivacyParams
from scdd.provenance import storable

logger = logging.getLogger(__name__)


class PrivacyGuardError(ValueError):
    """A synthetic set failed the privacy guard with ``enforce: true``."""


#: What an attack-AUC failure usually means and what lowers it, for the
#: model attack and the distance attacks.
_AUC_HINTS = {
    MODEL_ATTACK: (
        " The model attack reads what a classifier learns from the set as a "
        "whole: gene profiles fit to a few dozen training cells in thousands "
        "of genes carry each cell's own noise. distill.gene_residual: 0 (no "
        "per-cell gene-level fit) or more cells per class lower it."
    ),
    "distance": (
        " The attack AUC reads a leak spread over many training cells: each "
        "synthetic cell is fit to the statistics of a few dozen cells in many "
        "genes, where even the training class means are read. A smaller "
        "distill.spc (targets of more cells) or more cells per class lower it."
    ),
}


def _cause(failures: list[str]) -> str:
    """What the attack-AUC failures usually mean, and what lowers them."""
    kinds = {
        MODEL_ATTACK if line.startswith(MODEL_ATTACK) else "distance"
        for line in failures
        if AUC_FAILURE in line
    }
    return "".join(hint for kind, hint in _AUC_HINTS.items() if kind in kinds)


def apply_guard(
    synthetic: ad.AnnData, report: dict[str, Any], params: PrivacyParams
) -> None:
    """Record ``report`` in ``uns["scdd"]["privacy"]`` and judge the set.

    Raises:
        PrivacyGuardError: the set fails the guard, is not made of real cells,
            and ``params.enforce`` is set (nothing is written then).
    """
    scdd = synthetic.uns.setdefault("scdd", {})
    real = bool(scdd.get("real_cells", False))
    guard = report["guard"]
    scdd["privacy"] = storable({**report, "guarded": not real})
    if report["n_sample"] < params.min_sample:
        logger.warning(
            "Privacy: the nearest-record ratio is reported, not judged: %d "
            "held-out cells sampled, fewer than distill.privacy.min_sample=%d; "
            "a larger validation split (preprocess.validation_size) lets the "
            "guard judge it.",
            report["n_sample"],
            params.min_sample,
        )
    if guard["passes"]:
        logger.info("Privacy guard passed")
        return
    failures = "; ".join(guard["failures"])
    if real:
        logger.info("Real cells (not guarded) leak as expected: %s", failures)
        return
    if params.enforce:
        raise PrivacyGuardError(
            f"The synthetic set fails the privacy guard ({failures}); nothing "
            "was written. Use a method or settings that do not copy training "
            "cells, or set distill.privacy.enforce to false to write it flagged."
            + _cause(guard["failures"])
        )
    logger.warning(
        "The synthetic set FAILS the privacy guard (%s): it may carry training "
        "cells; flagged in uns['scdd']['privacy'] and metrics.json.%s",
        failures,
        _cause(guard["failures"]),
    )
