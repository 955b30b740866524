"""scDD and the baselines of the paper on tiny data and tiny models."""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from scdd import generation
from scdd.distill.config import DistillOptimParams, DistillParams
from scdd.distill.coresets import select_coreset
from scdd.distill.methods import (
    METHOD_REGISTRY,
    METHODS,
    REAL_CELL_METHODS,
    ConditionSpec,
    DistillInputs,
    drawn_rows,
    loss_weights,
    run_method,
)
from scdd.models.device import make_generator
from scdd.models.foundation import (
    FoundationArchitectureParams,
    FoundationModel,
    embed_cells,
)
from scdd.models.foundation_training import TrainConfig, train_foundation
from scdd.models.generator_config import GeneratorTrainParams
from scdd.preprocessing import log_normalise
from tests.conftest import TINY_SCDG_MODEL, make_counts_adata

LABEL_KEY = "cell_type"
LATENT_DIM = 8
N_PER_CLASS = (40, 30, 20)
SCDG_MODEL = TINY_SCDG_MODEL
SCDG_TRAIN = GeneratorTrainParams(steps=50, batch_size=32, lr=1e-3, weight_decay=1e-4)
CONFIG = DistillOptimParams(
    steps=5,
    lr=0.05,
    lambda_dm=1.0,
    lambda_dc=1.0,
    lambda_part=0.0,
    inner_steps=2,
    real_batch_size=16,
    chunk_size=4,
    log_every=1,
)
T_GEN = 20
SPC = 2
#: ``output`` column of the module table in ``scdd.distill.methods``.
FEATURE_METHODS = ("featdistill", "featdistill+dcdm")
BOTH_METHODS = ("textdistill", "textdistill+dcdm")
UNOPTIMISED = (*REAL_CELL_METHODS, "generator_only")


@dataclass
class Tiny:
    """Log-normalised cells, their embeddings and the trained tiny models."""

    train: ad.AnnData
    embeddings: ad.AnnData
    foundation: FoundationModel
    checkpoint: dict[str, Any]


def make_tiny(seed: int = 0) -> Tiny:
    """3 classes x 60 genes; F with one hidden layer of 32 and latent 8; SCDG
    of width 32 trained for 50 steps on F's embeddings (a few seconds in all)."""
    train = log_normalise(
        make_counts_adata(N_PER_CLASS, n_genes=60, seed=seed),
        target_sum=1e4,
        keep_counts=False,
    )
    foundation, _ = train_foundation(
        train.X,
        gene_order=list(train.var_names),
        architecture=FoundationArchitectureParams(
            latent_dim=LATENT_DIM, hidden_dim=[32], dropout=0.1, input_dropout=0.1
        ),
        config=TrainConfig(epochs=3, batch_size=32, lr=3e-3),
        seed=seed,
        progress=False,
    )
    # as the build node sets foundation.min_gene_overlap (default 500 > 60 genes)
    foundation.min_gene_overlap = 10
    z = embed_cells(foundation.encoder, train.X, progress=False)
    embeddings = ad.AnnData(
        X=z,
        obs=train.obs.copy(),
        var=pd.DataFrame(index=[f"latent_{i}" for i in range(LATENT_DIM)]),
    )
    checkpoint, _ = generation.train_generator(
        embeddings,
        [LABEL_KEY],
        model=SCDG_MODEL,
        train=SCDG_TRAIN,
        seed=seed,
        progress=False,
    )
    return Tiny(train, embeddings, foundation, checkpoint)


def make_inputs(tiny: Tiny, label_map: list[int] | None = None) -> DistillInputs:
    """DistillInputs as the pipeline node builds them (same gene order)."""
    generator, categories = generation.load_generator(tiny.checkpoint)
    n_classes = len(categories[LABEL_KEY])
    genes = tiny.train.X.tocsr()
    labels = tiny.train.obs[LABEL_KEY].cat.codes.to_numpy().astype(np.int64)
    return DistillInputs(
        genes=genes,
        embeddings=generation.embedding_matrix(tiny.embeddings),
        labels=labels,
        num_classes=n_classes,
        foundation=tiny.foundation,
        generator=generator,
        conditions=ConditionSpec(
            null=[n_classes],
            position=0,
            label_map=list(range(n_classes)) if label_map is None else label_map,
        ),
    )


