"""Nodes of the ``generator`` pipeline."""

from __future__ import annotations

import logging
from typing import Any

import anndata as ad
import pandas as pd

from scdd import generation
from scdd.models.generator_config import GeneratorParams
from scdd.preprocessing_config import DataParams
from scdd.run_context import current_run

logger = logging.getLogger(__name__)


def train_generator(
    train_embeddings: ad.AnnData,
    generator: GeneratorParams,
    data: DataParams,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Train SCDG on the train latents, conditioned on ``generator.conditions``.

    Args:
        train_embeddings: Train latents ``[n_cells, d]`` with labels in ``obs``.
        generator: ``params:generator`` (``model``, ``train``, ``conditions``).
        data: ``params:data`` (``label_key``).

    The run's ``seed`` seeds all randomness in training.

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
    run = current_run()
    return generation.train_generator(
        train_embeddings,
        columns,
        model=generator.model,
        train=generator.train,
        seed=run.seed,
        device=run.torch_device,
        progress=run.show_progress,
    )


def report_generator(
    generator_checkpoint: dict[str, Any],
    train_embeddings: ad.AnnData,
    test_embeddings: ad.AnnData,
    generator: GeneratorParams,
    data: DataParams,
) -> dict[str, Any]:
    """Latent-space quality of the trained generator, per class and overall.

    Args:
        generator_checkpoint: Output of :func:`train_generator`.
        train_embeddings: Real train latents (fit the judging classifier).
        test_embeddings: Real test latents (targets of the comparisons).
        generator: ``params:generator`` (its ``report`` group).
        data: ``params:data`` (``label_key``).

    The run's ``seed`` seeds the sampling noise and the classifier.

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
        seed=current_run().seed,
    )
