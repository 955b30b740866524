"""The ``distill`` parameter group's own rules (:mod:`scdd.distill.config`)."""

from __future__ import annotations

from typing import Any

import pytest

from scdd.distill.config import DistillOptimParams, DistillParams


def test_optimiser_and_losses_are_validated() -> None:
    with pytest.raises(ValueError, match="optimizer"):
        DistillOptimParams(optimizer="lbfgs")
    with pytest.raises(ValueError, match="at least one"):
        DistillOptimParams(lambda_dm=0, lambda_dc=0)
    with pytest.raises(ValueError, match="precision: 32-true"):
        DistillOptimParams(lambda_dc=1, finetune_encoder=True, precision="bf16-true")
    assert DistillOptimParams(precision="bf16-true").precision == "bf16-true"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("steps", -1),
        ("lr", 0.0),
        ("head_lr", 0.0),
        ("momentum", -0.1),
        ("lambda_dm", -1.0),
        ("lambda_dc", -1.0),
        ("lambda_part", -1.0),
        ("inner_steps", 0),
        ("real_batch_size", 0),
        ("log_every", 0),
        ("head_hidden", [16, 0]),
        ("chunk_size", -1),
    ],
)
def test_settings_that_cannot_run_are_refused(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        DistillOptimParams.model_validate({field: value})


def test_zero_steps_and_whole_set_chunks_are_allowed() -> None:
    assert DistillOptimParams(steps=0).steps == 0
    assert DistillOptimParams(chunk_size=0).chunk_size == 0
    assert DistillOptimParams(chunk_size=None).chunk_size is None
    assert DistillOptimParams(lambda_dm=0, lambda_dc=1).lambda_dm == 0


def test_count_depth_is_validated():
    with pytest.raises(ValueError, match="count_depth"):
        DistillParams(count_depth=[1.0, 4.0])  # one depth, not a list
    with pytest.raises(ValueError, match="count_depth"):
        DistillParams(count_depth=0.5)


def test_overrides_copy_the_groups() -> None:
    distill = DistillParams(optim={"steps": 300})
    cell = distill.for_cell("dm", 5, steps=7)
    assert (cell.method, cell.spc, cell.optim.steps) == ("dm", 5, 7)
    assert (distill.method, distill.spc, distill.optim.steps) == ("scdd", 1, 300)
    assert distill.for_cell("dm", 2).optim.steps == 300
