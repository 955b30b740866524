"""Provenance records written to ``uns["scdd"]`` of every AnnData we produce.

``uns["scdd"][stage]`` (``preprocess``; for embeddings ``foundation``; for
the synthetic set ``preprocess``, ``foundation``, ``generator`` when the
method used it, and ``distill``) holds the stage's parameter group under
``params``, facts about it (label column, input kind, ``weights_digest`` of
a model...), the package ``versions`` and when the record was ``created``
(UTC). A record naming its input (``source``: ``data.input``) also holds the
input's ``input_digest`` (:func:`scdd.lineage.source_fingerprint`).

Records are plain nested dicts that anndata writes to h5ad as they are
(:func:`storable`):

- ``str``, ``int``, ``float``, ``bool`` and ``None`` stay as they are
  (anndata >= 0.12 writes ``None`` as a ``null`` element);
- a list whose items are all strings, all numbers or all booleans stays a
  list (an array on disk; :func:`plain` makes it a list again);
- any other list (holding ``None``, dicts, lists or mixed kinds, which h5ad
  cannot store as an array) becomes a dict keyed by position (``"0"``,
  ``"1"``...);
- anything else (a path, a date...) is stored as its ``str``.

``json.dumps(plain(adata.uns["scdd"]))`` gives a record read back from disk as
JSON; :func:`recorded_params` gives one stage's parameters.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import anndata as ad
import numpy as np
import torch

from scdd.lineage import source_fingerprint

_PACKAGES = ("scdd", "anndata", "scanpy", "torch", "scimilarity", "kedro", "numpy")

#: ``uns["log1p"]`` as ``sc.pp.log1p`` sets it: natural log.
LOG1P = {"base": None}


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape our outputs."""
    found = {}
    for name in _PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def weights_digest(weights: Any) -> str:
    """Short content hash of a model: a module, a state dict or a checkpoint.

    Two artefacts share it exactly when they hold the same tensors under the
    same names, so it names the foundation/generator version a synthetic set
    was made with.
    """
    sha = hashlib.sha256()

    def walk(value: Any, key: str) -> None:
        if isinstance(value, torch.nn.Module):
            value = value.state_dict()
        if isinstance(value, torch.Tensor):
            sha.update(key.encode())
            sha.update(np.ascontiguousarray(value.detach().cpu().numpy()).tobytes())
        elif isinstance(value, Mapping):
            for name in sorted(value, key=str):
                walk(value[name], f"{key}/{name}")
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                walk(item, f"{key}/{i}")
        else:
            sha.update(f"{key}={value!r}".encode())

    walk(weights, "")
    return sha.hexdigest()[:16]


def _array_kind(value: Any) -> type | None:
    """The kind of a list item h5ad stores in an array (``None``: none)."""
    if isinstance(value, bool):
        return bool
    if isinstance(value, int | float):
        return float
    return str if isinstance(value, str) else None


def storable(value: Any) -> Any:
    """``value`` (a typed parameter group, dict, list, scalar...) as plain
    values anndata writes to h5ad (rules in the module docstring)."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {str(key): storable(item) for key, item in value.items()}
    if isinstance(value, np.ndarray | np.generic):
        value = value.tolist()
    if isinstance(value, list | tuple):
        items = [storable(item) for item in value]
        kinds = {_array_kind(item) for item in items}
        if len(kinds) <= 1 and None not in kinds:
            return items
        return {str(i): item for i, item in enumerate(items)}
    if value is None or isinstance(value, str | bool | int | float):
        return value
    return str(value)


def plain(value: Any) -> Any:
    """A record read back from h5ad as JSON-able values: arrays as lists,
    numpy scalars as Python ones."""
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def recorded_params(adata: ad.AnnData, stage: str) -> dict[str, Any]:
    """``params`` of ``uns["scdd"][stage]`` as plain values ({} when absent)."""
    record = adata.uns.get("scdd", {}).get(stage)
    params = record.get("params") if isinstance(record, Mapping) else None
    return plain(params) if isinstance(params, Mapping) else {}


def record_provenance(
    adata: ad.AnnData,
    *,
    stage: str,
    params: Any,
    source: str | None = None,
    log1p: bool = False,
    **facts: Any,
) -> None:
    """Add ``uns["scdd"][stage]``: parameters, facts, versions, time.

    ``params`` is a dict or a typed parameter group; ``facts`` (label column,
    model digests...) are stored beside them, ``source`` with its
    ``input_digest``. ``log1p`` also sets scanpy's marker of log1p-transformed
    ``X`` (``uns["log1p"]``, as ``sc.pp.log1p`` leaves it).
    """
    record = {
        "params": storable(params),
        **storable(facts),
        "versions": package_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if source is not None:
        record.update(source=str(source), input_digest=source_fingerprint(source))
    adata.uns.setdefault("scdd", {})[stage] = record
    if log1p:
        adata.uns["log1p"] = dict(LOG1P)
