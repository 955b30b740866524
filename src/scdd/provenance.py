"""Provenance records written to ``uns["scdd"]`` of every AnnData we produce."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import anndata as ad
import numpy as np
import torch

_PACKAGES = ("scdd", "anndata", "scanpy", "torch", "scimilarity", "kedro", "numpy")


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


def record_provenance(
    adata: ad.AnnData,
    *,
    stage: str,
    params: Any,
    source: str | None = None,
    **facts: str,
) -> None:
    """Add ``uns["scdd"][stage]``: parameters (as JSON), versions, source, time.

    ``params`` is a dict or a typed parameter group. Parameters are stored as
    a JSON string because HDF5 cannot hold ``None`` or mixed lists;
    ``json.loads`` gives them back. ``facts`` (label column, model digests...)
    are stored as strings beside them.
    """
    if hasattr(params, "model_dump"):
        params = params.model_dump(mode="json")
    record = {
        "params": json.dumps(params, sort_keys=True, default=str),
        **{key: str(value) for key, value in facts.items()},
        "versions": package_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if source is not None:
        record["source"] = str(source)
    adata.uns.setdefault("scdd", {})[stage] = record
