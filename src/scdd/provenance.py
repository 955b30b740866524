"""Provenance records written to ``uns["scdd"]`` of every AnnData we produce."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import anndata as ad

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


def record_provenance(
    adata: ad.AnnData, *, stage: str, params: dict[str, Any], source: str | None = None
) -> None:
    """Add ``uns["scdd"][stage]``: parameters (as JSON), versions, source, time.

    Parameters are stored as a JSON string because HDF5 cannot hold ``None``
    or mixed lists; ``json.loads`` gives them back.
    """
    record = {
        "params": json.dumps(params, sort_keys=True, default=str),
        "versions": package_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if source is not None:
        record["source"] = str(source)
    adata.uns.setdefault("scdd", {})[stage] = record
