"""Run-wide hooks: parameters and threads before anything runs, the Dask
cluster the passes over cells run on, artefact lineage."""

from __future__ import annotations

import contextlib
import importlib
import logging
import random
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from kedro.framework.hooks import hook_impl
from kedro.io import AbstractDataset, MemoryDataset
from kedro.pipeline import Node, Pipeline

from scdd.cellstore import read_lazy
from scdd.dask_engine import DaskParams, dask_client, describe_client
from scdd.lineage import (
    LineageStore,
    Recipe,
    plain_params,
    plan_recipes,
    producers,
    source_fingerprint,
    stale_reason,
)
from scdd.logs import tidy_console
from scdd.params import GROUPS, check_run_params, run_group
from scdd.run_context import hand_down, set_run
from scdd.run_summary import REPORTED, summary_text
from scdd.threads import FOLLOWER

logger = logging.getLogger(__name__)

#: Pipelines that each make one stage's artefacts (named in refresh commands).
STAGES = (
    "preprocess",
    "foundation",
    "generator",
    "latent_distillation",
    "evaluate",
    "report",
    "benchmark",
)


def _replace(catalog: Any, name: str, value: Any) -> None:
    """``catalog[name] = value`` without Kedro's "Replacing dataset" warning:
    the hooks replace datasets on purpose, there is nothing to act on."""
    catalog_logger = logging.getLogger("kedro.io.data_catalog")
    level = catalog_logger.level
    catalog_logger.setLevel(logging.ERROR)
    try:
        catalog[name] = value
    finally:
        catalog_logger.setLevel(level)


def _stage_pipelines() -> dict[str, Pipeline]:
    """Every stage pipeline, whichever ones this run asked Kedro to load."""
    return {
        stage: importlib.import_module(f"scdd.pipelines.{stage}").create_pipeline()
        for stage in STAGES
    }


def _param_value(catalog: Any, name: str) -> Any:
    """``params:<name>`` as its typed group, whether or not Kedro validated it
    in this run (it validates only the groups the requested pipelines use),
    so the same values always hash the same."""
    value = catalog.get(name).load()
    group = GROUPS.get(name.removeprefix("params:"))
    if group is not None and not isinstance(value, group):
        value = group.model_validate(value)
    return value


def _parameters(catalog: Any) -> dict[str, Any]:
    """All parameters of the run as plain values (typed groups dumped)."""
    return plain_params(catalog.get("parameters").load())


class RunSetupHooks:
    """Tidy the console, check the parameters, seed the global RNGs, pin
    threads, time nodes.

    Nodes draw their randomness from explicit generators seeded by the
    ``seed`` parameter; the global seeds only guard library code that does not
    take a generator. The thread count (:data:`scdd.threads.FOLLOWER`) is
    re-applied before every node, since libraries (numba's OpenMP layer,
    BLAS) may reset it; with ``threads: null`` it is chosen again from the
    cores free at that moment, and inside long loops every ~10 s, so work
    that starts beside a long run is not oversubscribed for the rest of it.
    """

    def __init__(self) -> None:
        self._started: dict[str, float] = {}

    @hook_impl
    def after_context_created(self) -> None:
        tidy_console()

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], catalog: Any) -> None:
        params = _parameters(catalog)
        check_run_params(params)
        seed = run_group(params).seed
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        why = FOLLOWER.start(params.get("threads"))
        logger.info(
            "Using %d CPU thread(s) (%s; pin with --params threads=N)",
            FOLLOWER.count,
            why,
        )

    @hook_impl
    def before_node_run(self, node: Node) -> None:
        FOLLOWER.before_node()
        self._started[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node: Node) -> None:
        elapsed = time.perf_counter() - self._started.pop(
            node.name, time.perf_counter()
        )
        logger.info(
            "Node %s finished in %.1f s (peak RSS so far %.0f MB)",
            node.name,
            elapsed,
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        )

    @hook_impl
    def after_pipeline_run(self) -> None:
        FOLLOWER.stop()  # library calls after the run leave the count alone

    @hook_impl
    def on_pipeline_error(self) -> None:
        FOLLOWER.stop()