def coreset_rows(
    inputs: DistillInputs, name: str = "kmeans_medoid", seed: int = 0
) -> np.ndarray:
    """Rows of coreset ``name`` (by default the optimised methods' seeds:
    ``seeding: medoid``, seed 0)."""
    return select_coreset(
        name,
        inputs.embeddings,
        inputs.labels,
        spc=SPC,
        num_classes=inputs.num_classes,
        seed=seed,
    )


#: ``run_method``'s own arguments; the other options are ``distill`` settings.
RUN_ARGUMENTS = ("count_fraction", "count_depth", "seed", "device", "progress")


def run(method: str, inputs: DistillInputs, **kwargs: Any):
    """``run_method`` with the small test settings; ``config`` is the ``optim``
    group. The group is updated unvalidated, so that ``run_method``'s own
    checks of the method and seeding names are what the tests see."""
    settings = {
        "spc": SPC,
        "optim": kwargs.pop("config", CONFIG),
        "t_gen": T_GEN,
        "sample_steps": 2,
        "zero_threshold": None,
        "gene_residual": 0.0,  # the decode path itself; the residual has its test
        "method": method,
    }
    options = {"seed": 0, "progress": False}
    for key, value in kwargs.items():
        (options if key in RUN_ARGUMENTS else settings)[key] = value
    params = DistillParams().model_copy(update=settings)
    return run_method(params, inputs, **options)


@pytest.fixture(scope="module")
def tiny() -> Tiny:
    return make_tiny()


@pytest.fixture(scope="module")
def inputs(tiny: Tiny) -> DistillInputs:
    return make_inputs(tiny)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_with_the_documented_output(
    method: str, inputs: DistillInputs
) -> None:
    out = run(method, inputs)
    n_genes = inputs.genes.shape[1]
    if method == "full":
        n = len(inputs.labels)
        np.testing.assert_array_equal(out.labels, inputs.labels)
        np.testing.assert_array_equal(np.bincount(out.labels), N_PER_CLASS)
    else:
        n = SPC * inputs.num_classes
        np.testing.assert_array_equal(
            np.bincount(out.labels, minlength=inputs.num_classes),
            [SPC] * inputs.num_classes,
        )
    assert out.labels.shape == (n,)

    if method in FEATURE_METHODS:
        assert out.genes is None
    else:
        assert out.genes is not None and out.genes.shape == (n, n_genes)
        genes = out.genes.toarray() if hasattr(out.genes, "toarray") else out.genes
        assert np.isfinite(genes).all()
    if method in FEATURE_METHODS + BOTH_METHODS:
        assert out.features.shape == (n, LATENT_DIM)
        np.testing.assert_allclose(np.linalg.norm(out.features, axis=1), 1, rtol=1e-5)
    else:
        assert out.features is None

    if method in UNOPTIMISED:
        assert out.codes is None and out.history is None
    else:
        width = n_genes if method in ("dm", "dc") else LATENT_DIM
        assert out.codes.shape == (n, width)
        assert np.isfinite(out.codes).all()
        assert [h["step"] for h in out.history] == list(range(CONFIG.steps))
        last = out.history[-1]
        # the baselines are defined by their loss weights
        assert (last["dm"] == 0.0) == (method == "dc")
        assert (last["dc"] == 0.0) == (method in ("dm", "featdistill", "textdistill"))


