"""What made each artefact: recipe fingerprints over the pipeline graph.

An artefact's fingerprint hashes the node that writes it, that node's
parameter groups and the fingerprints of everything it reads, down to the
input file (path, size, modification time). Every saved artefact gets a
small JSON record under ``data/.lineage/``; a run compares the records of
the artefacts it would read with the fingerprints its own inputs and
parameters call for, so artefacts of another input file, label column or
parameter set are never mixed into a run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

from kedro.pipeline import Pipeline

from scdd.cellstore import is_zarr, store_exists, store_fingerprint
from scdd.datasets.h5ad_dataset import SCANPY_PREFIX

#: Run-wide parameters that shape what every node writes. Nodes read them
#: from the run context (:mod:`scdd.run_context`), not as inputs, so every
#: recipe names them; ``device``, ``progress`` and ``threads`` change how a
#: run goes, not what it writes.
SHAPING_RUN_PARAMS = ("seed",)


def plain(value: Any) -> Any:
    """A JSON-able view of a parameter value (Pydantic models, dataclasses)."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _encode(value: Any) -> Any:
    """``json.dumps`` fallback: models and dataclasses as dicts, else ``str``."""
    out = plain(value)
    return str(out) if out is value else out


def plain_params(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters with every typed group turned back into plain JSON values."""
    return json.loads(json.dumps(params, default=_encode))


def digest(value: Any) -> str:
    """Short, stable hash of a JSON-able value."""
    text = json.dumps(value, sort_keys=True, default=_encode)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def source_fingerprint(spec: str) -> str:
    """Fingerprint of the input file named by ``data.input``.

    A bundled dataset is named by scanpy's version; a file by its absolute
    path, size and modification time (hashing a multi-GB atlas would cost a
    full read on every run); a zarr store by its URL and its files' count,
    total size and latest modification.
    """
    if spec.startswith(SCANPY_PREFIX):
        return digest({"bundled": spec, "scanpy": version("scanpy")})
    if is_zarr(spec):
        return digest(
            store_fingerprint(spec) if store_exists(spec) else {"missing": spec}
        )
    path = Path(spec).resolve()
    try:
        stat = path.stat()
    except OSError:
        return digest({"missing": str(path)})
    return digest({"path": str(path), "size": stat.st_size, "mtime": stat.st_mtime_ns})


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How one artefact is made: its node, parameter and input fingerprints."""

    node: str
    output: str
    params: dict[str, str]
    inputs: dict[str, str]

    @property
    def fingerprint(self) -> str:
        return digest(dataclasses.asdict(self))


def plan_recipes(
    pipeline: Pipeline,
    load_param: Callable[[str], Any],
    sources: dict[str, str],
) -> dict[str, Recipe]:
    """The recipe of every dataset ``pipeline`` writes.

    Args:
        pipeline: Every node that may write an artefact (the whole project).
        load_param: Value of a ``params:<name>`` input (also called for
            :data:`SHAPING_RUN_PARAMS`, which every node depends on).
        sources: Fingerprints of inputs no node writes (the raw input).
    """
    shaping = {f"params:{name}" for name in SHAPING_RUN_PARAMS}
    recipes: dict[str, Recipe] = {}
    for node in pipeline.nodes:  # topologically sorted
        params = {
            name: digest(load_param(name))
            for name in sorted(shaping | set(node.inputs))
            if name.startswith("params:")
        }
        inputs = {
            name: recipes[name].fingerprint
            if name in recipes
            else sources.get(name, "")
            for name in node.inputs
            if not name.startswith("params:")
        }
        for output in node.outputs:
            recipes[output] = Recipe(node.name, output, params, inputs)
    return recipes


class LineageStore:
    """One JSON record per artefact under ``root`` (``data/.lineage``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def read(self, name: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._path(name).read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def write(self, name: str, recipe: Recipe, **context: Any) -> None:
        """Record ``recipe`` for ``name`` (written beside, then renamed)."""
        self.root.mkdir(parents=True, exist_ok=True)
        record = {
            "fingerprint": recipe.fingerprint,
            "node": recipe.node,
            "params": recipe.params,
            "inputs": recipe.inputs,
            "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **context,
        }
        target = self._path(name)
        tmp = target.with_name(f".{target.name}.{os.getpid()}")
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
        os.replace(tmp, target)


def stale_reason(
    recipe: Recipe, record: dict[str, Any] | None, context: dict[str, Any]
) -> str | None:
    """Why an existing artefact does not match ``recipe`` (None: it matches).

    ``context`` holds this run's ``input`` and ``label_key`` for the message.
    """
    if record is None:
        return "no record of what made it (written by hand or by an older scDD)"
    if record.get("fingerprint") == recipe.fingerprint:
        return None
    reasons = [
        f"{key} was {record.get(key)!r}, this run uses {value!r}"
        for key, value in context.items()
        if record.get(key) != value
    ]
    made = record.get("params", {})
    changed = [p for p in recipe.params if made.get(p) != recipe.params[p]]
    if changed:
        reasons.append(f"{', '.join(changed)} changed")
    if not reasons:
        upstream = [
            name
            for name, value in recipe.inputs.items()
            if record.get("inputs", {}).get(name) != value
        ]
        reasons.append(
            f"made from other versions of {', '.join(upstream)}"
            if upstream
            else "made by another version of its pipeline"
        )
    return "; ".join(reasons)


def producers(pipelines: dict[str, Pipeline], stages: Iterable[str]) -> dict[str, str]:
    """The stage pipeline that writes each dataset."""
    out: dict[str, str] = {}
    for stage in stages:
        for name in pipelines[stage].all_outputs():
            out.setdefault(name, stage)
    return out