class RunContextHooks:
    """Hand nodes the run-wide group (:func:`scdd.run_context.current_run`).

    Set from the run's parameters before the run and handed down to the node
    processes Kedro's ``ParallelRunner`` starts (by fork they inherit it; by
    spawn or forkserver they run no project hooks and read it from the
    environment); dropped when the run ends.
    """

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, catalog: Any) -> None:
        run = run_group(_parameters(catalog))
        set_run(run)
        hand_down(run)

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._end()

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._end()

    @staticmethod
    def _end() -> None:
        set_run(None)
        hand_down(None)


class DaskHooks:
    """Run the passes over cells on the Dask cluster ``params:dask`` names.

    ``dask.address`` connects to an existing ``distributed`` scheduler;
    ``dask.cluster: local`` starts a ``LocalCluster`` for the run. Either
    client becomes Dask's default for the run (so every pass goes to its
    workers) and is closed when the run ends, also on error; a cluster
    started here is closed with it. Neither set: nothing is started, the
    passes run in this process. Opens after the other hooks' checks
    (``trylast``), so a refused run starts no cluster. Node processes that
    Kedro's ParallelRunner forks do not inherit the client
    (:mod:`scdd.dask_engine`): their passes run in their own process.
    """

    def __init__(self) -> None:
        self._open = contextlib.ExitStack()

    @hook_impl(trylast=True)
    def before_pipeline_run(self, catalog: Any) -> None:
        self._close()
        params = _parameters(catalog).get("dask") or {}
        settings = DaskParams.model_validate(params)
        client = self._open.enter_context(dask_client(settings))
        if client is None:
            return
        logger.info("Cell passes run on %s", describe_client(client))
        if not client.scheduler_info().get("workers"):
            logger.warning(
                "The Dask cluster has no workers yet: the passes over cells wait "
                "until workers join (`dask worker %s`)",
                client.scheduler.address,
            )

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._close()

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._close()

    def _close(self) -> None:
        self._open.close()


class SummaryHooks:
    """End a run with what it found and where it put it
    (:func:`scdd.run_summary.summary_text`): the input, the synthetic set,
    the models' accuracy and the privacy verdict when it was evaluated, the
    paths of the figures and metrics."""

    @hook_impl
    def after_pipeline_run(self, pipeline: Pipeline, catalog: Any) -> None:
        made = pipeline.all_outputs()
        if not made & {"synthetic_adata", *REPORTED}:
            return
        params = _parameters(catalog)
        synthetic = None
        if "synthetic_adata" in made:
            dataset = catalog.get("synthetic_adata")
            path = _where(dataset)  # obs and uns only: X stays on disk
            synthetic = (read_lazy(path), path)
        metrics = (
            catalog.get("evaluation_metrics").load()
            if "evaluation_metrics" in made
            else None
        )
        files = {name: _where(catalog.get(name)) for name in REPORTED if name in made}
        text = summary_text(
            data=params["data"],
            method=params["distill"]["method"],
            synthetic=synthetic,
            metrics=metrics,
            files=files,
        )
        logger.info("Run summary\n%s", text)


class _Stale(AbstractDataset):
    """A persisted artefact that counts as missing, so Kedro rebuilds it."""

    def __init__(self, dataset: AbstractDataset) -> None:
        self._dataset = dataset

    def load(self) -> Any:
        return self._dataset.load()

    def save(self, data: Any) -> None:
        self._dataset.save(data)

    def _exists(self) -> bool:
        return False

    def _describe(self) -> dict[str, Any]:
        # the wrapped dataset's own description (its filepath among it), so
        # whatever reads where an artefact lives reads through the wrapper
        return {**self._dataset._describe(), "stale": True}


def _where(dataset: AbstractDataset) -> str:
    described = dataset._describe()
    return str(described.get("filepath") or described.get("path") or dataset)


