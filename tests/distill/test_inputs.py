from dataclasses import replace

import numpy as np
import pytest

from scdd.cellstore import as_lazy
from scdd.distill.config import DistillParams
from scdd.distill.inputs import distill_synthetic, final_loss, prepare_inputs
from scdd.distill.methods import seed_rows
from scdd.distill.real_cells import summarise_real_cells
from tests.distill.test_methods import (
    CONFIG,
    LABEL_KEY,
    N_PER_CLASS,
    make_inputs,
    make_tiny,
)
from tests.evaluation.lazy_helpers import spied


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


def test_a_class_above_the_cap_is_a_sample_read_from_lazy_embeddings():
    """``max_cells_per_class`` keeps each class to a seeded sample: only those
    embeddings are read, and the genes a method takes are its sample's rows."""
    tiny = make_tiny()
    cap = 25  # N_PER_CLASS: two classes above, one below
    lazy_z, reads = spied(tiny.embeddings, chunk_rows=16)
    inputs, categories, stats = prepare_inputs(
        as_lazy(tiny.train, chunk_rows=16),
        lazy_z,
        tiny.foundation,
        None,
        label_key=LABEL_KEY,
        max_cells_per_class=cap,
        seed=3,
    )
    rows = inputs.rows
    sizes = [min(n, cap) for n in N_PER_CLASS]
    assert len(rows) == sum(sizes) and reads.counts
    labels = tiny.train.obs[LABEL_KEY].cat.codes.to_numpy()
    np.testing.assert_array_equal(inputs.labels, labels[rows])
    np.testing.assert_array_equal(np.bincount(inputs.labels), sizes)
    np.testing.assert_allclose(inputs.embeddings, tiny.embeddings.X[rows])
    picked = seed_rows("kmeans_medoid", inputs, spc=2, seeding="medoid", seed=0)
    np.testing.assert_allclose(
        inputs.gene_rows(picked).toarray(), tiny.train.X[rows[picked]].toarray()
    )
    full, _ = distill_synthetic(
        inputs,
        categories,
        stats,
        params=DistillParams(method="full"),
        label_key=LABEL_KEY,
        seed=0,
        progress=False,
    )
    assert full.n_obs == len(rows)


def test_no_class_above_the_cap_reads_every_cell():
    tiny = make_tiny()
    inputs, _, _ = prepare_inputs(
        tiny.train,
        tiny.embeddings,
        tiny.foundation,
        None,
        label_key=LABEL_KEY,
        max_cells_per_class=max(N_PER_CLASS),
    )
    assert inputs.rows is None and len(inputs.embeddings) == tiny.train.n_obs
