"""Run-wide hooks: library seeds and per-node timings."""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import numpy as np
import torch
from kedro.framework.hooks import hook_impl
from kedro.pipeline import Node

logger = logging.getLogger(__name__)


class ReproducibilityHooks:
    """Seed the global RNGs once per run and log how long each node took.

    Nodes draw their randomness from explicit generators seeded by the
    ``seed`` parameter; the global seeds only guard library code that does not
    take a generator.
    """

    def __init__(self) -> None:
        self._started: dict[str, float] = {}

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], catalog: Any) -> None:
        seed = int(catalog.load("params:seed")) if "params:seed" in catalog else 0
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    @hook_impl
    def before_node_run(self, node: Node) -> None:
        self._started[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node: Node) -> None:
        elapsed = time.perf_counter() - self._started.pop(
            node.name, time.perf_counter()
        )
        logger.info("Node %s finished in %.1f s", node.name, elapsed)
