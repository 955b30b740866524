"""Tests of the beta schedules."""

from __future__ import annotations

import pytest
import torch

from scdd.models.schedule import (
    cosine_beta_schedule,
    get_beta_schedule,
    linear_beta_schedule,
)


def test_linear_schedule_matches_formula() -> None:
    timesteps, beta_min, beta_max = 1000, 1e-4, 0.1
    betas = linear_beta_schedule(timesteps, beta_min, beta_max)
    assert betas.dtype == torch.float64
    assert betas.shape == (timesteps,)
    t = torch.arange(1, timesteps + 1, dtype=torch.float64)
    expected = beta_min + (t - 1) / (timesteps - 1) * (beta_max - beta_min)
    torch.testing.assert_close(betas, expected)
    assert betas[0].item() == pytest.approx(beta_min)
    assert betas[-1].item() == pytest.approx(beta_max)


def test_cosine_schedule_is_valid() -> None:
    betas = cosine_beta_schedule(100)
    assert betas.shape == (100,)
    assert bool(((betas > 0) & (betas <= 0.999)).all())
    assert bool((betas[1:] >= betas[:-1]).all())


def test_get_beta_schedule_dispatches_by_name() -> None:
    torch.testing.assert_close(
        get_beta_schedule("linear", 10, 0.01, 0.2), linear_beta_schedule(10, 0.01, 0.2)
    )
    torch.testing.assert_close(
        get_beta_schedule("cosine", 10, 0.01, 0.2), cosine_beta_schedule(10)
    )
    with pytest.raises(ValueError, match="unknown beta schedule"):
        get_beta_schedule("quadratic", 10, 0.01, 0.2)


@pytest.mark.parametrize(
    ("timesteps", "beta_min", "beta_max"),
    [(0, 1e-4, 0.1), (10, 0.2, 0.1), (10, 0, 0.1)],
)
def test_linear_schedule_rejects_bad_arguments(
    timesteps: int, beta_min: float, beta_max: float
) -> None:
    with pytest.raises(ValueError):
        linear_beta_schedule(timesteps, beta_min, beta_max)