@pytest.mark.parametrize("base", ["featdistill", "textdistill"])
def test_dcdm_variants_match_gradients_also_when_scdd_turns_dc_off(
    base: str, inputs: DistillInputs
) -> None:
    dm_only = CONFIG.model_copy(update={"lambda_dc": 0.0})  # scdd's default
    both = run(f"{base}+dcdm", inputs, config=dm_only)
    assert both.history[-1]["dc"] > 0 and both.history[-1]["dm"] > 0
    assert loss_weights(f"{base}+dcdm", dm_only).lambda_dc == 1.0
    assert (
        loss_weights(
            f"{base}+dcdm", CONFIG.model_copy(update={"lambda_dc": 0.3})
        ).lambda_dc
        == 0.3
    )
    assert run(base, inputs, config=dm_only).history[-1]["dc"] == 0.0


@pytest.mark.parametrize(
    ("method", "coreset"),
    [("random_real", "random"), ("herding", "herding"), ("kcenter", "kcenter")],
)
def test_real_cell_methods_return_their_coreset_unchanged(
    method: str, coreset: str, inputs: DistillInputs
) -> None:
    out = run(method, inputs, seed=3)
    rows = coreset_rows(inputs, coreset, seed=3)
    assert out.real_cells is True
    np.testing.assert_array_equal(out.labels, inputs.labels[rows])
    np.testing.assert_array_equal(out.genes.toarray(), inputs.genes[rows].toarray())


@pytest.mark.parametrize("seeding", ["medoid", "random"])
def test_every_optimised_method_starts_from_the_same_seeds(
    seeding: str, inputs: DistillInputs
) -> None:
    """With no optimisation step, dm writes its seed cells and scdd_decoder
    decodes their embeddings: the same real cells, whichever method."""
    still = CONFIG.model_copy(update={"steps": 0})
    dm = run("dm", inputs, config=still, seeding=seeding)
    decoder = run("scdd_decoder", inputs, config=still, seeding=seeding)
    rows = coreset_rows(inputs, "kmeans_medoid" if seeding == "medoid" else "random")
    np.testing.assert_allclose(dm.genes, inputs.genes[rows].toarray(), atol=1e-6)
    np.testing.assert_allclose(decoder.codes, inputs.embeddings[rows], atol=1e-6)
    assert dm.history == [] and not dm.real_cells
    with pytest.raises(ValueError, match="seeding"):
        run("dm", inputs, seeding="best")


def test_every_method_has_a_registry_entry_and_every_entry_a_method() -> None:
    assert set(METHOD_REGISTRY) == set(METHODS)
    assert len(METHOD_REGISTRY) == len(METHODS)
    assert all(callable(fn) for fn in METHOD_REGISTRY.values())


def test_condition_spec_maps_labels_into_the_label_column() -> None:
    spec = ConditionSpec(null=[4, 3], position=1, label_map=[2, 0, 1])
    cond = spec(torch.tensor([0, 1, 2, 0]))
    assert cond.dtype == torch.long
    np.testing.assert_array_equal(cond.numpy(), [[4, 2], [4, 0], [4, 1], [4, 2]])


def test_scdd_label_map_changes_the_generated_cells(tiny: Tiny) -> None:
    config = CONFIG.model_copy(update={"steps": 0})
    same = run("scdd", make_inputs(tiny), config=config)
    permuted = run("scdd", make_inputs(tiny, label_map=[1, 2, 0]), config=config)
    # same seeds and starting codes, other generator conditions -> other cells
    np.testing.assert_array_equal(same.labels, permuted.labels)
    np.testing.assert_array_equal(same.codes, permuted.codes)
    assert not np.allclose(same.genes, permuted.genes, atol=1e-4)
    # the permuted run is the identity-map generator fed the mapped classes
    generator = generation.load_generator(tiny.checkpoint)[0]
    decoder = tiny.foundation.decoder
    mapped = torch.tensor([[[1, 2, 0][y]] for y in permuted.labels])
    with torch.no_grad():
        expected = F.relu(
            decoder(generator.denoise(torch.as_tensor(permuted.codes), T_GEN, mapped))
        )
    np.testing.assert_allclose(permuted.genes, expected.numpy(), atol=1e-5)


