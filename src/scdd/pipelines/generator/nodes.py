"""Nodes of the ``generator`` pipeline."""

from __future__ import annotations

import logging
from typing import Any

import anndata as ad
import pandas as pd

from scdd import generation
from scdd.models.device import resolve_device
from scdd.models.generator_config import GeneratorParams
from scdd.preprocessing_config import DataParams

logger = logging.getLogger(__name__)


def train_generator(
    train_embeddings: ad.AnnData,
    generator: GeneratorParams,
    data: DataParams,
    seed: int,
    device: str,
    progress: bool,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Train SCDG on the train latents, conditioned on ``generator.conditions``.

    Args:
        train_embeddings: Train latents ``[n_cells, d]`` with labels in ``obs``.
        generator: ``params:generator`` (``model``, ``train``, ``conditions``).
        data: ``params:data`` (``label_key``).
        seed: Seed of all randomness in training.
        device: ``params:device`` (``"auto"``, ``"cpu"``, ``"cuda"``...).
        progress: Show a progress bar.

    Returns:
        The checkpoint dict (weights, config, condition categories) and the
        loss history.
    """
    columns = generation.condition_columns(generator.conditions, data.label_key)
    logger.info(
        "Generator input: %d cells x %d latents, conditioned on %s",
        *train_embeddings.shape,
        columns,
    )
    return generation.train_generator(
        train_embeddings,
        columns,
        model=generator.model,
        train=generator.train,
        seed=seed,
        device=resolve_device(device),
        progress=progress,
    )


def report_generator(
    generator_checkpoint: dict[str, Any],
    train_embeddings: ad.AnnData,
    test_embeddings: ad.AnnData,
    generator: GeneratorParams,
    data: DataParams,
    seed: int,
) -> dict[str, Any]:
    """Latent-space quality of the trained generator, per class and overall.

    Args:
        generator_checkpoint: Output of :func:`train_generator`.
        train_embeddings: Real train latents (fit the judging classifier).
        test_embeddings: Real test latents (targets of the comparisons).
        generator: ``params:generator`` (its ``report`` group).
        data: ``params:data`` (``label_key``).
        seed: Seed of the sampling noise and the classifier.

    Returns:
        The JSON-able report of :func:`scdd.generation.generator_quality_report`.
    """
    model, categories = generation.load_generator(generator_checkpoint)
    return generation.generator_quality_report(
        model,
        categories,
        train_embeddings,
        test_embeddings,
        label_key=data.label_key,
        report=generator.report,
        seed=seed,
    )
