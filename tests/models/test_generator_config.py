"""The ``generator`` group: a valid noise schedule, conditions named once,
report steps within the schedule."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from scdd.models.generator_config import (
    GeneratorModelParams,
    GeneratorParams,
    GeneratorReportParams,
)


def test_betas_must_increase() -> None:
    with pytest.raises(ValidationError, match=r"beta_min=0\.5 must be below"):
        GeneratorModelParams(beta_min=0.5, beta_max=0.1)


def test_conditions_a_string_is_one_column_and_none_repeats() -> None:
    assert GeneratorParams(conditions="cell_type").conditions == ["cell_type"]
    assert GeneratorParams().conditions is None
    with pytest.raises(ValidationError, match=r"lists \['batch'\] twice"):
        GeneratorParams(conditions=["batch", "cell_type", "batch"])
    with pytest.raises(ValidationError, match="at least 1 item"):
        GeneratorParams(conditions=[])


@pytest.mark.parametrize("name", ["t_values", "sample_steps"])
def test_report_steps_stay_within_the_timesteps(name: str) -> None:
    report = GeneratorReportParams(
        **{"t_values": [1], "sample_steps": [1], name: [1, 101]}
    )
    with pytest.raises(
        ValidationError,
        match=rf"generator\.report\.{name}=\[1, 101\] exceeds "
        r"generator\.model\.timesteps=100",
    ):
        GeneratorParams(model=GeneratorModelParams(timesteps=100), report=report)
    GeneratorParams(model=GeneratorModelParams(timesteps=101), report=report)