class LineageHooks:
    """Never let a run read an artefact made from other inputs or parameters.

    Before a run: every artefact it reads but does not write must exist (else
    the message names the pipeline that makes it) and match the recipe this
    run's input and parameters call for (else the message names the stale
    artefact and the command that refreshes it). With
    ``--only-missing-outputs`` a stale artefact counts as missing and is
    rebuilt. After each save the artefact's recipe is recorded.
    """

    def __init__(self) -> None:
        self._recipes: dict[str, Recipe] = {}
        self._store: LineageStore | None = None
        self._context: dict[str, Any] = {}
        self._persisted_names: set[str] = set()

    @hook_impl
    def before_pipeline_run(
        self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any
    ) -> None:
        pipelines = _stage_pipelines()
        params = _parameters(catalog)
        data = params.get("data", {})
        self._context = {"input": data.get("input"), "label_key": data.get("label_key")}
        self._store = LineageStore(
            Path(run_params["project_path"]) / "data" / ".lineage"
        )
        everything = sum((pipelines[s] for s in STAGES), Pipeline([]))
        raw = {name for name in everything.inputs() if not name.startswith("params:")}
        sources = {name: source_fingerprint(str(data.get("input"))) for name in raw}
        self._recipes = plan_recipes(
            everything, lambda name: _param_value(catalog, name), sources
        )
        made_by = producers(pipelines, STAGES)
        self._persisted_names = {
            name for name in self._recipes if self._persisted(catalog, name)
        }
        missing, stale = [], []
        for name in sorted(pipeline.inputs() & self._persisted_names):
            dataset = catalog.get(name)
            if not dataset.exists():
                missing.append((name, dataset))
                continue
            reason = self._stale(name)
            if reason:
                stale.append((name, dataset, reason))
        if missing:
            stages = ",".join(dict.fromkeys(made_by[n] for n, _ in missing))
            raise ValueError(
                "This run reads artefacts that do not exist yet:\n  - "
                + "\n  - ".join(
                    f"{n} ({_where(d)}), made by the `{made_by[n]}` pipeline"
                    for n, d in missing
                )
                + f"\nRun `kedro run --pipelines {stages}` first (or `kedro run "
                "--pipelines distill` for every stage up to the synthetic set)."
            )
        if stale:
            stages = ",".join(dict.fromkeys(made_by[n] for n, _, _ in stale))
            raise ValueError(
                "This run would read artefacts made from other inputs or "
                "parameters than its own:\n  - "
                + "\n  - ".join(f"{n} ({_where(d)}): {r}" for n, d, r in stale)
                + self._same_data_hint([n for n, _, _ in stale])
                + f"\nRefresh them with `kedro run --pipelines {stages} "
                "--only-missing-outputs`, or every stage up to the synthetic set "
                "with `kedro run --pipelines distill --only-missing-outputs` "
                "(either rebuilds only what is stale or missing)."
            )
        if run_params.get("only_missing_outputs"):
            self._invalidate_stale_outputs(pipeline, catalog)

    def _same_data_hint(self, names: list[str]) -> str:
        """How to read artefacts made from another input or label as they are:
        pass the ``--params`` of the run that made them."""
        assert self._store is not None
        made_with = {}
        for name in names:
            record = self._store.read(name) or {}
            for key, value in self._context.items():
                if key in record and record[key] != value:
                    made_with[f"data.{key}"] = record[key]
        if not made_with:
            return ""
        passed = ",".join(f"{k}={v}" for k, v in made_with.items())
        return (
            "\nTo use them as they are, run with the data they were made from: "
            f"`--params {passed}`."
        )

    def _persisted(self, catalog: Any, name: str) -> AbstractDataset | None:
        if name.startswith("params:") or name == "parameters":
            return None
        dataset = catalog.get(name)
        if dataset is None or isinstance(dataset, MemoryDataset):
            return None
        return dataset

    def _stale(self, name: str) -> str | None:
        assert self._store is not None
        return stale_reason(self._recipes[name], self._store.read(name), self._context)

    def _invalidate_stale_outputs(self, pipeline: Pipeline, catalog: Any) -> None:
        stale: dict[str, list[str]] = {}
        for name in sorted(pipeline.all_outputs() & self._persisted_names):
            dataset = catalog.get(name)
            reason = self._stale(name) if dataset.exists() else None
            if reason:
                stale.setdefault(reason, []).append(name)
                _replace(catalog, name, _Stale(dataset))
        for reason, names in stale.items():
            logger.warning("Rebuilding stale %s: %s", ", ".join(names), reason)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str) -> None:
        if dataset_name in self._persisted_names and self._store is not None:
            self._store.write(
                dataset_name, self._recipes[dataset_name], **self._context
            )
