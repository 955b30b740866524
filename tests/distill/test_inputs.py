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


def test_drawn_counts_take_the_count_depth_and_record_it(setting, monkeypatch):
    """From ``sample_counts_from_spc`` up the cells are drawn at
    ``count_depth``: one optimisation, the depth recorded in uns; another
    depth makes another set."""
    from scdd.distill import inputs as module

    depths_run = []
    real_run = module.run_method

    def counted(params, *args, **kwargs):
        depths_run.append(kwargs["count_depth"])
        return real_run(params, *args, **kwargs)

    monkeypatch.setattr(module, "run_method", counted)
    deep, deep_output = distil(setting, count_depth=4.0)
    assert depths_run == [4.0]
    shallow, _ = distil(setting, count_depth=1.0)
    assert deep.uns["scdd"] == {"count_depth": 4.0, "real_cells": False}
    assert shallow.uns["scdd"]["count_depth"] == 1.0
    assert not np.array_equal(deep.X.toarray(), shallow.X.toarray())
    assert np.isfinite(final_loss(deep_output))


def test_without_drawn_counts_one_set_is_made_and_nothing_recorded(setting):
    synthetic, _ = distil(setting, sample_counts_from_spc=5)
    assert synthetic.uns["scdd"] == {"count_depth": None, "real_cells": False}
