from dataclasses import replace

import numpy as np
import pytest

from scdd.distill.config import DistillParams
from scdd.distill.inputs import distill_synthetic, final_loss
from scdd.distill.real_cells import summarise_real_cells
from tests.distill.test_methods import CONFIG, LABEL_KEY, make_inputs, make_tiny


@pytest.fixture(scope="module")
def setting():
    """Small inputs with the real cells' statistics, and their classes."""
    tiny = make_tiny()
    inputs = make_inputs(tiny)
    categories = list(map(str, tiny.train.obs[LABEL_KEY].cat.categories))
    stats = summarise_real_cells(
        inputs.genes, inputs.labels, categories, gene_names=list(tiny.train.var_names)
    )
    # sparse classes: small libraries, so a deeper draw stays under the cap
    stats = replace(stats, zero_fractions=np.full(len(categories), 0.8))
    inputs = replace(
        inputs, target_sum=stats.target_sum, zero_fractions=stats.zero_fractions
    )
    return inputs, categories, stats


def distil(setting, **params):
    inputs, categories, stats = setting
    optim = {k: getattr(CONFIG, k) for k in ("steps", "lr", "log_every", "chunk_size")}
    group = DistillParams.model_validate(
        {
            "method": "scdd_decoder",
            "spc": 2,
            "sample_counts_from_spc": 2,
            "optim": optim,
            **params,
        }
    )
    return distill_synthetic(
        inputs,
        categories,
        stats,
        params=group,
        label_key=LABEL_KEY,
        seed=0,
        progress=False,
    )


def test_of_several_count_depths_the_closest_match_in_f_space_is_kept(setting):
    """``count_depth: [1, 4]`` makes the set at both depths and keeps the one
    with the lower final loss: exactly that depth's set, its depth recorded."""
    single = {d: distil(setting, count_depth=d) for d in (1.0, 4.0)}
    losses = {d: final_loss(out) for d, (_, out) in single.items()}
    assert losses[1.0] != losses[4.0]
    best = min(losses, key=losses.get)
    synthetic, output = distil(setting, count_depth=[1.0, 4.0])
    assert synthetic.uns["scdd"] == {"count_depth": best, "real_cells": False}
    np.testing.assert_array_equal(output.codes, single[best][1].codes)
    np.testing.assert_array_equal(synthetic.X.toarray(), single[best][0].X.toarray())


def test_without_drawn_counts_one_set_is_made_and_nothing_recorded(setting):
    synthetic, _ = distil(setting, count_depth=[1.0, 4.0], sample_counts_from_spc=5)
    assert synthetic.uns["scdd"] == {"count_depth": None, "real_cells": False}


def test_a_pilot_drops_the_depths_clearly_behind(setting, monkeypatch):
    """With ``count_depth_pilot_steps`` under the run's steps, each depth runs
    that many steps; those within ``count_depth_pilot_margin`` of the best
    pilot loss then run in full, and the lowest final loss among them is
    kept: the same set as that depth alone."""
    from scdd.distill import inputs as module

    steps_run = []
    real_run = module.run_method

    def counted(params, *args, **kwargs):
        steps_run.append((params.optim.steps, kwargs["count_depth"]))
        return real_run(params, *args, **kwargs)

    monkeypatch.setattr(module, "run_method", counted)
    single = {d: distil(setting, count_depth=d) for d in (1.0, 4.0)}
    at_step_2 = {d: out.history[1]["loss"] for d, (_, out) in single.items()}
    final = {d: final_loss(out) for d, (_, out) in single.items()}
    ahead = min(at_step_2, key=at_step_2.get)
    optim = {"steps": 5, "lr": CONFIG.lr, "log_every": 1}
    pilot = {"count_depth": [1.0, 4.0], "count_depth_pilot_steps": 2, "optim": optim}

    steps_run.clear()
    synthetic, output = distil(setting, count_depth_pilot_margin=0.0, **pilot)
    assert steps_run == [(2, 1.0), (2, 4.0), (5, ahead)]  # the other dropped
    assert synthetic.uns["scdd"]["count_depth"] == ahead
    np.testing.assert_array_equal(output.codes, single[ahead][1].codes)

    steps_run.clear()  # a wide margin: both race on, the lower final loss wins
    synthetic, _ = distil(setting, count_depth_pilot_margin=10.0, **pilot)
    assert steps_run == [(2, 1.0), (2, 4.0), (5, 1.0), (5, 4.0)]
    assert synthetic.uns["scdd"]["count_depth"] == min(final, key=final.get)
