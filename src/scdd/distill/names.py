"""The names of the distillation methods and seedings, and their kinds.

Plain tuples with no dependency on the methods themselves, so that both
:mod:`scdd.distill.config` (whose ``method`` and ``seeding`` fields choose
among them) and :mod:`scdd.distill.methods` (which runs them, and imports
:mod:`scdd.distill.config`) can read them.
"""

from __future__ import annotations

from scdd.distill.coresets import CORESETS

#: Methods that take scdd's own options (``lambda_part``, ``lambda_proto``,
#: ``gene_residual``, ``sample_counts``)
#: and the ablations (``head_hidden``, ``finetune_encoder``); the baselines
#: stay as the paper defines them.
SCDD_METHODS = ("scdd_decoder", "scdd")

#: Coreset controls: a selection of real cells, nothing optimised.
CORESET_METHODS = tuple(name for name in CORESETS if name != "random")

#: Methods whose output rows are real training cells, written as they are.
REAL_CELL_METHODS = ("random_real", *CORESET_METHODS, "full")

#: How the optimised methods pick their real seed cells (the coreset whose
#: rows they start from).
SEEDINGS = {"medoid": "kmeans_medoid", "random": "random"}

METHODS = (
    "random_real",
    *CORESET_METHODS,
    "dm",
    "dc",
    "featdistill",
    "featdistill+dcdm",
    "textdistill",
    "textdistill+dcdm",
    "generator_only",
    "scdd_decoder",
    "scdd",
    "full",
)
NEEDS_GENERATOR = ("generator_only", "scdd")

#: The terms of the matching loss, as each step's history records them
#: (:class:`scdd.distill.optimise.MatchingLoss`) beside ``step`` and the
#: weighted total ``loss``.
LOSS_TERMS = ("dm", "dc", "part", "proto")