def test_unknown_method_and_missing_generator(inputs: DistillInputs) -> None:
    with pytest.raises(ValueError, match=r"choose one of \['random_real'"):
        run("scdd_v2", inputs)
    for method in ("scdd", "generator_only"):
        with pytest.raises(ValueError, match="generator pipeline"):
            run(method, replace(inputs, generator=None))
        with pytest.raises(ValueError, match="generator pipeline"):
            run(method, replace(inputs, conditions=None))
    # the methods without a generator do not need one
    assert run("dm", replace(inputs, generator=None, conditions=None)).genes.shape


def test_scdd_optimises_codes_and_stores_g_of_codes(
    tiny: Tiny, inputs: DistillInputs
) -> None:
    seeds = coreset_rows(inputs)
    generator = inputs.generator
    start = generator.encode_codes(
        torch.as_tensor(inputs.embeddings[seeds]), T_GEN, generator=make_generator(1)
    ).numpy()
    untouched = run("scdd", inputs, config=CONFIG.model_copy(update={"steps": 0}))
    np.testing.assert_allclose(untouched.codes, start, atol=1e-6)

    out = run("scdd", inputs)
    assert np.abs(out.codes - start).max() > 1e-3
    assert out.history[0]["loss"] != out.history[-1]["loss"]
    # what is stored is G(codes) = relu(D(U(codes))) of the optimised codes
    cond = inputs.conditions(torch.as_tensor(out.labels))
    with torch.no_grad():
        genes = F.relu(
            tiny.foundation.decoder(
                generator.denoise(torch.as_tensor(out.codes), T_GEN, cond)
            )
        )
    np.testing.assert_allclose(out.genes, genes.numpy(), atol=1e-5)


@pytest.mark.parametrize("method", ["scdd", "scdd_decoder"])
def test_gene_residual_starts_at_zero_and_lowers_the_loss(
    method: str, inputs: DistillInputs
) -> None:
    config = CONFIG.model_copy(update={"lambda_dc": 0.0, "steps": 40})
    plain = run(method, inputs, config=config)
    fixed = run(method, inputs, config=config, gene_residual=0.5)
    # the residual starts at zero: the first step sees the codes' cells alone
    assert fixed.history[0]["loss"] == pytest.approx(plain.history[0]["loss"])
    assert fixed.history[-1]["loss"] < plain.history[-1]["loss"]
    # only the latent codes are kept as codes; the genes carry the residual
    assert fixed.codes.shape == plain.codes.shape
    assert not np.allclose(fixed.genes, plain.genes, atol=1e-3)
    unmoved = run(
        method, inputs, config=config.model_copy(update={"steps": 0}), gene_residual=0.5
    )
    np.testing.assert_allclose(
        unmoved.genes,
        run(method, inputs, config=config.model_copy(update={"steps": 0})).genes,
    )


def test_scdd_decoder_stores_d_of_normalised_codes(
    tiny: Tiny, inputs: DistillInputs
) -> None:
    out = run("scdd_decoder", inputs)
    seeds = coreset_rows(inputs)
    assert np.abs(out.codes - inputs.embeddings[seeds]).max() > 1e-3
    with torch.no_grad():
        genes = F.relu(
            tiny.foundation.decoder(F.normalize(torch.as_tensor(out.codes), dim=1))
        )
    np.testing.assert_allclose(out.genes, genes.numpy(), atol=1e-5)


def test_bf16_decodes_through_a_bfloat16_copy_of_d(
    tiny: Tiny, inputs: DistillInputs
) -> None:
    """``precision: bf16-true``: the cells written are a bfloat16 copy of D's
    output (float32 again, within bf16 rounding of D's own), and the
    foundation itself stays float32."""
    config = CONFIG.model_copy(update={"precision": "bf16-true"})
    out = run("scdd_decoder", inputs, config=config)
    decoder = tiny.foundation.decoder
    assert all(p.dtype == torch.float32 for p in decoder.parameters())
    codes = F.normalize(torch.as_tensor(out.codes), dim=1)
    with torch.no_grad():
        exact = F.relu(decoder(codes)).numpy()
        rounded = copy.deepcopy(decoder).to(torch.bfloat16)(codes.bfloat16())
    assert out.genes.dtype == np.float32
    np.testing.assert_array_equal(out.genes, F.relu(rounded.float()).numpy())
    assert not np.array_equal(out.genes, exact)
    np.testing.assert_allclose(out.genes, exact, rtol=0.05, atol=0.05)


