"""Train the foundation model on several nodes: one process per GPU, every
process started by a launcher (torchrun, srun), all joined by Lightning DDP.

A ``kedro run`` is one process on one node: it can train on several GPUs of
its node (``foundation.trainer.strategy: ddp``, ``devices: N``) but not on
several nodes. This script reads the project's preprocessed training split and
parameters through Kedro (read-only, on every rank), trains with
``foundation.trainer`` and writes the model from rank 0 in SCimilarity's
layout (plus ``history.csv``) to ``--out``. The pipeline then uses it as a
pretrained model:

    # on each of 2 nodes with 4 GPUs (the split must be on a shared path)
    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d \\
        --rdzv-endpoint HOST:29500 scripts/train_foundation.py --project . \\
        --out /shared/models/foundation --params \\
        "foundation.trainer.strategy=ddp,foundation.trainer.devices=4,\\
foundation.trainer.num_nodes=2"
    kedro run --pipelines distill --params \\
        "foundation.source=pretrained,foundation.pretrained_path=/shared/models/foundation"
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from omegaconf import OmegaConf

from scdd.models.foundation_training import FoundationParams
from scdd.params import check_run_params, run_group
from scdd.pipelines.foundation.nodes import build_foundation_model
from scdd.preprocessing_config import DataParams
from scdd.run_context import using_run


def _runtime_params(text: str | None) -> dict:
    """``a.b=1,c=2`` nested and typed as ``kedro run --params`` reads it."""
    if not text:
        return {}
    return OmegaConf.to_container(OmegaConf.from_dotlist(text.split(",")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("."))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", help="as kedro run --params")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    project = args.project.resolve()
    bootstrap_project(project)
    with KedroSession.create(
        project_path=project, runtime_params=_runtime_params(args.params)
    ) as session:
        context = session.load_context()
        params = context.params
        check_run_params(params)
        data = DataParams.model_validate(params["data"])
        foundation = FoundationParams.model_validate(params["foundation"])
        train = context.catalog.load("train_adata")
    if foundation.source != "local":
        raise SystemExit("foundation.source is 'pretrained': nothing to train.")
    if args.out.exists():
        raise SystemExit(f"--out {args.out} exists; give a new directory.")
    with using_run(run_group(params)):
        build_foundation_model(train, data, foundation, out_dir=args.out)


if __name__ == "__main__":
    main()