def test_parts_seed_scdd_from_medoids_and_match_each_cell(
    inputs: DistillInputs,
) -> None:
    """``lambda_part > 0``: scdd's cells start from the part medoids and the
    part loss is optimised; the baselines keep the paper's losses."""
    from scdd.distill.parts import class_parts

    config = CONFIG.model_copy(update={"lambda_part": 1.0})
    out = run("scdd_decoder", inputs, config=config)
    parts = class_parts(
        inputs.embeddings,
        inputs.labels,
        spc=SPC,
        num_classes=inputs.num_classes,
        seed=0,
    )
    np.testing.assert_array_equal(out.labels, inputs.labels[parts.seeds])
    assert out.history[-1]["part"] > 0
    assert out.history[-1]["part"] < out.history[0]["part"]
    assert loss_weights("dm", config).lambda_part == 0.0
    assert run("dm", inputs, config=config).history[-1]["part"] == 0.0


def test_ablations_run_for_scdd_only(inputs: DistillInputs) -> None:
    """The paper's ablations (a deeper DC head, F tuned during distillation)
    run through scdd's methods; the baselines ignore them."""
    config = CONFIG.model_copy(
        update={
            "lambda_dc": 1.0,
            "head_hidden": [16],
            "finetune_encoder": True,
            "steps": 2,
        }
    )
    out = run("scdd_decoder", inputs, config=config)
    assert out.history[-1]["dc"] > 0 and np.isfinite(out.codes).all()
    settled = loss_weights("dm", config)
    assert settled.head_hidden == [] and not settled.finetune_encoder


def test_sample_counts_draws_scdd_cells_as_sparse_as_the_real_class(
    inputs: DistillInputs,
) -> None:
    """``count_fraction``: scdd's cells come out as count draws at the real
    zero fraction of their class; without the real statistics it is refused."""
    wanted = np.linspace(0.3, 0.6, inputs.num_classes)
    real_like = replace(inputs, target_sum=1e4, zero_fractions=wanted)
    smooth = run("scdd_decoder", real_like)
    drawn = run("scdd_decoder", real_like, count_fraction=1.0)
    zeros = (drawn.genes == 0).mean(axis=1)
    np.testing.assert_allclose(zeros, wanted[drawn.labels], atol=0.15)
    assert zeros.mean() > (smooth.genes == 0).mean()
    np.testing.assert_allclose(np.expm1(drawn.genes).sum(1), 1e4, rtol=1e-3)
    baseline = run("dm", real_like, count_fraction=1.0)  # the baselines: never
    np.testing.assert_array_equal(baseline.genes, run("dm", real_like).genes)
    with pytest.raises(ValueError, match="target_sum and sparsity"):
        run("scdd_decoder", inputs, count_fraction=1.0)


def test_a_count_fraction_draws_that_share_of_each_class(
    inputs: DistillInputs,
) -> None:
    """Half the cells of each class drawn as counts, the others smooth."""
    labels = torch.tensor([0, 0, 1, 0, 1, 1, 0])
    np.testing.assert_array_equal(
        drawn_rows(labels, 0.5).numpy(), [False, True, False, False, True, False, True]
    )
    assert drawn_rows(labels, 1.0).all() and not drawn_rows(labels, 0.0).any()
    wanted = np.full(inputs.num_classes, 0.6)
    real_like = replace(inputs, target_sum=1e4, zero_fractions=wanted)
    out = run("scdd_decoder", real_like, count_fraction=0.5)
    drawn = drawn_rows(torch.as_tensor(out.labels), 0.5).numpy()
    zeros = (out.genes == 0).mean(axis=1)
    np.testing.assert_allclose(zeros[drawn], 0.6, atol=0.15)
    assert zeros[~drawn].max() < zeros[drawn].min()
